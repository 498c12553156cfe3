"""The memory resource policy (``qrm_memory_plugin``).

What it decides, per container (Katalyst's memory plugin, simplified where said):

* **NUMA binding.** A pod whose memory enhancement says ``numa_binding`` gets
  ``CpusetMems`` = the NUMA nodes of the hint the kubelet chose (the same hint the
  CPU plugin used), and its memory request is accounted on those nodes; a node
  without enough unbound memory refuses the pod (RESOURCE_EXHAUSTED naming the
  nodes, the ask and what is free). ``numa_exclusive`` pods take their nodes
  alone: no other bound pod may be placed there. Everyone else may use every
  node (``CpusetMems`` = all nodes).
* **Limits and protection** (applied to the container's cgroup by the agent's
  enforcement, not by the kubelet, since one allocation answer carries one OCI
  property): a ``reclaimed_cores`` container is limited to its
  ``resource.katalyst.kubewharf.io/reclaimed_memory`` request (or its ``memory``
  request); a ``shared_cores`` or ``dedicated_cores`` container is protected up to
  its ``memory`` request (``memory.low`` on cgroup v2, the soft limit on v1).
* **OOM priority** -> ``oom_score_adj`` of the container's processes: the memory
  enhancement's ``oom_priority`` or the level's default, mapped linearly so that a
  higher priority is killed later (see :func:`oom_score_adj_for`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from agent.qrm.hints import numa_hints
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
)
from katalyst.checkpoint import JSONValue
from katalyst.cpuset import CPUSet
from katalyst.qos import (
    OOM_PRIORITY_IGNORE,
    RESOURCE_RECLAIMED_MEMORY,
    PodUID,
    QoSLevel,
    default_oom_priority,
)

PLUGIN_NAME = "qrm_memory_plugin"
RESOURCE = "memory"
#: Annotations on the allocation answer, for the agent's enforcement and for people.
LIMIT_ANNOTATION = "katalyst.kubewharf.io/memory_limit_in_bytes"
PROTECTION_ANNOTATION = "katalyst.kubewharf.io/memory_protection_in_bytes"
OOM_SCORE_ADJ_ANNOTATION = "katalyst.kubewharf.io/oom_score_adj"
STATE_VERSION = 1


def oom_score_adj_for(priority: int) -> int | None:
    """Map a Katalyst OOM priority to the kernel's ``oom_score_adj``.

    Priorities run from -100 (reclaimed, killed first) to 300 (top, killed last);
    ``oom_score_adj`` from 1000 (killed first) to -1000 (never). The map is
    linear, ``-priority * 10 / 3`` rounded, clamped to [-999, 1000]: -100 -> 333,
    0 -> 0, 100 -> -333, 200 -> -667, 300 -> -999 (-1000 would exempt the
    process from the OOM killer altogether, which no pod may ask for). The
    "ignore" priority (-300) returns None: the process keeps what the kubelet set.
    """
    if priority == OOM_PRIORITY_IGNORE:
        return None
    return max(-999, min(1000, round(-priority * 10 / 3)))


@dataclass(frozen=True, slots=True)
class MemoryPlan:
    """What the agent applies to one container's memory cgroup and processes."""

    mems: CPUSet
    """NUMA nodes the container's memory may come from."""
    bound: bool
    """Whether the pod is NUMA-bound (its request is accounted on ``mems``)."""
    exclusive: bool
    request: int
    """Bytes requested (``memory``, or the reclaimed request for reclaimed pods)."""
    limit: int | None
    """Hard limit in bytes; None for none."""
    protection: int | None
    """``memory.low`` (v2) / soft limit (v1) in bytes; None for none."""
    oom_score_adj: int | None
    level: QoSLevel
    init: bool = False
    """An init container: it runs before the others, so the pod needs the larger of
    its request and the sum of the others', not both."""
    assignments: Mapping[int, int] = field(default_factory=dict)
    """For a bound container: NUMA node -> bytes accounted there."""
    pool_annotations: Mapping[str, str] = field(default_factory=dict)


def _pod_request(plans: list[MemoryPlan]) -> int:
    """Kubernetes' effective pod request: the larger of the largest init container's
    and the sum of the others' (init containers run before them, one at a time)."""
    return effective_request((p.init, p.request) for p in plans)


