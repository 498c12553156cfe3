"""Live metrics of containers and of the node, collected once per period and shared by every loop.

Per container: CPU time and throttling (cgroup), memory usage (cgroup), run-queue
delay (the sum over its tasks of ``/proc/<pid>/task/<tid>/schedstat`` field 2:
nanoseconds spent runnable but waiting for a CPU) and PSI (per cgroup where the
kernel offers it). Per node: CPU usage from ``/proc/stat``, memory from
``/proc/meminfo`` and PSI from ``/proc/pressure``. Rates come from the difference
between two collections; the first collection of a container has no rates yet.

:class:`MetricsLoop` runs the collection once per period in a worker thread and
publishes each pass as an immutable :class:`MetricsSnapshot`; ``/metrics`` and
every control loop read that snapshot instead of the files, so the files are read
once per period however many readers there are.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple, Protocol, TypeVar

from katalyst.cgroup import CgroupDriver, CgroupError, CgroupNotFound, Pressure
from katalyst.cgroup.driver import PressureResource, parse_pressure
from katalyst.clock import Clock, first_of
from katalyst.qos import PodView

log = logging.getLogger(__name__)

PRESSURE_RESOURCES: tuple[PressureResource, ...] = ("cpu", "memory", "io")
_PER_CPU = re.compile(r"cpu[0-9]+", re.ASCII)
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class ContainerRef:
    """A container the node runs, for per-container series."""

    namespace: str
    pod: str
    container: str
    qos_level: str
    cgroup: str
    """Its cgroup, relative to the cgroup driver's base."""
    pod_uid: str = ""
    """The pod's UID (its region, for a dedicated pod)."""
    cpu_request: float = 0.0
    """The container's CPU request, cores (what degraded mode falls back to)."""

    @property
    def key(self) -> str:
        """``namespace/pod/container``: the key of the container in a snapshot."""
        return f"{self.namespace}/{self.pod}/{self.container}"


def cpu_request(view: PodView, container: str) -> float:
    """The CPU request of one of the pod's containers, cores (0 when it has none)."""
    for c in (*view.containers, *view.init_containers):
        if c.name == container and "cpu" in c.requests:
            return float(c.requests["cpu"].amount)
    return 0.0


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
    tasks: int = 0
    """Threads whose run delay was read."""
    timeslices: int = 0
    """Timeslices those threads have run (schedstat field 3): scheduling events."""
    memory_working_set: int | None = None
    """Memory usage less the inactive file cache (what the kubelet calls the working
    set), bytes; None where memory.stat could not be read."""

    @property
    def memory_in_use(self) -> int:
        """The working set where known, else the usage (bytes): what MemTotal -
        MemAvailable counts of this container."""
        return self.memory_usage if self.memory_working_set is None else self.memory_working_set


@dataclass(frozen=True, slots=True)
class Rates:
    """What happened between two readings."""

    cpu_cores: float
    """CPUs used on average (1.0 = one CPU busy)."""
    throttled_ratio: float
    """Throttled periods over elapsed enforcement periods (0 without a quota)."""
    run_delay_us_per_s: float
    """Microseconds of run-queue wait per second of wall time, summed over tasks."""
    timeslices_per_s: float = 0.0
    """Timeslices run per second, summed over tasks: the run-queue waits those
    microseconds were spread over."""
    schedstat_valid: bool = True
    """False when a thread exited between the readings (either sum went down): the
    run delay and timeslice rates of this period are then not comparable."""


@dataclass(frozen=True, slots=True)
class ContainerMetrics:
    """The latest reading and, from the second one on, the rates."""

    counters: Counters
    rates: Rates | None


@dataclass(frozen=True, slots=True)
class CpuTimes:
    """The aggregate ``cpu`` line of ``/proc/stat``, in clock ticks (USER_HZ)."""

    busy: int
    """user + nice + system + irq + softirq + steal (guest time is already in user and nice)."""
    total: int
    """busy + idle + iowait."""
    cpus: int
    """Online CPUs: the ``cpuN`` lines."""


