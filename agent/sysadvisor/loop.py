"""The sysadvisor's I/O side: metrics snapshot -> :class:`AdvisorInput` -> :class:`Plan`
-> the CPU plugin's reclaim pool and the reclaimed cgroup's quota and memory limit.

Each period, as soon as the metrics loop publishes a snapshot (or after two periods
without one: the advisor then counts a stale period and, after a few, falls back
to requests), the loop

1. builds the regions from the snapshot and the CPU plugin's pools
   (:func:`build_input`): the share region holds every ``shared_cores``
   container, each ``dedicated_cores`` pod is a region of its own;
2. asks the :class:`Advisor` for a plan (pure, synchronous);
3. applies it, each write read-compare-write: the reclaim pool size goes to the
   CPU plugin through its server (serialized with the kubelet's calls and
   checkpointed; the node applies the new cpusets to running containers at once),
   the CFS quota and the memory limit to the reclaimed pods' common parent cgroup.

A cgroup write that fails is logged and counted, never the end of the loop; the
next period writes again. Every term of the decision is kept in :attr:`latest` for
``/metrics`` and ``/status``.

:meth:`AdvisorLoop.configure` hands the loop new settings (and the reclaim on/off
switch) from any thread; the next period decides with them, and the wait for the
next snapshot after that uses the new period.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from agent.metaserver.metrics import (
    ContainerRef,
    ContainerSample,
    HeartbeatSink,
    MetricsLoop,
    MetricsSnapshot,
)
from agent.qrm.cpu import CPUPolicy
from agent.qrm.server import PluginServer
from agent.sysadvisor.advisor import Advisor
from agent.sysadvisor.types import SHARE_REGION, AdvisorInput, Plan, RegionInput, dedicated_region
from katalyst.cgroup import CgroupDriver, CgroupError
from katalyst.clock import Clock, first_of
from katalyst.config.sysadvisor import AdvisorConfig
from katalyst.cpuset import CPUSet
from katalyst.qos import QoSLevel

log = logging.getLogger(__name__)

CFS_PERIOD_US = 100_000
"""The reclaimed cgroup's CFS period (the kernel's default)."""


def _allocatable(pools: Mapping[str, CPUSet]) -> CPUSet:
    """CPUs neither reserved nor dedicated (empty when shared pods fall back to the
    reserve because dedicated pods took everything)."""
    reserve = pools.get("reserve", CPUSet.of([]))
    free = pools.get("share", CPUSet.of([])).union(pools.get("reclaim", CPUSet.of([])))
    return free.difference(reserve)


ServiceTargets = Callable[[Sequence[ContainerRef]], Mapping[str, float]]
"""A region's containers -> the indicator targets service-level overrides set for it."""


def build_input(
    snapshot: MetricsSnapshot | None,
    *,
    pools: Mapping[str, CPUSet],
    fresh: bool,
    reclaimed_idle: bool = False,
    service_targets: ServiceTargets | None = None,
) -> AdvisorInput:
    """One period's input: the share region, a region per dedicated pod, the node.

    Usage is the containers' CPU rate summed; the scheduler wait is the run-queue
    delay of the region's tasks over the period, per scheduling event (timeslice);
    PSI is the worst of the region's cgroups where the kernel offers per-cgroup PSI
    (never the node's: it counts the reclaimed pods' own waiting). A region whose
    containers all have no rates yet (their first reading) has no usage.
    """
    share = _allocatable(pools)
    cpus: dict[str, float] = {SHARE_REGION: float(len(share))}
    kinds: dict[str, str] = {SHARE_REGION: "share"}
    members: dict[str, list[ContainerSample]] = {SHARE_REGION: []}
    if snapshot is not None:
        for sample in snapshot.containers.values():
            level = sample.ref.qos_level
            if level == str(QoSLevel.SHARED_CORES):
                region = SHARE_REGION
            elif level == str(QoSLevel.DEDICATED_CORES) and sample.ref.pod_uid:
                region = dedicated_region(sample.ref.pod_uid)
                held = pools.get(region)
                cpus[region] = float(len(held)) if held is not None else 0.0
                kinds[region] = "dedicated"
                members.setdefault(region, [])
            else:
                continue
            members[region].append(sample)
    regions = []
    for name, samples in members.items():
        built = _region(name, kinds[name], cpus[name], samples)
        if service_targets is not None and samples:
            targets = service_targets([s.ref for s in samples])
            if targets:
                built = dataclasses.replace(built, targets=dict(targets))
        regions.append(built)
    memory = _memory_allocatable(snapshot)
    return AdvisorInput(
        at=snapshot.at if snapshot is not None else 0.0,
        fresh=fresh and snapshot is not None,
        allocatable_cpus=float(len(share)),
        memory_allocatable=memory,
        regions=tuple(regions),
        reclaimed_idle=reclaimed_idle,
    )


