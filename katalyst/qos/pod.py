"""A validated, typed view of a Kubernetes pod, as the QoS model needs it.

Raw pods arrive as JSON-decoded dicts (from the API server, a kubelet, or a manifest in
standalone mode). The ``TypedDict``\\ s below describe the fields this module reads;
:meth:`PodView.from_dict` checks every one of them and returns a frozen
:class:`PodView`, or raises :class:`~katalyst.qos.errors.QoSValidationError` naming the
path of the first bad field (``spec.containers[app].resources.requests[cpu]``).

Two Kubernetes behaviours are reproduced because the rest of the agent depends on them:

* API-server defaulting (``SetDefaults_Pod``): a container that sets a limit but no
  request for a resource gets a request equal to the limit. Pods read from the API
  server already have it; local manifests get it here, so both compute the same class.
* The native QoS class (``ComputePodQOS`` in ``pkg/apis/core/helper/qos``): see
  :func:`compute_native_qos_class`.

As with Go's JSON decoding into typed structs, ``null`` in an optional field is the
same as the field being absent.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Final, NewType, NotRequired, Required, TypedDict

from katalyst.qos.enhancements import Enhancements, parse_enhancements
from katalyst.qos.errors import MISSING, QoSValidationError
from katalyst.qos.model import (
    KATALYST_RESOURCES,
    RESOURCE_RECLAIMED_MEMORY,
    RESOURCE_RECLAIMED_MILLICPU,
    QoSLevel,
    default_oom_priority,
    parse_qos_level,
)
from katalyst.qos.quantity import INT64_MAX, INT64_MIN, Quantity, parse_quantity

__all__ = [
    "ContainerDict",
    "ContainerView",
    "NativeQoSClass",
    "PodDict",
    "PodMetadataDict",
    "PodSpecDict",
    "PodStatusDict",
    "PodUID",
    "PodView",
    "ResourceRequirementsDict",
    "compute_native_qos_class",
]

PodUID = NewType("PodUID", str)
"""A pod's ``metadata.uid``."""


# --- The raw pod at the edge -----------------------------------------------------------


class ResourceRequirementsDict(TypedDict, total=False):
    """``spec.containers[*].resources``: resource name to quantity string.

    Quantities are strings on the wire; JSON numbers (``cpu: 2`` in a YAML manifest) are
    also accepted, as apimachinery's decoder accepts them.
    """

    requests: dict[str, str]
    limits: dict[str, str]


class ContainerDict(TypedDict, total=False):
    """``spec.containers[*]`` and ``spec.initContainers[*]``, the fields read here."""

    name: Required[str]
    resources: ResourceRequirementsDict


class PodMetadataDict(TypedDict, total=False):
    """``metadata``, the fields read here."""

    uid: Required[str]
    name: Required[str]
    namespace: str
    annotations: dict[str, str]
    labels: dict[str, str]


class PodSpecDict(TypedDict, total=False):
    """``spec``, the fields read here."""

    nodeName: str
    containers: Required[list[ContainerDict]]
    initContainers: list[ContainerDict]
    priority: int
    priorityClassName: str


class PodStatusDict(TypedDict, total=False):
    """``status``, the fields read here."""

    qosClass: str


class PodDict(TypedDict):
    """A Kubernetes ``v1.Pod`` as decoded from JSON, the fields read here."""

    apiVersion: NotRequired[str]
    kind: NotRequired[str]
    metadata: PodMetadataDict
    spec: PodSpecDict
    status: NotRequired[PodStatusDict]


# --- The validated view ------------------------------------------------------------------


class NativeQoSClass(StrEnum):
    """Kubernetes' own QoS class (``status.qosClass``), not Katalyst's level."""

    GUARANTEED = "Guaranteed"
    BURSTABLE = "Burstable"
    BEST_EFFORT = "BestEffort"


@dataclass(frozen=True, slots=True)
class ContainerView:
    """One container's name and resources, validated."""

    name: str
    """The container's name (a DNS label, unique within the pod)."""
    init: bool
    """True for an entry of ``spec.initContainers``."""
    requests: Mapping[str, Quantity] = field(hash=False)
    """Requests by resource name, after API-server defaulting from ``limits``."""
    limits: Mapping[str, Quantity] = field(hash=False)
    """Limits by resource name."""


