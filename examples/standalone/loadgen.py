"""Open-loop load for the demo service: requests at a fixed rate, whatever the
latency, each timed from its scheduled start (so queueing delay counts, as a
user would see it). Loopback only.

``run_load`` returns the latencies; ``run_phases`` sends one rate after another
(a load step) and returns every request with the time it was scheduled, for
benchmarks that look at latency over time (``bench/colocation.py``)."""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple


class Request(NamedTuple):
    """One request of an open-loop run."""

    sent_s: float
    """When it was scheduled, seconds after the run started."""
    latency_ms: float
    """From its scheduled start to the end of the response (NaN when it failed)."""
    ok: bool
    """Whether a response came back (a refused or timed-out request is not ok)."""


def run_phases(
    url: str, phases: Sequence[tuple[float, float]], *, workers: int = 32
) -> list[Request]:
    """Send requests at each ``(rate, seconds)`` of ``phases`` in turn; return them all,
    in no particular order, once every one has been answered or has failed."""
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError("the load generator only targets 127.0.0.1")
    for rate, seconds in phases:
        if not (rate > 0 and seconds >= 0):
            raise ValueError(f"a phase needs a rate > 0 and seconds >= 0, got {rate}, {seconds}")
    done: list[Request] = []
    lock = threading.Lock()
    start = time.perf_counter()

    def one(scheduled: float) -> None:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback only
                response.read()
        except OSError:
            result = Request(scheduled - start, float("nan"), ok=False)
        else:
            result = Request(scheduled - start, (time.perf_counter() - scheduled) * 1000, ok=True)
        with lock:
            done.append(result)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        offset = 0.0
        for rate, seconds in phases:
            for i in range(int(rate * seconds)):
                scheduled = start + offset + i / rate
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                pool.submit(one, scheduled)
            offset += seconds
    return done


def run_load(url: str, *, rate: float, seconds: float, workers: int = 32) -> list[float]:
    """Latencies in milliseconds of ``rate * seconds`` requests sent at ``rate`` per second
    (failed requests are left out)."""
    return [r.latency_ms for r in run_phases(url, [(rate, seconds)], workers=workers) if r.ok]


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by the inclusive method."""
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[min(998, int(q * 10) - 1)]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:18080/")
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    got = run_load(args.url, rate=args.rate, seconds=args.seconds)
    print(
        f"{len(got)} requests: p50 {percentile(got, 50):.2f} ms, p99 {percentile(got, 99):.2f} ms"
    )
