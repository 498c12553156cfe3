"""The IO loop on the real kernel: a reclaimed writer on a loop device is held near
the throttle while the (scripted) services' pressure is high, and runs free once
it falls; weights land where the kernel has a weight file; PSI is read per cgroup.

Everything lives below the test's own cgroups (``kernel_driver``) and on a loop
device over a file in the test's temporary directory, detached afterwards. The
loop's decisions are driven by a scripted pressure source, not by real IO
pressure. The bounds are physical: bytes the kernel counted in a window against
what the limit allows (an upper bound a slow machine only makes easier), and the
time a throttled write must at least take.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.isolation.io_loop import IOLoop, PressureReading, services_pressure
from agent.metaserver.metrics import ContainerRef
from katalyst.cgroup import CgroupDriver, IOLimit
from katalyst.clock import MonotonicClock
from katalyst.config.io import IOConfig, MiB
from tests.support.kernel import Processes, check_kernel_ready, kernel_driver, loop_device
from tests.support.wait import eventually

pytestmark = pytest.mark.kernel

LIMIT = 1 * MiB
"""The throttle's floor in these tests: 1 MiB/s of writes."""
SIZE = 3 * MiB
"""What each dd writes: 48 direct writes of 64 KiB."""
BURST = 512 * 1024
"""What blk-throttle may let through beyond ``rate * time``: its slice's budget
(100 ms at 1 MiB/s) and the bios in flight when a measurement is taken."""
RECLAIMED = "reclaimed"
CHILD = "reclaimed/podbatch/c"
BATCH = ContainerRef(
    namespace="default", pod="batch", container="c", qos_level="reclaimed_cores", cgroup=CHILD
)
SERVICE = ContainerRef(
    namespace="default", pod="web", container="c", qos_level="shared_cores", cgroup="podweb/c"
)


@dataclass
class Rig:
    driver: CgroupDriver
    procs: Processes
    dev: str
    majmin: str


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    check_kernel_ready(["blkio", "cpu", "memory"])
    with kernel_driver() as driver, loop_device(tmp_path, size_mib=64) as (dev, majmin):
        procs = Processes()
        try:
            driver.create(CHILD)
            driver.create(SERVICE.cgroup)
            yield Rig(driver, procs, dev, majmin)
        finally:
            procs.kill_all()


def dd(dev: str, size: int) -> list[str]:
    return [
        "dd",
        "if=/dev/zero",
        f"of={dev}",
        "bs=64k",
        f"count={size // (64 * 1024)}",
        "oflag=direct",
        "status=none",
    ]


def written(driver: CgroupDriver, cgroup: str, majmin: str) -> int:
    """Bytes the kernel counted as written by ``cgroup``'s own tasks on the device."""
    stat = driver.io_stat(cgroup).get(majmin)
    return 0 if stat is None else stat.write_bytes


def write_limit_file(driver: CgroupDriver, cgroup: str) -> str:
    path = driver.path("blkio", cgroup, "blkio.throttle.write_bps_device")
    return driver.fs.read_text(path).strip()


def mode(loop: IOLoop) -> str | None:
    return None if loop.latest is None else loop.latest.decision.mode


@contextlib.asynccontextmanager
async def running(loop: IOLoop) -> AsyncIterator[None]:
    """The loop as the agent runs it (real clock, periods in a worker thread), stopped
    and its writes lifted at the end even when the test fails."""
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    try:
        yield
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, timeout=10)  # re-raises what ended the loop
        finally:
            loop.cleanup()


async def test_reclaimed_writes_are_held_to_the_floor_under_pressure_then_released(
    rig: Rig,
) -> None:
    driver = rig.driver
    pressure = [50.0]  # the services' IO PSI some avg10, scripted: 5x the target
    loop = IOLoop(
        IOConfig(
            devices=(rig.majmin,),
            period_s=0.05,
            min_read_bps=None,
            min_write_bps=LIMIT,
            cooldown_periods=2,
            step_up_ratio=0.5,
        ),
        driver=driver,
        containers=lambda: [SERVICE, BATCH],
        reclaimed_cgroup=lambda: RECLAIMED,
        clock=MonotonicClock(),
        pressure=lambda: PressureReading(pressure[0], "cgroup"),
    )
    async with running(loop):
        await eventually(
            lambda: write_limit_file(driver, CHILD) == f"{rig.majmin} {LIMIT}",
            "the floor on the reclaimed pod's cgroup",
        )
        # v1 blk-throttle is flat: the loop writes every cgroup of the subtree.
        assert write_limit_file(driver, RECLAIMED) == f"{rig.majmin} {LIMIT}"
        assert write_limit_file(driver, SERVICE.cgroup) == ""
        assert mode(loop) == "safety"

        before = written(driver, CHILD, rig.majmin)
        start = time.monotonic()
        proc = rig.procs.start_in(driver, CHILD, dd(rig.dev, SIZE))
        await asyncio.sleep(1.0)
        window_bytes = written(driver, CHILD, rig.majmin) - before
        window_s = time.monotonic() - start
        assert await asyncio.to_thread(proc.wait, 60) == 0
        throttled_s = time.monotonic() - start
        total = written(driver, CHILD, rig.majmin) - before
        print(
            f"\nthrottled: {window_bytes / MiB:.2f} MiB in the first {window_s:.2f} s, "
            f"{SIZE / MiB:.0f} MiB in {throttled_s:.2f} s "
            f"({SIZE / throttled_s / MiB:.2f} MiB/s at a {LIMIT / MiB:.0f} MiB/s limit)"
        )
        assert total == SIZE, "the kernel's counters missed the writer's bytes"
        assert window_bytes <= LIMIT * window_s + BURST, (
            f"{window_bytes} bytes in {window_s:.2f} s is past a {LIMIT} B/s limit"
        )
        assert throttled_s >= (SIZE - BURST) / LIMIT, (
            f"{SIZE} bytes took only {throttled_s:.2f} s at a {LIMIT} B/s limit"
        )

        # Pressure falls: two cool-down periods, two half steps, and the limit is gone.
        pressure[0] = 1.0
        await eventually(
            lambda: write_limit_file(driver, CHILD) == "", "the limit lifted from the pod"
        )
        assert write_limit_file(driver, RECLAIMED) == ""
        assert mode(loop) == "normal"
        start = time.monotonic()
        proc = rig.procs.start_in(driver, CHILD, dd(rig.dev, SIZE))
        assert await asyncio.to_thread(proc.wait, 60) == 0
        free_s = time.monotonic() - start
        print(f"released: {SIZE / MiB:.0f} MiB in {free_s:.3f} s")
        assert free_s < SIZE / LIMIT / 2, f"the released writer still took {free_s:.2f} s"
        assert loop.supported["throttle"] is True