def _memory_allocatable(snapshot: MetricsSnapshot | None) -> int:
    """Memory the pods may use: MemTotal less what is held outside the share and
    dedicated regions and the reclaimed pods (the kernel, node daemons, the
    ``system_cores`` pods). That is the node's used memory (MemTotal -
    MemAvailable) less every pod's working set; the system pods' own working sets
    are taken off too. 0 (unknown) without MemTotal."""
    if snapshot is None or snapshot.node.memory_total_bytes is None:
        return 0
    total = snapshot.node.memory_total_bytes
    available = snapshot.node.memory_available_bytes
    if available is None:
        return total
    pods = 0
    system = 0
    for sample in snapshot.containers.values():
        used = sample.metrics.counters.memory_in_use
        pods += used
        if sample.ref.qos_level == str(QoSLevel.SYSTEM_CORES):
            system += used
    outside = max(0, (total - available) - pods)
    return max(0, total - outside - system)


def _region(
    name: str,
    kind: str,
    cpus: float,
    typed: list[ContainerSample],
) -> RegionInput:
    requests = sum(s.ref.cpu_request for s in typed)
    rated = [s for s in typed if s.metrics.rates is not None]
    usage: float | None = None
    wait: float | None = None
    # Containers on their first reading have no rates yet: the region is read from
    # the others (a container starting every period must not blank the region),
    # and is unknown only when none has rates while some exist.
    if rated or not typed:
        usage = sum(s.metrics.rates.cpu_cores for s in rated if s.metrics.rates)
        # The average wait per scheduling event (the kernel's schedstat
        # run_delay / pcount), not per task: a service that starts a thread per
        # request has few threads alive at any instant but all their waits in the
        # period, and a per-task average would blame it for its own churn.
        valid = [
            s.metrics.rates for s in rated if s.metrics.rates and s.metrics.rates.schedstat_valid
        ]
        delay = sum(r.run_delay_us_per_s for r in valid)
        slices = sum(r.timeslices_per_s for r in valid)
        threads = sum(s.metrics.counters.tasks for s in rated)
        if slices > 0:
            wait = delay / slices
        elif typed and threads == 0:
            wait = None  # no thread could be read (no host /proc?): unknown, not 0
        else:
            wait = 0.0
    pressures = [
        s.metrics.counters.cpu_pressure.some.avg10
        for s in typed
        if s.metrics.counters.cpu_pressure is not None
    ]
    # Only the region's own cgroups: the node's PSI counts the reclaimed pods'
    # waiting too, and would make them throttle themselves for their own contention.
    psi = max(pressures) if pressures else None
    working = [s.metrics.counters.memory_working_set for s in typed]
    working_set = sum(w for w in working if w is not None) if None not in working else None
    return RegionInput(
        name=name,
        kind="share" if kind == "share" else "dedicated",
        cpus=cpus,
        requests_cpu=requests,
        usage_cores=usage,
        sched_wait_us=wait,
        psi_some_avg10=psi,
        memory_working_set=working_set,
    )


@dataclass(frozen=True, slots=True)
class Decision:
    """One period of the loop: what it read, what it decided, how long it took."""

    input: AdvisorInput
    plan: Plan
    duration_s: float
    reclaimed_cgroup: str | None