@dataclass(frozen=True, slots=True)
class PodView:
    """A pod validated against the QoS model. Build with :meth:`from_dict`."""

    uid: PodUID
    """``metadata.uid``."""
    namespace: str
    """``metadata.namespace`` (``default`` when absent, as kubectl does)."""
    name: str
    """``metadata.name``."""
    node_name: str | None
    """``spec.nodeName``; ``None`` while unscheduled."""
    level: QoSLevel
    """Katalyst QoS level from ``katalyst.kubewharf.io/qos_level``."""
    enhancements: Enhancements
    """The memory, CPU and network enhancements."""
    containers: tuple[ContainerView, ...]
    """``spec.containers``, in order."""
    init_containers: tuple[ContainerView, ...]
    """``spec.initContainers``, in order."""
    reclaimed_millicpu: int
    """Sum of the app containers' ``reclaimed_millicpu`` requests, in milli-cores. Init
    containers run before the app containers and are not counted."""
    reclaimed_memory: int
    """Sum of the app containers' ``reclaimed_memory`` requests, in bytes."""
    qos_class: NativeQoSClass
    """Kubernetes' QoS class as ``GetPodQOS`` gives it: ``status.qosClass`` when the
    API server has set it, otherwise :attr:`computed_qos_class`."""
    computed_qos_class: NativeQoSClass
    """Kubernetes' QoS class computed from the containers' cpu and memory."""
    priority: int | None
    """``spec.priority`` (resolved by the Priority admission plugin), if set."""
    priority_class_name: str | None
    """``spec.priorityClassName``, if set."""
    is_critical: bool
    """Whether the kubelet treats the pod as critical (never evicted for resources)."""
    labels: Mapping[str, str] = field(hash=False)
    """``metadata.labels``."""
    annotations: Mapping[str, str] = field(hash=False)
    """``metadata.annotations``."""

    @property
    def oom_priority(self) -> int:
        """The effective OOM priority: the memory enhancement's, else the level's default."""
        chosen = self.enhancements.memory.oom_priority
        return default_oom_priority(self.level) if chosen is None else chosen

    @classmethod
    def from_dict(cls, pod: Mapping[str, object]) -> PodView:
        """Validate a JSON-decoded pod and build its view.

        Raises :class:`QoSValidationError` naming the first bad field or annotation;
        never any other exception, whatever ``pod`` holds.
        """
        return _build(pod)


def compute_native_qos_class(containers: Iterable[ContainerView]) -> NativeQoSClass:
    """Kubernetes' ``ComputePodQOS`` over all containers, init containers included.

    Only cpu and memory count, and only values above zero. Requests and limits are each
    summed over the containers; the pod is BestEffort when both sums are empty,
    Guaranteed when every container has a cpu and a memory limit and the summed
    requests equal the summed limits for every resource, and Burstable otherwise.
    Pod-level resources (``spec.resources``, KEP-2837) are not considered.
    """
    requests: dict[str, Quantity] = {}
    limits: dict[str, Quantity] = {}
    guaranteed = True
    for container in containers:
        _add_positive(requests, container.requests)
        limits_found = _add_positive(limits, container.limits)
        if limits_found != _QOS_RESOURCES:
            guaranteed = False
    if not requests and not limits:
        return NativeQoSClass.BEST_EFFORT
    if (
        guaranteed
        and len(requests) == len(limits)
        and all(limits.get(name) == amount for name, amount in requests.items())
    ):
        return NativeQoSClass.GUARANTEED
    return NativeQoSClass.BURSTABLE


_QOS_RESOURCES: Final = frozenset({"cpu", "memory"})
_ZERO: Final = Quantity.zero()


def _add_positive(totals: dict[str, Quantity], resources: Mapping[str, Quantity]) -> set[str]:
    found: set[str] = set()
    for name in _QOS_RESOURCES:
        amount = resources.get(name)
        if amount is not None and amount > _ZERO:
            found.add(name)
            totals[name] = totals.get(name, _ZERO) + amount
    return found


# --- Validation --------------------------------------------------------------------------

_DNS_LABEL_RE: Final = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN_RE: Final = re.compile(
    r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*"
)
_DNS_LABEL_RULE: Final = (
    "must be a DNS label: at most 63 lowercase letters, digits and '-', "
    "starting and ending with a letter or digit"
)
_DNS_SUBDOMAIN_RULE: Final = (
    "must be a DNS subdomain: at most 253 lowercase letters, digits, '-' and '.', "
    "starting and ending with a letter or digit"
)
_INT32_MIN: Final = -(2**31)
_INT32_MAX: Final = 2**31 - 1

# kubelet's IsCriticalPod: static and mirror pods, and priority >= SystemCriticalPriority
# (2 * HighestUserDefinablePriority). The two built-in class names are checked too, so a
# manifest that names the class before the Priority admission plugin resolves it (or in
# standalone mode, where nothing resolves it) is treated the same.
_SYSTEM_CRITICAL_PRIORITY: Final = 2_000_000_000
_CRITICAL_PRIORITY_CLASSES: Final = frozenset({"system-node-critical", "system-cluster-critical"})
_CONFIG_SOURCE_ANNOTATION: Final = "kubernetes.io/config.source"
_CONFIG_MIRROR_ANNOTATION: Final = "kubernetes.io/config.mirror"
_API_SERVER_SOURCE: Final = "api"


