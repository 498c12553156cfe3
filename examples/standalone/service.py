"""A latency-sensitive service for the standalone demo: an HTTP server on loopback
that does a fixed amount of CPU work per request (``WORK_US`` microseconds of
hashing, about), so that its latency shows how much CPU it gets.

The number of hash rounds is calibrated at start; ``ROUNDS`` fixes it instead, so
that runs started at different times (a benchmark's scenarios, some beside busy
batch jobs that would skew a calibration) do the same work per request.
``BACKLOG`` sets the listen queue (default 5, Python's ``socketserver`` default):
when it overflows, the kernel drops the connection attempt and the client retries
a second later, which a benchmark would measure instead of CPU waits."""

from __future__ import annotations

import hashlib
import os
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WORK_US = int(os.environ.get("WORK_US", "1000"))
PORT = int(os.environ.get("PORT", "18080"))
BACKLOG = int(os.environ.get("BACKLOG", "5"))


def _calibrate() -> int:
    """Hash rounds that take about WORK_US on this machine, measured at start."""
    rounds, start = 0, time.perf_counter()
    block = b"x" * 64
    while time.perf_counter() - start < 0.2:
        for _ in range(1000):
            block = hashlib.sha256(block).digest()
        rounds += 1000
    per_round = (time.perf_counter() - start) / rounds
    return max(1, int(WORK_US / 1e6 / per_round))


ROUNDS = int(os.environ.get("ROUNDS", "0")) or _calibrate()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        block = b"x" * 64
        for _ in range(ROUNDS):
            block = hashlib.sha256(block).digest()
        body = block.hex().encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


class Server(ThreadingHTTPServer):
    request_queue_size = BACKLOG


if __name__ == "__main__":
    server = Server(("127.0.0.1", PORT), Handler)
    print(f"serving on 127.0.0.1:{PORT}, {ROUNDS} hash rounds per request", flush=True)
    server.serve_forever()
