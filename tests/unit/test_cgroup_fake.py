"""Fake-only behaviour the real kernel of the CI machine cannot show (v2 rules,
hosts without swap accounting) and the test helpers of the fake itself."""

from __future__ import annotations

import pytest

from katalyst.cgroup import (
    CgroupBusy,
    CgroupError,
    CgroupInvalidValue,
    CgroupNotFound,
    CgroupPermissionError,
    CgroupUnsupported,
    CpuStat,
    IOStat,
    open_driver,
)
from katalyst.cgroup.driver import EVACUATION_LEAF
from katalyst.cgroup.fake import FakeCgroupFS
from katalyst.cpuset import CPUSet


def test_v2_no_internal_process_rule_and_evacuation_stays_below_the_base() -> None:
    fs = FakeCgroupFS.v2()
    d = open_driver(fs, base="agent")
    d.create("pod/app")
    fs.add_process(42)
    # "agent" delegates memory and io to "pod", so it may not hold tasks itself.
    with pytest.raises(CgroupBusy):
        d.attach("", 42)
    d.attach("pod/app", 42)
    d.remove("pod")
    assert 42 in fs.processes
    assert d.procs(EVACUATION_LEAF) == [42], "moved to a leaf below the base, never above it"
    assert 42 not in [int(p) for p in fs.read_text("/sys/fs/cgroup/cgroup.procs").split()]
    # Removing the whole base moves the tasks to the base's parent (here the
    # hierarchy root, which is exempt from the no-internal-process rule).
    d.remove("")
    assert 42 in fs.processes


def test_v2_threaded_controllers_do_not_forbid_tasks() -> None:
    fs = FakeCgroupFS.v2(controllers=["cpu", "cpuset", "pids"])
    d = open_driver(fs, base="agent")
    d.create("pod")
    fs.add_process(7)
    d.attach("", 7)
    assert d.procs("") == [7]


def test_v2_create_below_a_cgroup_with_tasks_says_why() -> None:
    fs = FakeCgroupFS.v2(own_cgroup={"": "/agent"})
    d = open_driver(fs, base="", below_own_cgroup=True)
    with pytest.raises(CgroupBusy, match="no-internal-process"):
        d.create("pod")


def test_v2_subtree_control_gives_children_their_files() -> None:
    fs = FakeCgroupFS.v2(controllers=["cpu", "memory"])
    d = open_driver(fs, base="kqos")
    d.create("pod")
    assert fs.exists("/sys/fs/cgroup/kqos/pod/cpu.max")
    assert fs.read_text("/sys/fs/cgroup/kqos/cgroup.subtree_control").split() == ["cpu", "memory"]
    assert not fs.exists("/sys/fs/cgroup/kqos/pod/io.max"), "io is not offered by this host"
    with pytest.raises(CgroupUnsupported):
        d.set_io_weight("pod", 100)


def test_no_swap_accounting_makes_swap_limits_unsupported() -> None:
    for fs in (FakeCgroupFS.v1(swap_accounting=False), FakeCgroupFS.v2(swap_accounting=False)):
        d = open_driver(fs, base="kqos")
        d.create("m")
        with pytest.raises(CgroupUnsupported, match="swap accounting"):
            d.set_swap_limit("m", 0)


def test_read_only_files_and_bad_values_are_refused_like_the_kernel() -> None:
    fs = FakeCgroupFS.v1()
    d = open_driver(fs, base="kqos")
    d.create("c")
    with pytest.raises(CgroupPermissionError):
        fs.write_text(d.path("cpu", "c", "cpu.stat"), "0")
    fs.write_text(d.path("cpuacct", "c", "cpuacct.usage"), "0")  # a reset is allowed
    with pytest.raises(CgroupInvalidValue):
        fs.write_text(d.path("cpuacct", "c", "cpuacct.usage"), "5")
    with pytest.raises(CgroupInvalidValue):
        fs.write_text(d.path("cpu", "c", "cpu.shares"), "lots")
    with pytest.raises(CgroupInvalidValue, match="out of range"):
        fs.write_text(d.path("cpuset", "c", "cpuset.cpus"), "9")
    d.set_cpuset("c", cpus=d.cpuset("")[0])
    d.create("c/child")


def test_shrinking_a_v1_cpuset_below_a_childs_is_busy() -> None:
    fs = FakeCgroupFS.v1(cpus="0-3")
    d = open_driver(fs, base="kqos")
    d.create("parent/child")
    with pytest.raises(CgroupBusy):
        d.set_cpuset("parent", cpus=CPUSet.parse("0-1"))
    d.set_cpuset("parent/child", cpus=CPUSet.parse("0-1"))
    assert d.set_cpuset("parent", cpus=CPUSet.parse("0-1")) is True