def _error(path: str, value: object, rule: str) -> QoSValidationError:
    return QoSValidationError(key=path, kind="field", value=value, rule=rule)


def _get(obj: Mapping[str, object], name: str) -> object:
    """The field's value, or MISSING when absent or null."""
    value = obj.get(name)
    return MISSING if value is None else value


def _object(
    parent: Mapping[str, object], name: str, *, path: str, required: bool
) -> Mapping[str, object] | None:
    value = _get(parent, name)
    if value is MISSING:
        if required:
            raise _error(path, MISSING, "must be present")
        return None
    if not isinstance(value, Mapping):
        raise _error(path, value, "must be an object")
    return value


def _string(parent: Mapping[str, object], name: str, *, path: str, required: bool) -> str | None:
    value = _get(parent, name)
    if value is MISSING:
        if required:
            raise _error(path, MISSING, "must be present")
        return None
    if not isinstance(value, str):
        raise _error(path, value, "must be a string")
    return value


def _name(parent: Mapping[str, object], name: str, *, path: str, subdomain: bool) -> str:
    value = _string(parent, name, path=path, required=True)
    assert value is not None
    if subdomain:
        if len(value) > 253 or _DNS_SUBDOMAIN_RE.fullmatch(value) is None:
            raise _error(path, value, _DNS_SUBDOMAIN_RULE)
    elif _DNS_LABEL_RE.fullmatch(value) is None:
        raise _error(path, value, _DNS_LABEL_RULE)
    return value


def _string_map(parent: Mapping[str, object], name: str, *, path: str) -> Mapping[str, str]:
    obj = _object(parent, name, path=path, required=False)
    if obj is None:
        return MappingProxyType({})
    result: dict[str, str] = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise _error(path, key, "keys must be strings")
        if not isinstance(value, str):
            raise _error(f"{path}[{key}]", value, "must be a string")
        result[key] = value
    return MappingProxyType(result)


def _quantity(raw: object, *, path: str) -> Quantity:
    # JSON numbers are accepted as apimachinery's Quantity.UnmarshalJSON accepts them.
    # Floats use repr(), the shortest text that reads back as the same float.
    if isinstance(raw, bool):
        raise _error(path, raw, "must be a quantity string such as 500m or 1Gi")
    if isinstance(raw, int):
        if not INT64_MIN <= raw <= INT64_MAX:
            raise _error(path, raw, "must fit in a signed 64-bit integer")
        raw = str(raw)
    elif isinstance(raw, float):
        if not math.isfinite(raw):
            raise _error(path, raw, "must be a finite number")
        raw = repr(raw)
    elif not isinstance(raw, str):
        raise _error(path, raw, "must be a quantity string such as 500m or 1Gi")
    return parse_quantity(raw, key=path, kind="field")


def _resource_list(resources: Mapping[str, object], name: str, *, path: str) -> dict[str, Quantity]:
    obj = _object(resources, name, path=path, required=False)
    if obj is None:
        return {}
    result: dict[str, Quantity] = {}
    for resource, raw in obj.items():
        if not isinstance(resource, str) or not resource:
            raise _error(path, resource, "resource names must be non-empty strings")
        item_path = f"{path}[{resource}]"
        amount = _quantity(raw, path=item_path)
        # Kubernetes reads cpu with MilliValue() and everything else with Value(); both
        # must fit an int64 or the kubelet's arithmetic overflows.
        try:
            if resource == "cpu":
                amount.milli_value(key=item_path)
            else:
                amount.value(key=item_path)
        except QoSValidationError as err:
            raise _error(item_path, raw, err.rule) from None  # show what the user wrote
        if resource in KATALYST_RESOURCES and amount.amount != amount.amount.to_integral_value():
            # Kubernetes requires extended resources to be whole numbers.
            raise _error(item_path, raw, "must be a whole number (an extended resource)")
        result[resource] = amount
    return result


def _container(raw: object, *, index: int, init: bool, seen: set[str]) -> ContainerView:
    list_path = "spec.initContainers" if init else "spec.containers"
    if not isinstance(raw, Mapping):
        raise _error(f"{list_path}[{index}]", raw, "must be an object")
    name = _name(raw, "name", path=f"{list_path}[{index}].name", subdomain=False)
    path = f"{list_path}[{name}]"
    if name in seen:
        raise _error(f"{path}.name", name, "must be unique among containers and init containers")
    seen.add(name)
    resources = _object(raw, "resources", path=f"{path}.resources", required=False) or {}
    requests = _resource_list(resources, "requests", path=f"{path}.resources.requests")
    limits = _resource_list(resources, "limits", path=f"{path}.resources.limits")
    for resource, request in requests.items():
        limit = limits.get(resource)
        if limit is not None and request > limit:
            raise _error(
                f"{path}.resources.requests[{resource}]",
                str(request),
                f"must be less than or equal to the limit {limit}",
            )
    # SetDefaults_Pod: a limit without a request defaults the request to the limit.
    for resource, limit in limits.items():
        requests.setdefault(resource, limit)
    return ContainerView(
        name=name,
        init=init,
        requests=MappingProxyType(requests),
        limits=MappingProxyType(limits),
    )


