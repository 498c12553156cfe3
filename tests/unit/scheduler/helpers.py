"""Builders of pod and CNR wire JSON for the extender's tests."""

from __future__ import annotations

from typing import Any

from katalyst.qos import RESOURCE_GPU_MEMORY, RESOURCE_RECLAIMED_MEMORY, RESOURCE_RECLAIMED_MILLICPU
from scheduler_plugins.plugins.model import (
    ANNOTATION_GPU_COUNT,
    ANNOTATION_RDMA_COUNT,
    ANNOTATION_TOPOLOGY_POLICY,
)

GIB = 2**30


def pod_json(
    name: str = "p",
    *,
    uid: str | None = None,
    millicpu: int | str | None = None,
    memory: int | str | None = None,
    gpu_memory: int | str | None = None,
    gpu_count: int | str | None = None,
    rdma: int | None = None,
    policy: str | None = None,
    node: str | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    requests: dict[str, str] = {}
    if millicpu is not None:
        requests[RESOURCE_RECLAIMED_MILLICPU] = str(millicpu)
    if memory is not None:
        requests[RESOURCE_RECLAIMED_MEMORY] = str(memory)
    if gpu_memory is not None:
        requests[RESOURCE_GPU_MEMORY] = str(gpu_memory)
    notes = dict(annotations or {})
    if gpu_count is not None:
        notes[ANNOTATION_GPU_COUNT] = str(gpu_count)
    if rdma is not None:
        notes[ANNOTATION_RDMA_COUNT] = str(rdma)
    if policy is not None:
        notes[ANNOTATION_TOPOLOGY_POLICY] = policy
    pod: dict[str, Any] = {
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": uid or f"uid-{name}",
            "annotations": notes,
        },
        "spec": {
            "containers": [
                {"name": "main", "resources": {"requests": requests, "limits": dict(requests)}}
            ]
        },
    }
    if node is not None:
        pod["spec"]["nodeName"] = node
    return pod


def gpu_zone(
    index: int,
    *,
    memory: int = 16384,
    numa: int = 0,
    switch: str = "sw0",
    allocations: dict[str, int] | None = None,
) -> dict[str, Any]:
    return {
        "type": "GPU",
        "name": str(index),
        "resources": {"capacity": {RESOURCE_GPU_MEMORY: str(memory)}},
        "attributes": [
            {"name": "uuid", "value": f"GPU-{index}"},
            {"name": "numa_node", "value": str(numa)},
            {"name": "pcie_switch", "value": switch},
        ],
        "allocations": [
            {"consumer": f"default/x/{uid}", "requests": {RESOURCE_GPU_MEMORY: str(mib)}}
            for uid, mib in (allocations or {}).items()
        ],
    }


def nic_zone(
    name: str, *, numa: int = 0, switch: str = "sw0", allocated: bool = False
) -> dict[str, Any]:
    return {
        "type": "NIC",
        "name": name,
        "resources": {},
        "attributes": [
            {"name": "numa_node", "value": str(numa)},
            {"name": "pcie_switch", "value": switch},
        ],
        "allocations": [{"consumer": "default/x/y"}] if allocated else [],
    }


def cnr_json(
    name: str,
    *,
    millicpu: int | None = 8000,
    memory: int | None = 16 * GIB,
    zones: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    allocatable: dict[str, str] = {}
    if millicpu is not None:
        allocatable[RESOURCE_RECLAIMED_MILLICPU] = str(millicpu)
    if memory is not None:
        allocatable[RESOURCE_RECLAIMED_MEMORY] = str(memory)
    # GPU and NIC zones hang under their NUMA zone, as the agent reports them.
    by_numa: dict[str, list[dict[str, Any]]] = {}
    for zone in zones or []:
        numa = next(a["value"] for a in zone["attributes"] if a["name"] == "numa_node")
        by_numa.setdefault(numa, []).append(zone)
    return {
        "apiVersion": "node.katalyst.kubewharf.io/v1alpha1",
        "kind": "CustomNodeResource",
        "metadata": {"name": name},
        "status": {
            "resources": {"allocatable": allocatable, "capacity": dict(allocatable)},
            "topologyZone": [
                {
                    "type": "Socket",
                    "name": "0",
                    "resources": {},
                    "children": [
                        {"type": "Numa", "name": numa, "resources": {}, "children": children}
                        for numa, children in sorted(by_numa.items())
                    ],
                }
            ],
        },
    }
