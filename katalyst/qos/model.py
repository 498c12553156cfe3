"""Katalyst's QoS levels, annotation keys, resource names and OOM priority ranges.

Every string here is wire-identical to Katalyst (``katalyst-api/pkg/consts/qos.go`` and
``resource.go``): pods, the scheduler and the kubelet hook written for Katalyst work
unchanged against this implementation.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Final

from katalyst.qos.errors import QoSValidationError

__all__ = [
    "CPU_ENHANCEMENT_ANNOTATION",
    "GPU_INDICES_ANNOTATION",
    "KATALYST_RESOURCES",
    "MEMORY_ENHANCEMENT_ANNOTATION",
    "NETWORK_ENHANCEMENT_ANNOTATION",
    "OOM_PRIORITY_IGNORE",
    "OOM_PRIORITY_TOP",
    "QOS_LEVEL_ANNOTATION",
    "RDMA_DEVICES_ANNOTATION",
    "RESOURCE_GPU_MEMORY",
    "RESOURCE_MILLIGPU",
    "RESOURCE_NET_BANDWIDTH",
    "RESOURCE_RDMA",
    "RESOURCE_RECLAIMED_MEMORY",
    "RESOURCE_RECLAIMED_MILLICPU",
    "ZONE_GPU",
    "ZONE_NIC",
    "QoSLevel",
    "default_oom_priority",
    "oom_priority_range",
    "parse_qos_level",
]

QOS_LEVEL_ANNOTATION: Final = "katalyst.kubewharf.io/qos_level"
"""Pod annotation selecting the QoS level; absent means ``shared_cores``."""
MEMORY_ENHANCEMENT_ANNOTATION: Final = "katalyst.kubewharf.io/memory_enhancement"
"""Pod annotation: JSON object of memory enhancements (NUMA binding, OOM priority...)."""
CPU_ENHANCEMENT_ANNOTATION: Final = "katalyst.kubewharf.io/cpu_enhancement"
"""Pod annotation: JSON object of CPU enhancements (cpuset pool, CPU burst...)."""
NETWORK_ENHANCEMENT_ANNOTATION: Final = "katalyst.kubewharf.io/network_enhancement"
"""Pod annotation: JSON object of network enhancements (NIC namespace type...)."""

RESOURCE_RECLAIMED_MILLICPU: Final = "resource.katalyst.kubewharf.io/reclaimed_millicpu"
"""Extended resource: reclaimed CPU, in milli-cores (``4k`` is four cores)."""
RESOURCE_RECLAIMED_MEMORY: Final = "resource.katalyst.kubewharf.io/reclaimed_memory"
"""Extended resource: reclaimed memory, in bytes."""
RESOURCE_GPU_MEMORY: Final = "resource.katalyst.kubewharf.io/gpu_memory"
"""Extended resource: shared-GPU memory."""
RESOURCE_MILLIGPU: Final = "resource.katalyst.kubewharf.io/milligpu"
"""Extended resource: shared-GPU compute, in thousandths of a GPU."""
RESOURCE_NET_BANDWIDTH: Final = "resource.katalyst.kubewharf.io/net_bandwidth"
"""Extended resource: network bandwidth, in Mbit/s."""
RESOURCE_RDMA: Final = "resource.katalyst.kubewharf.io/rdma"
"""Extended resource: RDMA NICs, whole devices (placed by the scheduler extender)."""

GPU_INDICES_ANNOTATION: Final = "katalyst.kubewharf.io/gpu_indices"
"""Pod annotation written at bind by the scheduler extender: the GPU indices chosen
for the pod (``"0,3"``); the node's ``qrm_gpu_plugin`` allocates on them."""
RDMA_DEVICES_ANNOTATION: Final = "katalyst.kubewharf.io/rdma_devices"
"""Pod annotation written at bind by the scheduler extender: the RDMA NICs chosen for
the pod (CNR NIC zone names, comma-separated); the node reports them allocated."""

ZONE_GPU: Final = "GPU"
"""CNR ``status.topologyZone`` type of one GPU (named by its index)."""
ZONE_NIC: Final = "NIC"
"""CNR ``status.topologyZone`` type of one RDMA NIC (named by its device)."""

KATALYST_RESOURCES: Final = frozenset(
    {
        RESOURCE_RECLAIMED_MILLICPU,
        RESOURCE_RECLAIMED_MEMORY,
        RESOURCE_GPU_MEMORY,
        RESOURCE_MILLIGPU,
        RESOURCE_NET_BANDWIDTH,
        RESOURCE_RDMA,
    }
)
"""The Katalyst extended resources above; Kubernetes requires extended resources to be
whole numbers."""


class QoSLevel(StrEnum):
    """Katalyst's QoS level of a pod, from the ``katalyst.kubewharf.io/qos_level`` annotation."""

    DEDICATED_CORES = "dedicated_cores"
    """Exclusive cpusets, optionally NUMA-bound; a Kubernetes Guaranteed pod."""
    SHARED_CORES = "shared_cores"
    """The shared pool; the default when the annotation is absent."""
    RECLAIMED_CORES = "reclaimed_cores"
    """Runs on capacity lent by the other levels; first to be throttled and evicted."""
    SYSTEM_CORES = "system_cores"
    """Node daemons; never evicted."""


OOM_PRIORITY_IGNORE: Final = -300
"""``oom_priority`` allowed for any level: the pod takes no part in OOM-priority
comparison (Katalyst's ``IgnoreOOMPriorityScore``)."""
OOM_PRIORITY_TOP: Final = 300
"""``oom_priority`` allowed for any level: the pod is never the OOM-priority victim
(Katalyst's ``TopOOMPriorityScore``)."""

_OOM_RANGES: Final[dict[QoSLevel, range]] = {
    QoSLevel.RECLAIMED_CORES: range(-100, 0),
    QoSLevel.SHARED_CORES: range(0, 100),
    QoSLevel.DEDICATED_CORES: range(100, 200),
    QoSLevel.SYSTEM_CORES: range(200, 300),
}


def oom_priority_range(level: QoSLevel) -> range:
    """The half-open range of ``oom_priority`` values a pod of ``level`` may ask for.

    A higher priority survives OOM longer: reclaimed [-100, 0), shared [0, 100),
    dedicated [100, 200), system [200, 300). :data:`OOM_PRIORITY_IGNORE` and
    :data:`OOM_PRIORITY_TOP` are allowed for every level in addition.
    """
    return _OOM_RANGES[level]


def default_oom_priority(level: QoSLevel) -> int:
    """The OOM priority of a pod of ``level`` that sets none: its range's lower bound."""
    return _OOM_RANGES[level].start


_LEVEL_RULE: Final = "must be one of " + ", ".join(sorted(QoSLevel))


def parse_qos_level(annotations: Mapping[str, str]) -> QoSLevel:
    """The pod's QoS level from its annotations.

    A missing annotation means ``shared_cores`` (Katalyst's default). Any present value
    must be exactly one of the four level names: an empty, misspelt or differently
    cased value raises :class:`QoSValidationError` rather than silently becoming
    another class, because the wrong class means the wrong cpuset and eviction order.
    """
    if QOS_LEVEL_ANNOTATION not in annotations:
        return QoSLevel.SHARED_CORES
    raw: object = annotations[QOS_LEVEL_ANNOTATION]
    if isinstance(raw, str):
        try:
            return QoSLevel(raw)
        except ValueError:
            pass
    raise QoSValidationError(key=QOS_LEVEL_ANNOTATION, value=raw, rule=_LEVEL_RULE)
