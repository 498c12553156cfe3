"""The IO loop's effects, through the files the kernel would see: a file-faithful fake
cgroup filesystem (v1, hybrid and v2), a sysfs tree in a temporary directory, a
scripted pressure source and virtual time."""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from agent.isolation.io_loop import (
    BlockDevice,
    BlockDevices,
    IOLoop,
    PressureReading,
    services_pressure,
)
from agent.isolation.io_metrics import IOCollector
from agent.metaserver.metrics import ContainerRef
from agent.observability import Heartbeat
from katalyst.cgroup import CgroupDriver, IOLimit, open_driver
from katalyst.cgroup.fake import FakeCgroupFS
from katalyst.clock import FakeClock
from katalyst.config.io import IOConfig, MiB

SDA, SDB, SDA1, LOOP0 = "8:0", "8:16", "8:1", "7:0"
PSI = (
    "some avg10={:.2f} avg60=0.00 avg300=0.00 total=0\n"
    "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
)


# ---- fixtures ------------------------------------------------------------------------


def make_sysfs(root: Path) -> Path:
    """sda and sdb (hardware; sda with a partition sda1), loop0 and zram0 (virtual),
    laid out as the kernel does: /sys/block/<name>, /sys/dev/block/<maj:min> and
    /sys/class/block/<name> are links into /sys/devices."""
    disks = {
        "sda": (SDA, "mq-deadline kyber [bfq] none", True),
        "sdb": (SDB, "[none] mq-deadline", True),
        "loop0": (LOOP0, "[none]", False),
        "zram0": ("252:0", None, False),
    }
    for sub in ("devices", "block", "dev/block", "class/block"):
        (root / sub).mkdir(parents=True)
    for name, (dev, scheduler, hardware) in disks.items():
        d = root / "devices" / name
        d.mkdir()
        (d / "dev").write_text(dev + "\n")
        if scheduler is not None:
            (d / "queue").mkdir()
            (d / "queue" / "scheduler").write_text(scheduler + "\n")
        if hardware:
            (d / "device").mkdir()
        os.symlink(f"../devices/{name}", root / "block" / name)
        os.symlink(f"../../devices/{name}", root / "dev" / "block" / dev)
        os.symlink(f"../../devices/{name}", root / "class" / "block" / name)
    part = root / "devices" / "sda" / "sda1"
    part.mkdir()
    (part / "dev").write_text(SDA1 + "\n")
    (part / "partition").write_text("1\n")
    os.symlink("../../devices/sda/sda1", root / "dev" / "block" / SDA1)
    os.symlink("../../devices/sda/sda1", root / "class" / "block" / "sda1")
    return root


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    return make_sysfs(tmp_path / "sys")


def ref(pod: str, level: str, cgroup: str, container: str = "c") -> ContainerRef:
    return ContainerRef(
        namespace="default", pod=pod, container=container, qos_level=level, cgroup=cgroup
    )


@dataclass
class Node:
    """What the metaserver would say: running containers, the reclaimed parent, and
    the services' pressure (scripted)."""

    containers: list[ContainerRef] = field(default_factory=list)
    reclaimed: str | None = "reclaimed"
    pressure: float | None = 0.0

    def read_pressure(self) -> PressureReading | None:
        return None if self.pressure is None else PressureReading(self.pressure, "cgroup")


SERVICE = ref("web", "shared_cores", "podweb/c")
DB = ref("db", "dedicated_cores", "poddb/c")
BATCH = ref("batch", "reclaimed_cores", "reclaimed/podbatch/c")
ETL = ref("etl", "reclaimed_cores", "reclaimed/podetl/c")


def setup(fs: FakeCgroupFS, node: Node) -> CgroupDriver:
    driver = open_driver(fs, base="kubepods")
    for c in node.containers:
        driver.create(c.cgroup)
    if node.reclaimed is not None:
        driver.create(node.reclaimed)
    return driver


