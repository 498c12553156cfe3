"""What the driver's settings do to real processes on the real kernel.

These measure effects (CPU share, OOM kills, IO throughput) with generous bounds;
they are behaviour checks, not speed goals. Everything runs below the test
process's own cgroups and is removed afterwards.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from katalyst.cgroup import CgroupDriver, CgroupUnsupported, IOLimit
from katalyst.cpuset import CPUSet
from tests.support.kernel import (
    BUSY_LOOP,
    Processes,
    check_kernel_ready,
    kernel_driver,
    loop_device,
)

pytestmark = pytest.mark.kernel
MiB = 1024 * 1024


@pytest.fixture
def kd() -> Iterator[tuple[CgroupDriver, Processes]]:
    check_kernel_ready(["cpu", "cpuacct", "cpuset", "memory", "blkio"])
    with kernel_driver() as driver:
        procs = Processes()
        try:
            yield driver, procs
        finally:
            procs.kill_all()


def _cpu_used(driver: CgroupDriver, cgroups: list[str], window_s: float) -> list[float]:
    """CPUs used by each cgroup over a window (1.0 = one CPU fully busy)."""
    before = [driver.cpu_usage_ns(c) for c in cgroups]
    start = time.monotonic()
    time.sleep(window_s)
    wall_ns = (time.monotonic() - start) * 1e9
    return [(driver.cpu_usage_ns(c) - b) / wall_ns for c, b in zip(cgroups, before, strict=True)]


def _one_cpu(driver: CgroupDriver) -> CPUSet:
    cpus, _ = driver.cpuset("")
    return CPUSet.of([max(cpus)])


def test_a_20_percent_quota_holds_a_busy_process_near_20_percent(
    kd: tuple[CgroupDriver, Processes],
) -> None:
    driver, procs = kd
    driver.create("capped")
    driver.set_cpu_quota("capped", quota_us=20_000, period_us=100_000)
    procs.start_in(driver, "capped", BUSY_LOOP)
    time.sleep(0.3)
    throttled_before = driver.cpu_stat("capped").nr_throttled
    (used,) = _cpu_used(driver, ["capped"], 2.0)
    assert 0.12 <= used <= 0.25, f"a 20% quota let the process use {used:.2f} CPU"
    assert driver.cpu_stat("capped").nr_throttled > throttled_before
    # Lifting the quota lets it run free (at least well above the cap).
    driver.set_cpu_quota("capped", quota_us=None)
    (free,) = _cpu_used(driver, ["capped"], 1.0)
    assert free > 0.5, f"without a quota the busy loop used only {free:.2f} CPU"


def test_shares_2048_to_512_split_one_cpu_about_80_20(kd: tuple[CgroupDriver, Processes]) -> None:
    driver, procs = kd
    cpu = _one_cpu(driver)
    for name, shares in (("high", 2048), ("low", 512)):
        driver.create(name)
        driver.set_cpuset(name, cpus=cpu)
        driver.set_cpu_shares(name, shares)
        procs.start_in(driver, name, BUSY_LOOP)
    time.sleep(0.3)
    high, low = _cpu_used(driver, ["high", "low"], 3.0)
    share = high / (high + low)
    assert 0.72 <= share <= 0.88, f"2048/512 shares gave the high group {share:.0%} of the CPU"


def test_cpu_idle_starves_the_idle_group(kd: tuple[CgroupDriver, Processes]) -> None:
    driver, procs = kd
    cpu = _one_cpu(driver)
    for name in ("normal", "idle"):
        driver.create(name)
        driver.set_cpuset(name, cpus=cpu)
    driver.set_cpu_idle("idle", True)
    procs.start_in(driver, "normal", BUSY_LOOP)
    procs.start_in(driver, "idle", BUSY_LOOP)
    time.sleep(0.3)
    normal, idle = _cpu_used(driver, ["normal", "idle"], 2.0)
    assert idle / (normal + idle) < 0.05, (
        f"the idle group still got {idle:.3f} CPU beside {normal:.3f}"
    )


def _allowed_cpus(pid: int) -> CPUSet:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("Cpus_allowed_list:"):
                return CPUSet.parse(line.split(":", 1)[1])
    raise AssertionError("no Cpus_allowed_list")


def test_cpuset_pinning_moves_a_running_process(kd: tuple[CgroupDriver, Processes]) -> None:
    driver, procs = kd
    cpus, _ = driver.cpuset("")
    if len(cpus) < 2:
        pytest.skip("needs two CPUs to move a process between them")
    first, last = CPUSet.of([min(cpus)]), CPUSet.of([max(cpus)])
    driver.create("pinned")
    driver.set_cpuset("pinned", cpus=first)
    proc = procs.start_in(driver, "pinned", BUSY_LOOP)
    assert _allowed_cpus(proc.pid) == first
    driver.set_cpuset("pinned", cpus=last)
    assert _allowed_cpus(proc.pid) == last
    time.sleep(0.3)
    with open(f"/proc/{proc.pid}/stat", encoding="ascii") as f:
        running_on = int(f.read().rsplit(")", 1)[1].split()[36])  # field 39: processor
    assert running_on in last


def _swap_is_on() -> bool:
    with open("/proc/swaps", encoding="ascii") as f:
        return len(f.read().splitlines()) > 1


HOG = (
    "import sys, time\n"
    "chunks = []\n"
    "for _ in range(int(sys.argv[1])):\n"
    "    chunks.append(bytearray(1 << 20))\n"  # bytearray zero-fills: pages are touched
    "time.sleep(60)\n"
)


def test_a_memory_limit_oom_kills_the_hog_in_that_cgroup_only(
    kd: tuple[CgroupDriver, Processes],
) -> None:
    driver, procs = kd
    driver.create("hog")
    driver.create("bystander")
    driver.set_memory_limit("hog", 64 * MiB)
    try:
        driver.set_swap_limit("hog", 0)  # where swap exists, the hog must not swap instead
    except CgroupUnsupported:
        if _swap_is_on():
            pytest.skip("swap is on but not accounted per cgroup: the hog would swap, not OOM")
    bystander = procs.start_in(driver, "bystander", ["sleep", "600"])
    hog = procs.start_in(driver, "hog", [sys.executable, "-c", HOG, "256"])
    code = hog.wait(timeout=60)
    assert code == -signal.SIGKILL, f"the hog exited with {code}, not SIGKILL from the OOM killer"
    oom = driver.fs.read_text(driver.path("memory", "hog", "memory.oom_control"))
    assert "oom_kill 1" in oom.replace("oom_kill_disable", "")
    assert bystander.poll() is None, "the process in the sibling cgroup survived"


def test_a_blkio_write_limit_throttles_direct_writes_on_a_loop_device(
    kd: tuple[CgroupDriver, Processes], tmp_path: Path
) -> None:
    driver, procs = kd
    with loop_device(tmp_path, size_mib=64) as (dev, majmin):
        driver.create("io")
        limit_bps = 2 * MiB
        driver.set_io_limit("io", majmin, IOLimit(write_bps=limit_bps))
        dd = [
            "dd",
            "if=/dev/zero",
            f"of={dev}",
            "bs=256k",
            "count=24",
            "oflag=direct",
            "status=none",
        ]

        def throughput() -> float:
            start = time.monotonic()
            proc = procs.start_in(driver, "io", dd)
            assert proc.wait(timeout=60) == 0
            return 6 * MiB / (time.monotonic() - start)

        throttled = throughput()
        assert throttled <= 1.3 * limit_bps, (
            f"dd wrote {throttled / MiB:.1f} MiB/s past a 2 MiB/s limit"
        )
        assert driver.io_stat("io")[majmin].write_bytes >= 6 * MiB
        driver.set_io_limit("io", majmin, IOLimit())
        free = throughput()
        assert free > 2 * throttled, "lifting the limit did not release the writer"


def test_nothing_is_left_behind_after_a_failing_test() -> None:
    """The cleanup runs even when the body raises: the test parent is gone afterwards."""
    check_kernel_ready(["cpu", "memory"])
    seen: list[str] = []

    def failing_test_body() -> None:
        with kernel_driver() as driver:
            driver.create("x")
            seen.extend(driver.path(c, "") for c in ("cpu", "memory"))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        failing_test_body()
    assert seen
    assert not any(os.path.exists(p) for p in seen)
