"""Metrics collection on the fake cgroup filesystem with a fake /proc, in virtual time."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.metaserver.metrics import (
    ContainerRef,
    MetricsCollector,
    MetricsLoop,
    MetricsLoopStopped,
    MetricsSnapshot,
    parse_proc_stat,
    read_run_delay_ns,
)
from katalyst.cgroup import open_driver
from katalyst.cgroup.fake import FakeCgroupFS
from katalyst.clock import FakeClock


def _schedstat(proc: Path, pid: int, tids_delays: dict[int, int], *, slices: int = 4) -> None:
    for tid, delay in tids_delays.items():
        d = proc / str(pid) / "task" / str(tid)
        d.mkdir(parents=True, exist_ok=True)
        (d / "schedstat").write_text(f"123 {delay} {slices}\n")


def test_run_delay_sums_every_thread_and_skips_vanished_ones(tmp_path: Path) -> None:
    _schedstat(tmp_path, 10, {10: 1000, 11: 500})
    _schedstat(tmp_path, 20, {20: 7})
    (tmp_path / "20" / "task" / "21").mkdir()  # a thread that exited mid-read
    assert read_run_delay_ns([10, 20, 30], proc_root=str(tmp_path)) == 1507


async def test_rates_from_two_collections(tmp_path: Path) -> None:
    fs = FakeCgroupFS.v1()
    driver = open_driver(fs, base="kqos")
    driver.create("pod/app")
    fs.add_process(10)
    driver.attach("pod/app", 10)
    clock = FakeClock()
    collector = MetricsCollector(driver, clock=clock, proc_root=str(tmp_path))
    usage = driver.path("cpuacct", "pod/app", "cpuacct.usage")
    cpustat = driver.path("cpu", "pod/app", "cpu.stat")
    fs.set_stat(usage, "1000000000")
    fs.set_stat(cpustat, "nr_periods 10\nnr_throttled 1\nthrottled_time 5\n")
    _schedstat(tmp_path, 10, {10: 0})
    first = collector.collect({"pod/app": "pod/app"})
    assert first["pod/app"].rates is None
    await clock.advance(2.0)
    fs.set_stat(usage, "4000000000")  # 3 CPU-seconds in 2 s
    fs.set_stat(cpustat, "nr_periods 30\nnr_throttled 6\nthrottled_time 50\n")
    _schedstat(tmp_path, 10, {10: 4_000_000})  # 4 ms of waiting
    second = collector.collect({"pod/app": "pod/app"})["pod/app"]
    assert second.rates is not None
    assert second.rates.cpu_cores == pytest.approx(1.5)
    assert second.rates.throttled_ratio == pytest.approx(5 / 20)
    assert second.rates.run_delay_us_per_s == pytest.approx(2000.0)
    assert second.rates.schedstat_valid


async def test_timeslices_and_thread_exits_and_a_restarted_container(tmp_path: Path) -> None:
    fs = FakeCgroupFS.v1()
    driver = open_driver(fs, base="kqos")
    for cgroup in ("pod/old", "pod/new"):
        driver.create(cgroup)
    fs.add_process(10)
    driver.attach("pod/old", 10)
    clock = FakeClock()
    collector = MetricsCollector(driver, clock=clock, proc_root=str(tmp_path))
    _schedstat(tmp_path, 10, {10: 1_000_000, 11: 1_000_000}, slices=10)
    collector.collect({"app": "pod/old"})
    await clock.advance(1.0)
    _schedstat(tmp_path, 10, {10: 3_000_000, 11: 2_000_000}, slices=30)
    rates = collector.collect({"app": "pod/old"})["app"].rates
    assert rates is not None
    assert rates.timeslices_per_s == pytest.approx(40.0)  # (30 + 30) - (10 + 10)
    assert rates.schedstat_valid
    # Thread 11 exits: both sums drop, the period's wait is not comparable.
    shutil.rmtree(tmp_path / "10" / "task" / "11")
    await clock.advance(1.0)
    rates = collector.collect({"app": "pod/old"})["app"].rates
    assert rates is not None and not rates.schedstat_valid
    # The container restarts: same key, a new cgroup: no rate against the old one.
    fs.add_process(20)
    driver.attach("pod/new", 20)
    _schedstat(tmp_path, 20, {20: 0})
    await clock.advance(1.0)
    assert collector.collect({"app": "pod/new"})["app"].rates is None


def test_a_vanished_cgroup_is_left_out(tmp_path: Path) -> None:
    driver = open_driver(FakeCgroupFS.v2(), base="kqos")
    driver.create("a")
    collector = MetricsCollector(driver, clock=FakeClock(), proc_root=str(tmp_path))
    got = collector.collect({"a": "a", "gone": "gone"})
    assert set(got) == {"a"}
    assert got["a"].counters.cpu_pressure is not None


# ---- the node's readings ---------------------------------------------------------------

PROC_STAT = (
    "cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\n"
    "cpu0 0 0 0 0 0 0 0 0 0 0\n"
    "cpu1 0 0 0 0 0 0 0 0 0 0\n"
    "cpu2 0 0 0 0 0 0 0 0 0 0\n"
    "cpu3 0 0 0 0 0 0 0 0 0 0\n"
    "intr 12345 0 0\n"
    "ctxt 999\n"
)
MEMINFO = "MemTotal:       16000000 kB\nMemFree:         1000000 kB\nMemAvailable:    6000000 kB\n"


def _node_files(proc: Path, *, busy: int = 0, idle: int = 0) -> None:
    (proc / "stat").write_text(PROC_STAT.format(busy=busy, idle=idle))
    (proc / "meminfo").write_text(MEMINFO)
    (proc / "pressure").mkdir(exist_ok=True)
    # CPU has no "full" line before Linux 5.13; the collector must not need one.
    (proc / "pressure" / "cpu").write_text(
        "some avg10=12.50 avg60=3.00 avg300=1.00 total=4000000\n"
    )
    (proc / "pressure" / "memory").write_text(
        "some avg10=1.00 avg60=0.50 avg300=0.10 total=700\n"
        "full avg10=0.25 avg60=0.10 avg300=0.00 total=300\n"
    )


def test_node_metrics_from_the_proc_root(tmp_path: Path) -> None:
    _node_files(tmp_path, busy=100, idle=300)  # no pressure/io: a kernel without io PSI
    collector = MetricsCollector(
        open_driver(FakeCgroupFS.v2(), base="kqos"), clock=FakeClock(), proc_root=str(tmp_path)
    )
    first = collector.collect_node()
    assert first.cpus == 4
    assert first.cpu_usage_cores is None  # a rate needs two readings
    assert first.memory_total_bytes == 16_000_000 * 1024
    assert first.memory_available_bytes == 6_000_000 * 1024
    assert first.cpu_pressure is not None and first.cpu_pressure.scope == "node"
    assert first.cpu_pressure.some.avg10 == pytest.approx(12.5)
    assert first.cpu_pressure.some.total_us == 4_000_000
    assert first.cpu_pressure.full is None
    assert first.memory_pressure is not None and first.memory_pressure.full is not None
    assert first.memory_pressure.full.avg10 == pytest.approx(0.25)
    assert first.io_pressure is None
    assert first.pressure("memory") is first.memory_pressure
    # 300 busy of 400 ticks elapsed on 4 CPUs: 3 CPUs busy on average.
    (tmp_path / "stat").write_text(PROC_STAT.format(busy=400, idle=400))
    assert collector.collect_node().cpu_usage_cores == pytest.approx(3.0)


def test_node_files_missing_or_garbled_are_none(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "pressure").mkdir()
    (tmp_path / "pressure" / "cpu").write_text("not psi\n")
    (tmp_path / "stat").write_text("intr 1\n")
    collector = MetricsCollector(
        open_driver(FakeCgroupFS.v2(), base="kqos"), clock=FakeClock(), proc_root=str(tmp_path)
    )
    for _ in range(3):
        node = collector.collect_node()
        assert node.cpus is None and node.cpu_usage_cores is None
        assert node.memory_total_bytes is None and node.memory_available_bytes is None
        assert (node.cpu_pressure, node.memory_pressure, node.io_pressure) == (None, None, None)
    garbled = [r for r in caplog.records if r.levelname == "WARNING"]
    # Each broken file is reported once, not once a period.
    assert sorted(r.getMessage().split(": ")[1] for r in garbled) == sorted(
        [str(tmp_path / "meminfo"), str(tmp_path / "pressure" / "cpu"), str(tmp_path / "stat")]
    )


@pytest.mark.parametrize(
    ("text", "busy", "total"),
    [
        # user nice system idle iowait irq softirq steal guest guest_nice
        ("cpu  10 1 2 100 5 3 4 6 7 8\ncpu0 1 1 1 1 1 1 1 1 1 1\n", 26, 131),
        # Linux 2.6.11 and older stop after softirq; steal is then 0.
        ("cpu  10 1 2 100 5 3 4\n", 20, 125),
    ],
)
def test_proc_stat_busy_and_total_ticks(text: str, busy: int, total: int) -> None:
    times = parse_proc_stat(text)
    assert (times.busy, times.total) == (busy, total)


# ---- the loop ------------------------------------------------------------------------------


class Node:
    """Two containers on a fake v1 host, with a fake /proc."""

    def __init__(self, proc: Path) -> None:
        self.proc = proc
        self.fs = FakeCgroupFS.v1()
        self.driver = open_driver(self.fs, base="kqos")
        self.refs = [
            ContainerRef("default", "web", "app", "shared_cores", "podweb/app"),
            ContainerRef("batch", "job", "burn", "reclaimed_cores", "podjob/burn"),
        ]
        for pid, ref in enumerate(self.refs, start=10):
            self.driver.create(ref.cgroup)
            self.fs.add_process(pid)
            self.driver.attach(ref.cgroup, pid)
            _schedstat(proc, pid, {pid: 0})
        _node_files(proc)
        self.clock = FakeClock()
        self.beats: list[float] = []
        self.collector = MetricsCollector(self.driver, clock=self.clock, proc_root=str(proc))

    def containers(self) -> list[ContainerRef]:
        return list(self.refs)

    def set_usage(self, ref: ContainerRef, ns: int | str) -> None:
        self.fs.set_stat(self.driver.path("cpuacct", ref.cgroup, "cpuacct.usage"), str(ns))

    def beat(self, now: float) -> None:
        self.beats.append(now)

    def loop(self, **kwargs: float) -> MetricsLoop:
        return MetricsLoop(
            self.collector, self.containers, clock=self.clock, heartbeat=self, **kwargs
        )


@pytest.fixture
def node(tmp_path: Path) -> Node:
    return Node(tmp_path)


@contextlib.asynccontextmanager
async def running(loop: MetricsLoop) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=5)


async def fresh(loop: MetricsLoop, after: MetricsSnapshot | None) -> MetricsSnapshot:
    # A real-time guard only: the loop reads in a worker thread.
    return await asyncio.wait_for(loop.next_snapshot(after), timeout=5)


async def test_the_loop_collects_once_per_period_on_a_fixed_grid(node: Node) -> None:
    loop = node.loop(period=2.0)
    assert loop.snapshot is None
    async with running(loop):
        snap = await fresh(loop, None)  # the first pass runs at once
        assert (snap.seq, snap.at) == (1, 0.0)
        assert set(snap.containers) == {"default/web/app", "batch/job/burn"}
        ref, metrics = snap.containers["default/web/app"]  # (ContainerRef, ContainerMetrics)
        assert ref == node.refs[0] and snap.containers["default/web/app"].ref is ref
        assert metrics.counters.at == 0.0
        await node.clock.advance(1.9)
        assert loop.snapshot is snap  # not due yet
        for seq in (2, 3, 4):
            await node.clock.advance(0.1 if seq == 2 else 2.0)
            snap = await fresh(loop, snap)
            assert (snap.seq, snap.at) == (seq, 2.0 * (seq - 1))
        assert node.beats == [0.0, 2.0, 4.0, 6.0]


class JumpingClock:
    """A fake clock whose time also jumps when a test says so: a pass that takes long."""

    def __init__(self, inner: FakeClock) -> None:
        self.inner = inner
        self.jumped = 0.0

    def monotonic(self) -> float:
        return self.inner.monotonic() + self.jumped

    def wall(self) -> float:
        return self.inner.wall() + self.jumped

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


async def test_a_pass_longer_than_the_period_skips_the_ticks_it_missed(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    clock = JumpingClock(node.clock)

    def slow_listing() -> list[ContainerRef]:
        if clock.jumped == 0.0:
            clock.jumped = 2.5  # the first pass takes 2.5 periods
        return node.refs

    loop = MetricsLoop(node.collector, slow_listing, clock=clock, period=1.0)
    async with running(loop):
        first = await fresh(loop, None)
        await node.clock.advance(0.4)
        assert loop.snapshot is first  # no burst of passes to catch up
        await node.clock.advance(0.1)
        second = await fresh(loop, first)
    assert (first.at, second.at) == (0.0, 3.0)  # back on the grid
    assert any("more than the period" in r.getMessage() for r in caplog.records)


async def test_rates_appear_from_the_second_pass(node: Node) -> None:
    app, burn = node.refs
    node.set_usage(app, 1_000_000_000)
    (node.proc / "stat").write_text(PROC_STAT.format(busy=0, idle=0))
    loop = node.loop()
    async with running(loop):
        first = await fresh(loop, None)
        assert first.containers[app.key].metrics.rates is None
        assert first.node.cpu_usage_cores is None
        node.set_usage(app, 1_500_000_000)  # half a CPU over one second
        (node.proc / "stat").write_text(PROC_STAT.format(busy=100, idle=300))
        await node.clock.advance(1.0)
        second = await fresh(loop, first)
    rates = second.containers[app.key].metrics.rates
    assert rates is not None and rates.cpu_cores == pytest.approx(0.5)
    assert second.containers[burn.key].metrics.rates is not None
    assert second.node.cpu_usage_cores == pytest.approx(1.0)  # a quarter of 4 CPUs


async def test_a_vanished_cgroup_leaves_the_next_snapshot(node: Node) -> None:
    app, burn = node.refs
    loop = node.loop()
    async with running(loop):
        first = await fresh(loop, None)
        assert burn.key in first.containers
        node.fs.exit_process(11)
        node.driver.remove(burn.cgroup)  # the pod went away; the listing still has it
        await node.clock.advance(1.0)
        second = await fresh(loop, first)
    assert set(second.containers) == {app.key}


async def test_a_failing_container_is_left_out_and_the_loop_goes_on(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    app, burn = node.refs
    node.set_usage(burn, "garbage")
    loop = node.loop()
    async with running(loop):
        snap = await fresh(loop, None)
        for _ in range(2):
            assert set(snap.containers) == {app.key}
            await node.clock.advance(1.0)
            snap = await fresh(loop, snap)
        node.set_usage(burn, 5)
        await node.clock.advance(1.0)
        snap = await fresh(loop, snap)
    assert set(snap.containers) == {app.key, burn.key}
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and burn.key in warnings[0].getMessage()  # once, not per pass


async def test_a_failed_pass_keeps_the_previous_snapshot_and_the_loop_goes_on(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    listings = 0

    def containers() -> list[ContainerRef]:
        nonlocal listings
        listings += 1
        if listings == 2:
            raise RuntimeError("listing broke")
        return node.refs

    loop = MetricsLoop(node.collector, containers, clock=node.clock, heartbeat=node)
    async with running(loop):
        first = await fresh(loop, None)
        await node.clock.advance(1.0)
        assert loop.snapshot is first and loop.failed_passes == 1
        assert loop.age() == 1.0
        await node.clock.advance(1.0)
        third = await fresh(loop, first)
    assert (third.seq, third.at) == (2, 2.0)
    # No beat for the failed pass: /healthz turns red if passes keep failing.
    assert node.beats == [0.0, 2.0]
    assert any("listing broke" in r.exc_text for r in caplog.records if r.exc_text)


async def test_stop_ends_the_loop_without_waiting_for_the_period(node: Node) -> None:
    loop = node.loop(period=3600.0)
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    first = await fresh(loop, None)
    waiter = asyncio.create_task(loop.next_snapshot(first))
    await asyncio.sleep(0)
    stop.set()
    await asyncio.wait_for(task, timeout=1)  # no virtual time passed
    with pytest.raises(MetricsLoopStopped):
        await asyncio.wait_for(waiter, timeout=1)
    assert node.clock.sleepers == 0


async def test_a_snapshot_never_changes(node: Node) -> None:
    app, _ = node.refs
    node.set_usage(app, 7)
    loop = node.loop()
    async with running(loop):
        first = await fresh(loop, None)
        with pytest.raises(TypeError):
            first.containers[app.key] = first.containers[app.key]  # type: ignore[index]
        with pytest.raises(dataclasses.FrozenInstanceError):
            first.seq = 9  # type: ignore[misc]
        node.set_usage(app, 11)
        await node.clock.advance(1.0)
        second = await fresh(loop, first)
    assert second is not first and loop.snapshot is second
    assert first.containers[app.key].metrics.counters.cpu_usage_ns == 7
    assert second.containers[app.key].metrics.counters.cpu_usage_ns == 11


def test_the_period_must_be_positive(node: Node) -> None:
    with pytest.raises(ValueError, match="period"):
        node.loop(period=0.0)