async def test_switching_the_loop_off_lifts_the_throttle(rig: Rig) -> None:
    driver = rig.driver
    config = IOConfig(devices=(rig.majmin,), period_s=0.05, min_write_bps=LIMIT)
    loop = IOLoop(
        config,
        driver=driver,
        containers=lambda: [BATCH],
        reclaimed_cgroup=lambda: RECLAIMED,
        clock=MonotonicClock(),
        pressure=lambda: PressureReading(90.0, "node"),
    )
    async with running(loop):
        await eventually(lambda: write_limit_file(driver, CHILD) != "", "the throttle")
        read_path = driver.path("blkio", CHILD, "blkio.throttle.read_bps_device")
        assert driver.fs.read_text(read_path).strip() == f"{rig.majmin} {10 * MiB}"
        loop.configure(IOConfig(enabled=False))
        await eventually(lambda: write_limit_file(driver, CHILD) == "", "the throttle lifted")
        assert driver.io_limit(RECLAIMED, rig.majmin) == IOLimit()
        assert driver.io_limit(CHILD, rig.majmin) == IOLimit()


def test_v1_blk_throttle_does_not_reach_from_a_parent_to_its_child(rig: Rig) -> None:
    """Why the loop writes every cgroup of the reclaimed subtree on v1: the kernel
    applies a group's limit to its descendants only on the default (v2) hierarchy."""
    driver = rig.driver
    driver.set_io_limit(RECLAIMED, rig.majmin, IOLimit(write_bps=LIMIT))
    size = 2 * MiB
    start = time.monotonic()
    proc = rig.procs.start_in(driver, CHILD, dd(rig.dev, size))
    assert proc.wait(timeout=60) == 0
    elapsed = time.monotonic() - start
    assert written(driver, CHILD, rig.majmin) == size
    # A hierarchical limit would hold 2 MiB to about 2 s.
    assert elapsed < size / LIMIT / 2, f"the parent's limit held the child ({elapsed:.2f} s)"


def test_weights_land_in_the_kernels_weight_file_or_are_skipped_cleanly(rig: Rig) -> None:
    driver = rig.driver
    files = [
        name
        for name in ("blkio.bfq.weight", "blkio.weight")
        if os.path.exists(driver.path("blkio", CHILD, name))
    ]
    loop = IOLoop(
        IOConfig(devices=(rig.majmin,), min_write_bps=LIMIT),
        driver=driver,
        containers=lambda: [SERVICE, BATCH],
        reclaimed_cgroup=lambda: RECLAIMED,
        clock=MonotonicClock(),
        pressure=lambda: PressureReading(90.0, "node"),
        offload=False,
    )
    try:
        for _ in range(2):
            loop.step()
        # Whatever the kernel offers, the throttle is in place and nothing failed.
        assert write_limit_file(driver, CHILD) == f"{rig.majmin} {LIMIT}"
        assert loop.write_counts().get(("weight", "failed"), 0) == 0
        if files:
            # BFQ is loaded: its weight file carries the level's weight.
            weight = files[0]

            def read(cgroup: str) -> str:
                text = driver.fs.read_text(driver.path("blkio", cgroup, weight))
                return text.splitlines()[0].split()[-1]  # "default 100" or "100"

            assert loop.supported["weight"] is True
            assert read(CHILD) == read("reclaimed/podbatch") == read(RECLAIMED) == "10"
            assert read(SERVICE.cgroup) == read("podweb") == "100"
            loop.cleanup()
            assert read(CHILD) == read(RECLAIMED) == "100"
        else:
            assert loop.supported["weight"] is False
            assert loop.write_counts().get(("weight", "changed"), 0) == 0
    finally:
        loop.cleanup()
    assert write_limit_file(driver, CHILD) == ""


def test_services_pressure_reads_the_services_own_cgroups(rig: Rig) -> None:
    reading = services_pressure(rig.driver, [SERVICE, BATCH])
    assert reading is not None
    assert 0.0 <= reading.value <= 100.0
    # A hybrid host mirrors the cgroups in the unified mount, where PSI is per cgroup.
    unified = rig.driver.layout.unified
    expected = "cgroup" if unified in rig.driver.hierarchies() else "node"
    assert reading.scope == expected
