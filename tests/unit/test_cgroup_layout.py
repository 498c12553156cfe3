"""Layout detection from mountinfo: every way hosts mount cgroups."""

from __future__ import annotations

import pytest

from katalyst.cgroup import CgroupError, CgroupMode, CgroupUnsupported, detect_layout, open_driver
from katalyst.cgroup.fake import FakeCgroupFS
from katalyst.cgroup.layout import parse_proc_cgroup

# This project's CI machines: every v1 controller in its own hierarchy, cpu and
# cpuacct apart, plus an empty cgroup2 mount (hybrid).
SEPARATE_HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

# A classic systemd v1 host: cpu and cpuacct co-mounted, with a symlinked name.
GROUPED_V1 = """\
25 18 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/systemd rw,nosuid shared:10 - cgroup cgroup rw,xattr,name=systemd
29 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:13 - cgroup cgroup rw,cpu,cpuacct
30 25 0:27 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid shared:14 - cgroup cgroup rw,net_cls,net_prio
31 25 0:28 / /sys/fs/cgroup/memory rw,nosuid shared:15 - cgroup cgroup rw,memory
"""

PURE_V2 = (
    "26 22 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - "
    "cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n"
)

# Inside a container: the hierarchy shows a sub-cgroup at its mountpoint, and the
# same hierarchy is also bind-mounted at its root elsewhere; spaces are escaped.
CONTAINER = """\
700 690 0:29 /kubepods/pod1 /sys/fs/cgroup/cpu ro,relatime - cgroup cgroup rw,cpu
701 690 0:29 / /host\\040cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
"""


class _MountinfoOnly(FakeCgroupFS):
    def __init__(self, text: str) -> None:
        super().__init__(hierarchies=[], cpus="0", mems="0", devices=[])
        self._text = text

    def mountinfo(self) -> str:
        return self._text


def test_separate_cpu_and_cpuacct_hierarchies_in_hybrid_mode() -> None:
    layout = detect_layout(_MountinfoOnly(SEPARATE_HYBRID))
    assert layout.mode is CgroupMode.HYBRID
    assert layout.hierarchy_for("cpu").mountpoint == "/sys/fs/cgroup/cpu"
    assert layout.hierarchy_for("cpuacct").mountpoint == "/sys/fs/cgroup/cpuacct"
    assert layout.hierarchy_for("cpu") != layout.hierarchy_for("cpuacct")
    assert layout.unified is not None and layout.unified.mountpoint == "/sys/fs/cgroup/unified"
    assert not layout.has("pids")
    with pytest.raises(CgroupUnsupported, match="pids"):
        layout.hierarchy_for("pids")


def test_grouped_cpu_cpuacct_in_pure_v1() -> None:
    layout = detect_layout(_MountinfoOnly(GROUPED_V1))
    assert layout.mode is CgroupMode.V1
    assert layout.hierarchy_for("cpu") is layout.hierarchy_for("cpuacct")
    assert layout.hierarchy_for("cpu").mountpoint == "/sys/fs/cgroup/cpu,cpuacct"
    assert layout.hierarchy_for("net_prio").controllers == frozenset({"net_cls", "net_prio"})
    assert all("systemd" not in h.mountpoint for h in layout.v1), "name= hierarchies hold nothing"


def test_pure_v2_reads_its_controllers_from_the_root() -> None:
    fs = FakeCgroupFS.v2(controllers=["cpu", "memory", "io"])
    layout = detect_layout(fs)
    assert layout.mode is CgroupMode.V2
    assert layout.has("memory") and layout.has("io")
    assert not layout.has("pids")
    text_only = detect_layout(_MountinfoOnly(PURE_V2))
    assert text_only.mode is CgroupMode.V2


def test_a_container_mount_prefers_the_hierarchy_root_and_unescapes_paths() -> None:
    layout = detect_layout(_MountinfoOnly(CONTAINER))
    cpu = layout.hierarchy_for("cpu")
    assert cpu.root == "/"
    assert cpu.mountpoint == "/host cgroup/cpu"


def test_no_cgroup_mount_is_a_clear_error() -> None:
    with pytest.raises(CgroupError, match="no cgroup filesystem"):
        detect_layout(_MountinfoOnly("22 1 0:20 / /proc rw - proc proc rw\n"))


def test_proc_self_cgroup_parsing() -> None:
    text = "9:name=systemd:/\n4:memory:/sandbox/a\n2:cpu,cpuacct:/x\n0::/unified/y\n"
    assert parse_proc_cgroup(text) == {
        "name=systemd": "/",
        "memory": "/sandbox/a",
        "cpu": "/x",
        "cpuacct": "/x",
        "": "/unified/y",
    }


def test_a_driver_below_its_own_cgroup_uses_each_hierarchys_own_path() -> None:
    fs = FakeCgroupFS.v1(own_cgroup={"memory": "/sandbox/me"})
    driver = open_driver(fs, base="kqos", below_own_cgroup=True)
    assert driver.path("memory", "pod") == "/sys/fs/cgroup/memory/sandbox/me/kqos/pod"
    assert driver.path("cpu", "pod") == "/sys/fs/cgroup/cpu/kqos/pod"
    grouped = FakeCgroupFS.v1(groups=[("cpu", "cpuacct"), ("cpuset",), ("memory",)])
    d2 = open_driver(grouped, base="kqos")
    assert (
        d2.path("cpuacct", "p", "cpuacct.usage")
        == "/sys/fs/cgroup/cpu,cpuacct/kqos/p/cpuacct.usage"
    )
    assert len(d2.hierarchies()) == 3
