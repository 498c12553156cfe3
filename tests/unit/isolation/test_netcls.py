"""The net_cls classifier through the files the kernel would see.

:class:`katalyst.cgroup.fake.FakeCgroupFS` cannot model ``net_cls``, so these tests
use :class:`tests.support.isolation_fakes.TreeCgroupFS`, the ``CgroupFS`` seam over
a temporary directory with the kernel's rules where the classifier depends on them
(that module's docstring lists them), and a fake ``mount`` command that adds to its
mountinfo.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import sys
from pathlib import Path

import pytest

from agent.isolation.netcls import (
    NetClsClassifier,
    NetClsError,
    find_net_cls,
    mount_net_cls,
    reset_classids,
)
from agent.isolation.tc import HANDLE_MAJOR, classid
from katalyst.cgroup import (
    CgroupError,
    CgroupNotFound,
)
from tests.support.isolation_fakes import Host, TreeCgroupFS, make_host

SHARED_ID = classid(0x20)
RECLAIMED_ID = classid(0x30)


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return make_host(tmp_path)


# ---- where a container's net_cls cgroup is -------------------------------------------


def test_path_for_mirrors_the_cpu_path(host: Host) -> None:
    c = host.classifier()
    assert c.mountpoint == host.net_cls
    assert c.path_for("kubepods/pod1/app") == f"{host.net_cls}/kubepods/pod1/app"


def test_path_for_below_a_net_cls_mount_of_a_subtree(tmp_path: Path) -> None:
    # A container (the agent's own) that sees only /kubepods of the net_cls hierarchy.
    h = make_host(tmp_path, net_cls_root="/kubepods")
    c = h.classifier()
    assert c.path_for("kubepods/pod1/app") == f"{h.net_cls}/pod1/app"
    assert c.path_for("kubepods") == h.net_cls
    for outside in ("system.slice/x", "kubepods-besteffort/pod2"):
        with pytest.raises(CgroupError, match="outside the net_cls mount's root /kubepods"):
            c.path_for(outside)


def test_path_for_from_a_cpu_mount_of_a_subtree(tmp_path: Path) -> None:
    # The cpu mount shows /kubepods: its paths are re-rooted into net_cls's namespace.
    h = make_host(tmp_path, cpu_root="/kubepods")
    assert h.classifier().path_for("pod1/app") == f"{h.net_cls}/kubepods/pod1/app"
    both = make_host(tmp_path / "both", cpu_root="/kubepods", net_cls_root="/kubepods")
    assert both.classifier().path_for("pod1/app") == f"{both.net_cls}/pod1/app"


def test_path_for_includes_the_drivers_base(tmp_path: Path) -> None:
    h = make_host(tmp_path, driver_base="kubepods")
    assert h.classifier().path_for("pod1/app") == f"{h.net_cls}/kubepods/pod1/app"


def test_a_hierarchy_without_net_cls_is_refused(host: Host) -> None:
    cpu = host.driver.layout.hierarchy_for("cpu")
    with pytest.raises(ValueError, match="does not carry net_cls"):
        NetClsClassifier(host.driver, cpu)


# ---- classify -------------------------------------------------------------------------


def test_classify_creates_the_cgroup_writes_the_classid_and_moves_the_tasks(host: Host) -> None:
    host.container("kubepods/pod1/app", 100, 101)
    c = host.classifier()
    assert c.classify("kubepods/pod1/app", SHARED_ID) is True
    path = f"{host.net_cls}/kubepods/pod1/app"
    assert host.fs.classid(path) == SHARED_ID
    assert host.fs.procs(path) == [100, 101]
    assert 100 not in host.fs.procs(host.net_cls)  # moved, not copied
    # The parents it had to create keep the root's classid.
    assert host.fs.classid(f"{host.net_cls}/kubepods/pod1") == 0
    assert host.fs.classid(f"{host.net_cls}/kubepods") == 0


def test_a_second_classify_writes_nothing(host: Host) -> None:
    host.container("kubepods/pod1/app", 100)
    c = host.classifier()
    c.classify("kubepods/pod1/app", SHARED_ID)
    before = list(host.fs.writes)
    assert c.classify("kubepods/pod1/app", SHARED_ID) is False
    assert host.fs.writes == before


def test_classify_moves_only_the_tasks_not_there_yet(host: Host) -> None:
    host.container("kubepods/pod1/app", 100)
    c = host.classifier()
    c.classify("kubepods/pod1/app", SHARED_ID)
    host.container("kubepods/pod1/app", 102)  # the container forked
    before = len(host.fs.writes)
    assert c.classify("kubepods/pod1/app", SHARED_ID) is True
    path = f"{host.net_cls}/kubepods/pod1/app"
    assert host.fs.writes[before:] == [(f"{path}/cgroup.procs", "102")]
    assert host.fs.procs(path) == [100, 102]


def test_a_new_classid_is_written_once(host: Host) -> None:
    host.container("kubepods/pod1/app", 100)
    c = host.classifier()
    c.classify("kubepods/pod1/app", SHARED_ID)
    before = len(host.fs.writes)
    assert c.classify("kubepods/pod1/app", RECLAIMED_ID) is True
    path = f"{host.net_cls}/kubepods/pod1/app"
    assert host.fs.writes[before:] == [(f"{path}/net_cls.classid", str(RECLAIMED_ID))]
    assert host.fs.classid(path) == RECLAIMED_ID


def test_an_existing_net_cls_cgroup_is_used_as_it_is(host: Host) -> None:
    # runc made it (net_cls was mounted before the pod started), tasks already in it.
    host.container("kubepods/pod1/app", 100)
    host.fs.make(f"{host.net_cls}/kubepods/pod1/app", 100)
    c = host.classifier()
    before = len(host.fs.writes)
    assert c.classify("kubepods/pod1/app", SHARED_ID) is True
    path = f"{host.net_cls}/kubepods/pod1/app"
    assert host.fs.writes[before:] == [(f"{path}/net_cls.classid", str(SHARED_ID))]


def test_a_task_that_exits_while_it_is_moved_is_skipped(host: Host) -> None:
    host.container("kubepods/pod1/app", 100)
    cpu_procs = Path(host.driver.path("cpu", "kubepods/pod1/app", "cgroup.procs"))
    cpu_procs.write_text("100\n4242\n")  # listed, but gone before the move (ESRCH)
    c = host.classifier()
    assert c.classify("kubepods/pod1/app", SHARED_ID) is True
    assert host.fs.procs(f"{host.net_cls}/kubepods/pod1/app") == [100]


def test_a_vanished_container_is_cgroup_not_found(host: Host) -> None:
    c = host.classifier()
    with pytest.raises(CgroupNotFound):
        c.classify("kubepods/pod9/app", SHARED_ID)
    assert not os.path.exists(f"{host.net_cls}/kubepods/pod9")  # nothing made for it


# ---- sync and forget ---------------------------------------------------------------------


def test_sync_counts_written_and_gone(host: Host) -> None:
    host.container("kubepods/pod1/app", 100)
    host.container("kubepods/pod2/app", 200)
    c = host.classifier()
    targets = {
        "kubepods/pod1/app": SHARED_ID,
        "kubepods/pod2/app": RECLAIMED_ID,
        "kubepods/pod3/app": SHARED_ID,  # its cgroup vanished: pod churn
    }
    assert c.sync(targets) == (2, 1)
    assert c.sync(targets) == (0, 1)
    assert host.fs.classid(f"{host.net_cls}/kubepods/pod2/app") == RECLAIMED_ID


def test_sync_forgets_containers_that_left(host: Host) -> None:
    host.container("kubepods/pod1/app", 100)
    host.container("kubepods/pod2/app", 200)
    c = host.classifier()
    c.sync({"kubepods/pod1/app": SHARED_ID, "kubepods/pod2/app": SHARED_ID})
    host.remove_pod("kubepods/pod2", 200)
    assert c.sync({"kubepods/pod1/app": SHARED_ID}) == (0, 0)
    assert not os.path.exists(f"{host.net_cls}/kubepods/pod2")
    assert os.path.isdir(f"{host.net_cls}/kubepods/pod1/app")
    # Forgotten: a later sync without it does not touch it again.
    before = len(host.fs.writes)
    assert c.sync({"kubepods/pod1/app": SHARED_ID}) == (0, 0)
    assert len(host.fs.writes) == before


def test_forget_prunes_only_directories_that_belong_to_no_one(host: Host) -> None:
    host.container("kubepods/pod1/app", 100)
    host.container("kubepods/pod1/sidecar", 101)
    c = host.classifier()
    for cg in ("kubepods/pod1/app", "kubepods/pod1/sidecar"):
        c.classify(cg, SHARED_ID)
    net = host.net_cls

    c.forget("kubepods/pod1/app")  # its cpu cgroup is still there: not gone
    assert os.path.isdir(f"{net}/kubepods/pod1/app")

    host.remove_container("kubepods/pod1/app", 100)
    c.forget("kubepods/pod1/app")
    assert not os.path.exists(f"{net}/kubepods/pod1/app")
    assert os.path.isdir(f"{net}/kubepods/pod1")  # the sidecar is still there

    # The sidecar's cpu cgroup is gone but its task is still in net_cls: kept.
    host.remove_container("kubepods/pod1/sidecar")
    c.forget("kubepods/pod1/sidecar")
    assert os.path.isdir(f"{net}/kubepods/pod1/sidecar")

    host.fs.exit_process(101)
    c.forget("kubepods/pod1/sidecar")
    assert os.path.isdir(f"{net}/kubepods/pod1")  # its cpu pod cgroup is still there
    host.remove_pod("kubepods/pod1")
    c.forget("kubepods/pod1/sidecar")
    assert not os.path.exists(f"{net}/kubepods/pod1")
    assert os.path.isdir(f"{net}/kubepods")  # the kubepods cpu cgroup remains


def test_forget_prunes_what_someone_else_made_for_a_gone_container(host: Host) -> None:
    # runc made it (net_cls was mounted before the pod started); the pod is gone now.
    host.container("kubepods/pod2/app", 200)
    host.fs.make(f"{host.net_cls}/kubepods/pod2/app", 200)
    c = host.classifier()
    c.classify("kubepods/pod2/app", SHARED_ID)
    host.remove_pod("kubepods/pod2", 200)
    c.forget("kubepods/pod2/app")
    assert not os.path.exists(f"{host.net_cls}/kubepods/pod2")


def test_forget_of_a_container_outside_the_mount_does_nothing(tmp_path: Path) -> None:
    h = make_host(tmp_path, net_cls_root="/kubepods")
    h.fs.make(f"{h.net_cls}/x")  # an orphan, but not the mirror of system.slice/x
    h.classifier().forget("system.slice/x")  # path_for refuses it; forget must not raise
    assert os.path.isdir(f"{h.net_cls}/x")
    assert h.fs.writes == []


# ---- release and cleanup ------------------------------------------------------------------


def test_release_prunes_gone_containers_and_keeps_running_ones(host: Host) -> None:
    host.container("kubepods/pod1/app", 100)
    host.container("kubepods/pod2/app", 200)
    c = host.classifier()
    c.sync({"kubepods/pod1/app": SHARED_ID, "kubepods/pod2/app": RECLAIMED_ID})
    host.remove_pod("kubepods/pod2", 200)
    before = len(host.fs.writes)
    c.release()
    assert host.fs.writes[before:] == []  # no classid is reset
    assert not os.path.exists(f"{host.net_cls}/kubepods/pod2")
    assert host.fs.classid(f"{host.net_cls}/kubepods/pod1/app") == SHARED_ID
    assert host.fs.procs(f"{host.net_cls}/kubepods/pod1/app") == [100]


def test_cleanup_resets_classids_and_prunes_what_belongs_to_no_one(host: Host) -> None:
    host.container("kubepods/pod1/app", 100)
    host.container("kubepods/pod2/app", 200)
    c = host.classifier()
    c.sync({"kubepods/pod1/app": SHARED_ID, "kubepods/pod2/app": RECLAIMED_ID})
    host.remove_pod("kubepods/pod2", 200)
    c.cleanup()
    net = host.net_cls
    assert not os.path.exists(f"{net}/kubepods/pod2")
    assert host.fs.classid(f"{net}/kubepods/pod1/app") == 0  # running: reset, kept
    assert host.fs.procs(f"{net}/kubepods/pod1/app") == [100]
    # Nothing is left to reset.
    before = len(host.fs.writes)
    c.cleanup()
    assert len(host.fs.writes) == before


# ---- reset_classids ---------------------------------------------------------------------


def test_reset_classids_resets_only_the_agents_major(host: Host) -> None:
    fs, net = host.fs, host.net_cls
    other = (0x10 << 16) | 0x1  # 10:1, someone else's
    for path, value in (
        (f"{net}/a", SHARED_ID),
        (f"{net}/a/b", RECLAIMED_ID),
        (f"{net}/c", other),
        (f"{net}/d", 0),
    ):
        fs.make(path)
        fs.write_text(f"{path}/net_cls.classid", str(value))
    fs.write_text(f"{net}/net_cls.classid", str(classid(0x10)))
    assert reset_classids(fs, host.hier, major=HANDLE_MAJOR) == 3
    assert [fs.classid(p) for p in (net, f"{net}/a", f"{net}/a/b")] == [0, 0, 0]
    assert fs.classid(f"{net}/c") == other
    assert reset_classids(fs, host.hier, major=HANDLE_MAJOR) == 0


def test_reset_classids_below_a_top_leaves_other_agents_pods_alone(host: Host) -> None:
    fs, net = host.fs, host.net_cls
    for path in (f"{net}/mine/p", f"{net}/theirs/p"):
        fs.make(path)
        fs.write_text(f"{path}/net_cls.classid", str(RECLAIMED_ID))
    assert reset_classids(fs, host.hier, major=HANDLE_MAJOR, top=f"{net}/mine") == 1
    assert fs.classid(f"{net}/mine/p") == 0
    assert fs.classid(f"{net}/theirs/p") == RECLAIMED_ID


# ---- finding and mounting net_cls -------------------------------------------------------


def test_find_net_cls(tmp_path: Path) -> None:
    assert find_net_cls(make_host(tmp_path / "none", net_cls=None).fs) is None
    h = make_host(tmp_path / "co", net_cls=("net_cls", "net_prio"))
    found = find_net_cls(h.fs)
    assert found is not None
    assert found.mountpoint == h.net_cls
    assert found.controllers == frozenset({"net_cls", "net_prio"})


MOUNT_SCRIPT = """\
#!{python}
import sys
from pathlib import Path

