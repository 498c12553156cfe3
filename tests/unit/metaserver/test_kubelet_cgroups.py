"""Pod and container cgroup paths of both kubelet cgroup drivers."""

from __future__ import annotations

import pytest

from agent.metaserver.kubelet_cgroups import (
    CgroupNameError,
    KubeletCgroupDriver,
    container_cgroup,
    detect_kubelet_driver,
    pod_cgroup,
)
from katalyst.cgroup import open_driver
from katalyst.cgroup.fake import FakeCgroupFS
from katalyst.qos import NativeQoSClass

UID = "8dbc5f0b-2f6a-4b8a-9f7e-0c1d2e3f4a5b"
CID = "containerd://" + "ab" * 32

CGROUPFS, SYSTEMD = KubeletCgroupDriver.CGROUPFS, KubeletCgroupDriver.SYSTEMD


@pytest.mark.parametrize(
    ("kind", "qos", "expected"),
    [
        (CGROUPFS, NativeQoSClass.GUARANTEED, f"kubepods/pod{UID}"),
        (CGROUPFS, NativeQoSClass.BURSTABLE, f"kubepods/burstable/pod{UID}"),
        (CGROUPFS, NativeQoSClass.BEST_EFFORT, f"kubepods/besteffort/pod{UID}"),
        (
            SYSTEMD,
            NativeQoSClass.GUARANTEED,
            f"kubepods.slice/kubepods-pod{UID.replace('-', '_')}.slice",
        ),
        (
            SYSTEMD,
            NativeQoSClass.BURSTABLE,
            "kubepods.slice/kubepods-burstable.slice/"
            f"kubepods-burstable-pod{UID.replace('-', '_')}.slice",
        ),
    ],
)
def test_pod_cgroups(kind: KubeletCgroupDriver, qos: NativeQoSClass, expected: str) -> None:
    assert pod_cgroup(kind, qos=qos, pod_uid=UID) == expected


def test_container_cgroups() -> None:
    cgfs = container_cgroup(CGROUPFS, qos=NativeQoSClass.BEST_EFFORT, pod_uid=UID, container_id=CID)
    assert cgfs == f"kubepods/besteffort/pod{UID}/{'ab' * 32}"
    sd = container_cgroup(SYSTEMD, qos=NativeQoSClass.GUARANTEED, pod_uid=UID, container_id=CID)
    assert sd.endswith(f"/cri-containerd-{'ab' * 32}.scope")
    crio = container_cgroup(
        SYSTEMD, qos=NativeQoSClass.GUARANTEED, pod_uid=UID, container_id="cri-o://" + "cd" * 32
    )
    assert crio.endswith(f"/crio-{'cd' * 32}.scope")


@pytest.mark.parametrize("uid", ["../etc", "a/b", "", "x" * 200, "uid with space"])
def test_bad_uids_never_become_paths(uid: str) -> None:
    with pytest.raises(CgroupNameError, match="pod UID"):
        pod_cgroup(CGROUPFS, qos=NativeQoSClass.BURSTABLE, pod_uid=uid)


@pytest.mark.parametrize(
    "cid", ["abc", "containerd://../../x", "rkt://" + "ab" * 32, "containerd://XYZ"]
)
def test_bad_container_ids_never_become_paths(cid: str) -> None:
    with pytest.raises(CgroupNameError, match="container ID"):
        container_cgroup(CGROUPFS, qos=NativeQoSClass.BURSTABLE, pod_uid=UID, container_id=cid)


def test_the_driver_is_detected_from_the_hierarchy() -> None:
    driver = open_driver(FakeCgroupFS.v1(), base="")
    assert detect_kubelet_driver(driver) is None
    driver.create("kubepods")
    assert detect_kubelet_driver(driver) is CGROUPFS
    other = open_driver(FakeCgroupFS.v2(), base="")
    other.create("kubepods.slice")
    assert detect_kubelet_driver(other) is SYSTEMD
