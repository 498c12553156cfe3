"""The plugins' inputs: what a pod asks for (:class:`PodRequest`) and what a node
has (:class:`NodeView`), parsed from the wire JSON at the edge.

Wire names (keep them identical to what the node agent reads and writes):

* pod requests: ``resource.katalyst.kubewharf.io/reclaimed_millicpu`` (milli-cores,
  a plain integer), ``resource.katalyst.kubewharf.io/reclaimed_memory`` (bytes, a
  Kubernetes quantity), ``resource.katalyst.kubewharf.io/gpu_memory`` (the pod's MiB,
  a plain integer, split evenly over its ``gpu_count`` GPUs as the node's
  ``qrm_gpu_plugin`` splits it; the kubelet counts it once against the node),
  ``resource.katalyst.kubewharf.io/rdma`` (NICs); extended
  resources need no request when a limit is given (the API server copies it);
* pod annotations: ``katalyst.kubewharf.io/gpu_count`` (GPUs, default 1),
  ``katalyst.kubewharf.io/rdma_count`` (NICs, when not a resource),
  ``katalyst.kubewharf.io/topology_policy`` (``hard`` or ``soft``, default
  ``soft``), ``katalyst.kubewharf.io/gpu_indices`` and
  ``katalyst.kubewharf.io/rdma_devices`` (both written at bind);
* the CNR: ``status.resources.allocatable`` for the reclaimed headroom and
  ``status.topologyZone`` zones of type ``GPU`` and ``NIC`` (see docs/scheduling.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal

from katalyst.qos import (
    GPU_INDICES_ANNOTATION,
    RDMA_DEVICES_ANNOTATION,
    RESOURCE_GPU_MEMORY,
    RESOURCE_RDMA,
    RESOURCE_RECLAIMED_MEMORY,
    RESOURCE_RECLAIMED_MILLICPU,
    ZONE_GPU,
    ZONE_NIC,
)

ANNOTATION_GPU_COUNT: Final = "katalyst.kubewharf.io/gpu_count"
ANNOTATION_RDMA_COUNT: Final = "katalyst.kubewharf.io/rdma_count"
ANNOTATION_TOPOLOGY_POLICY: Final = "katalyst.kubewharf.io/topology_policy"

Policy = Literal["hard", "soft"]
JSON = Mapping[str, Any]


class RequestError(ValueError):
    """The pod (or a node object) broke a rule; the message names the field."""


_SUFFIXES: Final[dict[str, Decimal]] = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([a-zA-Z]{0,2})$")


def parse_quantity(value: object, where: str) -> int:
    """A non-negative Kubernetes quantity as an integer (rounded up, as the API
    server rounds a fractional extended resource: it refuses them)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise RequestError(f"{where}: {value!r} is not a quantity")
    text = str(value).strip()
    match = _QUANTITY.match(text)
    if match is None or match.group(2) not in _SUFFIXES:
        if text.startswith("-"):
            raise RequestError(f"{where}: {value!r} is negative")
        raise RequestError(f"{where}: {value!r} is not a quantity")
    try:
        amount = Decimal(match.group(1)) * _SUFFIXES[match.group(2)]
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only digits
        raise RequestError(f"{where}: {value!r} is not a quantity") from exc
    whole = int(amount)
    return whole + 1 if amount > whole else whole