def make_loop(
    driver: CgroupDriver,
    node: Node,
    sysfs: Path,
    *,
    clock: FakeClock | None = None,
    heartbeat: Heartbeat | None = None,
    **settings: object,
) -> IOLoop:
    base: dict[str, object] = {
        "min_read_bps": None,
        "min_write_bps": 1 * MiB,
        "cooldown_periods": 2,
        "step_up_ratio": 0.5,
    }
    base.update(settings)
    return IOLoop(
        IOConfig(**base),  # type: ignore[arg-type]
        driver=driver,
        containers=lambda: node.containers,
        reclaimed_cgroup=lambda: node.reclaimed,
        clock=clock or FakeClock(),
        heartbeat=heartbeat,
        devices=BlockDevices(sysfs=str(sysfs)),
        pressure=node.read_pressure,
        offload=False,
    )


def read(driver: CgroupDriver, controller: str, cgroup: str, name: str) -> str:
    return driver.fs.read_text(driver.path(controller, cgroup, name))


def io_max(driver: CgroupDriver, cgroup: str) -> str:
    return read(driver, "io", cgroup, "io.max")


def write_bps_v1(driver: CgroupDriver, cgroup: str) -> str:
    return read(driver, "blkio", cgroup, "blkio.throttle.write_bps_device")


def scrape(loop: IOLoop) -> str:
    registry = CollectorRegistry()
    registry.register(IOCollector(loop))
    return generate_latest(registry).decode()


# ---- devices --------------------------------------------------------------------------


def test_automatic_devices_are_the_hardware_disks(sysfs: Path) -> None:
    devices = BlockDevices(sysfs=str(sysfs))
    assert devices.discover() == [
        BlockDevice(device=SDA, name="sda", scheduler="bfq"),
        BlockDevice(device=SDB, name="sdb", scheduler="none"),
    ]
    assert devices.data_devices(()) == (devices.discover(), [])


def test_configured_devices_resolve_partitions_and_dev_paths_to_their_disk(sysfs: Path) -> None:
    links = {"/dev/disk/by-id/wwn-1": "/dev/sdb"}
    devices = BlockDevices(sysfs=str(sysfs), realpath=lambda p: links.get(p, p))
    assert devices.resolve("/dev/sda1") == BlockDevice(SDA, "sda", "bfq")
    assert devices.resolve(SDA1) == BlockDevice(SDA, "sda", "bfq")
    assert devices.resolve("/dev/disk/by-id/wwn-1") == BlockDevice(SDB, "sdb", "none")
    assert devices.resolve("/dev/loop0") == BlockDevice(LOOP0, "loop0", "none")
    assert devices.resolve("9:9") is None
    assert devices.resolve("/dev/sdz") is None
    found, missing = devices.data_devices(["/dev/sda1", SDA, "/dev/sdz", "7:0"])
    assert [d.device for d in found] == [SDA, LOOP0]
    assert missing == ["/dev/sdz"]


def test_an_unreadable_sysfs_has_no_devices(tmp_path: Path) -> None:
    assert BlockDevices(sysfs=str(tmp_path / "nothing")).discover() == []


# ---- the throttle ------------------------------------------------------------------------


def test_on_v2_one_limit_on_the_reclaimed_parent_covers_every_data_device(sysfs: Path) -> None:
    node = Node([SERVICE, BATCH], pressure=50.0)
    driver = setup(FakeCgroupFS.v2(devices=(SDA, SDB, LOOP0)), node)
    loop = make_loop(driver, node, sysfs)
    period = loop.step()
    assert period.decision.mode == "safety"
    want = "wbps=1048576"
    assert io_max(driver, "reclaimed").splitlines() == [
        f"{SDA} rbps=max {want} riops=max wiops=max",
        f"{SDB} rbps=max {want} riops=max wiops=max",
    ]
    # io.max is hierarchical on v2: the pods below carry nothing of their own.
    assert io_max(driver, "reclaimed/podbatch") == ""
    assert io_max(driver, "reclaimed/podbatch/c") == ""
    assert io_max(driver, "podweb/c") == ""
    assert period.throttled_cgroups == 1 and period.hierarchical
    assert loop.supported["throttle"] is True