Path({log!r}).open("a").write(" ".join(sys.argv[1:]) + "\\n")
if {fail!r}:
    sys.stderr.write({fail!r} + "\\n")
    sys.exit(32)
if {register!r}:
    where = sys.argv[-1]
    Path(where, "cgroup.procs").write_text("1\\n")
    Path(where, "net_cls.classid").write_text("0\\n")
    with open({mountinfo!r}, "a") as f:
        f.write(f"90 25 0:90 / {{where}} rw,relatime - cgroup net_cls rw,net_cls\\n")
"""


def fake_mount(tmp_path: Path, fs: TreeCgroupFS, *, fail: str = "", register: bool = True) -> Path:
    """A ``mount`` command that records its arguments and, unless it fails, adds the
    mount to ``fs``'s mountinfo; returns the file it records to."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / "mount.log"
    script = bin_dir / "mount"
    script.write_text(
        MOUNT_SCRIPT.format(
            python=sys.executable,
            log=str(log),
            fail=fail,
            register=register,
            mountinfo=str(fs.mountinfo_path),
        )
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return log


@pytest.fixture
def only_fake_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PATH holds only the test's fake commands: the host's mount is never run."""
    (tmp_path / "bin").mkdir(exist_ok=True)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))


@pytest.mark.usefixtures("only_fake_tools")
def test_mount_net_cls_uses_the_mounted_hierarchy(tmp_path: Path) -> None:
    h = make_host(tmp_path / "host")
    log = fake_mount(tmp_path, h.fs)
    assert mount_net_cls(h.fs, str(tmp_path / "elsewhere")) == h.hier
    assert not log.exists()  # nothing was mounted


@pytest.mark.usefixtures("only_fake_tools")
def test_mount_net_cls_mounts_it_when_absent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent.isolation.netcls")
    h = make_host(tmp_path / "host", net_cls=None)
    log = fake_mount(tmp_path, h.fs)
    where = str(tmp_path / "host" / "cgroup" / "net_cls")
    hier = mount_net_cls(h.fs, where)
    assert log.read_text() == f"-t cgroup -o net_cls net_cls {where}\n"
    assert hier.mountpoint == where
    assert "net_cls" in hier.controllers
    assert f"mounted the net_cls cgroup hierarchy at {where}" in caplog.text


@pytest.mark.usefixtures("only_fake_tools")
def test_mount_net_cls_failure_says_why(tmp_path: Path) -> None:
    h = make_host(tmp_path / "host", net_cls=None)
    fake_mount(tmp_path, h.fs, fail="mount: /x: permission denied.")
    where = str(tmp_path / "host" / "cgroup" / "net_cls")
    with pytest.raises(NetClsError, match=r"cannot mount net_cls at .*: mount: /x: permission"):
        mount_net_cls(h.fs, where)


@pytest.mark.usefixtures("only_fake_tools")
def test_mount_net_cls_that_does_not_show_in_mountinfo(tmp_path: Path) -> None:
    h = make_host(tmp_path / "host", net_cls=None)
    fake_mount(tmp_path, h.fs, register=False)
    where = str(tmp_path / "host" / "cgroup" / "net_cls")
    with pytest.raises(NetClsError, match=r"was mounted at .* but is not in mountinfo"):
        mount_net_cls(h.fs, where)


@pytest.mark.usefixtures("only_fake_tools")
def test_mount_net_cls_without_a_mountpoint(tmp_path: Path) -> None:
    h = make_host(tmp_path / "host", net_cls=None)
    log = fake_mount(tmp_path, h.fs)
    where = str(tmp_path / "no" / "such" / "parent")
    with pytest.raises(
        NetClsError, match=re.escape(f"cannot create the net_cls mountpoint {where}")
    ):
        mount_net_cls(h.fs, where)
    assert not log.exists()


@pytest.mark.usefixtures("only_fake_tools")
def test_mount_net_cls_without_the_mount_command(tmp_path: Path) -> None:
    h = make_host(tmp_path / "host", net_cls=None)
    where = str(tmp_path / "host" / "cgroup" / "net_cls")
    with pytest.raises(NetClsError, match="cannot mount net_cls at"):
        mount_net_cls(h.fs, where)