@dataclass(frozen=True, slots=True)
class NodeMetrics:
    """Node-wide readings of one pass; a field the kernel does not offer is ``None``."""

    cpus: int | None
    """Online CPUs (``/proc/stat``)."""
    cpu_usage_cores: float | None
    """CPUs busy on average since the previous pass (from the second pass on)."""
    memory_total_bytes: int | None
    """``MemTotal`` of ``/proc/meminfo``."""
    memory_available_bytes: int | None
    """``MemAvailable`` of ``/proc/meminfo`` (the kernel's estimate of what can be
    allocated without swapping: free plus reclaimable page cache and slab)."""
    cpu_pressure: Pressure | None
    """``/proc/pressure/cpu``; ``None`` where the kernel has no PSI."""
    memory_pressure: Pressure | None
    """``/proc/pressure/memory``."""
    io_pressure: Pressure | None
    """``/proc/pressure/io``."""

    def pressure(self, resource: PressureResource) -> Pressure | None:
        """The PSI reading of ``resource``."""
        return {"cpu": self.cpu_pressure, "memory": self.memory_pressure, "io": self.io_pressure}[
            resource
        ]


def read_run_delay_ns(pids: list[int], *, proc_root: str = "/proc") -> int:
    """Total run-queue delay of every thread of ``pids``, nanoseconds.

    Threads that exit while we read are skipped: their delay leaves the sum,
    which is why rates are clamped at zero.
    """
    return read_run_delay(pids, proc_root=proc_root)[0]


def read_run_delay(pids: list[int], *, proc_root: str = "/proc") -> tuple[int, int, int]:
    """(total run-queue delay in nanoseconds, threads read, timeslices run) of every
    thread of ``pids``: fields 2 and 3 of ``/proc/<pid>/task/<tid>/schedstat``."""
    total = 0
    threads = 0
    slices = 0
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
                delay, ran = int(fields[1]), int(fields[2])
            except (OSError, IndexError, ValueError):
                continue
            total += delay
            slices += ran
            threads += 1
    return total, threads, slices


def parse_proc_stat(text: str) -> CpuTimes:
    """The CPU times of ``/proc/stat``; ``ValueError`` if there is no ``cpu`` line."""
    aggregate: list[int] | None = None
    cpus = 0
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if name == "cpu":
            aggregate = [int(v) for v in rest.split()]
        elif _PER_CPU.fullmatch(name):
            cpus += 1
    if aggregate is None or len(aggregate) < 4:
        raise ValueError("no aggregate 'cpu' line")
    # user nice system idle iowait irq softirq steal guest guest_nice (proc(5)); older
    # kernels stop early. guest and guest_nice are already counted in user and nice.
    fields = (aggregate + [0] * 8)[:8]
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    busy = user + nice + system + irq + softirq + steal
    return CpuTimes(busy=busy, total=busy + idle + iowait, cpus=cpus)