def test_stats_set_by_tests_are_what_the_driver_reads() -> None:
    fs = FakeCgroupFS.v1()
    d = open_driver(fs, base="kqos")
    d.create("u")
    fs.set_stat(d.path("cpuacct", "u", "cpuacct.usage"), "123456789")
    fs.set_stat(
        d.path("cpu", "u", "cpu.stat"), "nr_periods 10\nnr_throttled 4\nthrottled_time 5000\n"
    )
    fs.set_file("/proc/pressure/cpu", "some avg10=12.50 avg60=3.00 avg300=1.00 total=999\n")
    assert d.cpu_usage_ns("u") == 123456789
    stat = d.cpu_stat("u")
    assert (stat.nr_periods, stat.nr_throttled, stat.throttled_ns) == (10, 4, 5000)
    psi = d.pressure("u", "cpu")
    assert psi.scope == "node" and psi.some.avg10 == 12.5 and psi.full is None
    fs.set_stat(d.path("memory", "u", "memory.usage_in_bytes"), "4096")
    assert d.memory_usage("u") == 4096
    fs.set_stat(
        d.path("blkio", "u", "blkio.throttle.io_service_bytes"),
        "7:0 Read 100\n7:0 Write 200\n7:0 Total 300\nTotal 300\n",
    )
    fs.set_stat(d.path("blkio", "u", "blkio.throttle.io_serviced"), "7:0 Read 1\n7:0 Write 2\n")
    assert d.io_stat("u") == {
        "7:0": IOStat(read_bytes=100, write_bytes=200, read_ios=1, write_ios=2)
    }


def test_v2_stats_are_converted_to_the_same_units() -> None:
    fs = FakeCgroupFS.v2()
    d = open_driver(fs, base="kqos")
    d.create("u")
    base = "/sys/fs/cgroup/kqos/u"
    fs.set_stat(
        f"{base}/cpu.stat", "usage_usec 1500\nnr_periods 9\nnr_throttled 3\nthrottled_usec 7\n"
    )
    assert d.cpu_usage_ns("u") == 1_500_000
    assert d.cpu_stat("u") == CpuStat(nr_periods=9, nr_throttled=3, throttled_ns=7000)
    fs.set_stat(f"{base}/io.stat", "8:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n")
    assert d.io_stat("u") == {"8:0": IOStat(read_bytes=10, write_bytes=20, read_ios=1, write_ios=2)}
    fs.set_stat(
        f"{base}/memory.pressure",
        "some avg10=1.50 avg60=0.50 avg300=0.10 total=123\n"
        "full avg10=0.25 avg60=0 avg300=0 total=45\n",
    )
    psi = d.pressure("u", "memory")
    assert psi.scope == "cgroup"
    assert psi.some.avg10 == 1.5 and psi.some.total_us == 123
    assert psi.full is not None and psi.full.avg10 == 0.25
    assert d.set_io_weight("u", 200) is True
    assert d.set_io_weight("u", 200) is False
    assert fs.read_text(f"{base}/io.weight").splitlines()[0] == "default 200"


def test_odd_file_content_is_a_cgroup_error_naming_the_file() -> None:
    fs = FakeCgroupFS.v1()
    d = open_driver(fs, base="kqos")
    d.create("u")
    fs.set_stat(d.path("cpuacct", "u", "cpuacct.usage"), "garbage")
    with pytest.raises(CgroupError, match=r"cpuacct\.usage"):
        d.cpu_usage_ns("u")
    fs.set_file("/proc/pressure/cpu", "nonsense\n")
    with pytest.raises(CgroupError, match="pressure"):
        d.node_pressure("cpu")


def test_blkio_weight_without_bfq_is_unsupported_not_missing() -> None:
    d = open_driver(FakeCgroupFS.v1(), base="kqos")
    d.create("u")
    with pytest.raises(CgroupUnsupported, match="BFQ"):
        d.set_io_weight("u", 100)
    with pytest.raises(CgroupNotFound):
        d.set_io_weight("nope", 100)


def test_a_64k_page_kernel_compares_limits_in_its_pages() -> None:
    fs = FakeCgroupFS.v1(page_size=65536)
    d = open_driver(fs, base="kqos")
    d.create("m")
    assert d.set_memory_limit("m", 100_000) is True
    assert d.memory_limit("m") == 65536
    assert d.set_memory_limit("m", 100_000) is False