def _count(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise RequestError(f"{where}: {value!r} is not a whole number")
    text = str(value).strip()
    if text.startswith("-") and text[1:].isdigit():
        raise RequestError(f"{where}: {value!r} is negative")
    if not text.isdigit():
        raise RequestError(f"{where}: {value!r} is not a whole number")
    return int(text)


@dataclass(frozen=True)
class PodRequest:
    """What one pod asks of a node (totals over its containers)."""

    uid: str
    namespace: str
    name: str
    millicpu: int = 0
    """Reclaimed milli-cores."""
    memory: int = 0
    """Reclaimed bytes."""
    gpu_memory_mib: int = 0
    """MiB needed on each of ``gpu_count`` GPUs (the pod's request over its GPUs,
    rounded up, as the node's even split puts at most that on one GPU); 0: no GPU."""
    gpu_count: int = 0
    rdma: int = 0
    """RDMA NICs."""
    policy: Policy = "soft"
    gpu_indices: tuple[int, ...] = ()
    """The GPUs the extender chose (from the annotation, once bound)."""
    rdma_devices: tuple[str, ...] = ()
    """The RDMA NICs (zone names) the extender chose (from the annotation, once bound)."""

    @property
    def wants_reclaimed(self) -> bool:
        return self.millicpu > 0 or self.memory > 0

    @property
    def wants_gpu(self) -> bool:
        return self.gpu_count > 0 and self.gpu_memory_mib > 0

    @property
    def managed(self) -> bool:
        """Asks for a resource the extender accounts for (so a node needs a CNR)."""
        return self.wants_reclaimed or self.wants_gpu or self.rdma > 0

    @property
    def key(self) -> str:
        return self.uid or f"{self.namespace}/{self.name}"


def _container_requests(container: object, where: str) -> dict[str, int]:
    if not isinstance(container, Mapping):
        raise RequestError(f"{where}: not an object")
    resources = container.get("resources") or {}
    if not isinstance(resources, Mapping):
        raise RequestError(f"{where}.resources: not an object")
    out: dict[str, int] = {}
    for kind in ("limits", "requests"):  # requests win over limits
        amounts = resources.get(kind) or {}
        if not isinstance(amounts, Mapping):
            raise RequestError(f"{where}.resources.{kind}: not an object")
        for name in (
            RESOURCE_RECLAIMED_MILLICPU,
            RESOURCE_RECLAIMED_MEMORY,
            RESOURCE_GPU_MEMORY,
            RESOURCE_RDMA,
        ):
            if name in amounts:
                out[name] = parse_quantity(amounts[name], f"{where}.resources.{kind}[{name}]")
    return out


def parse_pod(pod: object) -> PodRequest:
    """The :class:`PodRequest` of a pod's wire JSON; :class:`RequestError` names the
    field that is missing or wrong."""
    if not isinstance(pod, Mapping):
        raise RequestError("Pod: not an object")
    meta = pod.get("metadata")
    if not isinstance(meta, Mapping):
        raise RequestError("Pod.metadata: missing")
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise RequestError("Pod.metadata.name: missing")
    namespace = meta.get("namespace") or "default"
    uid = meta.get("uid") or ""
    if not isinstance(namespace, str) or not isinstance(uid, str):
        raise RequestError("Pod.metadata.namespace/uid: not strings")
    annotations = meta.get("annotations") or {}
    if not isinstance(annotations, Mapping):
        raise RequestError("Pod.metadata.annotations: not an object")
    spec = pod.get("spec")
    if not isinstance(spec, Mapping):
        raise RequestError("Pod.spec: missing")
    containers = spec.get("containers")
    if not isinstance(containers, list):
        raise RequestError("Pod.spec.containers: missing")
    total: dict[str, int] = {}
    for i, container in enumerate(containers):
        for res, amount in _container_requests(container, f"Pod.spec.containers[{i}]").items():
            total[res] = total.get(res, 0) + amount
    init = spec.get("initContainers") or []
    if not isinstance(init, list):
        raise RequestError("Pod.spec.initContainers: not a list")
    for i, container in enumerate(init):
        # Init containers run one at a time before the others: the pod needs the max.
        for res, amount in _container_requests(container, f"Pod.spec.initContainers[{i}]").items():
            total[res] = max(total.get(res, 0), amount)
    gpu_memory = total.get(RESOURCE_GPU_MEMORY, 0)
    gpu_count = 0
    if gpu_memory > 0:
        gpu_count = _count(
            annotations.get(ANNOTATION_GPU_COUNT, "1"),
            f"Pod.metadata.annotations[{ANNOTATION_GPU_COUNT}]",
        )
        if gpu_count == 0:
            raise RequestError(
                f"Pod.metadata.annotations[{ANNOTATION_GPU_COUNT}]: must be at least 1 "
                f"when {RESOURCE_GPU_MEMORY} is requested"
            )
        gpu_memory = -(-gpu_memory // gpu_count)  # per GPU, rounded up
    rdma = total.get(RESOURCE_RDMA, 0)
    if ANNOTATION_RDMA_COUNT in annotations:
        rdma = max(
            rdma,
            _count(
                annotations[ANNOTATION_RDMA_COUNT],
                f"Pod.metadata.annotations[{ANNOTATION_RDMA_COUNT}]",
            ),
        )
    policy = annotations.get(ANNOTATION_TOPOLOGY_POLICY, "soft")
    if policy not in ("hard", "soft"):
        raise RequestError(
            f"Pod.metadata.annotations[{ANNOTATION_TOPOLOGY_POLICY}]: {policy!r} "
            "is not one of hard, soft"
        )
    indices: tuple[int, ...] = ()
    raw = annotations.get(GPU_INDICES_ANNOTATION)
    if isinstance(raw, str) and raw.strip():
        where = f"Pod.metadata.annotations[{GPU_INDICES_ANNOTATION}]"
        indices = tuple(_count(part, where) for part in raw.split(","))
    devices: tuple[str, ...] = ()
    raw = annotations.get(RDMA_DEVICES_ANNOTATION)
    if isinstance(raw, str):
        devices = tuple(part.strip() for part in raw.split(",") if part.strip())
    return PodRequest(
        uid=uid,
        namespace=namespace,
        name=name,
        millicpu=total.get(RESOURCE_RECLAIMED_MILLICPU, 0),
        memory=total.get(RESOURCE_RECLAIMED_MEMORY, 0),
        gpu_memory_mib=gpu_memory,
        gpu_count=gpu_count,
        rdma=rdma,
        policy="hard" if policy == "hard" else "soft",
        gpu_indices=indices,
        rdma_devices=devices,
    )


@dataclass(frozen=True, slots=True)
class Gpu:
    index: int
    uuid: str
    memory_mib: int
    allocated_mib: int = 0
    numa: int | None = None
    pcie_switch: str | None = None
    free_mib: int = field(init=False, compare=False, repr=False)
    """``memory_mib - allocated_mib``, at least 0: read by every plugin for every node
    judged, so computed once."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "free_mib", max(0, self.memory_mib - self.allocated_mib))


@dataclass(frozen=True, slots=True)
class Nic:
    name: str
    numa: int | None = None
    pcie_switch: str | None = None
    allocated: bool = False


@dataclass(frozen=True, slots=True)
class NodeView:
    """One node as the plugins see it. ``reclaimed_*`` is ``None`` when the node has
    no CNR (nothing reported: nothing may be placed there)."""

    name: str
    reclaimed_millicpu: int | None = None
    reclaimed_memory: int | None = None
    requested_millicpu: int = 0
    """Reclaimed milli-cores requested by the pods on the node and assumed there."""
    requested_memory: int = 0
    gpus: tuple[Gpu, ...] = ()
    nics: tuple[Nic, ...] = ()


@dataclass(frozen=True)
class CnrNode:
    """The node-side facts of one CNR, parsed once per CNR version."""

    name: str
    millicpu: int | None
    memory: int | None
    gpus: tuple[Gpu, ...] = ()
    """``allocated_mib`` counts only the CNR's ``allocations``."""
    gpu_consumers: Mapping[int, Mapping[str, int]] = field(default_factory=dict)
    """GPU index -> consumer pod UID -> MiB, from the CNR's ``allocations``."""
    nics: tuple[Nic, ...] = ()


def _attributes(zone: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for attr in zone.get("attributes") or []:
        if isinstance(attr, Mapping) and isinstance(attr.get("name"), str):
            out[attr["name"]] = str(attr.get("value", ""))
    return out


def _walk(zones: object) -> Iterable[Mapping[str, Any]]:
    if not isinstance(zones, list):
        return
    for zone in zones:
        if isinstance(zone, Mapping):
            yield zone
            yield from _walk(zone.get("children"))


def _opt_int(text: str | None) -> int | None:
    if text is None or not text.strip().lstrip("-").isdigit():
        return None
    value = int(text)
    return None if value < 0 else value


def _consumer_uid(consumer: str) -> str:
    # katalyst-core names a consumer "namespace/name/uid".
    return consumer.rsplit("/", 1)[-1]


def parse_cnr(cnr: JSON) -> CnrNode:
    """The reclaimed headroom, GPUs and NICs a CNR reports; a malformed zone or amount
    is skipped (the agent, not the pod, is at fault), never fatal."""
    meta = cnr.get("metadata") or {}
    name = str(meta.get("name", "")) if isinstance(meta, Mapping) else ""
    status = cnr.get("status") or {}
    if not isinstance(status, Mapping):
        status = {}
    resources = status.get("resources") or {}
    alloc = resources.get("allocatable") if isinstance(resources, Mapping) else None
    millicpu = memory = None
    if isinstance(alloc, Mapping):
        try:
            if RESOURCE_RECLAIMED_MILLICPU in alloc:
                millicpu = parse_quantity(alloc[RESOURCE_RECLAIMED_MILLICPU], "cnr")
            if RESOURCE_RECLAIMED_MEMORY in alloc:
                memory = parse_quantity(alloc[RESOURCE_RECLAIMED_MEMORY], "cnr")
        except RequestError:
            millicpu = memory = None
    gpus: list[Gpu] = []
    consumers: dict[int, dict[str, int]] = {}
    nics: list[Nic] = []
    for zone in _walk(status.get("topologyZone")):
        kind = zone.get("type")
        attrs = _attributes(zone)
        if kind == ZONE_GPU:
            index = _opt_int(str(zone.get("name", "")))
            zres = zone.get("resources") or {}
            cap = zres.get("capacity") if isinstance(zres, Mapping) else None
            try:
                total = parse_quantity((cap or {}).get(RESOURCE_GPU_MEMORY), "gpu")
            except RequestError:
                continue
            if index is None:
                continue
            used: dict[str, int] = {}
            for allocation in zone.get("allocations") or []:
                if not isinstance(allocation, Mapping):
                    continue
                requests = allocation.get("requests") or {}
                try:
                    mib = parse_quantity(requests.get(RESOURCE_GPU_MEMORY, 0), "gpu")
                except RequestError:
                    continue
                used[_consumer_uid(str(allocation.get("consumer", "")))] = mib
            consumers[index] = used
            gpus.append(
                Gpu(
                    index=index,
                    uuid=attrs.get("uuid", ""),
                    memory_mib=total,
                    allocated_mib=sum(used.values()),
                    numa=_opt_int(attrs.get("numa_node")),
                    pcie_switch=attrs.get("pcie_switch") or None,
                )
            )
        elif kind == ZONE_NIC:
            nics.append(
                Nic(
                    name=str(zone.get("name", "")),
                    numa=_opt_int(attrs.get("numa_node")),
                    pcie_switch=attrs.get("pcie_switch") or None,
                    allocated=bool(zone.get("allocations")),
                )
            )
    return CnrNode(
        name=name,
        millicpu=millicpu,
        memory=memory,
        gpus=tuple(sorted(gpus, key=lambda g: g.index)),
        gpu_consumers=consumers,
        nics=tuple(sorted(nics, key=lambda n: n.name)),
    )


def node_view(cnr: CnrNode | None, name: str, pods: Iterable[PodRequest]) -> NodeView:
    """The view of node ``name``: its CNR (or none) with ``pods`` (those bound to it
    and those assumed on it) taken off. A pod the CNR already counts on a GPU is not
    counted twice; a NIC named by a pod's ``rdma_devices`` is allocated (as is one the
    CNR already shows allocated)."""
    millicpu = memory = 0
    extra: dict[int, int] = {}
    taken: set[str] = set()
    counted = cnr.gpu_consumers if cnr is not None else {}
    for pod in pods:
        millicpu += pod.millicpu
        memory += pod.memory
        for index in pod.gpu_indices:
            if pod.uid and pod.uid in counted.get(index, {}):
                continue
            extra[index] = extra.get(index, 0) + pod.gpu_memory_mib
        taken.update(pod.rdma_devices)
    if cnr is None:
        return NodeView(name=name, requested_millicpu=millicpu, requested_memory=memory)
    gpus = tuple(
        Gpu(
            index=g.index,
            uuid=g.uuid,
            memory_mib=g.memory_mib,
            allocated_mib=g.allocated_mib + extra.get(g.index, 0),
            numa=g.numa,
            pcie_switch=g.pcie_switch,
        )
        for g in cnr.gpus
    )
    return NodeView(
        name=name,
        reclaimed_millicpu=cnr.millicpu,
        reclaimed_memory=cnr.memory,
        requested_millicpu=millicpu,
        requested_memory=memory,
        gpus=gpus,
        nics=tuple(
            n if n.allocated or n.name not in taken else replace(n, allocated=True)
            for n in cnr.nics
        ),
    )
