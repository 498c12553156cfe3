"""Live metrics of containers, collected once per period and shared by every loop.

Per container: CPU time and throttling (cgroup), memory usage (cgroup), run-queue
delay (the sum over its tasks of ``/proc/<pid>/task/<tid>/schedstat`` field 2:
nanoseconds spent runnable but waiting for a CPU) and PSI (per cgroup where the
kernel offers it). Rates come from the difference between two collections; the
first collection of a container has no rates yet.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

from katalyst.cgroup import CgroupDriver, CgroupError, CgroupNotFound, Pressure
from katalyst.clock import Clock

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Counters:
    """Cumulative counters of one container at one instant."""

    at: float
    """Clock time of the reading (seconds, monotonic)."""
    cpu_usage_ns: int
    nr_periods: int
    nr_throttled: int
    throttled_ns: int
    run_delay_ns: int
    memory_usage: int
    cpu_pressure: Pressure | None


@dataclass(frozen=True, slots=True)
class Rates:
    """What happened between two readings."""

    cpu_cores: float
    """CPUs used on average (1.0 = one CPU busy)."""
    throttled_ratio: float
    """Throttled periods over elapsed enforcement periods (0 without a quota)."""
    run_delay_us_per_s: float
    """Microseconds of run-queue wait per second of wall time, summed over tasks."""


@dataclass(frozen=True, slots=True)
class ContainerMetrics:
    """The latest reading and, from the second one on, the rates."""

    counters: Counters
    rates: Rates | None


def read_run_delay_ns(pids: list[int], *, proc_root: str = "/proc") -> int:
    """Total run-queue delay of every thread of ``pids``, nanoseconds.

    Threads that exit while we read are skipped: their delay leaves the sum,
    which is why rates are clamped at zero.
    """
    total = 0
    for pid in pids:
        task_dir = os.path.join(proc_root, str(pid), "task")
        try:
            tids = os.listdir(task_dir)
        except OSError:
            continue
        for tid in tids:
            try:
                with open(os.path.join(task_dir, tid, "schedstat"), encoding="ascii") as f:
                    fields = f.read().split()
                total += int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
    return total


class MetricsCollector:
    """Reads every known container's counters; keeps the previous reading for rates."""

    def __init__(self, driver: CgroupDriver, *, clock: Clock, proc_root: str = "/proc") -> None:
        self._driver = driver
        self._clock = clock
        self._proc = proc_root
        self._last: dict[str, Counters] = {}
        self.latest: Mapping[str, ContainerMetrics] = {}
        """The last collection, by the keys passed to :meth:`collect`."""

    def collect(self, cgroups: Mapping[str, str]) -> Mapping[str, ContainerMetrics]:
        """Read the containers given as key -> cgroup path (relative to the driver's base).

        A cgroup that vanished is pod churn: it is left out and logged at debug.
        """
        out: dict[str, ContainerMetrics] = {}
        for key, cgroup in cgroups.items():
            try:
                counters = self._read(cgroup)
            except CgroupNotFound:
                log.debug("container %s: cgroup %s vanished (pod churn)", key, cgroup)
                continue
            except CgroupError as exc:
                log.warning("container %s: cannot read metrics: %s", key, exc)
                continue
            previous = self._last.get(key)
            out[key] = ContainerMetrics(counters, _rates(previous, counters) if previous else None)
            self._last[key] = counters
        for gone in set(self._last) - set(cgroups):
            del self._last[gone]
        self.latest = out
        return out

    def _read(self, cgroup: str) -> Counters:
        stat = self._driver.cpu_stat(cgroup)
        try:
            psi: Pressure | None = self._driver.pressure(cgroup, "cpu")
        except CgroupNotFound:
            raise
        except CgroupError:
            psi = None
        return Counters(
            at=self._clock.monotonic(),
            cpu_usage_ns=self._driver.cpu_usage_ns(cgroup),
            nr_periods=stat.nr_periods,
            nr_throttled=stat.nr_throttled,
            throttled_ns=stat.throttled_ns,
            run_delay_ns=read_run_delay_ns(self._driver.procs(cgroup), proc_root=self._proc),
            memory_usage=self._driver.memory_usage(cgroup),
            cpu_pressure=psi,
        )


def _rates(before: Counters, after: Counters) -> Rates | None:
    elapsed = after.at - before.at
    if elapsed <= 0:
        return None
    periods = after.nr_periods - before.nr_periods
    return Rates(
        cpu_cores=max(0, after.cpu_usage_ns - before.cpu_usage_ns) / (elapsed * 1e9),
        throttled_ratio=(max(0, after.nr_throttled - before.nr_throttled) / periods)
        if periods > 0
        else 0.0,
        run_delay_us_per_s=max(0, after.run_delay_ns - before.run_delay_ns) / 1e3 / elapsed,
    )
