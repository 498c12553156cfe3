"""The node's GPUs and RDMA NICs as CNR topology zones, with what is allocated on
them: what the scheduler extender's ``gpu-share`` and ``rdma-topology`` plugins
read (docs/scheduling.md).

A GPU zone: ``{"type": "GPU", "name": "<index>", "resources": {"capacity" and
"allocatable": {gpu_memory: MiB}}, "attributes": [uuid, numa_node, pcie_switch],
"allocations": [{"consumer": "<pod uid>", "requests": {gpu_memory: MiB}}]}``; a NIC
zone: ``{"type": "NIC", "name": "<rdma device>", "resources": {}, "attributes":
[netdevs, numa_node, pcie_switch], "allocations": [{"consumer": "<pod uid>",
"requests": {rdma: "1"}}]}``, a NIC being allocated to the pods whose
``katalyst.kubewharf.io/rdma_devices`` annotation (written by the extender at bind)
names it. Zones are sorted by type and name, so that the same devices always give
the same list.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from agent.gpu.inventory import RDMADevice
from agent.qrm.gpu.policy import GPUPolicy
from katalyst.qos import (
    RDMA_DEVICES_ANNOTATION,
    RESOURCE_GPU_MEMORY,
    RESOURCE_RDMA,
    ZONE_GPU,
    ZONE_NIC,
    PodView,
)

__all__ = ["device_zones", "rdma_allocations"]


def _attributes(**values: object) -> list[dict[str, str]]:
    return [{"name": k, "value": str(v)} for k, v in values.items() if v not in (None, "")]


def rdma_allocations(pods: Iterable[PodView]) -> dict[str, tuple[str, ...]]:
    """RDMA device name -> the UIDs of the pods it was given to (sorted), from each
    pod's ``katalyst.kubewharf.io/rdma_devices`` annotation. Blank entries are
    skipped; a name this node has no device for is kept here and ignored by
    :func:`device_zones`."""
    holders: dict[str, set[str]] = {}
    for pod in pods:
        raw = pod.annotations.get(RDMA_DEVICES_ANNOTATION, "")
        for name in (part.strip() for part in raw.split(",")):
            if name:
                holders.setdefault(name, set()).add(pod.uid)
    return {name: tuple(sorted(uids)) for name, uids in holders.items()}


def device_zones(
    gpu: GPUPolicy | None,
    rdma: Sequence[RDMADevice] = (),
    rdma_holders: Mapping[str, Sequence[str]] | None = None,
) -> tuple[dict[str, Any], ...]:
    """The zones of every GPU the plugin shares out (with each pod's MiB on it) and
    every RDMA device (with the pods holding it: :func:`rdma_allocations`)."""
    holders = rdma_holders or {}
    zones: list[dict[str, Any]] = []
    if gpu is not None:
        per_gpu: dict[int, dict[str, int]] = {}
        for uid, usage in gpu.usage_by_pod().items():
            for index, mib in usage.items():
                per_gpu.setdefault(index, {})[uid] = mib
        for device in sorted(gpu.gpus, key=lambda g: g.index):
            memory = {RESOURCE_GPU_MEMORY: str(device.memory_mib)}
            zones.append(
                {
                    "type": ZONE_GPU,
                    "name": str(device.index),
                    "resources": {"capacity": memory, "allocatable": dict(memory)},
                    "attributes": _attributes(
                        uuid=device.uuid,
                        numa_node=device.numa_node,
                        pcie_switch=device.pcie_switch,
                    ),
                    "allocations": [
                        {"consumer": uid, "requests": {RESOURCE_GPU_MEMORY: str(mib)}}
                        for uid, mib in sorted(per_gpu.get(device.index, {}).items())
                    ],
                }
            )
    for nic in sorted(rdma, key=lambda d: d.name):
        zones.append(
            {
                "type": ZONE_NIC,
                "name": nic.name,
                "resources": {},
                "attributes": _attributes(
                    netdevs=",".join(nic.netdevs),
                    numa_node=nic.numa_node,
                    pcie_switch=nic.pcie_switch,
                ),
                "allocations": [
                    {"consumer": uid, "requests": {RESOURCE_RDMA: "1"}}
                    for uid in holders.get(nic.name, ())
                ],
            }
        )
    return tuple(zones)
