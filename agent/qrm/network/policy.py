"""The network resource policy (``qrm_network_plugin``): a NIC and a bandwidth class per pod.

The resource is ``resource.katalyst.kubewharf.io/net_bandwidth`` in **Mbit/s**, the
request value as sent: ``net_bandwidth: "300"`` asks for 300 Mbit/s of egress.

What it decides, per pod (Katalyst's static network policy, simplified where said):

* **Which NIC.** Every container of a pod uses the pod's NIC: the first
  container's choice is recorded, and later containers are accounted on it. The
  choice, in order:

  1. the pod annotation ``katalyst.kubewharf.io/nic_name``, when set, names the
     only candidate (an unknown name is INVALID_ARGUMENT, naming the known NICs);
  2. the network enhancement's ``namespace_type``: ``host_ns`` keeps only NICs of
     the host namespace, ``anti_host_ns`` only NICs in another namespace; the
     ``*_preferred`` forms rank those first but accept the others;
  3. for a NUMA-bound pod (memory enhancement ``numa_binding``) whose request
     carries the kubelet's hint, NICs on the hint's NUMA nodes rank first, and with
     ``topology_affinity_restricted`` only they qualify (a pod that is not bound
     has no NUMA placement for its NIC to be near, so the hint is ignored for it);
  4. the NIC with the most free bandwidth (spreading pods over NICs), then the
     name, so that the same state always gives the same answer.

  A NIC that cannot fit the ask is skipped; when none fits, the pod is refused
  (RESOURCE_EXHAUSTED) with a message naming every candidate NIC, its free and
  allocatable Mbit/s, and the ask.

* **How much is guaranteed.** Each NIC offers ``speed * (1 - reserved_ratio)``
  Mbit/s (the rest is kept for the node's own and unclassified traffic).
  ``shared_cores``, ``dedicated_cores`` and ``system_cores`` pods are guaranteed
  their request, which consumes that. ``reclaimed_cores`` pods are **never
  guaranteed** bandwidth: their traffic class is capped dynamically by the agent
  with whatever the others leave, like their CPU. They get a NIC and are
  recorded (their traffic must be classified somewhere), but consume nothing, and
  their answer says 0 Mbit/s. As for memory, a pod's need is the larger of its
  largest init container's request and the sum of its other containers' (init
  containers run first, one at a time).

* **Which class** (for the enforcement's tc classes): ``system`` (``system_cores``
  and ``dedicated_cores``: latency-critical, one class), ``shared``, ``reclaimed``.

The answer is one ``ResourceAllocationInfo`` for the resource: the NIC name as
``allocation_result``, the guaranteed Mbit/s as ``allocated_quantity`` (and per
NUMA node in ``topology_assignments`` when the NIC's node is known), and the
decision as annotations (:data:`NIC_NAME_ANNOTATION`,
:data:`NETNS_NAME_ANNOTATION`, :data:`BANDWIDTH_ANNOTATION`,
:data:`QOS_CLASS_ANNOTATION`). The kubelet applies no OCI property for it;
the agent's enforcement reads :meth:`NetworkPolicy.class_rates` and the plans.

Quantities are kept internally as whole kbit/s (the ask rounded up), so that sums
and comparisons are exact however many pods come and go.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from agent.qrm.network.inventory import NIC
from agent.qrm.types import (
    AllocationInfo,
    AllocationRefused,
    ContainerAllocation,
    ContainerRequest,
    ContainerType,
    InvalidRequest,
    NodeAllocations,
    PolicyBase,
    TopologyCapacity,
    TopologyHint,
    effective_request,
    valid_container_name,
    valid_pod_uid,
)
from katalyst.checkpoint import JSONValue
from katalyst.qos import RESOURCE_NET_BANDWIDTH, NetworkNamespaceType, PodUID, QoSLevel

__all__ = [
    "BANDWIDTH_ANNOTATION",
    "NETNS_NAME_ANNOTATION",
    "NIC_NAME_ANNOTATION",
    "PLUGIN_NAME",
    "QOS_CLASS_ANNOTATION",
    "RESOURCE",
    "STATE_VERSION",
    "NetClass",
    "NetworkPlan",
    "NetworkPolicy",
    "net_class",
]

PLUGIN_NAME: Final = "qrm_network_plugin"
RESOURCE: Final = RESOURCE_NET_BANDWIDTH
#: Pod annotation naming the NIC the pod must use; also set on the answer.
NIC_NAME_ANNOTATION: Final = "katalyst.kubewharf.io/nic_name"
#: On the answer, when the pod's NIC lives outside the host network namespace.
NETNS_NAME_ANNOTATION: Final = "katalyst.kubewharf.io/netns_name"
#: On the answer: the container's guaranteed egress in Mbit/s ("0" for reclaimed).
BANDWIDTH_ANNOTATION: Final = "katalyst.kubewharf.io/net_bandwidth_mbit"
#: On the answer: the pod's traffic class, a :class:`NetClass` value.
QOS_CLASS_ANNOTATION: Final = "katalyst.kubewharf.io/net_qos_class"
STATE_VERSION: Final = 1

_KBIT_PER_MBIT: Final = 1000
# An ask beyond this (10^12 Mbit/s) fits no NIC; capping keeps the integer
# arithmetic bounded for absurd but finite requests.
_MAX_KBIT: Final = 10**15


class NetClass(StrEnum):
    """A traffic class of the enforcement (one HTB class per NIC each)."""

    SYSTEM = "system"
    """``system_cores`` and ``dedicated_cores``: latency-critical, guaranteed."""
    SHARED = "shared"
    """``shared_cores``: guaranteed their request."""
    RECLAIMED = "reclaimed"
    """``reclaimed_cores``: nothing guaranteed; capped by the agent."""


_CLASS_OF: Final = {
    QoSLevel.SYSTEM_CORES: NetClass.SYSTEM,
    QoSLevel.DEDICATED_CORES: NetClass.SYSTEM,
    QoSLevel.SHARED_CORES: NetClass.SHARED,
    QoSLevel.RECLAIMED_CORES: NetClass.RECLAIMED,
}


def net_class(level: QoSLevel) -> NetClass:
    """The traffic class of a QoS level."""
    return _CLASS_OF[level]


@dataclass(frozen=True, slots=True)
class NetworkPlan:
    """One container's network decision."""

    nic: str
    """The pod's NIC."""
    level: QoSLevel
    request_kbit: int
    """What the container asked, in kbit/s (Mbit/s x 1000, rounded up)."""
    init: bool = False
    """An init container: it runs before the others (see :func:`_pod_kbit`)."""

    @property
    def net_class(self) -> NetClass:
        """The pod's traffic class."""
        return net_class(self.level)

    @property
    def guaranteed_kbit(self) -> int:
        """What the container is guaranteed: its request, or 0 when reclaimed."""
        return 0 if self.level is QoSLevel.RECLAIMED_CORES else self.request_kbit

    @property
    def request_mbit(self) -> float:
        """What the container asked, in Mbit/s."""
        return self.request_kbit / _KBIT_PER_MBIT

    @property
    def guaranteed_mbit(self) -> float:
        """What the container is guaranteed, in Mbit/s."""
        return self.guaranteed_kbit / _KBIT_PER_MBIT