class AdvisorLoop:
    """Runs the advisor every period and applies its plans; see the module docstring."""

    def __init__(
        self,
        advisor: Advisor,
        *,
        metrics: MetricsLoop,
        cpu: CPUPolicy,
        cpu_server: PluginServer,
        driver: CgroupDriver,
        reclaimed_cgroup: Callable[[], str | None],
        clock: Clock,
        heartbeat: HeartbeatSink | None = None,
    ) -> None:
        self._advisor = advisor
        self._metrics = metrics
        self._cpu = cpu
        self._server = cpu_server
        self._driver = driver
        self._reclaimed = reclaimed_cgroup
        self._clock = clock
        self._heartbeat = heartbeat
        self.service_targets: ServiceTargets | None = None
        """Service-level indicator targets per region (the dynamic config sets it;
        None: the configured targets everywhere)."""
        self._pending: tuple[AdvisorConfig, bool] | None = None
        self._pending_lock = threading.Lock()
        self.latest: Decision | None = None
        """The last period's decision (None before the first)."""
        self.writes: Counter[tuple[str, str]] = Counter()
        """(setting, outcome) -> count: outcome ``changed``, ``unchanged`` or ``failed``."""
        self._last_mode = "normal"
        self._resumed = False

    @property
    def config(self) -> AdvisorConfig:
        """The settings in force (or those the next period takes up)."""
        with self._pending_lock:
            pending = self._pending
        return pending[0] if pending is not None else self._advisor.config

    @property
    def reclaim_enabled(self) -> bool:
        """Whether anything is lent (or will be from the next period)."""
        with self._pending_lock:
            pending = self._pending
        return pending[1] if pending is not None else self._advisor.reclaim_enabled

    def configure(self, config: AdvisorConfig, *, reclaim_enabled: bool = True) -> None:
        """Decide with ``config`` from the next period on, lending nothing while
        ``reclaim_enabled`` is false (see :meth:`Advisor.configure` for what the
        controllers keep). Safe from any thread; a later call before that period
        replaces an earlier one. Raises :class:`ConfigError` naming the field for
        an invalid ``config``, changing nothing."""
        config.check()
        with self._pending_lock:
            self._pending = (config, reclaim_enabled)

    def _take_pending(self) -> None:
        with self._pending_lock:
            pending, self._pending = self._pending, None
        if pending is None:
            return
        config, enabled = pending
        fresh = self._advisor.configure(config)
        if enabled != self._advisor.reclaim_enabled:
            log.info(
                "sysadvisor: reclaim switched %s",
                "on: the lend ramps up from the floor" if enabled else "off: nothing is lent",
            )
        self._advisor.reclaim_enabled = enabled
        if fresh:
            log.info(
                "sysadvisor: new settings: the %s controllers start afresh (or are gone)",
                ", ".join(fresh),
            )

    async def run(self, stop: asyncio.Event) -> None:
        """One decision per metrics snapshot until ``stop`` is set."""
        snapshot: MetricsSnapshot | None = None
        while not stop.is_set():
            period = self.config.period_s
            waiter = asyncio.ensure_future(self._metrics.next_snapshot(snapshot))
            # A snapshot, stop, or two periods without one (then a stale decision).
            await first_of(waiter, stop, self._clock.sleep(2 * period))
            if stop.is_set():
                return
            failed = waiter.done() and not waiter.cancelled() and waiter.exception() is not None
            fresh = waiter.done() and not waiter.cancelled() and not failed
            if fresh:
                snapshot = waiter.result()
            elif failed:
                # The metrics loop ended: decide on stale input once a period, not
                # in a busy loop.
                await first_of(stop, self._clock.sleep(period))
            await self.step(snapshot, fresh=fresh)

    async def step(self, snapshot: MetricsSnapshot | None, *, fresh: bool = True) -> Plan:
        """Decide from ``snapshot`` and apply; the plan."""
        started = time.perf_counter()
        self._take_pending()
        cgroup = self._reclaimed()
        inp = build_input(
            snapshot,
            pools=self._cpu.pools(),
            fresh=fresh,
            reclaimed_idle=self._is_idle(cgroup),
            service_targets=self.service_targets,
        )
        if not self._resumed:
            self._resumed = True
            self._resume(cgroup)
        plan = self._advisor.advise(inp)
        await self._apply(plan, cgroup, memory_known=inp.fresh and inp.memory_allocatable > 0)
        self.latest = Decision(inp, plan, time.perf_counter() - started, cgroup)
        if plan.mode != self._last_mode:
            if plan.mode == "disabled":
                why = "reclaim switched off"
            else:
                why = ", ".join(plan.breaches) or f"{plan.stale_periods} stale periods"
            log.warning(
                "sysadvisor: %s mode (%s); reclaimed CPU %.2f", plan.mode, why, plan.reclaim_cpus
            )
            self._last_mode = plan.mode
        if self._heartbeat is not None:
            self._heartbeat.beat(self._clock.monotonic())
        return plan

    def _is_idle(self, cgroup: str | None) -> bool:
        """Whether the reclaimed pods' parent runs SCHED_IDLE (``cpu.idle`` is 1)."""
        if cgroup is None:
            return False
        try:
            text = self._driver.fs.read_text(self._driver.path("cpu", cgroup, "cpu.idle"))
        except (CgroupError, OSError):
            return False  # no cpu.idle on this kernel, or the cgroup is gone
        return text.strip() == "1"

    def _resume(self, cgroup: str | None) -> None:
        """After a restart, ramp from the quota the reclaimed pods already have."""
        if cgroup is None:
            return
        try:
            quota, period = self._driver.cpu_quota(cgroup)
        except CgroupError:
            return
        if quota is not None and period > 0:
            self._advisor.resume(quota / period)
            log.info("sysadvisor: resuming from the reclaimed quota, %.2f CPUs", quota / period)

    async def _apply(self, plan: Plan, cgroup: str | None, *, memory_known: bool) -> None:
        size = plan.reclaim_pool_size
        if self._cpu.reclaim_size != size:
            await self._server.update("sysadvisor", lambda: self._cpu.set_reclaim_size(size))
            self.writes["reclaim_pool", "changed"] += 1
        if cgroup is None:
            return  # no reclaimed pod yet: nothing to throttle
        self._write(
            "cpu_quota",
            lambda: self._driver.set_cpu_quota(
                cgroup, quota_us=plan.quota_us(CFS_PERIOD_US), period_us=CFS_PERIOD_US
            ),
        )
        if not memory_known:
            # No MemTotal this period (no snapshot yet, a stale one): the plan's
            # limit would be the floor, which can OOM-kill every reclaimed pod.
            return
        # The kernel keeps limits in whole pages; writing the rounded value keeps
        # read-compare-write from seeing a change every period.
        page = self._driver.fs.page_size
        limit = plan.reclaim_memory_limit - plan.reclaim_memory_limit % page
        self._write("memory_limit", lambda: self._driver.set_memory_limit(cgroup, limit))

    def _write(self, setting: str, write: Callable[[], bool]) -> None:
        try:
            changed = write()
        except CgroupError as exc:
            self.writes[setting, "failed"] += 1
            log.warning("sysadvisor: cannot set the reclaimed %s: %s", setting, exc)
            return
        self.writes[setting, "changed" if changed else "unchanged"] += 1
