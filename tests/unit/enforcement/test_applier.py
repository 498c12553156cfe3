"""Targets from allocations, applied to the fake cgroup filesystem (v1 and v2)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from agent.enforcement.applier import RECLAIMED_SHARES, Applier, ContainerTarget, target_for
from agent.qrm.memory.policy import (
    LIMIT_ANNOTATION,
    OOM_SCORE_ADJ_ANNOTATION,
)
from agent.qrm.types import AllocationInfo
from katalyst.cgroup import CgroupError, open_driver
from katalyst.cgroup.fake import FakeCgroupFS
from katalyst.cpuset import CPUSet
from katalyst.qos import QoSLevel

MiB = 1024 * 1024


def _memory(**annotations: str) -> AllocationInfo:
    return AllocationInfo(
        oci_property_name="CpusetMems", allocation_result="0", annotations=annotations
    )


def test_target_from_allocations() -> None:
    cpu = AllocationInfo(oci_property_name="CpusetCpus", allocation_result="2-3")
    memory = _memory(**{LIMIT_ANNOTATION: str(64 * MiB), OOM_SCORE_ADJ_ANNOTATION: "333"})
    target = target_for(cgroup="p/c", level=QoSLevel.RECLAIMED_CORES, cpu=cpu, memory=memory)
    assert target == ContainerTarget(
        cgroup="p/c",
        cpus=CPUSet.parse("2-3"),
        mems=CPUSet.parse("0"),
        cpu_shares=RECLAIMED_SHARES,
        memory_limit=64 * MiB,
        oom_score_adj=333,
    )
    shared = target_for(cgroup="p/c", level=QoSLevel.SHARED_CORES, cpu=None, memory=None)
    assert shared == ContainerTarget(cgroup="p/c")


@pytest.mark.parametrize("make", [FakeCgroupFS.v1, FakeCgroupFS.v2])
def test_apply_writes_once_and_reports_changes(
    make: Callable[[], FakeCgroupFS], tmp_path: Path
) -> None:
    fs = make()
    driver = open_driver(fs, base="kqos")
    driver.create("pod/app")
    fs.add_process(42)
    driver.attach("pod/app", 42)
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "oom_score_adj").write_text("0\n")
    applier = Applier(driver, proc_root=str(tmp_path))
    target = ContainerTarget(
        cgroup="pod/app",
        cpus=CPUSet.parse("1"),
        mems=CPUSet.parse("0"),
        cpu_shares=2,
        memory_limit=64 * MiB,
        memory_protection=32 * MiB,
        oom_score_adj=-333,
    )
    first = applier.apply(target)
    protection = "memory_low" if driver.version == 2 else "memory_soft_limit"
    assert set(first.changed) == {
        "cpuset",
        "cpu_shares",
        "memory_limit",
        protection,
        "oom_score_adj",
    }
    assert (tmp_path / "42" / "oom_score_adj").read_text() == "-333"
    assert driver.cpuset("pod/app")[0] == CPUSet.parse("1")
    assert driver.memory_limit("pod/app") == 64 * MiB
    assert applier.apply(target).changed == ()


def test_a_vanished_cgroup_is_churn_not_an_error(tmp_path: Path) -> None:
    driver = open_driver(FakeCgroupFS.v1(), base="kqos")
    result = Applier(driver, proc_root=str(tmp_path)).apply(
        ContainerTarget(cgroup="gone", cpus=CPUSet.parse("0"))
    )
    assert result.gone
    assert result.changed == ()


def test_an_unsupported_setting_is_skipped_and_logged_once(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    # A v2 host whose root offers no memory controller to delegate.
    driver = open_driver(FakeCgroupFS.v2(controllers=["cpu", "cpuset"]), base="kqos")
    driver.create("c")
    applier = Applier(driver, proc_root=str(tmp_path))
    target = ContainerTarget(cgroup="c", cpus=CPUSet.parse("0"), memory_protection=MiB)
    with caplog.at_level("WARNING"):
        assert applier.apply(target).changed == ("cpuset",)
        assert applier.apply(target).changed == ()
    warnings = [r for r in caplog.records if "memory_low is not supported" in r.getMessage()]
    assert len(warnings) == 1


def test_writes_are_counted_by_setting_and_outcome() -> None:
    driver = open_driver(FakeCgroupFS.hybrid(cpus="0-3"))
    driver.create("p/c")
    applier = Applier(driver)
    target = ContainerTarget(cgroup="p/c", cpus=CPUSet.parse("1-2"), cpu_shares=2)
    applier.apply(target)
    applier.apply(target)  # nothing changes the second time: nothing counted
    assert applier.writes == {("cpuset", "changed"): 1, ("cpu_shares", "changed"): 1}
    applier.apply(ContainerTarget(cgroup="gone/c", cpus=CPUSet.parse("1")))
    assert applier.writes["container", "gone"] == 1
    with pytest.raises(CgroupError, match=r"cpuset\.cpus"):
        applier.apply(ContainerTarget(cgroup="p/c", cpus=CPUSet.parse("7")))
    assert applier.writes["container", "failed"] == 1