def test_the_limit_lifts_once_pressure_stays_low_through_cooldown_and_ramp(sysfs: Path) -> None:
    node = Node([SERVICE, BATCH], pressure=50.0)
    driver = setup(FakeCgroupFS.v2(devices=(SDA, SDB)), node)
    loop = make_loop(driver, node, sysfs)  # cooldown 2, step 0.5, no ceiling
    loop.step()
    node.pressure = 1.0
    files = []
    for _ in range(5):
        loop.step()
        files.append(io_max(driver, "reclaimed") != "")
    # Two cool-down periods, one half step (still the floor: no ceiling), then lifted.
    assert files == [True, True, True, False, False]
    assert loop.latest is not None and loop.latest.limits == {}


def test_on_v1_each_cgroup_of_the_reclaimed_subtree_carries_an_even_share(
    sysfs: Path,
) -> None:
    node = Node([SERVICE, BATCH, ETL], pressure=50.0)
    fs = FakeCgroupFS.v1(devices=(SDA, SDB))
    driver = setup(fs, node)
    loop = make_loop(driver, node, sysfs)
    loop.step()
    subtree = [
        "reclaimed",
        "reclaimed/podbatch",
        "reclaimed/podbatch/c",
        "reclaimed/podetl",
        "reclaimed/podetl/c",
    ]
    # No task yet: every cgroup may use the whole limit.
    for cgroup in subtree:
        assert write_bps_v1(driver, cgroup) == f"{SDA} {MiB}\n{SDB} {MiB}\n"
    assert write_bps_v1(driver, "podweb/c") == ""
    # Two cgroups hold tasks: blk-throttle on v1 is flat, so each gets half.
    for pid, cgroup in ((101, BATCH.cgroup), (102, ETL.cgroup)):
        fs.add_process(pid)
        driver.attach(cgroup, pid)
    period = loop.step()
    for cgroup in subtree:
        assert write_bps_v1(driver, cgroup) == f"{SDA} {MiB // 2}\n{SDB} {MiB // 2}\n"
    assert period.throttled_cgroups == 5 and not period.hierarchical
    # The tier's limit is what status and metrics show.
    assert period.limits[SDA].write_bps == MiB