def parse_meminfo(text: str) -> dict[str, int]:
    """``/proc/meminfo`` in bytes by field name (the kernel prints kB)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            scale = 1024 if parts[1:] == ["kB"] else 1
            out[name.strip()] = int(parts[0]) * scale
    return out


class MetricsCollector:
    """Reads every known container's counters and the node's; keeps the previous
    reading for rates.

    Not thread-safe: one collection at a time (the :class:`MetricsLoop` runs them
    one after the other in a worker thread).
    """

    def __init__(self, driver: CgroupDriver, *, clock: Clock, proc_root: str = "/proc") -> None:
        self._driver = driver
        self._clock = clock
        self._proc = proc_root
        self._last: dict[str, tuple[str, Counters]] = {}
        self._last_cpu: CpuTimes | None = None
        self._failing: set[str] = set()
        self._node_problems: set[str] = set()
        self.latest: Mapping[str, ContainerMetrics] = {}
        """The last collection, by the keys passed to :meth:`collect`."""

    def collect(self, cgroups: Mapping[str, str]) -> Mapping[str, ContainerMetrics]:
        """Read the containers given as key -> cgroup path (relative to the driver's base).

        A cgroup that vanished is pod churn: it is left out and logged at debug. A
        container whose files cannot be read is left out of this collection and
        logged (a warning the first time, then at debug until it recovers).
        """
        out: dict[str, ContainerMetrics] = {}
        for key, cgroup in cgroups.items():
            try:
                counters = self._read(cgroup)
            except CgroupNotFound:
                log.debug("container %s: cgroup %s vanished (pod churn)", key, cgroup)
                continue
            except CgroupError as exc:
                if key in self._failing:
                    log.debug("container %s: still cannot read metrics: %s", key, exc)
                else:
                    self._failing.add(key)
                    log.warning("container %s: cannot read metrics: %s", key, exc)
                continue
            if key in self._failing:
                self._failing.discard(key)
                log.info("container %s: metrics readable again", key)
            # A restarted container keeps its key but gets a new cgroup (a new
            # container ID): its counters start again and are no rate of the old ones.
            last = self._last.get(key)
            previous = last[1] if last is not None and last[0] == cgroup else None
            out[key] = ContainerMetrics(counters, _rates(previous, counters) if previous else None)
            self._last[key] = (cgroup, counters)
        for gone in set(self._last) - set(cgroups):
            del self._last[gone]
        self._failing.intersection_update(cgroups)
        self.latest = out
        return out

    def collect_node(self) -> NodeMetrics:
        """Read the node's CPU, memory and PSI from the proc root; never raises.

        A file that is missing or unreadable gives ``None`` for what it carries.
        """
        cpu = self._read_node("stat", parse_proc_stat)
        usage: float | None = None
        previous, self._last_cpu = self._last_cpu, cpu
        if cpu is not None and previous is not None:
            busy, total = cpu.busy - previous.busy, cpu.total - previous.total
            if total > 0:
                # The ticks of every online CPU elapse together: busy/total is the
                # node's busy fraction, whatever the tick rate (USER_HZ) is.
                usage = max(0, busy) / total * cpu.cpus
        meminfo = self._read_node("meminfo", parse_meminfo) or {}
        pressure = {r: self._read_node(f"pressure/{r}", _node_pressure) for r in PRESSURE_RESOURCES}
        return NodeMetrics(
            cpus=cpu.cpus if cpu is not None else None,
            cpu_usage_cores=usage,
            memory_total_bytes=meminfo.get("MemTotal"),
            memory_available_bytes=meminfo.get("MemAvailable"),
            cpu_pressure=pressure["cpu"],
            memory_pressure=pressure["memory"],
            io_pressure=pressure["io"],
        )

    def _read_node(self, relative: str, parse: Callable[[str], _T]) -> _T | None:
        path = os.path.join(self._proc, relative)
        try:
            with open(path, encoding="ascii", errors="replace") as f:
                value = parse(f.read())
        except FileNotFoundError:
            # No PSI: CONFIG_PSI off, or psi=0 on the kernel command line.
            self._node_problem(path, "missing", quiet=relative.startswith("pressure/"))
            return None
        except (OSError, ValueError, IndexError) as exc:
            # EOPNOTSUPP is what a PSI file answers when PSI was disabled at boot.
            self._node_problem(path, str(exc), quiet=False)
            return None
        if path in self._node_problems:
            self._node_problems.discard(path)
            log.info("%s readable again", path)
        return value

    def _node_problem(self, path: str, why: str, *, quiet: bool) -> None:
        if path in self._node_problems:
            return
        self._node_problems.add(path)
        log.log(logging.DEBUG if quiet else logging.WARNING, "node metrics: %s: %s", path, why)

    def _read(self, cgroup: str) -> Counters:
        stat = self._driver.cpu_stat(cgroup)
        try:
            psi: Pressure | None = self._driver.pressure(cgroup, "cpu")
        except CgroupNotFound:
            raise
        except CgroupError:
            psi = None
        delay, tasks, slices = read_run_delay(self._driver.procs(cgroup), proc_root=self._proc)
        usage = self._driver.memory_usage(cgroup)
        return Counters(
            at=self._clock.monotonic(),
            cpu_usage_ns=self._driver.cpu_usage_ns(cgroup),
            nr_periods=stat.nr_periods,
            nr_throttled=stat.nr_throttled,
            throttled_ns=stat.throttled_ns,
            run_delay_ns=delay,
            memory_usage=usage,
            cpu_pressure=psi,
            tasks=tasks,
            timeslices=slices,
            memory_working_set=self._working_set(cgroup, usage),
        )

    def _working_set(self, cgroup: str, usage: int) -> int | None:
        try:
            stat = self._driver.memory_stat(cgroup)
        except CgroupNotFound:
            raise
        except CgroupError:
            return None
        # v1 reports the hierarchy's total_inactive_file, v2 inactive_file (the
        # kubelet's working set is usage less it, never below 0).
        inactive = stat.get("total_inactive_file", stat.get("inactive_file", 0))
        return max(0, usage - inactive)


def _node_pressure(text: str) -> Pressure:
    return parse_pressure(text, scope="node")


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
        timeslices_per_s=max(0, after.timeslices - before.timeslices) / elapsed,
        # A thread that exited took its lifetime's wait and timeslices out of the
        # sums: the two differences no longer describe the same threads.
        schedstat_valid=after.run_delay_ns >= before.run_delay_ns
        and after.timeslices >= before.timeslices,
    )


class ContainerSample(NamedTuple):
    """One container in a snapshot: who it is and what was read."""

    ref: ContainerRef
    metrics: ContainerMetrics


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """One pass of the :class:`MetricsLoop`; never changes once published."""

    seq: int
    """Pass number, from 1; a later snapshot has a larger one."""
    at: float
    """Clock time the pass started (seconds, monotonic)."""
    containers: Mapping[str, ContainerSample]
    """By :attr:`ContainerRef.key`; containers whose cgroup vanished or could not be
    read in this pass are absent. A read-only view of a mapping nobody else holds."""
    node: NodeMetrics


class HeartbeatSink(Protocol):
    """What the loop beats after each pass (:class:`agent.observability.Heartbeat`)."""

    def beat(self, now: float) -> None:
        """Record that the loop completed a pass at clock time ``now``."""
        ...


class MetricsLoopStopped(Exception):
    """:meth:`MetricsLoop.next_snapshot` was waiting when the loop ended."""


class MetricsLoop:
    """Collects every container's and the node's metrics once per ``period`` seconds
    and publishes each pass as a :class:`MetricsSnapshot`.

    The files are read in a worker thread (``asyncio.to_thread``): a pass reads a
    few files per container and per task, and the event loop also serves the
    plugins' gRPC. Passes start on a fixed grid of ``period`` seconds, so control
    loops that follow the snapshots see a steady interval; a pass that overruns
    skips the ticks it missed. A pass that fails is logged and the previous
    snapshot stays (its age shows on ``/metrics``); the loop goes on.

    Readers take :attr:`snapshot`, or wait for a fresh one with
    :meth:`next_snapshot`. Under a :class:`katalyst.clock.FakeClock`, whose
    ``advance`` does not wait for threads, a test advances one period and then
    awaits :meth:`next_snapshot` before advancing again.
    """

    def __init__(
        self,
        collector: MetricsCollector,
        containers: Callable[[], Iterable[ContainerRef]],
        *,
        clock: Clock,
        period: float = 1.0,
        heartbeat: HeartbeatSink | None = None,
    ) -> None:
        if not period > 0:
            raise ValueError(f"period must be a positive number of seconds, not {period}")
        self._collector = collector
        self._containers = containers
        self._clock = clock
        self._period = period
        self._heartbeat = heartbeat
        self._created = clock.monotonic()
        self._snapshot: MetricsSnapshot | None = None
        self._seq = 0
        self._published = asyncio.Event()
        self._stopped = False
        self._overrunning = False
        self.failed_passes = 0
        self.last_pass_s: float | None = None
        """Wall time the last successful pass took (reading every file), seconds."""
        """Passes that raised (logged); their snapshot was not replaced."""

    @property
    def period(self) -> float:
        """Seconds between the starts of two passes."""
        return self._period

    def set_period(self, period: float) -> None:
        """A new period from the next tick on (the sysadvisor's period, when the
        dynamic configuration changes it); the sleep already running keeps its length."""
        if not period > 0:
            raise ValueError(f"period must be a positive number of seconds, not {period}")
        self._period = period

    @property
    def snapshot(self) -> MetricsSnapshot | None:
        """The latest pass; ``None`` until the first one completes."""
        return self._snapshot

    def age(self) -> float:
        """Seconds since the latest snapshot's pass started (since the loop was made
        while there is none), by the loop's clock."""
        since = self._snapshot.at if self._snapshot is not None else self._created
        return max(0.0, self._clock.monotonic() - since)

    async def next_snapshot(self, after: MetricsSnapshot | None) -> MetricsSnapshot:
        """The first snapshot newer than ``after`` (any snapshot for ``None``).

        Returns at once when one is already published, so a reader that passes the
        last snapshot it used never misses a pass nor sees one twice::

            snap = None
            while True:
                snap = await loop.next_snapshot(snap)

        Raises :class:`MetricsLoopStopped` when the loop ends while waiting.
        """
        while True:
            current = self._snapshot
            if current is not None and (after is None or current.seq > after.seq):
                return current
            if self._stopped:
                raise MetricsLoopStopped("the metrics loop has stopped")
            await self._published.wait()

    async def run(self, stop: asyncio.Event) -> None:
        """Collect once per period until ``stop`` is set (checked between passes)."""
        self._stopped = False
        next_at = self._clock.monotonic()
        try:
            while not stop.is_set():
                # Beat only after a pass that produced a snapshot: /healthz then
                # turns red while the metrics go stale.
                if await self._pass() and self._heartbeat is not None:
                    self._heartbeat.beat(self._clock.monotonic())
                next_at = self._next_tick(next_at)
                await first_of(self._clock.sleep(next_at - self._clock.monotonic()), stop)
        finally:
            self._stopped = True
            self._wake_readers()

    def _next_tick(self, previous: float) -> float:
        now = self._clock.monotonic()
        tick = previous + self._period
        if tick > now:
            self._overrunning = False
            return tick
        if not self._overrunning:
            self._overrunning = True
            log.warning(
                "metrics pass took %.2f s, more than the period of %.2f s: skipping ticks",
                now - previous,
                self._period,
            )
        missed = (now - previous) // self._period
        return previous + (missed + 1) * self._period

    async def _pass(self) -> bool:
        """One collection; whether it produced a snapshot."""
        at = self._clock.monotonic()
        started = time.perf_counter()
        try:
            # Listed here, on the event loop, because the owner of the containers
            # changes them from the event loop.
            refs = {ref.key: ref for ref in self._containers()}
            containers, node = await asyncio.to_thread(self._read_all, refs)
        except Exception:
            self.failed_passes += 1
            log.exception("metrics pass failed; keeping the previous snapshot")
            return False
        self.last_pass_s = time.perf_counter() - started
        self._seq += 1
        self._snapshot = MetricsSnapshot(
            seq=self._seq, at=at, containers=MappingProxyType(containers), node=node
        )
        self._wake_readers()
        return True

    def _read_all(
        self, refs: Mapping[str, ContainerRef]
    ) -> tuple[dict[str, ContainerSample], NodeMetrics]:
        readings = self._collector.collect({key: ref.cgroup for key, ref in refs.items()})
        containers = {key: ContainerSample(refs[key], m) for key, m in sorted(readings.items())}
        return containers, self._collector.collect_node()

    def _wake_readers(self) -> None:
        published, self._published = self._published, asyncio.Event()
        published.set()