def _containers(
    spec: Mapping[str, object], name: str, *, init: bool, seen: set[str]
) -> tuple[ContainerView, ...]:
    path = f"spec.{name}"
    raw = _get(spec, name)
    if raw is MISSING:
        if init:
            return ()
        raise _error(path, MISSING, "must be present")
    if not isinstance(raw, list | tuple):
        raise _error(path, raw, "must be a list")
    if not raw and not init:
        raise _error(path, raw, "must contain at least one container")
    return tuple(
        _container(item, index=index, init=init, seen=seen) for index, item in enumerate(raw)
    )


def _priority(spec: Mapping[str, object]) -> int | None:
    raw = _get(spec, "priority")
    if raw is MISSING:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int) or not _INT32_MIN <= raw <= _INT32_MAX:
        raise _error("spec.priority", raw, "must be a signed 32-bit integer")
    return raw


def _reported_qos_class(pod: Mapping[str, object]) -> NativeQoSClass | None:
    status = _object(pod, "status", path="status", required=False)
    if status is None:
        return None
    raw = _string(status, "qosClass", path="status.qosClass", required=False)
    if not raw:
        return None  # GetPodQOS treats "" as unset
    try:
        return NativeQoSClass(raw)
    except ValueError:
        names = ", ".join(member.value for member in NativeQoSClass)
        raise _error("status.qosClass", raw, f"must be one of {names}") from None


def _sum_requests(containers: Sequence[ContainerView], resource: str) -> int:
    total = _ZERO
    for container in containers:
        total += container.requests.get(resource, _ZERO)
    return total.value(key=f"spec.containers[*].resources.requests[{resource}]")


def _is_critical(
    *, annotations: Mapping[str, str], priority: int | None, priority_class_name: str | None
) -> bool:
    source = annotations.get(_CONFIG_SOURCE_ANNOTATION)
    if source is not None and source != _API_SERVER_SOURCE:
        return True  # a static pod
    if _CONFIG_MIRROR_ANNOTATION in annotations:
        return True  # the API server's mirror of a static pod
    if priority is not None and priority >= _SYSTEM_CRITICAL_PRIORITY:
        return True
    return priority_class_name in _CRITICAL_PRIORITY_CLASSES


def _build(pod: Mapping[str, object]) -> PodView:
    if not isinstance(pod, Mapping):
        raise _error("pod", pod, "must be an object")
    metadata = _object(pod, "metadata", path="metadata", required=True)
    assert metadata is not None
    uid = _string(metadata, "uid", path="metadata.uid", required=True)
    assert uid is not None
    if not uid:
        raise _error("metadata.uid", uid, "must not be empty")
    name = _name(metadata, "name", path="metadata.name", subdomain=True)
    namespace = "default"
    if _get(metadata, "namespace") is not MISSING:
        namespace = _name(metadata, "namespace", path="metadata.namespace", subdomain=False)
    annotations = _string_map(metadata, "annotations", path="metadata.annotations")
    labels = _string_map(metadata, "labels", path="metadata.labels")

    level = parse_qos_level(annotations)
    enhancements = parse_enhancements(annotations, level)

    spec = _object(pod, "spec", path="spec", required=True)
    assert spec is not None
    seen: set[str] = set()
    containers = _containers(spec, "containers", init=False, seen=seen)
    init_containers = _containers(spec, "initContainers", init=True, seen=seen)
    node_name = _string(spec, "nodeName", path="spec.nodeName", required=False) or None
    priority = _priority(spec)
    priority_class_name = (
        _string(spec, "priorityClassName", path="spec.priorityClassName", required=False) or None
    )

    computed = compute_native_qos_class((*containers, *init_containers))
    reported = _reported_qos_class(pod)
    return PodView(
        uid=PodUID(uid),
        namespace=namespace,
        name=name,
        node_name=node_name,
        level=level,
        enhancements=enhancements,
        containers=containers,
        init_containers=init_containers,
        reclaimed_millicpu=_sum_requests(containers, RESOURCE_RECLAIMED_MILLICPU),
        reclaimed_memory=_sum_requests(containers, RESOURCE_RECLAIMED_MEMORY),
        qos_class=computed if reported is None else reported,
        computed_qos_class=computed,
        priority=priority,
        priority_class_name=priority_class_name,
        is_critical=_is_critical(
            annotations=annotations, priority=priority, priority_class_name=priority_class_name
        ),
        labels=labels,
        annotations=annotations,
    )