def _pod_usage_on(plans: list[MemoryPlan], node: int) -> int:
    """The pod's bytes on ``node``, with init containers overlapping the others."""
    return effective_request((p.init, p.assignments.get(node, 0)) for p in plans)


def _split(ask: int, nodes: list[int], free: Mapping[int, int]) -> dict[int, int] | None:
    """Spread ``ask`` bytes over ``nodes`` in order, each up to what it has free
    (the same rule as the hints: their combined free memory must suffice)."""
    out: dict[int, int] = {}
    left = ask
    for node in nodes:
        take = min(left, max(free[node], 0))
        out[node] = take
        left -= take
    return out if left == 0 else None


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _bytes(requests: Mapping[str, float], name: str) -> int | None:
    value = requests.get(name)
    if value is None:
        return None
    if not math.isfinite(value) or value < 0:
        raise InvalidRequest(f"resource {name!r}: {value!r} is not a non-negative number of bytes")
    return math.ceil(value)


class MemoryPolicy(PolicyBase):
    """The memory plugin's decisions and state (pure; the server serializes calls)."""

    PLUGIN_NAME = PLUGIN_NAME
    RESOURCE = RESOURCE

    def __init__(
        self,
        *,
        numa_memory: Mapping[int, int],
        reserved: Mapping[int, int] | None = None,
    ) -> None:
        """``numa_memory``: NUMA node -> bytes; ``reserved``: bytes per node kept for
        the system, never given to NUMA-bound pods."""
        if not numa_memory:
            raise ValueError("numa_memory must name at least one NUMA node")
        for node, size in numa_memory.items():
            if node < 0 or size <= 0:
                raise ValueError(f"NUMA node {node}: memory {size} must be positive")
        self._capacity = dict(sorted(numa_memory.items()))
        self._reserved = dict(reserved or {})
        unknown = sorted(set(self._reserved) - set(self._capacity))
        if unknown:
            raise ValueError(f"reserved memory names unknown NUMA nodes {unknown}")
        self._plans: dict[PodUID, dict[str, MemoryPlan]] = {}
        self.generation = 0
        """Bumps on every change of the allocations."""

    # ---- ResourcePolicy -------------------------------------------------------------

    def topology_hints(self, request: ContainerRequest) -> Mapping[str, tuple[TopologyHint, ...]]:
        if not request.enhancements.memory.numa_binding:
            return {}
        existing = self._pod_bound_nodes(request.pod_uid)
        if existing is not None:
            return {RESOURCE: (TopologyHint(nodes=frozenset(existing), preferred=True),)}
        return {
            RESOURCE: self._hints(
                ask=self._request_bytes(request),
                exclusive=request.enhancements.memory.numa_exclusive,
            )
        }

    def _hints(self, *, ask: int, exclusive: bool) -> tuple[TopologyHint, ...]:
        # The same shape of hints as the CPU plugin's (agent.qrm.hints), so that
        # the kubelet's topology manager can merge the two.
        available = {
            n: self._free(n)
            for n in self._capacity
            if not self._exclusive_owner(n) and not (exclusive and self._used(n) > 0)
        }
        return numa_hints(node_ids=list(self._capacity), available=available, count=ask)

    def allocate(self, request: ContainerRequest) -> ContainerAllocation:
        existing = self._plans.get(request.pod_uid, {}).get(request.container_name)
        if existing is not None:
            return self._answer(existing)
        plan = self._plan(request)
        self._plans.setdefault(request.pod_uid, {})[request.container_name] = plan
        self.generation += 1
        return self._answer(plan)

    def remove_pod(self, pod_uid: PodUID) -> None:
        if self._plans.pop(pod_uid, None) is not None:
            self.generation += 1

    def topology_capacity(self) -> Mapping[str, TopologyCapacity]:
        """Bytes per NUMA node; allocatable leaves out the system's reserve."""
        return {
            RESOURCE: TopologyCapacity(
                capacity={node: float(size) for node, size in self._capacity.items()},
                allocatable={
                    node: float(size - self._reserved.get(node, 0))
                    for node, size in self._capacity.items()
                },
            )
        }

    def allocations(self) -> NodeAllocations:
        return {
            uid: {name: self._answer(plan) for name, plan in containers.items()}
            for uid, containers in self._plans.items()
        }

    # ---- for the agent's enforcement and observability ------------------------------

    def plans(self) -> Mapping[PodUID, Mapping[str, MemoryPlan]]:
        """Every container's plan."""
        return {uid: dict(containers) for uid, containers in self._plans.items()}

    def free_bound_memory(self) -> Mapping[int, int]:
        """NUMA node -> bytes still free for NUMA-bound pods."""
        return {n: self._free(n) for n in self._capacity}

    # ---- decisions -------------------------------------------------------------------

    def _request_bytes(self, request: ContainerRequest) -> int:
        if request.level is QoSLevel.RECLAIMED_CORES:
            reclaimed = _bytes(request.requests, RESOURCE_RECLAIMED_MEMORY)
            if reclaimed is not None:
                return reclaimed
        return _bytes(request.requests, RESOURCE) or 0

    def _pod_bound_nodes(self, pod_uid: PodUID) -> CPUSet | None:
        for plan in self._plans.get(pod_uid, {}).values():
            if plan.bound:
                return plan.mems
        return None

    def _used(self, node: int) -> int:
        used = 0
        for containers in self._plans.values():
            bound = [p for p in containers.values() if p.bound and node in p.mems]
            if bound:
                used += _pod_usage_on(bound, node)
        return used

    def _exclusive_owner(self, node: int) -> bool:
        return any(
            plan.exclusive and node in plan.mems
            for containers in self._plans.values()
            for plan in containers.values()
        )

    def _free(self, node: int) -> int:
        return self._capacity[node] - self._reserved.get(node, 0) - self._used(node)

    def _fits(self, *, node: int, ask: int, exclusive: bool) -> bool:
        if self._exclusive_owner(node):
            return False
        if exclusive and self._used(node) > 0:
            return False
        return self._free(node) >= ask

    def _plan(self, request: ContainerRequest) -> MemoryPlan:
        memory = request.enhancements.memory
        ask = self._request_bytes(request)
        priority = (
            memory.oom_priority
            if memory.oom_priority is not None
            else default_oom_priority(request.level)
        )
        limit = ask if request.level is QoSLevel.RECLAIMED_CORES and ask > 0 else None
        protection = (
            _bytes(request.requests, RESOURCE)
            if request.level in (QoSLevel.SHARED_CORES, QoSLevel.DEDICATED_CORES)
            else None
        )
        base = MemoryPlan(
            mems=CPUSet.of(self._capacity),
            bound=False,
            exclusive=False,
            request=ask,
            limit=limit,
            protection=protection or None,
            oom_score_adj=oom_score_adj_for(priority),
            level=request.level,
            init=request.container_type is ContainerType.INIT,
        )
        if not memory.numa_binding:
            return base
        existing = self._pod_bound_nodes(request.pod_uid)
        if existing is not None:
            # Another container of the same pod is bound already: join it, and
            # account this container's memory there too.
            nodes = existing
        elif request.hint is not None and request.hint.nodes:
            nodes = CPUSet.of(request.hint.nodes)
        else:
            # No hint (ORM and standalone modes): our own first preferred one.
            own = self._hints(ask=ask, exclusive=memory.numa_exclusive)
            if not own:
                raise AllocationRefused(self._refusal(ask, list(self._capacity)))
            nodes = CPUSet.of(own[0].nodes)
        unknown = sorted(set(nodes) - set(self._capacity))
        if unknown:
            raise InvalidRequest(f"hint names NUMA nodes {unknown} that this node does not have")
        if existing is not None:
            # Join the pod's nodes. What the pod needs in addition is its effective
            # request with this container minus without it (an init container
            # overlaps the others); that must be free, spread over its nodes.
            siblings = [p for p in self._plans.get(request.pod_uid, {}).values() if p.bound]
            probe = replace(base, mems=nodes, bound=True, exclusive=memory.numa_exclusive)
            extra = _pod_request([*siblings, probe]) - _pod_request(siblings)
            free = {n: self._free(n) for n in nodes}
            if _split(extra, list(nodes), free) is None:
                raise AllocationRefused(self._refusal(ask, list(nodes)))
            split = _split(ask, list(nodes), {n: self._capacity[n] for n in nodes})
            return replace(probe, assignments=split or {})
        eligible = all(self._fits(node=n, ask=0, exclusive=memory.numa_exclusive) for n in nodes)
        split = _split(ask, list(nodes), {n: self._free(n) for n in nodes}) if eligible else None
        if split is None:
            raise AllocationRefused(self._refusal(ask, list(nodes)))
        return replace(
            base, mems=nodes, bound=True, exclusive=memory.numa_exclusive, assignments=split
        )

    def _refusal(self, ask: int, nodes: list[int]) -> str:
        free = ", ".join(
            f"node {n}: {max(self._free(n), 0)} bytes free"
            + (" (exclusively taken)" if self._exclusive_owner(n) else "")
            for n in nodes
        )
        return f"memory: asked {ask} bytes on NUMA nodes {CPUSet.of(nodes)}, {free}"

    def _answer(self, plan: MemoryPlan) -> ContainerAllocation:
        annotations: dict[str, str] = {}
        if plan.limit is not None:
            annotations[LIMIT_ANNOTATION] = str(plan.limit)
        if plan.protection is not None:
            annotations[PROTECTION_ANNOTATION] = str(plan.protection)
        if plan.oom_score_adj is not None:
            annotations[OOM_SCORE_ADJ_ANNOTATION] = str(plan.oom_score_adj)
        assignments = dict(plan.assignments) if plan.bound else {}
        hints = (TopologyHint(nodes=frozenset(plan.mems), preferred=True),) if plan.bound else ()
        return {
            RESOURCE: AllocationInfo(
                oci_property_name="CpusetMems",
                allocation_result=str(plan.mems),
                allocated_quantity=float(plan.request),
                is_node_resource=False,
                is_scalar_resource=True,
                annotations=annotations,
                hints=hints,
                topology_assignments=assignments,
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
                        "mems": str(plan.mems),
                        "bound": plan.bound,
                        "exclusive": plan.exclusive,
                        "request": plan.request,
                        "limit": plan.limit,
                        "protection": plan.protection,
                        "oom_score_adj": plan.oom_score_adj,
                        "level": str(plan.level),
                        "init": plan.init,
                        "assignments": {str(n): b for n, b in plan.assignments.items()},
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
        numa_memory: Mapping[int, int],
        reserved: Mapping[int, int] | None = None,
    ) -> MemoryPolicy:
        """A policy restored from :meth:`to_state` (as ``CPUPolicy.from_state``)."""
        policy = cls(numa_memory=numa_memory, reserved=reserved)
        policy.restore(state)
        return policy

    def restore(self, state: Mapping[str, object]) -> None:
        """Load :meth:`to_state` output; ValueError (naming the problem) if it does not
        fit this node, leaving the policy empty rather than half-restored."""
        plans: dict[PodUID, dict[str, MemoryPlan]] = {}
        try:
            if state.get("version") != STATE_VERSION:
                raise ValueError(
                    f"state version {state.get('version')!r}, expected {STATE_VERSION}"
                )
            pods = state["pods"]
            if not isinstance(pods, Mapping):
                raise ValueError("'pods' is not an object")
            for uid, containers in pods.items():
                if not isinstance(containers, Mapping):
                    raise ValueError(f"pod {uid!r}: not an object")
                for name, raw in containers.items():
                    if not isinstance(raw, Mapping):
                        raise ValueError(f"pod {uid!r} container {name!r}: not an object")
                    plan = MemoryPlan(
                        mems=CPUSet.parse(str(raw["mems"])),
                        bound=_flag(raw["bound"]),
                        exclusive=_flag(raw["exclusive"]),
                        request=int(raw["request"]),
                        limit=None if raw["limit"] is None else int(raw["limit"]),
                        protection=None if raw["protection"] is None else int(raw["protection"]),
                        oom_score_adj=None
                        if raw["oom_score_adj"] is None
                        else int(raw["oom_score_adj"]),
                        level=QoSLevel(str(raw["level"])),
                        init=_flag(raw.get("init", False)),
                        assignments={
                            int(n): int(b) for n, b in dict(raw.get("assignments", {})).items()
                        },
                    )
                    unknown = sorted(set(plan.mems) - set(self._capacity))
                    if unknown:
                        where = f"pod {uid!r} container {name!r}"
                        raise ValueError(f"{where}: NUMA nodes {unknown} do not exist here")
                    plans.setdefault(PodUID(str(uid)), {})[str(name)] = plan
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"memory policy state is malformed: {exc!r}") from exc
        self._plans = plans
        self.generation += 1
