"""``/metrics``' per-container and node series, served from the metrics loop's snapshot.

The loop runs on a fake v1 host with a fake /proc, in virtual time; the output is
what a Prometheus scrape of a fresh registry gets.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agent import observability
from agent.metaserver import metrics
from agent.metaserver.metrics import ContainerRef, MetricsCollector, MetricsLoop
from agent.observability import ContainerCollector
from katalyst.cgroup import open_driver
from katalyst.cgroup.fake import FakeCgroupFS
from katalyst.clock import FakeClock

APP = ContainerRef("default", "web", "app", "shared_cores", "podweb/app")
APP_LABELS = (
    ("container", "app"),
    ("namespace", "default"),
    ("pod", "web"),
    ("qos_level", "shared_cores"),
)
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Host:
    def __init__(self, proc: Path) -> None:
        self.fs = FakeCgroupFS.v1()
        self.driver = open_driver(self.fs, base="kqos")
        self.driver.create(APP.cgroup)
        self.fs.add_process(10)
        self.driver.attach(APP.cgroup, 10)
        self.usage = self.driver.path("cpuacct", APP.cgroup, "cpuacct.usage")
        self.fs.set_stat(self.usage, "2500000000")
        self.fs.set_stat(
            self.driver.path("cpu", APP.cgroup, "cpu.stat"),
            "nr_periods 40\nnr_throttled 3\nthrottled_time 9\n",
        )
        self.fs.set_stat(self.driver.path("memory", APP.cgroup, "memory.usage_in_bytes"), "4096")
        task = proc / "10" / "task" / "10"
        task.mkdir(parents=True)
        (task / "schedstat").write_text("1 1500000000 3\n")
        (proc / "stat").write_text("cpu  100 0 0 300 0 0 0 0 0 0\ncpu0 0\ncpu1 0\n")
        (proc / "meminfo").write_text("MemTotal: 2048 kB\nMemAvailable: 1024 kB\n")
        (proc / "pressure").mkdir()
        (proc / "pressure" / "cpu").write_text(
            "some avg10=25.00 avg60=0.00 avg300=0.00 total=1500000\n"
        )
        (proc / "pressure" / "memory").write_text(
            "some avg10=2.00 avg60=0.00 avg300=0.00 total=10\n"
            "full avg10=1.00 avg60=0.00 avg300=0.00 total=5\n"
        )
        self.proc = proc
        self.clock = FakeClock()
        self.containers = [APP]
        self.loop = MetricsLoop(
            MetricsCollector(self.driver, clock=self.clock, proc_root=str(proc)),
            lambda: self.containers,
            clock=self.clock,
        )
        self.registry = CollectorRegistry()
        self.registry.register(ContainerCollector(loop=self.loop))

    def scrape(self) -> Samples:
        text = generate_latest(self.registry).decode()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }


@pytest.fixture
async def host(tmp_path: Path) -> AsyncIterator[Host]:
    host = Host(tmp_path)
    stop = asyncio.Event()
    await host.clock.advance(3.0)  # the agent has been up 3 s when the loop starts
    task = asyncio.create_task(host.loop.run(stop))
    try:
        yield host
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=5)


async def test_the_scrape_serves_the_snapshot_not_the_files(host: Host) -> None:
    first = await asyncio.wait_for(host.loop.next_snapshot(None), timeout=5)
    host.fs.set_stat(host.usage, "9000000000")  # read by the next pass, not by a scrape
    samples = host.scrape()
    assert samples["katalyst_container_cpu_usage_seconds_total", APP_LABELS] == 2.5
    assert samples["katalyst_container_cpu_throttled_periods_total", APP_LABELS] == 3
    assert samples["katalyst_container_run_delay_seconds_total", APP_LABELS] == 1.5
    assert samples["katalyst_container_memory_usage_bytes", APP_LABELS] == 4096
    await host.clock.advance(1.0)
    await asyncio.wait_for(host.loop.next_snapshot(first), timeout=5)
    assert host.scrape()["katalyst_container_cpu_usage_seconds_total", APP_LABELS] == 9.0


async def test_a_container_gone_from_the_snapshot_is_gone_from_the_scrape(host: Host) -> None:
    first = await asyncio.wait_for(host.loop.next_snapshot(None), timeout=5)
    host.containers = []
    assert ("katalyst_container_memory_usage_bytes", APP_LABELS) in host.scrape()
    await host.clock.advance(1.0)
    await asyncio.wait_for(host.loop.next_snapshot(first), timeout=5)
    names = {name for name, _ in host.scrape()}
    assert not any(name.startswith("katalyst_container_") for name in names)


async def test_node_gauges(host: Host) -> None:
    first = await asyncio.wait_for(host.loop.next_snapshot(None), timeout=5)
    samples = host.scrape()
    assert ("katalyst_node_cpu_usage_cores", ()) not in samples  # needs two passes
    assert samples["katalyst_node_cpus", ()] == 2
    assert samples["katalyst_node_memory_total_bytes", ()] == 2048 * 1024
    assert samples["katalyst_node_memory_available_bytes", ()] == 1024 * 1024
    pressure = {
        labels: value
        for (name, labels), value in samples.items()
        if name == "katalyst_node_pressure_avg10_ratio"
    }
    assert pressure == {
        (("kind", "some"), ("resource", "cpu")): 0.25,
        (("kind", "some"), ("resource", "memory")): 0.02,
        (("kind", "full"), ("resource", "memory")): 0.01,
    }  # no io file here, no io series; no full line for cpu, no full series
    stalled = (("kind", "some"), ("resource", "cpu"))
    assert samples["katalyst_node_pressure_stalled_seconds_total", stalled] == 1.5
    (host.proc / "stat").write_text("cpu  300 0 0 400 0 0 0 0 0 0\ncpu0 0\ncpu1 0\n")
    await host.clock.advance(1.0)
    await asyncio.wait_for(host.loop.next_snapshot(first), timeout=5)
    # 200 busy of 300 ticks on 2 CPUs.
    assert host.scrape()["katalyst_node_cpu_usage_cores", ()] == pytest.approx(4 / 3)


async def test_snapshot_age(tmp_path: Path) -> None:
    host = Host(tmp_path)
    await host.clock.advance(3.0)
    # No pass yet: the age counts from when the loop was made, so a loop that
    # never produces shows up as stale.
    assert host.scrape() == {
        ("katalyst_metrics_snapshot_age_seconds", ()): 3.0,
        ("katalyst_metrics_failed_passes_total", ()): 0.0,
    }
    stop = asyncio.Event()
    task = asyncio.create_task(host.loop.run(stop))
    try:
        await asyncio.wait_for(host.loop.next_snapshot(None), timeout=5)
        assert host.scrape()["katalyst_metrics_snapshot_age_seconds", ()] == 0.0
        assert ("katalyst_metrics_pass_duration_seconds", ()) in host.scrape()
        await host.clock.advance(0.75)
        assert host.scrape()["katalyst_metrics_snapshot_age_seconds", ()] == 0.75
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=5)
    await host.clock.advance(10.0)  # a stopped loop: the age keeps growing
    assert host.scrape()["katalyst_metrics_snapshot_age_seconds", ()] == 10.75


def test_container_ref_is_still_importable_from_observability() -> None:
    assert observability.ContainerRef is metrics.ContainerRef
