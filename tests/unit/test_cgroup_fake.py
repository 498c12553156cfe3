"""Fake-only behaviour the real kernel of the CI machine cannot show (v2 rules,
hosts without swap accounting) and the test helpers of the fake itself."""

from __future__ import annotations

import pytest

from katalyst.cgroup import (
    CgroupBusy,
    CgroupInvalidValue,
    CgroupPermissionError,
    CgroupUnsupported,
    open_driver,
)
from katalyst.cgroup.fake import FakeCgroupFS
from katalyst.cpuset import CPUSet


def test_v2_no_internal_process_rule() -> None:
    fs = FakeCgroupFS.v2()
    d = open_driver(fs, base="agent")
    d.create("pod")
    fs.add_process(42)
    # "agent" delegates controllers to "pod", so it may not hold tasks itself.
    with pytest.raises(CgroupBusy):
        d.attach("", 42)
    d.attach("pod", 42)
    d.remove("pod")
    assert 42 in fs.processes
    assert d.procs("") == [], "the task went to the nearest ancestor that may hold tasks"


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
        fs.write_text(d.path("cpuacct", "c", "cpuacct.usage"), "0")
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
