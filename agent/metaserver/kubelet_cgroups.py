"""Where the kubelet puts pod and container cgroups, for both cgroup drivers.

The kubelet's ``cgroupfs`` driver nests plain directories::

    kubepods/pod<uid>/<container-id>                    Guaranteed
    kubepods/burstable/pod<uid>/<container-id>
    kubepods/besteffort/pod<uid>/<container-id>

and its ``systemd`` driver nests slices and scopes (dashes in the UID become
underscores, because systemd reserves '-' for the slice hierarchy)::

    kubepods.slice/kubepods-pod<uid_>.slice/<runtime>-<id>.scope
    kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice/...
    kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid_>.slice/...

where ``<runtime>`` is ``cri-containerd``, ``crio`` or ``docker``. The driver is
detected from which of ``kubepods`` / ``kubepods.slice`` exists. Every UID and
container id is validated before it becomes part of a path.
"""

from __future__ import annotations

import enum
import re

from katalyst.cgroup import CgroupDriver
from katalyst.qos import NativeQoSClass

_UID = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,127}", re.ASCII)
_CONTAINER_ID = re.compile(r"[a-f0-9]{12,128}", re.ASCII)
#: CRI runtime URL scheme -> systemd scope prefix.
_SCOPE_PREFIX = {"containerd": "cri-containerd", "cri-o": "crio", "docker": "docker"}


class KubeletCgroupDriver(enum.StrEnum):
    """The kubelet's ``--cgroup-driver``."""

    CGROUPFS = "cgroupfs"
    SYSTEMD = "systemd"


class CgroupNameError(ValueError):
    """A UID or container id that must not become part of a cgroup path."""


def detect_kubelet_driver(
    driver: CgroupDriver, *, root: str = "kubepods"
) -> KubeletCgroupDriver | None:
    """``systemd`` if ``<root>.slice`` exists below the driver's base, ``cgroupfs`` if
    ``<root>`` does, None if neither (no kubelet has run on this node yet)."""
    if driver.exists(f"{root}.slice"):
        return KubeletCgroupDriver.SYSTEMD
    if driver.exists(root):
        return KubeletCgroupDriver.CGROUPFS
    return None


def _qos_part(qos: NativeQoSClass) -> str:
    return "" if qos is NativeQoSClass.GUARANTEED else str(qos).lower()


def pod_cgroup(
    kind: KubeletCgroupDriver, *, qos: NativeQoSClass, pod_uid: str, root: str = "kubepods"
) -> str:
    """The pod's cgroup, relative to the hierarchy root (or a driver's base)."""
    if _UID.fullmatch(pod_uid) is None:
        raise CgroupNameError(f"pod UID {pod_uid!r} is not a Kubernetes UID")
    part = _qos_part(qos)
    if kind is KubeletCgroupDriver.CGROUPFS:
        return "/".join(p for p in (root, part, f"pod{pod_uid}") if p)
    uid = pod_uid.replace("-", "_")
    slice_prefix = f"{root}-{part}" if part else root
    parts = [f"{root}.slice"]
    if part:
        parts.append(f"{root}-{part}.slice")
    parts.append(f"{slice_prefix}-pod{uid}.slice")
    return "/".join(parts)


def parse_container_id(container_id: str) -> tuple[str, str]:
    """Split a status ``containerID`` (``containerd://abc...``) into (runtime, id)."""
    runtime, sep, cid = container_id.partition("://")
    if not sep or _CONTAINER_ID.fullmatch(cid) is None or runtime not in _SCOPE_PREFIX:
        raise CgroupNameError(
            f"container ID {container_id!r} is not <runtime>://<hex id> with a runtime of "
            + ", ".join(sorted(_SCOPE_PREFIX))
        )
    return runtime, cid


def container_cgroup(
    kind: KubeletCgroupDriver,
    *,
    qos: NativeQoSClass,
    pod_uid: str,
    container_id: str,
    root: str = "kubepods",
) -> str:
    """The container's cgroup, relative to the hierarchy root (or a driver's base)."""
    runtime, cid = parse_container_id(container_id)
    pod = pod_cgroup(kind, qos=qos, pod_uid=pod_uid, root=root)
    leaf = cid if kind is KubeletCgroupDriver.CGROUPFS else f"{_SCOPE_PREFIX[runtime]}-{cid}.scope"
    return f"{pod}/{leaf}"
