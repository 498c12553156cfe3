"""The node's GPUs and RDMA NICs as CNR topology zones, with what is allocated on
them: what the scheduler extender's ``gpu-share`` and ``rdma-topology`` plugins
read (docs/scheduling.md).

A GPU zone: ``{"type": "GPU", "name": "<index>", "resources": {"capacity" and
"allocatable": {gpu_memory: MiB}}, "attributes": [uuid, numa_node, pcie_switch],
"allocations": [{"consumer": "<pod uid>", "requests": {gpu_memory: MiB}}]}``; a NIC
zone: ``{"type": "NIC", "name": "<rdma device>", "resources": {}, "attributes":
[netdevs, numa_node, pcie_switch], "allocations": []}``. Zones are sorted by type
and name, so that the same devices always give the same list.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agent.gpu.inventory import RDMADevice
from agent.qrm.gpu.policy import GPUPolicy
from katalyst.qos import RESOURCE_GPU_MEMORY

__all__ = ["ZONE_GPU", "ZONE_NIC", "device_zones"]

ZONE_GPU = "GPU"
ZONE_NIC = "NIC"


def _attributes(**values: object) -> list[dict[str, str]]:
    return [{"name": k, "value": str(v)} for k, v in values.items() if v not in (None, "")]


def device_zones(
    gpu: GPUPolicy | None, rdma: Sequence[RDMADevice] = ()
) -> tuple[dict[str, Any], ...]:
    """The zones of every GPU the plugin shares out (with each pod's MiB on it) and
    every RDMA device."""
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
                "allocations": [],
            }
        )
    return tuple(zones)
