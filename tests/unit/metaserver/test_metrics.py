"""Metrics collection on the fake cgroup filesystem with a fake /proc, in virtual time."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.metaserver.metrics import MetricsCollector, read_run_delay_ns
from katalyst.cgroup import open_driver
from katalyst.cgroup.fake import FakeCgroupFS
from katalyst.clock import FakeClock


def _schedstat(proc: Path, pid: int, tids_delays: dict[int, int]) -> None:
    for tid, delay in tids_delays.items():
        d = proc / str(pid) / "task" / str(tid)
        d.mkdir(parents=True, exist_ok=True)
        (d / "schedstat").write_text(f"123 {delay} 4\n")


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


def test_a_vanished_cgroup_is_left_out(tmp_path: Path) -> None:
    driver = open_driver(FakeCgroupFS.v2(), base="kqos")
    driver.create("a")
    collector = MetricsCollector(driver, clock=FakeClock(), proc_root=str(tmp_path))
    got = collector.collect({"a": "a", "gone": "gone"})
    assert set(got) == {"a"}
    assert got["a"].counters.cpu_pressure is not None
