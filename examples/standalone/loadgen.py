"""Open-loop load for the demo service: requests at a fixed rate, whatever the
latency, each timed from its scheduled start (so queueing delay counts, as a
user would see it). Loopback only."""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor


def run_load(url: str, *, rate: float, seconds: float, workers: int = 32) -> list[float]:
    """Latencies in milliseconds of ``rate * seconds`` requests sent at ``rate`` per second."""
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError("the load generator only targets 127.0.0.1")
    latencies: list[float] = []
    lock = threading.Lock()
    start = time.perf_counter()

    def one(scheduled: float) -> None:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback only
                response.read()
        except OSError:
            return
        with lock:
            latencies.append((time.perf_counter() - scheduled) * 1000)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i in range(int(rate * seconds)):
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one, scheduled)
    return latencies


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
