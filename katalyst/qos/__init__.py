"""Katalyst's QoS model: levels, enhancement annotations, resource quantities, pods.

A pure library: it parses and validates what users write on pods and returns frozen
values; it does no I/O and imports neither ``kubernetes`` nor the agent, controllers or
scheduler plugins. Every user-caused failure raises :class:`QoSValidationError`.

Typical use::

    level = parse_qos_level(request.annotations)              # Allocate path
    enhancements = parse_enhancements(request.annotations, level)

    view = PodView.from_dict(pod_json)                         # metaserver, extender
    view.level, view.enhancements.memory.numa_binding, view.qos_class

See ``docs/qos-model.md`` for every key, value, default and error message.
"""

from katalyst.qos.enhancements import (
    CPUBurstPolicy,
    CPUEnhancement,
    Enhancements,
    MemoryEnhancement,
    NetworkEnhancement,
    NetworkNamespaceType,
    parse_cpu_enhancement,
    parse_enhancements,
    parse_memory_enhancement,
    parse_network_enhancement,
)
from katalyst.qos.errors import QoSValidationError
from katalyst.qos.model import (
    CPU_ENHANCEMENT_ANNOTATION,
    GPU_INDICES_ANNOTATION,
    KATALYST_RESOURCES,
    MEMORY_ENHANCEMENT_ANNOTATION,
    NETWORK_ENHANCEMENT_ANNOTATION,
    OOM_PRIORITY_IGNORE,
    OOM_PRIORITY_TOP,
    QOS_LEVEL_ANNOTATION,
    RDMA_DEVICES_ANNOTATION,
    RESOURCE_GPU_MEMORY,
    RESOURCE_MILLIGPU,
    RESOURCE_NET_BANDWIDTH,
    RESOURCE_RDMA,
    RESOURCE_RECLAIMED_MEMORY,
    RESOURCE_RECLAIMED_MILLICPU,
    ZONE_GPU,
    ZONE_NIC,
    QoSLevel,
    default_oom_priority,
    oom_priority_range,
    parse_qos_level,
)
from katalyst.qos.pod import (
    ContainerDict,
    ContainerView,
    NativeQoSClass,
    PodDict,
    PodMetadataDict,
    PodSpecDict,
    PodStatusDict,
    PodUID,
    PodView,
    ResourceRequirementsDict,
    compute_native_qos_class,
)
from katalyst.qos.quantity import INT64_MAX, INT64_MIN, Quantity, parse_quantity

__all__ = [
    "CPU_ENHANCEMENT_ANNOTATION",
    "GPU_INDICES_ANNOTATION",
    "INT64_MAX",
    "INT64_MIN",
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
    "CPUBurstPolicy",
    "CPUEnhancement",
    "ContainerDict",
    "ContainerView",
    "Enhancements",
    "MemoryEnhancement",
    "NativeQoSClass",
    "NetworkEnhancement",
    "NetworkNamespaceType",
    "PodDict",
    "PodMetadataDict",
    "PodSpecDict",
    "PodStatusDict",
    "PodUID",
    "PodView",
    "QoSLevel",
    "QoSValidationError",
    "Quantity",
    "ResourceRequirementsDict",
    "compute_native_qos_class",
    "default_oom_priority",
    "oom_priority_range",
    "parse_cpu_enhancement",
    "parse_enhancements",
    "parse_memory_enhancement",
    "parse_network_enhancement",
    "parse_qos_level",
    "parse_quantity",
]
