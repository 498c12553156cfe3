"""NICs for the network plugin tests, written as sysfs trees, and request builders."""

from __future__ import annotations

import json
import os
from pathlib import Path

from agent.qrm.network.policy import RESOURCE
from agent.qrm.types import ContainerRequest, ContainerType, TopologyHint
from katalyst.qos import (
    MEMORY_ENHANCEMENT_ANNOTATION,
    NETWORK_ENHANCEMENT_ANNOTATION,
    QOS_LEVEL_ANNOTATION,
    PodUID,
    parse_enhancements,
    parse_qos_level,
)


def write_nic(
    sysfs: Path,
    name: str,
    *,
    speed: str | None = None,
    numa: str | None = None,
    pci: str | None = None,
    unreadable_speed: bool = False,
) -> Path:
    """Write ``<sysfs>/class/net/<name>`` as the kernel lays it out.

    With ``pci`` the interface is a PCI function: it lives under
    ``devices/pci0000:00/<pci>/net/<name>`` with a ``device`` link to the function,
    whose ``numa_node`` holds ``numa`` when given. Without, it is a virtual device
    (``devices/virtual/net/<name>``, no ``device`` link): a veth, a bridge, ``lo``.
    ``speed`` is written verbatim; ``unreadable_speed`` makes reading it fail (the
    kernel answers EINVAL for a link that is down; a directory fails on read too).
    """
    if pci is not None:
        function = sysfs / "devices" / "pci0000:00" / pci
        iface = function / "net" / name
        iface.mkdir(parents=True)
        if numa is not None:
            (function / "numa_node").write_text(f"{numa}\n")
        (iface / "device").symlink_to(os.path.relpath(function, iface))
    else:
        iface = sysfs / "devices" / "virtual" / "net" / name
        iface.mkdir(parents=True)
    if unreadable_speed:
        (iface / "speed").mkdir()
    elif speed is not None:
        (iface / "speed").write_text(f"{speed}\n")
    link = sysfs / "class" / "net" / name
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(iface, link.parent))
    return iface


def request(
    uid: str,
    mbit: float | None = 300,
    *,
    level: str = "shared_cores",
    container: str = "app",
    container_type: ContainerType = ContainerType.MAIN,
    network: dict[str, str] | None = None,
    bound: bool = False,
    hint: set[int] | None = None,
    nic: str | None = None,
    namespace: str = "default",
) -> ContainerRequest:
    """A request for ``mbit`` Mbit/s (None: no bandwidth requested) as the server
    builds it from the kubelet's message."""
    annotations = {QOS_LEVEL_ANNOTATION: level}
    if network is not None:
        annotations[NETWORK_ENHANCEMENT_ANNOTATION] = json.dumps(network)
    if bound:
        annotations[MEMORY_ENHANCEMENT_ANNOTATION] = json.dumps({"numa_binding": "true"})
    if nic is not None:
        annotations["katalyst.kubewharf.io/nic_name"] = nic
    parsed = parse_qos_level(annotations)
    return ContainerRequest(
        pod_uid=PodUID(uid),
        pod_namespace=namespace,
        pod_name=uid,
        container_name=container,
        container_type=container_type,
        container_index=0,
        resource_name=RESOURCE,
        requests={} if mbit is None else {RESOURCE: float(mbit)},
        level=parsed,
        enhancements=parse_enhancements(annotations, parsed),
        annotations=annotations,
        hint=TopologyHint(nodes=frozenset(hint), preferred=True) if hint is not None else None,
    )
