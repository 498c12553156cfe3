"""What a resource policy receives and answers, free of protobuf.

The plugin server (:mod:`agent.qrm.server`) converts the kubelet's
``resourceplugin.v1alpha1`` messages to these and back, and parses the pod's QoS
annotations once: a policy never sees a malformed annotation (the server answers
INVALID_ARGUMENT naming the key first) and never touches the wire format.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from katalyst.qos import Enhancements, PodUID, QoSLevel


class ContainerType(enum.IntEnum):
    """``ContainerType`` of the wire protocol (same numbers)."""

    INIT = 0
    MAIN = 1
    SIDECAR = 2
    EPHEMERAL = 3


@dataclass(frozen=True, slots=True)
class TopologyHint:
    """A set of NUMA nodes a container could be placed on, and whether it is preferred."""

    nodes: frozenset[int]
    preferred: bool


# RFC 1123 label (container names) and the UID alphabet: what the API server
# accepts. Anything else never reaches a path, a cgroup name or a checkpoint key.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", re.ASCII)
_UID = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,127}", re.ASCII)


def valid_pod_uid(uid: str) -> bool:
    """Whether ``uid`` is a Kubernetes UID (a UUID, or any short [A-Za-z0-9-] token)."""
    return _UID.fullmatch(uid) is not None


def valid_container_name(name: str) -> bool:
    """Whether ``name`` is a valid Kubernetes container name (an RFC 1123 label)."""
    return _DNS_LABEL.fullmatch(name) is not None


@dataclass(frozen=True, slots=True)
class ContainerRequest:
    """One container's request for one resource, as the kubelet sends it."""

    pod_uid: PodUID
    pod_namespace: str
    pod_name: str
    container_name: str
    container_type: ContainerType
    container_index: int
    resource_name: str
    """The resource this plugin manages (``cpu``, ``memory``)."""
    requests: Mapping[str, float]
    """Resource name -> quantity: cores for ``cpu``, bytes for ``memory``; the
    Katalyst resources (reclaimed_millicpu, reclaimed_memory) as sent."""
    level: QoSLevel
    """Parsed from ``katalyst.kubewharf.io/qos_level`` (shared_cores when absent)."""
    enhancements: Enhancements
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    native_qos_class: str = ""
    hint: TopologyHint | None = None
    """The hint the kubelet's topology manager chose (Allocate only)."""
    pod_role: str = ""
    pod_type: str = ""

    @property
    def is_sidecar_or_init(self) -> bool:
        """Init and sidecar containers follow the main containers' placement."""
        return self.container_type in (ContainerType.INIT, ContainerType.SIDECAR)


@dataclass(frozen=True, slots=True)
class AllocationInfo:
    """``ResourceAllocationInfo``: what the kubelet applies to the container."""

    oci_property_name: str
    """``CpusetCpus``, ``CpusetMems``, ``MemoryLimitInBytes``..."""
    allocation_result: str
    """The value for that property, e.g. ``0-3``."""
    allocated_quantity: float = 0.0
    is_node_resource: bool = True
    is_scalar_resource: bool = False
    envs: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    hints: tuple[TopologyHint, ...] = ()
    topology_assignments: Mapping[int, int] = field(default_factory=dict)
    """NUMA node -> quantity assigned there."""


@dataclass(frozen=True, slots=True)
class TopologyCapacity:
    """What a plugin offers per NUMA node (``AllocatableTopologyAwareResource``)."""

    capacity: Mapping[int, float]
    """NUMA node -> the node's whole quantity (CPUs, bytes)."""
    allocatable: Mapping[int, float]
    """NUMA node -> what pods may be given (capacity less what the system keeps)."""
    is_scalar_resource: bool = True


#: resource name -> its allocation, for one container.
ContainerAllocation = Mapping[str, AllocationInfo]
#: pod UID -> container name -> resource name -> allocation.
NodeAllocations = Mapping[PodUID, Mapping[str, ContainerAllocation]]


@dataclass(frozen=True, slots=True)
class PluginOptions:
    """``ResourcePluginOptions``."""

    pre_start_required: bool = False
    with_topology_alignment: bool = True
    need_reconcile: bool = True


def effective_request(amounts: Iterable[tuple[bool, int]]) -> int:
    """Kubernetes' effective pod request from each container's ``(init, amount)``:
    the larger of the largest init container's amount and the sum of the others'
    (init containers run before the app containers, one at a time). Every policy
    accounts a pod's CPUs, memory, bandwidth and GPU memory by this rule."""
    inits: list[int] = []
    others = 0
    for init, amount in amounts:
        if init:
            inits.append(amount)
        else:
            others += amount
    return max([others, *inits])


class PolicyBase:
    """What every policy of this agent answers alike: its names (class attributes
    :attr:`PLUGIN_NAME` and :attr:`RESOURCE`) and its options (no PreStartContainer,
    topology alignment, periodic reconcile)."""

    __slots__ = ()
    PLUGIN_NAME: ClassVar[str]
    RESOURCE: ClassVar[str]

    @property
    def plugin_name(self) -> str:
        """The socket's name and the registration name: ``qrm_<resource>_plugin``."""
        return self.PLUGIN_NAME

    @property
    def resource_name(self) -> str:
        """The resource the kubelet routes to this plugin."""
        return self.RESOURCE

    def options(self) -> PluginOptions:
        """No PreStartContainer; topology alignment; periodic reconcile."""
        return PluginOptions(
            pre_start_required=False, with_topology_alignment=True, need_reconcile=True
        )


class AllocationRefused(Exception):
    """The node cannot satisfy the request (answered as RESOURCE_EXHAUSTED).

    The message says what was asked and what is free; the policy's state is left
    exactly as it was before the request.
    """


class InvalidRequest(Exception):
    """The request itself is wrong (answered as INVALID_ARGUMENT)."""


class ResourcePolicy(Protocol):
    """A resource plugin's logic: pure decisions over its own in-memory state.

    The server calls these one at a time (it holds a lock), so a policy need not
    be thread-safe. ``allocate`` and ``remove_pod`` must leave the state
    unchanged when they raise.
    """

    @property
    def plugin_name(self) -> str:
        """The socket's name and the registration name: ``qrm_cpu_plugin``."""
        ...

    @property
    def resource_name(self) -> str:
        """The resource the kubelet routes here: ``cpu``, ``memory``."""
        ...

    def options(self) -> PluginOptions:
        """What the kubelet must know about this plugin."""
        ...

    def topology_hints(self, request: ContainerRequest) -> Mapping[str, tuple[TopologyHint, ...]]:
        """Resource name -> hints; an empty mapping means "no preference"."""
        ...

    def allocate(self, request: ContainerRequest) -> ContainerAllocation:
        """Decide and record the container's allocation (idempotent per container)."""
        ...

    def remove_pod(self, pod_uid: PodUID) -> None:
        """Forget the pod and give its resources back; unknown pods are not an error."""
        ...

    def allocations(self) -> NodeAllocations:
        """Every container's current allocation (pools may have changed since Allocate)."""
        ...

    def topology_capacity(self) -> Mapping[str, TopologyCapacity]:
        """Resource name -> its capacity and allocatable quantity per NUMA node; an
        empty mapping for a resource that is not topology-aware."""
        ...
