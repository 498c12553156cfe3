"""The sysadvisor's I/O side: regions built from a metrics snapshot and the CPU pools,
and a plan applied to the CPU plugin (through its real server) and to the reclaimed
cgroup (a file-faithful fake)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

import pytest

from agent.metaserver.metrics import (
    ContainerMetrics,
    ContainerRef,
    ContainerSample,
    Counters,
    MetricsCollector,
    MetricsLoop,
    MetricsSnapshot,
    NodeMetrics,
    Rates,
)
from agent.qrm.cpu import CPUPolicy
from agent.qrm.server import PluginServer
from agent.sysadvisor import Advisor, AdvisorConfig
from agent.sysadvisor.loop import AdvisorLoop, build_input
from agent.sysadvisor.metrics import AdvisorCollector, status
from katalyst.cgroup import CgroupDriver, Pressure, open_driver
from katalyst.cgroup.driver import PressureLine
from katalyst.cgroup.fake import FakeCgroupFS
from katalyst.clock import FakeClock
from katalyst.cpuset import CPUSet
from katalyst.topology import read_cpu_topology
from tests.unit.qrm.cpu.machines import write_flat_machine

GiB = 1024**3


def psi(avg10: float) -> Pressure:
    line = PressureLine(avg10=avg10, avg60=0.0, avg300=0.0, total_us=0)
    return Pressure(some=line, full=None, scope="cgroup")


def sample(
    name: str,
    level: str,
    *,
    uid: str = "",
    request: float = 0.0,
    cores: float | None = 0.5,
    delay_us_per_s: float = 0.0,
    slices_per_s: float = 0.0,
    tasks: int = 1,
    pressure: float | None = None,
    working_set: int | None = 100,
) -> ContainerSample:
    ref = ContainerRef(
        namespace="default",
        pod=name,
        container="c",
        qos_level=level,
        cgroup=f"{name}/c",
        pod_uid=uid,
        cpu_request=request,
    )
    counters = Counters(
        at=1.0,
        cpu_usage_ns=0,
        nr_periods=0,
        nr_throttled=0,
        throttled_ns=0,
        run_delay_ns=0,
        memory_usage=working_set or 0,
        cpu_pressure=psi(pressure) if pressure is not None else None,
        tasks=tasks,
        memory_working_set=working_set,
    )
    rates = (
        Rates(
            cpu_cores=cores,
            throttled_ratio=0.0,
            run_delay_us_per_s=delay_us_per_s,
            timeslices_per_s=slices_per_s,
        )
        if cores is not None
        else None
    )
    return ContainerSample(ref, ContainerMetrics(counters, rates))


def snapshot(*samples: ContainerSample, node_psi: float | None = 3.0) -> MetricsSnapshot:
    node = NodeMetrics(
        cpus=8,
        cpu_usage_cores=1.0,
        memory_total_bytes=16 * GiB,
        memory_available_bytes=8 * GiB,
        cpu_pressure=psi(node_psi) if node_psi is not None else None,
        memory_pressure=None,
        io_pressure=None,
    )
    return MetricsSnapshot(
        seq=1,
        at=10.0,
        containers=MappingProxyType({s.ref.key: s for s in samples}),
        node=node,
    )


POOLS = {
    "reserve": CPUSet.parse("0"),
    "share": CPUSet.parse("1-5"),
    "reclaim": CPUSet.parse("1-5"),
    "dedicated/ded-1": CPUSet.parse("6-7"),
}


def test_regions_come_from_the_levels_and_the_pools() -> None:
    snap = snapshot(
        sample("web", "shared_cores", request=1.0, cores=0.75, delay_us_per_s=1000, slices_per_s=8),
        sample("api", "shared_cores", request=0.5, cores=0.25, delay_us_per_s=200, slices_per_s=2),
        sample("db", "dedicated_cores", uid="ded-1", request=2.0, cores=1.5, pressure=7.0),
        sample("batch", "reclaimed_cores", cores=3.0),
        sample("daemon", "system_cores", cores=0.1),
    )
    inp = build_input(snap, pools=POOLS, fresh=True)
    assert inp.allocatable_cpus == 5.0  # 1-5: neither reserved nor dedicated
    # 8 GiB used on the node, of which the pods' working sets are 500 bytes (the
    # system pod's 100 among them): the rest is the kernel's and the daemons'.
    assert inp.memory_allocatable == 16 * GiB - (8 * GiB - 500) - 100
    by_name = {r.name: r for r in inp.regions}
    assert set(by_name) == {"share", "dedicated/ded-1"}
    share = by_name["share"]
    assert share.usage_cores == pytest.approx(1.0)
    assert share.requests_cpu == pytest.approx(1.5)
    assert share.cpus == 5.0
    # (1000 + 200) µs of waiting per second over (8 + 2) timeslices per second.
    assert share.sched_wait_us == pytest.approx(1200 / 10)
    assert share.psi_some_avg10 is None  # no cgroup PSI; never the node's
    assert share.memory_working_set == 200
    dedicated = by_name["dedicated/ded-1"]
    assert dedicated.cpus == 2.0
    assert dedicated.psi_some_avg10 == 7.0  # the cgroup's own PSI wins


def test_a_container_on_its_first_reading_leaves_the_region_to_the_others() -> None:
    snap = snapshot(
        sample("web", "shared_cores", cores=0.5), sample("new", "shared_cores", cores=None)
    )
    (share,) = build_input(snap, pools=POOLS, fresh=True).regions
    assert share.usage_cores == 0.5  # a container starting every period must not blank it
    only_new = snapshot(sample("new", "shared_cores", cores=None))
    (share,) = build_input(only_new, pools=POOLS, fresh=True).regions
    assert share.usage_cores is None
    assert share.sched_wait_us is None


def test_no_readable_thread_is_an_unknown_wait_not_zero() -> None:
    snap = snapshot(sample("web", "shared_cores", cores=0.5, tasks=0))
    (share,) = build_input(snap, pools=POOLS, fresh=True).regions
    assert share.sched_wait_us is None
    assert share.usage_cores == 0.5


def test_no_snapshot_is_a_stale_input_with_an_empty_share_region() -> None:
    inp = build_input(None, pools=POOLS, fresh=True)
    assert not inp.fresh
    assert [r.name for r in inp.regions] == ["share"]


@pytest.fixture
async def cpu_server(
    tmp_path: Path, short_dir: Path
) -> AsyncIterator[tuple[CPUPolicy, PluginServer]]:
    sysfs = write_flat_machine(tmp_path / "sys", cpus=8)
    cpu = CPUPolicy(topology=read_cpu_topology(str(sysfs)), reserved=CPUSet.parse("0"))
    async with PluginServer(cpu, socket_dir=short_dir, clock=FakeClock()) as server:
        yield cpu, server


def advisor_loop(
    cpu: CPUPolicy, server: PluginServer, driver: CgroupDriver, clock: FakeClock
) -> AdvisorLoop:
    metrics = MetricsLoop(MetricsCollector(driver, clock=clock), list, clock=clock)
    return AdvisorLoop(
        Advisor(AdvisorConfig()),
        metrics=metrics,
        cpu=cpu,
        cpu_server=server,
        driver=driver,
        reclaimed_cgroup=lambda: "reclaimed" if driver.exists("reclaimed") else None,
        clock=clock,
    )


async def test_a_plan_reaches_the_reclaim_pool_and_the_reclaimed_cgroup(
    cpu_server: tuple[CPUPolicy, PluginServer],
) -> None:
    cpu, server = cpu_server
    driver = open_driver(FakeCgroupFS.hybrid(cpus="0-7"))
    driver.create("reclaimed")
    clock = FakeClock()
    loop = advisor_loop(cpu, server, driver, clock)
    idle = snapshot(sample("web", "shared_cores", request=1.0, cores=0.3))
    plans = [await loop.step(idle) for _ in range(12)]
    last = plans[-1]
    assert last.mode == "normal"
    assert last.reclaim_cpus > plans[0].reclaim_cpus  # ramped up, step by step
    quota, period = driver.cpu_quota("reclaimed")
    assert (quota, period) == (last.quota_us(100_000), 100_000)
    page = driver.fs.page_size
    assert driver.memory_limit("reclaimed") == last.reclaim_memory_limit // page * page
    writes = loop.writes["memory_limit", "changed"]
    await loop.step(idle)
    assert loop.writes["memory_limit", "changed"] == writes  # nothing new to write
    assert cpu.reclaim_size == last.reclaim_pool_size
    pools = cpu.pools()
    if last.reclaim_pool_size:
        assert len(pools["reclaim"]) == last.reclaim_pool_size
        assert not pools["reclaim"].intersection(pools["share"])
    else:
        assert pools["reclaim"] == pools["share"]
    assert loop.writes["cpu_quota", "changed"] >= 1

    busy = snapshot(sample("web", "shared_cores", request=1.0, cores=6.5))
    plan = await loop.step(busy)
    assert plan.mode == "safety"
    assert plan.reclaim_cpus == 0.0
    assert driver.cpu_quota("reclaimed")[0] == 1000  # the kernel's minimum quota
    text = status(loop)
    assert text["sysadvisor"]["mode"] == "safety"  # type: ignore[index]
    families = {m.name for m in AdvisorCollector(loop).collect()}
    assert {"katalyst_sysadvisor_pid_term", "katalyst_sysadvisor_reclaim_cpus"} <= families


async def test_without_a_reclaimed_cgroup_only_the_pool_is_set(
    cpu_server: tuple[CPUPolicy, PluginServer],
) -> None:
    cpu, server = cpu_server
    driver = open_driver(FakeCgroupFS.hybrid(cpus="0-7"))
    loop = advisor_loop(cpu, server, driver, FakeClock())
    await loop.step(snapshot(sample("web", "shared_cores", cores=0.1)))
    assert not driver.exists("reclaimed")
    assert loop.latest is not None and loop.latest.reclaimed_cgroup is None


async def test_without_snapshots_the_loop_decides_on_stale_input_every_two_periods(
    cpu_server: tuple[CPUPolicy, PluginServer],
) -> None:
    cpu, server = cpu_server
    driver = open_driver(FakeCgroupFS.hybrid(cpus="0-7"))
    clock = FakeClock()
    loop = advisor_loop(cpu, server, driver, clock)  # its metrics loop never runs
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    try:
        for _ in range(20):
            await asyncio.sleep(0)
        assert loop.latest is None  # nothing decided before two periods pass
        await clock.advance(2.0)
        for _ in range(20):
            await asyncio.sleep(0)
        assert loop.latest is not None
        assert not loop.latest.input.fresh
        assert loop.latest.plan.stale_periods == 1
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=5)


async def test_a_restart_resumes_from_the_reclaimed_quota_and_unknown_memory_is_not_written(
    cpu_server: tuple[CPUPolicy, PluginServer],
) -> None:
    cpu, server = cpu_server
    driver = open_driver(FakeCgroupFS.hybrid(cpus="0-7"))
    driver.create("reclaimed")
    driver.set_cpu_quota("reclaimed", quota_us=300_000, period_us=100_000)  # 3 CPUs lent
    loop = advisor_loop(cpu, server, driver, FakeClock())
    # A stale first period (no snapshot yet): no MemTotal, so no memory limit.
    stale = await loop.step(None, fresh=False)
    assert driver.memory_limit("reclaimed") is None
    assert stale.reclaim_cpus <= 3.0  # may go down, never up, on stale input
    loop = advisor_loop(cpu, server, driver, FakeClock())
    driver.set_cpu_quota("reclaimed", quota_us=300_000, period_us=100_000)
    plan = await loop.step(snapshot(sample("web", "shared_cores", request=1.0, cores=0.3)))
    # Ramped from the 3 CPUs the pods already had, not from the floor (0).
    assert plan.reclaim_cpus == pytest.approx(3.0 + 0.5)
    assert driver.memory_limit("reclaimed") is not None


async def test_the_loop_tells_the_advisor_when_the_reclaimed_pods_run_sched_idle(
    cpu_server: tuple[CPUPolicy, PluginServer],
) -> None:
    cpu, server = cpu_server
    driver = open_driver(FakeCgroupFS.hybrid(cpus="0-7"))
    driver.create("reclaimed")
    loop = advisor_loop(cpu, server, driver, FakeClock())
    busy = snapshot(sample("web", "shared_cores", request=1.0, cores=0.3))
    await loop.step(busy)
    assert loop.latest is not None and not loop.latest.input.reclaimed_idle
    driver.set_cpu_idle("reclaimed", True)
    plan = await loop.step(busy)
    assert loop.latest.input.reclaimed_idle
    (usage,) = [t for t in plan.trace if t.indicator == "cpu_usage_ratio"]
    assert usage.target == 0.75


def test_service_targets_are_asked_per_region_with_its_containers() -> None:
    snap = snapshot(
        sample("web", "shared_cores", cores=0.5),
        sample("db", "dedicated_cores", uid="ded-1", cores=1.0),
    )
    asked: list[list[str]] = []

    def targets(refs: Sequence[ContainerRef]) -> Mapping[str, float]:
        asked.append(sorted(r.pod for r in refs))
        return {"cpu_usage_ratio": 0.4} if any(r.pod == "web" for r in refs) else {}

    inp = build_input(snap, pools=POOLS, fresh=True, service_targets=targets)
    by_name = {r.name: r for r in inp.regions}
    assert by_name["share"].targets == {"cpu_usage_ratio": 0.4}
    assert by_name["dedicated/ded-1"].targets == {}
    assert sorted(asked) == [["db"], ["web"]]