def _pod_kbit(plans: Iterable[NetworkPlan]) -> int:
    """A pod's guaranteed kbit/s: the larger of its largest init container's and the
    sum of its other containers' (Kubernetes' effective pod request)."""
    return effective_request((p.init, p.guaranteed_kbit) for p in plans)


def _mbit_text(kbit: int) -> str:
    """kbit/s as Mbit/s for people: ``300``, ``1.5``."""
    if kbit % _KBIT_PER_MBIT == 0:
        return str(kbit // _KBIT_PER_MBIT)
    return f"{kbit / _KBIT_PER_MBIT:.3f}".rstrip("0").rstrip(".")


def _flag(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{what}: expected true or false, got {value!r}")
    return value


_Plans = dict[PodUID, dict[str, NetworkPlan]]


@dataclass(frozen=True, slots=True)
class _Ask:
    """A request's bandwidth, parsed once."""

    kbit: int
    """Rounded up; capped at ``_MAX_KBIT``."""
    text: str
    """For messages, in Mbit/s."""


class NetworkPolicy(PolicyBase):
    """The network plugin's decisions and state (pure; the server serializes calls)."""

    PLUGIN_NAME = PLUGIN_NAME
    RESOURCE = RESOURCE

    def __init__(self, nics: Sequence[NIC], *, reserved_ratio: float = 0.0) -> None:
        """
        :param nics: the NICs whose bandwidth pods share (:func:`read_nics`); may be
            empty, in which case every request is refused.
        :param reserved_ratio: the share of each NIC's speed kept for the node's own
            and unclassified traffic, in [0, 1); default 0.
        """
        if not (
            isinstance(reserved_ratio, int | float)
            and not isinstance(reserved_ratio, bool)
            and math.isfinite(reserved_ratio)
            and 0 <= reserved_ratio < 1
        ):
            raise ValueError(
                f"reserved_ratio {reserved_ratio!r} must be a number in [0, 1) "
                "(the share of each NIC's speed kept for the system)"
            )
        by_name: dict[str, NIC] = {}
        for nic in nics:
            if not isinstance(nic, NIC):
                raise ValueError(f"nics must be NIC objects, got {nic!r}")
            if nic.name in by_name:
                raise ValueError(f"NIC {nic.name} is listed more than once")
            by_name[nic.name] = nic
        self._nics = by_name
        self._reserved_ratio = float(reserved_ratio)
        self._allocatable = {
            name: round(nic.speed_mbit * _KBIT_PER_MBIT * (1 - self._reserved_ratio))
            for name, nic in by_name.items()
        }
        # Whether any NIC's NUMA node is known: if none is (single-node machines,
        # most VMs), NUMA plays no part in the choice and hints say "no preference".
        self._numa_known = any(nic.numa_node is not None for nic in by_name.values())
        self._plans: _Plans = {}
        self.generation = 0
        """Bumps on every change of the allocations."""

    # ---- ResourcePolicy -------------------------------------------------------------

    def topology_hints(self, request: ContainerRequest) -> Mapping[str, tuple[TopologyHint, ...]]:
        """One hint ``{node}`` per NUMA node with a candidate NIC that has room;
        preferred when a NIC there fits the ask (or, for a pod that does not
        require NUMA affinity, when a NIC of unknown node fits: any node will do).
        An empty mapping ("no preference") when no candidate NIC's node is known."""
        if not self._numa_known:
            return {}
        ask = self._ask(request)
        trial = self._without(request.pod_uid, request.container_name)
        siblings = trial.get(request.pod_uid, {})
        if siblings:
            # The pod has its NIC: the container goes where its pod is.
            nic = self._nics[next(iter(siblings.values())).nic]
            if nic.numa_node is None:
                return {}
            extra = self._extra(siblings, self._probe(request, nic.name, ask))
            fits = extra <= self._free(nic.name, trial)
            return {RESOURCE: (TopologyHint(nodes=frozenset({nic.numa_node}), preferred=fits),)}
        try:
            candidates = self._candidates(request)
        except AllocationRefused:
            # No NIC may take the pod at all: "cannot be satisfied"; Allocate
            # gives the reason if the kubelet gets that far.
            return {RESOURCE: ()}
        need = self._guaranteed(request, ask)
        nodes = sorted({c.numa_node for c in candidates if c.numa_node is not None})
        if not nodes:
            return {}
        restricted = self._restricted(request)
        anywhere = not restricted and any(
            c.numa_node is None and self._free(c.name, trial) >= need for c in candidates
        )
        hints: list[TopologyHint] = []
        for node in nodes:
            free = [self._free(c.name, trial) for c in candidates if c.numa_node == node]
            if anywhere or any(f >= need for f in free):
                hints.append(TopologyHint(nodes=frozenset({node}), preferred=True))
            elif any(f > 0 for f in free):
                hints.append(TopologyHint(nodes=frozenset({node}), preferred=False))
        return {RESOURCE: tuple(hints)}

    def allocate(self, request: ContainerRequest) -> ContainerAllocation:
        """Choose the pod's NIC (or join it) and account the container's bandwidth.

        Idempotent: the same request for the same container gets the same answer;
        a changed request (bandwidth, level, container type) is decided again as if
        the container's earlier allocation were gone. On refusal nothing changes.
        """
        ask = self._ask(request)
        init = request.container_type is ContainerType.INIT
        existing = self._plans.get(request.pod_uid, {}).get(request.container_name)
        if (
            existing is not None
            and existing.level is request.level
            and existing.request_kbit == ask.kbit
            and existing.init == init
        ):
            return self._answer(existing)
        trial = self._without(request.pod_uid, request.container_name)
        siblings = trial.get(request.pod_uid, {})
        if siblings:
            nic = self._join(request, ask, siblings, trial)
        else:
            nic = self._choose(request, ask, trial)
        plan = self._probe(request, nic.name, ask)
        trial[request.pod_uid] = {**siblings, request.container_name: plan}
        self._plans = trial
        self.generation += 1
        return self._answer(plan)

    def remove_pod(self, pod_uid: PodUID) -> None:
        if self._plans.pop(pod_uid, None) is not None:
            self.generation += 1

    def allocations(self) -> NodeAllocations:
        return {
            uid: {name: self._answer(plan) for name, plan in containers.items()}
            for uid, containers in self._plans.items()
        }

    def topology_capacity(self) -> Mapping[str, TopologyCapacity]:
        """Mbit/s per NUMA node: the NICs' speeds, and what pods may be guaranteed.
        A NIC whose node is unknown counts on node 0 (the report needs a zone); an
        empty mapping when the node has no NICs."""
        if not self._nics:
            return {}
        capacity: dict[int, float] = {}
        allocatable: dict[int, float] = {}
        for name, nic in self._nics.items():
            node = nic.numa_node if nic.numa_node is not None else 0
            capacity[node] = capacity.get(node, 0.0) + float(nic.speed_mbit)
            allocatable[node] = (
                allocatable.get(node, 0.0) + self._allocatable[name] / _KBIT_PER_MBIT
            )
        return {
            RESOURCE: TopologyCapacity(
                capacity=dict(sorted(capacity.items())),
                allocatable=dict(sorted(allocatable.items())),
            )
        }

    # ---- for the agent's enforcement and observability ------------------------------

    @property
    def nics(self) -> tuple[NIC, ...]:
        """The NICs this policy shares out, as given."""
        return tuple(self._nics.values())

    @property
    def reserved_ratio(self) -> float:
        """The share of each NIC's speed kept for the system."""
        return self._reserved_ratio

    def allocatable_mbit(self, nic: str) -> float:
        """What pods may be guaranteed on ``nic``, in Mbit/s (KeyError if unknown)."""
        return self._allocatable[self._known(nic)] / _KBIT_PER_MBIT

    def free_mbit(self, nic: str) -> float:
        """What is still free for guarantees on ``nic``, in Mbit/s (KeyError if unknown)."""
        return self._free(self._known(nic), self._plans) / _KBIT_PER_MBIT

    def class_rates(self) -> Mapping[str, Mapping[str, float]]:
        """NIC name -> traffic class (``system``, ``shared``, ``reclaimed``) -> the
        summed guaranteed Mbit/s of the pods placed there. Every NIC lists every
        class (0.0 when empty); ``reclaimed`` is always 0.0, since nothing is
        guaranteed to it (the agent caps that class from what the others leave)."""
        kbit = {name: dict.fromkeys(NetClass, 0) for name in self._nics}
        for containers in self._plans.values():
            plans = list(containers.values())
            first = plans[0]
            kbit[first.nic][first.net_class] += _pod_kbit(plans)
        return {
            name: {str(cls): v / _KBIT_PER_MBIT for cls, v in classes.items()}
            for name, classes in kbit.items()
        }

    def plans(self) -> Mapping[PodUID, Mapping[str, NetworkPlan]]:
        """Every container's plan."""
        return {uid: dict(containers) for uid, containers in self._plans.items()}

    def pod_nic(self, pod_uid: PodUID) -> NIC | None:
        """The pod's NIC, or None for a pod this policy does not hold."""
        containers = self._plans.get(pod_uid)
        if not containers:
            return None
        return self._nics[next(iter(containers.values())).nic]

    # ---- decisions -------------------------------------------------------------------

    def _known(self, nic: str) -> str:
        if nic not in self._nics:
            raise KeyError(f"no NIC {nic!r} here (NICs: {self._names()})")
        return nic

    def _names(self) -> str:
        return ", ".join(self._nics) or "none"

    @staticmethod
    def _ask(request: ContainerRequest) -> _Ask:
        value = request.requests.get(RESOURCE, 0.0)
        if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
            raise InvalidRequest(
                f"resource {RESOURCE!r}: {value!r} is not a non-negative number of Mbit/s"
            )
        scaled = value * _KBIT_PER_MBIT
        if scaled >= _MAX_KBIT:
            return _Ask(kbit=_MAX_KBIT, text=f"{value:g}")
        # Rounded to a millionth first, so that 0.3 Mbit/s is 300 kbit/s, not 301.
        kbit = math.ceil(round(scaled, 6))
        return _Ask(kbit=kbit, text=_mbit_text(kbit))

    @staticmethod
    def _guaranteed(request: ContainerRequest, ask: _Ask) -> int:
        return 0 if request.level is QoSLevel.RECLAIMED_CORES else ask.kbit

    @staticmethod
    def _probe(request: ContainerRequest, nic: str, ask: _Ask) -> NetworkPlan:
        return NetworkPlan(
            nic=nic,
            level=request.level,
            request_kbit=ask.kbit,
            init=request.container_type is ContainerType.INIT,
        )

    def _without(self, pod_uid: PodUID, container: str) -> _Plans:
        """A copy of the state without one container (to decide on; committed on success)."""
        trial = dict(self._plans)
        containers = trial.get(pod_uid)
        if containers is not None and container in containers:
            rest = {name: plan for name, plan in containers.items() if name != container}
            if rest:
                trial[pod_uid] = rest
            else:
                del trial[pod_uid]
        return trial

    def _used(self, nic: str, plans: _Plans) -> int:
        return sum(
            _pod_kbit(containers.values())
            for containers in plans.values()
            if next(iter(containers.values())).nic == nic
        )

    def _free(self, nic: str, plans: _Plans) -> int:
        return max(self._allocatable[nic] - self._used(nic, plans), 0)

    @staticmethod
    def _extra(siblings: Mapping[str, NetworkPlan], plan: NetworkPlan) -> int:
        """What adding ``plan`` to its pod adds to the pod's need."""
        return _pod_kbit([*siblings.values(), plan]) - _pod_kbit(siblings.values())

    def _restricted(self, request: ContainerRequest) -> bool:
        return (
            request.enhancements.memory.numa_binding
            and request.enhancements.network.topology_affinity_restricted
        )

    def _hint_nodes(self, request: ContainerRequest) -> frozenset[int] | None:
        """The NUMA nodes the NIC should be near, or None when NUMA plays no part."""
        if not self._numa_known or not request.enhancements.memory.numa_binding:
            return None
        if request.hint is None or not request.hint.nodes:
            return None
        return request.hint.nodes

    def _candidates(self, request: ContainerRequest) -> list[NIC]:
        """The NICs the pod may use at all: the named one, in the right namespace."""
        if not self._nics:
            raise AllocationRefused(
                f"{RESOURCE}: this node has no NIC to share out "
                f"(pod {request.pod_namespace}/{request.pod_name})"
            )
        named = request.annotations.get(NIC_NAME_ANNOTATION)
        if named is not None and named not in self._nics:
            raise InvalidRequest(
                f"annotation {NIC_NAME_ANNOTATION}: NIC {named!r} does not exist on this node "
                f"(NICs: {self._names()})"
            )
        pool = [self._nics[named]] if named is not None else list(self._nics.values())
        kind = request.enhancements.network.namespace_type
        if kind is NetworkNamespaceType.HOST_NS:
            kept = [nic for nic in pool if nic.netns is None]
        elif kind is NetworkNamespaceType.ANTI_HOST_NS:
            kept = [nic for nic in pool if nic.netns is not None]
        else:
            kept = pool
        if kept:
            return kept
        rule = (
            "a NIC of the host network namespace"
            if kind is NetworkNamespaceType.HOST_NS
            else "a NIC outside the host network namespace"
        )
        described = ", ".join(_where(nic) for nic in pool)
        if named is not None:
            raise InvalidRequest(
                f"annotation {NIC_NAME_ANNOTATION} names NIC {_where(self._nics[named])}, but"
                f" the network enhancement's namespace_type {kind} requires {rule}"
            )
        raise AllocationRefused(
            f"{RESOURCE}: pod {request.pod_namespace}/{request.pod_name} has namespace_type "
            f"{kind}, which requires {rule}; this node has {described}"
        )

    def _choose(self, request: ContainerRequest, ask: _Ask, trial: _Plans) -> NIC:
        """The first container of a pod: pick its NIC."""
        candidates = self._candidates(request)
        hint = self._hint_nodes(request)
        where = ""
        if hint is not None:
            nodes = ",".join(str(n) for n in sorted(hint))
            if self._restricted(request):
                local = [nic for nic in candidates if nic.numa_node in hint]
                if not local:
                    raise AllocationRefused(
                        f"{RESOURCE}: pod {request.pod_namespace}/{request.pod_name} requires "
                        f"a NIC on NUMA nodes {nodes} (topology_affinity_restricted); "
                        f"candidates: {', '.join(_numa_of(nic) for nic in candidates)}"
                    )
                candidates = local
                where = f" (NICs on NUMA nodes {nodes}: topology_affinity_restricted)"
        need = self._guaranteed(request, ask)
        free = {nic.name: self._free(nic.name, trial) for nic in candidates}
        fitting = [nic for nic in candidates if free[nic.name] >= need]
        if not fitting:
            raise AllocationRefused(
                self._refusal(candidates, trial, f"pod {_pod(request)} asks {ask.text}") + where
            )
        kind = request.enhancements.network.namespace_type

        def rank(nic: NIC) -> tuple[int, int, int, str]:
            if kind is NetworkNamespaceType.HOST_NS_PREFERRED:
                ns = 0 if nic.netns is None else 1
            elif kind is NetworkNamespaceType.ANTI_HOST_NS_PREFERRED:
                ns = 0 if nic.netns is not None else 1
            else:
                ns = 0
            numa = 0 if hint is None or nic.numa_node in hint else 1
            return (ns, numa, -free[nic.name], nic.name)

        return min(fitting, key=rank)

    def _join(
        self,
        request: ContainerRequest,
        ask: _Ask,
        siblings: Mapping[str, NetworkPlan],
        trial: _Plans,
    ) -> NIC:
        """A later container of a pod: it goes on the pod's NIC, if that can take it."""
        first_name, first = next(iter(siblings.items()))
        nic = self._nics[first.nic]
        if first.level is not request.level:
            raise InvalidRequest(
                f"pod {_pod(request)}: container {request.container_name} comes as "
                f"{request.level}, but container {first_name} was admitted as {first.level}; "
                "the QoS level is the pod's"
            )
        named = request.annotations.get(NIC_NAME_ANNOTATION)
        if named is not None and named != nic.name:
            raise InvalidRequest(
                f"annotation {NIC_NAME_ANNOTATION}: pod {_pod(request)} names NIC {named!r}, "
                f"but its container {first_name} is already on NIC {nic.name}"
            )
        hint = self._hint_nodes(request)
        if hint is not None and self._restricted(request) and nic.numa_node not in hint:
            nodes = ",".join(str(n) for n in sorted(hint))
            raise AllocationRefused(
                f"{RESOURCE}: pod {_pod(request)} requires a NIC on NUMA nodes {nodes} "
                f"(topology_affinity_restricted), but its NIC {_numa_of(nic)} "
                f"(chosen for container {first_name})"
            )
        extra = self._extra(siblings, self._probe(request, nic.name, ask))
        if extra > self._free(nic.name, trial):
            raise AllocationRefused(
                self._refusal(
                    [nic],
                    trial,
                    f"pod {_pod(request)} asks {_mbit_text(extra)} more for container "
                    f"{request.container_name} (its NIC was chosen for container {first_name})",
                )
            )
        return nic

    def _refusal(self, nics: Sequence[NIC], plans: _Plans, asks: str) -> str:
        state = ", ".join(
            f"nic {nic.name} has {_mbit_text(self._free(nic.name, plans))} Mbit/s free of "
            f"{_mbit_text(self._allocatable[nic.name])}"
            for nic in nics
        )
        return f"{state}, {asks} Mbit/s of {RESOURCE}"

    def _answer(self, plan: NetworkPlan) -> ContainerAllocation:
        nic = self._nics[plan.nic]
        annotations = {
            NIC_NAME_ANNOTATION: nic.name,
            BANDWIDTH_ANNOTATION: _mbit_text(plan.guaranteed_kbit),
            QOS_CLASS_ANNOTATION: str(plan.net_class),
        }
        if nic.netns is not None:
            annotations[NETNS_NAME_ANNOTATION] = nic.netns
        node = nic.numa_node
        return {
            RESOURCE: AllocationInfo(
                # No OCI property carries a NIC: the agent's enforcement applies it.
                oci_property_name="",
                allocation_result=nic.name,
                allocated_quantity=plan.guaranteed_mbit,
                is_node_resource=True,
                is_scalar_resource=True,
                annotations=annotations,
                hints=(
                    (TopologyHint(nodes=frozenset({node}), preferred=True),)
                    if node is not None
                    else ()
                ),
                # Whole Mbit/s (the wire's map holds integers), rounded up.
                topology_assignments=(
                    {node: -(-plan.guaranteed_kbit // _KBIT_PER_MBIT)} if node is not None else {}
                ),
            )
        }

    # ---- checkpoints -------------------------------------------------------------------

    def to_state(self) -> dict[str, JSONValue]:
        """Everything needed to answer identically after a restart (JSON-able)."""
        return {
            "version": STATE_VERSION,
            "pods": {
                uid: {
                    name: {
                        "nic": plan.nic,
                        "level": str(plan.level),
                        "request_kbit": plan.request_kbit,
                        "init": plan.init,
                    }
                    for name, plan in containers.items()
                }
                for uid, containers in self._plans.items()
            },
        }

    @classmethod
    def from_state(
        cls,
        state: Mapping[str, object],
        *,
        nics: Sequence[NIC],
        reserved_ratio: float = 0.0,
    ) -> NetworkPolicy:
        """A policy restored from :meth:`to_state`.

        Raises ValueError, naming the problem, when the state is malformed or no
        longer fits the node: a NIC that is gone, or pods whose guarantees exceed
        what a NIC now offers (a slower link, a larger reserve). The agent then
        sets the checkpoint aside and starts fresh (``restore_or_new``).
        """
        policy = cls(nics, reserved_ratio=reserved_ratio)
        policy.restore(state)
        return policy

    def restore(self, state: Mapping[str, object]) -> None:
        """Load :meth:`to_state` output; ValueError (naming the problem) if it does not
        fit this node, leaving the policy as it was rather than half-restored."""
        plans: _Plans = {}
        try:
            if state.get("version") != STATE_VERSION:
                raise ValueError(
                    f"state version {state.get('version')!r}, expected {STATE_VERSION}"
                )
            pods = state["pods"]
            if not isinstance(pods, Mapping):
                raise ValueError("'pods' is not an object")
            for uid, containers in pods.items():
                if not isinstance(uid, str) or not valid_pod_uid(uid):
                    raise ValueError(f"pod {uid!r}: not a pod UID")
                if not isinstance(containers, Mapping) or not containers:
                    raise ValueError(f"pod {uid!r}: not a non-empty object")
                restored = {
                    str(name): self._restore_plan(f"pod {uid!r} container {name!r}", name, raw)
                    for name, raw in containers.items()
                }
                if len({p.nic for p in restored.values()}) > 1:
                    raise ValueError(f"pod {uid!r}: containers on different NICs")
                if len({p.level for p in restored.values()}) > 1:
                    raise ValueError(f"pod {uid!r}: containers of different QoS levels")
                plans[PodUID(uid)] = restored
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"network policy state is malformed: {exc!r}") from exc
        for name in self._nics:
            used = self._used(name, plans)
            if used > self._allocatable[name]:
                raise ValueError(
                    f"NIC {name}: the restored pods are guaranteed {_mbit_text(used)} Mbit/s, "
                    f"more than the {_mbit_text(self._allocatable[name])} Mbit/s it now offers"
                )
        self._plans = plans
        self.generation += 1

    def _restore_plan(self, where: str, name: object, raw: object) -> NetworkPlan:
        if not isinstance(name, str) or not valid_container_name(name):
            raise ValueError(f"{where}: not a container name")
        if not isinstance(raw, Mapping):
            raise ValueError(f"{where}: not an object")
        nic = raw["nic"]
        if not isinstance(nic, str) or nic not in self._nics:
            raise ValueError(f"{where}: NIC {nic!r} does not exist here (NICs: {self._names()})")
        request = raw["request_kbit"]
        if isinstance(request, bool) or not isinstance(request, int) or request < 0:
            raise ValueError(f"{where}: request_kbit {request!r} is not a non-negative integer")
        try:
            level = QoSLevel(str(raw["level"]))
        except ValueError:
            raise ValueError(f"{where}: QoS level {raw['level']!r} is unknown") from None
        return NetworkPlan(
            nic=nic,
            level=level,
            request_kbit=request,
            init=_flag(raw.get("init", False), where),
        )


def _pod(request: ContainerRequest) -> str:
    return f"{request.pod_namespace}/{request.pod_name}"


def _where(nic: NIC) -> str:
    if nic.netns is None:
        return f"{nic.name} in the host namespace"
    return f"{nic.name} in netns {nic.netns}"


def _numa_of(nic: NIC) -> str:
    node = "unknown NUMA node" if nic.numa_node is None else f"NUMA node {nic.numa_node}"
    return f"{nic.name} is on {node}"