def test_v1_without_a_weight_file_skips_weights_cleanly_and_says_so(
    sysfs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    node = Node([SERVICE, BATCH], pressure=50.0)
    driver = setup(FakeCgroupFS.v1(devices=(SDA, SDB)), node)
    loop = make_loop(driver, node, sysfs)
    with caplog.at_level(logging.WARNING, logger="agent.isolation.io_loop"):
        for _ in range(3):
            loop.step()
    assert loop.supported == {"throttle": True, "weight": False}
    unsupported = [r for r in caplog.records if "weights are not applied" in r.getMessage()]
    assert len(unsupported) == 1
    assert "BFQ" in unsupported[0].getMessage()
    metrics = scrape(loop)
    assert 'katalyst_isolation_supported{feature="weight",resource="io"} 0.0' in metrics
    assert 'katalyst_isolation_supported{feature="throttle",resource="io"} 1.0' in metrics
    assert write_bps_v1(driver, "reclaimed") != ""  # the throttle still works


def test_a_host_without_the_blkio_controller_runs_on_and_says_so(
    sysfs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fs = FakeCgroupFS.v1(groups=(("cpu",), ("cpuacct",), ("cpuset",), ("memory",), ("pids",)))
    node = Node([SERVICE, BATCH], pressure=50.0)
    driver = setup(fs, node)
    loop = make_loop(driver, node, sysfs)
    with caplog.at_level(logging.WARNING, logger="agent.isolation.io_loop"):
        for _ in range(3):
            period = loop.step()
    assert loop.supported == {"throttle": False, "weight": False}
    assert period.limits == {} and period.decision.mode == "safety"
    assert loop.usage() == {}
    assert len([r for r in caplog.records if "throttle is not applied" in r.getMessage()]) == 1
    assert 'katalyst_isolation_supported{feature="throttle",resource="io"} 0.0' in scrape(loop)


def test_v2_weights_go_to_containers_pods_and_the_reclaimed_parent(sysfs: Path) -> None:
    node = Node([SERVICE, DB, BATCH])
    driver = setup(FakeCgroupFS.v2(devices=(SDA, SDB)), node)
    loop = make_loop(driver, node, sysfs)
    loop.step()

    def weight(cgroup: str) -> str:
        return read(driver, "io", cgroup, "io.weight").splitlines()[0]

    assert weight("podweb/c") == weight("podweb") == "default 100"
    assert weight("poddb/c") == weight("poddb") == "default 500"
    assert weight("reclaimed") == "default 10"
    assert weight("reclaimed/podbatch") == weight("reclaimed/podbatch/c") == "default 10"
    assert loop.supported["weight"] is True
    # A level set to null is given the kernel's default back.
    loop.configure(IOConfig.from_mapping({"weights": {"dedicated_cores": None}}))
    loop.step()
    assert weight("poddb") == "default 100"
    assert weight("poddb/c") == "default 100"


def test_a_device_the_kernel_refuses_is_logged_once_and_skipped(
    sysfs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    node = Node([BATCH], pressure=50.0)
    # sysfs still lists sdb, but the kernel no longer knows it (unplugged meanwhile).
    driver = setup(FakeCgroupFS.v2(devices=(SDA,)), node)
    loop = make_loop(driver, node, sysfs)
    with caplog.at_level(logging.WARNING, logger="agent.isolation.io_loop"):
        for _ in range(3):
            period = loop.step()
    assert io_max(driver, "reclaimed").startswith(f"{SDA} ")
    assert SDB not in io_max(driver, "reclaimed")
    assert sorted(period.limits) == [SDA]
    refused = [r for r in caplog.records if f"device {SDB} refused" in r.getMessage()]
    assert len(refused) == 1
    assert loop.write_counts()[("throttle", "failed")] == 3


def test_a_configured_device_that_is_missing_is_logged_once(
    sysfs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    node = Node([BATCH], pressure=50.0)
    driver = setup(FakeCgroupFS.v2(devices=(SDA, SDB)), node)
    loop = make_loop(driver, node, sysfs, devices=("/dev/sda1", "/dev/sdz"))
    with caplog.at_level(logging.INFO, logger="agent.isolation.io_loop"):
        loop.step()
        loop.step()
    assert io_max(driver, "reclaimed").splitlines() == [
        f"{SDA} rbps=max wbps=1048576 riops=max wiops=max"
    ]
    missing = [r for r in caplog.records if "/dev/sdz is not on this host" in r.getMessage()]
    assert len(missing) == 1


def test_pod_churn_is_not_an_error(sysfs: Path) -> None:
    node = Node([SERVICE, BATCH, ETL], pressure=50.0)
    fs = FakeCgroupFS.v1(devices=(SDA, SDB))
    driver = setup(fs, node)
    loop = make_loop(driver, node, sysfs)
    loop.step()
    driver.remove("reclaimed/podetl")
    node.containers.append(ref("ghost", "shared_cores", "podghost/c"))  # never created
    period = loop.step()
    assert period.throttled_cgroups == 3
    assert loop.write_counts().get(("throttle", "failed"), 0) == 0
    assert loop.cleanup() == 6  # 3 cgroups x 2 devices; the removed pod is not retried
    assert write_bps_v1(driver, "reclaimed/podbatch/c") == ""


def test_no_reclaimed_parent_lifts_what_was_written(sysfs: Path) -> None:
    node = Node([BATCH], pressure=50.0)
    driver = setup(FakeCgroupFS.v2(devices=(SDA, SDB)), node)
    loop = make_loop(driver, node, sysfs)
    loop.step()
    assert io_max(driver, "reclaimed") != ""
    node.reclaimed = None
    period = loop.step()
    assert io_max(driver, "reclaimed") == ""
    assert period.limits == {}


def test_switching_off_lifts_every_limit_and_weight_and_on_again_starts_at_the_floor(
    sysfs: Path,
) -> None:
    node = Node([SERVICE, BATCH], pressure=1.0)
    driver = setup(FakeCgroupFS.v2(devices=(SDA, SDB)), node)
    loop = make_loop(driver, node, sysfs)
    loop.step()
    assert io_max(driver, "reclaimed") != ""
    loop.configure(IOConfig(enabled=False))
    assert loop.config.enabled is False
    period = loop.step()
    assert period.decision.mode == "disabled"
    assert io_max(driver, "reclaimed") == ""
    assert read(driver, "io", "reclaimed", "io.weight").startswith("default 100")
    assert read(driver, "io", "podweb/c", "io.weight").startswith("default 100")
    assert loop.status()["io"]["mode"] == "disabled"  # type: ignore[index]
    loop.configure(IOConfig(min_read_bps=None, min_write_bps=MiB))
    assert loop.step().decision.level == pytest.approx(0.1)  # one step from the floor
    assert "wbps=1048576" in io_max(driver, "reclaimed")


def test_cleanup_lifts_everything_it_wrote_and_nothing_else(sysfs: Path) -> None:
    node = Node([SERVICE, BATCH], pressure=50.0)
    driver = setup(FakeCgroupFS.v2(devices=(SDA, SDB)), node)
    driver.create("other")
    driver.set_io_limit("other", SDA, IOLimit(write_bps=5))
    loop = make_loop(driver, node, sysfs)
    loop.step()
    changed = loop.cleanup()
    # The throttle on two devices; the three reclaimed cgroups' weights (10 -> 100).
    assert changed == 2 + 3
    assert io_max(driver, "reclaimed") == ""
    assert io_max(driver, "other") != ""  # not ours
    assert loop.cleanup() == 0


# ---- pressure ------------------------------------------------------------------------------


def test_services_pressure_is_the_worst_service_cgroup_where_the_kernel_has_one() -> None:
    fs = FakeCgroupFS.hybrid()
    node = Node([SERVICE, DB, BATCH])
    driver = setup(fs, node)
    for c, value in ((SERVICE, 12.5), (DB, 30.0), (BATCH, 90.0)):
        fs.set_stat(f"/sys/fs/cgroup/unified/kubepods/{c.cgroup}/io.pressure", PSI.format(value))
    fs.set_file("/proc/pressure/io", PSI.format(70.0))
    # The reclaimed pods' own stalls are not the services' pressure.
    assert services_pressure(driver, node.containers) == PressureReading(30.0, "cgroup")


def test_services_pressure_falls_back_to_the_node_then_to_none() -> None:
    fs = FakeCgroupFS.v1()  # no unified mirror: no per-cgroup PSI
    node = Node([SERVICE, BATCH])
    driver = setup(fs, node)
    fs.set_file("/proc/pressure/io", PSI.format(7.0))
    assert services_pressure(driver, node.containers) == PressureReading(7.0, "node")
    assert services_pressure(driver, []) == PressureReading(7.0, "node")
    fs.set_file("/proc/pressure/io", "garbage\n")
    assert services_pressure(driver, node.containers) is None


# ---- accounting and the usage anchor --------------------------------------------------------


def io_stat(rbytes: int, wbytes: int, rios: int = 0, wios: int = 0) -> str:
    return f"{SDA} rbytes={rbytes} wbytes={wbytes} rios={rios} wios={wios} dbytes=0 dios=0\n"


async def test_usage_per_level_only_grows_through_churn_and_restarts(sysfs: Path) -> None:
    fs = FakeCgroupFS.v2(devices=(SDA, SDB))
    node = Node([SERVICE, BATCH])
    driver = setup(fs, node)
    clock = FakeClock()
    loop = make_loop(driver, node, sysfs, clock=clock)

    def stat(c: ContainerRef, text: str) -> None:
        fs.set_stat(f"/sys/fs/cgroup/kubepods/{c.cgroup}/io.stat", text)

    stat(SERVICE, io_stat(100, 200, 1, 2))
    stat(BATCH, io_stat(1000, 0, 10, 0))
    loop.step()
    assert loop.usage() == {
        ("shared_cores", SDA): (100, 200, 1, 2),
        ("reclaimed_cores", SDA): (1000, 0, 10, 0),
    }
    await clock.advance(1.0)
    stat(SERVICE, io_stat(150, 260, 2, 3))
    loop.step()
    assert loop.usage()[("shared_cores", SDA)] == (150, 260, 2, 3)
    # The service's cgroup is made anew (a restart): its counters start from 0 and
    # what it does now is added, never subtracted.
    driver.remove(SERVICE.cgroup)
    driver.create(SERVICE.cgroup)
    stat(SERVICE, io_stat(10, 10, 1, 1))
    loop.step()
    assert loop.usage()[("shared_cores", SDA)] == (160, 270, 3, 4)
    # The batch pod leaves: what it did stays counted.
    node.containers.remove(BATCH)
    loop.step()
    assert loop.usage()[("reclaimed_cores", SDA)] == (1000, 0, 10, 0)
    status = loop.status()["io"]
    assert status["usage"]["shared_cores"] == {  # type: ignore[index]
        "read_bytes": 160,
        "write_bytes": 270,
        "read_ios": 3,
        "write_ios": 4,
    }
    metrics = scrape(loop)
    assert (
        'katalyst_io_bytes_total{device="8:0",direction="write",qos_level="shared_cores"} 270.0'
        in metrics
    )
    assert (
        'katalyst_io_operations_total{device="8:0",direction="read",qos_level="reclaimed_cores"}'
        " 10.0" in metrics
    )


async def test_a_cut_starts_from_what_the_reclaimed_pods_actually_write(sysfs: Path) -> None:
    fs = FakeCgroupFS.v2(devices=(SDA, SDB))
    node = Node([SERVICE, BATCH], pressure=0.0)
    driver = setup(fs, node)
    clock = FakeClock()
    # Writes between 1 and 101 MiB/s; fully relaxed after two quiet periods.
    loop = make_loop(driver, node, sysfs, clock=clock, max_write_bps=101 * MiB)
    written = 0
    path = f"/sys/fs/cgroup/kubepods/{BATCH.cgroup}/io.stat"
    for _ in range(3):
        fs.set_stat(path, io_stat(0, written))
        loop.step()
        await clock.advance(1.0)
        written += 11 * MiB
    assert loop.latest is not None and loop.latest.decision.level == 1.0
    # 11 MiB in the last second: level 0.1 of the range. Pressure 1.65x target cuts
    # from there, not from the ceiling the batch is far below.
    fs.set_stat(path, io_stat(0, written))
    node.pressure = 10.0 * 1.6487212707  # e**0.5
    period = loop.step()
    assert period.decision.action == "tighten"
    assert period.decision.level == pytest.approx(0.1 * 0.6065306597, rel=1e-6)
    assert period.limits[SDA].write_bps == round(MiB + period.decision.level * 100 * MiB)


# ---- the loop, status and metrics -----------------------------------------------------------


async def test_run_does_one_period_per_period_and_beats_after_each(sysfs: Path) -> None:
    node = Node([SERVICE, BATCH], pressure=None)
    driver = setup(FakeCgroupFS.v2(devices=(SDA, SDB)), node)
    clock = FakeClock()
    beat = Heartbeat("io", max_age=30.0)
    loop = make_loop(driver, node, sysfs, clock=clock, heartbeat=beat, period_s=2.0)
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    await clock.advance(0.0)
    assert beat.last == 0.0
    assert loop.latest is not None and loop.latest.decision.stale_periods == 1
    await clock.advance(1.9)
    assert loop.latest.decision.stale_periods == 1
    await clock.advance(0.1)
    assert beat.last == 2.0 and loop.latest.decision.stale_periods == 2
    await clock.advance(2.0)
    # Three periods without a reading: degraded, at the floor, never unlimited.
    assert loop.latest.decision.mode == "degraded"
    assert "wbps=1048576" in io_max(driver, "reclaimed")
    stop.set()
    await asyncio.wait_for(task, timeout=5)


def test_status_and_metrics_show_every_term_of_the_last_period(sysfs: Path) -> None:
    node = Node([SERVICE, BATCH], pressure=25.0)
    driver = setup(FakeCgroupFS.v2(devices=(SDA, SDB)), node)
    loop = make_loop(driver, node, sysfs, max_write_bps=11 * MiB)
    assert loop.status() == {"io": None}
    assert "katalyst_io_mode" not in scrape(loop)
    loop.step()
    status = loop.status()["io"]
    assert isinstance(status, dict)
    assert status["mode"] == "safety"
    assert status["pressure"] == 25.0 and status["pressure_target"] == 10.0
    assert status["safety_threshold"] == 20.0
    assert status["pressure_scope"] == "cgroup"
    assert status["cooldown_left"] == 2
    assert status["devices"] == [
        {
            "device": SDA,
            "name": "sda",
            "scheduler": "bfq",
            "limit": {"read_bps": None, "write_bps": MiB, "read_iops": None, "write_iops": None},
        },
        {
            "device": SDB,
            "name": "sdb",
            "scheduler": "none",
            "limit": {"read_bps": None, "write_bps": MiB, "read_iops": None, "write_iops": None},
        },
    ]
    assert status["supported"] == {"throttle": True, "weight": True}
    assert status["weights"]["reclaimed_cores"] == 10
    metrics = scrape(loop)
    limit = "katalyst_io_reclaimed_limit_bytes_per_second"
    for line in (
        f'{limit}{{device="8:0",direction="write"}} 1.048576e+06',
        f'{limit}{{device="8:16",direction="write"}} 1.048576e+06',
        'katalyst_io_mode{mode="safety"} 1.0',
        'katalyst_io_mode{mode="normal"} 0.0',
        'katalyst_io_pressure{scope="cgroup"} 25.0',
        "katalyst_io_pressure_target 10.0",
        "katalyst_io_pressure_safety_threshold 20.0",
        "katalyst_io_throttle_level 0.0",
        'katalyst_isolation_supported{feature="throttle",resource="io"} 1.0',
        'katalyst_io_cgroup_writes_total{outcome="changed",setting="throttle"} 2.0',
    ):
        assert line in metrics, line
    assert (
        'direction="read"'
        not in metrics.split("katalyst_io_reclaimed_limit_iops")[0].split(
            "katalyst_io_reclaimed_limit_bytes_per_second"
        )[-1]
    )
    assert "katalyst_io_loop_duration_seconds" in metrics


def test_the_supported_family_can_be_left_to_a_shared_collector(sysfs: Path) -> None:
    node = Node([BATCH])
    driver = setup(FakeCgroupFS.v2(devices=(SDA, SDB)), node)
    loop = make_loop(driver, node, sysfs)
    loop.step()
    registry = CollectorRegistry()
    registry.register(IOCollector(loop, supported=False))
    assert "katalyst_isolation_supported" not in generate_latest(registry).decode()
