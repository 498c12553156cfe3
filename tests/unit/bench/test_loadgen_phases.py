"""The load generator's phases, against a tiny HTTP server on loopback: how many
requests each phase sends and when each was scheduled (computed from the schedule,
so nothing here depends on timing)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from examples.standalone.loadgen import run_load, run_phases


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_phases_send_each_rate_in_turn(url: str) -> None:
    got = sorted(run_phases(url, [(100, 0.2), (200, 0.1)]))
    assert len(got) == 20 + 20
    assert all(r.ok for r in got)
    offsets = [r.sent_s for r in got]
    assert offsets[:3] == pytest.approx([0.0, 0.01, 0.02])
    assert offsets[20:23] == pytest.approx([0.2, 0.205, 0.21])


def test_failed_requests_are_kept_and_marked(url: str) -> None:
    closed = url.rsplit(":", 1)[0] + ":1/"  # nothing listens on port 1
    got = run_phases(closed, [(50, 0.1)])
    assert len(got) == 5 and not any(r.ok for r in got)
    assert run_load(closed, rate=50, seconds=0.1) == []  # the old interface drops them


@pytest.mark.parametrize("target", ["http://10.0.0.1:80/", "http://localhost:80/"])
def test_only_loopback_by_address(target: str) -> None:
    with pytest.raises(ValueError, match=r"127\.0\.0\.1"):
        run_phases(target, [(1, 1)])


def test_a_phase_needs_a_positive_rate(url: str) -> None:
    with pytest.raises(ValueError, match="rate > 0"):
        run_phases(url, [(0, 1)])
