"""The CPU resource policy (``qrm_cpu_plugin``): which cpuset each container gets.

Katalyst's CPU plugin, simplified where said. The pools are described in
:mod:`agent.qrm.cpu.pools`; the choice of exclusive CPUs and NUMA hints in
:mod:`agent.qrm.cpu.exclusive`. This class keeps the state and decides; it does
no I/O (the agent's enforcement and the kubelet apply what it answers).

**Placement per QoS level** (the ``CpusetCpus`` of the answer):

* ``shared_cores``: the share pool. A ``cpuset_pool`` other than ``share`` is an
  invalid request (Katalyst's named shared pools are not kept by this version).
* ``reclaimed_cores``: the reclaim pool. ``cpuset_pool`` is ignored (as in Katalyst).
* ``system_cores``: the reserve pool, or the pool its ``cpuset_pool`` names
  (``reserve``, ``share`` or ``reclaim``); any other name is an invalid request.
* ``dedicated_cores``: the pod's own exclusive CPUs. ``cpuset_pool`` is ignored (as
  in Katalyst). The pod's set holds Kubernetes' effective pod request rounded up:
  ``ceil(max(largest init container, sum of the other containers))`` CPUs. The
  first container of the pod to be allocated (init, main or sidecar) creates the
  set; a later container that raises the effective request grows it (keeping the
  CPUs already held and completing their physical cores first, then taking more
  from the pod's NUMA nodes when it is bound, else from the nodes it is on when
  they have room); a container that does not raise it adds nothing. A later
  container's hint is echoed in its answer, but the pod's NUMA nodes stay those of
  its first container. Every container of the pod -- init, sidecar and main -- runs on
  the whole set, so init containers never get exclusive CPUs of their own. Every
  container of a dedicated pod must request CPUs (a Guaranteed pod always does): a
  request of 0, or none, is an invalid request.

  * without ``numa_binding``: any free CPUs, chosen by
    :func:`~agent.qrm.cpu.exclusive.take_cpus` (whole cores, one NUMA node when
    it fits);
  * with ``numa_binding``: only CPUs of the NUMA nodes of the hint the kubelet
    chose (``request.hint``). Without a hint (a kubelet without the topology
    manager, or the agent driving the policy itself) the policy uses its own
    first preferred hint;
  * with ``numa_exclusive`` (which implies ``numa_binding``): every non-reserved
    CPU of the hint's nodes, which must have no dedicated CPUs in use; no other
    dedicated pod can then take CPUs there and the share and reclaim pools lose
    them. The set does not grow beyond those nodes.

  Not enough free CPUs: :class:`~agent.qrm.types.AllocationRefused` saying how many
  CPUs were asked and how many are free, per NUMA node; nothing changes.

``numa_binding`` is honoured only for ``dedicated_cores`` pods; other levels run on
their pool, which spans every node (the memory plugin still binds their memory).

**Hints** (:meth:`CPUPolicy.topology_hints`): for a NUMA-bound dedicated container,
every minimal run of adjacent NUMA nodes with enough free CPUs (with
``numa_exclusive``: enough CPUs on nodes without dedicated CPUs in use), the runs
with the fewest nodes preferred; for a container of a pod that already has its set,
the pod's nodes if the container fits there. Nothing fits: an empty hint list for
``cpu``, which makes the kubelet refuse admission. Every other request: an empty
mapping (no NUMA preference).

**Answers** are recomputed from the current pools every time: when a dedicated pod
comes or goes, or the reclaim size changes, :meth:`CPUPolicy.allocations` reports
the new cpusets of every shared, reclaimed and system container (this is how the
kubelet's reconcile and the agent's enforcement learn of pool resizes). A second
Allocate of a known container returns its current answer, whatever it asks
(in-place resize is not supported).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Final

from agent.qrm.cpu.exclusive import take_cpus
from agent.qrm.cpu.pools import (
    NAMED_POOLS,
    POOL_DEDICATED,
    POOL_RECLAIM,
    POOL_RESERVE,
    POOL_SHARE,
    Pools,
    compute_pools,
)
from agent.qrm.cpu.state import (
    ContainerEntry,
    DedicatedSet,
    PolicyState,
    decode_state,
    encode_state,
    required_cpus,
)
from agent.qrm.hints import numa_hints
from agent.qrm.types import (
    AllocationInfo,
    AllocationRefused,
    ContainerAllocation,
    ContainerRequest,
    InvalidRequest,
    NodeAllocations,
    PolicyBase,
    TopologyCapacity,
    TopologyHint,
    valid_container_name,
    valid_pod_uid,
)
from katalyst.checkpoint import JSONValue
from katalyst.cpuset import CPUSet
from katalyst.qos import CPU_ENHANCEMENT_ANNOTATION, PodUID, QoSLevel
from katalyst.topology import CPUTopology

PLUGIN_NAME: Final = "qrm_cpu_plugin"
RESOURCE: Final = "cpu"
#: Annotation on every answer: the pool the container runs in (``dedicated`` for a
#: dedicated pod's own set).
POOL_ANNOTATION: Final = "katalyst.kubewharf.io/cpu_pool"
OCI_PROPERTY: Final = "CpusetCpus"


def _milli_cpu(request: ContainerRequest) -> int:
    """The ``cpu`` request in milli-cores, rounded up (0 when absent)."""
    value = request.requests.get(RESOURCE, 0.0)
    if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise InvalidRequest(f"resource 'cpu': {value!r} is not a non-negative number of cores")
    # round() first: 0.1 * 1000 is 100.00000000000001, which is 100 milli-cores.
    return math.ceil(round(value * 1000, 6))


def _who(request: ContainerRequest) -> str:
    return f"pod {request.pod_namespace}/{request.pod_name} container {request.container_name}"


class CPUPolicy(PolicyBase):
    """The CPU plugin's decisions and state (pure; the server serialises calls)."""

    PLUGIN_NAME = PLUGIN_NAME
    RESOURCE = RESOURCE

    def __init__(self, *, topology: CPUTopology, reserved: CPUSet) -> None:
        """``topology``: the node's CPUs; ``reserved``: the reserve pool.

        Raises ``ValueError`` when ``reserved`` is empty (system pods, and shared pods
        when everything else is dedicated, need somewhere to run; the kubelet's static
        CPU manager has the same rule) or names CPUs that are not online.
        """
        online = topology.online
        if not online:
            raise ValueError("the topology has no online CPUs")
        if not reserved:
            raise ValueError("reserved CPUs must not be empty: the reserve pool needs a CPU")
        offline = reserved.difference(online)
        if offline:
            raise ValueError(f"reserved CPUs {offline} are not online (online: {online})")
        self._topology = topology
        self._reserved = reserved
        self._online = online
        self._node_cpus: Mapping[int, CPUSet] = topology.numa_nodes()
        self._state = PolicyState()
        self._pools_cache: tuple[tuple[Mapping[PodUID, DedicatedSet], int | None], Pools] | None = (
            None
        )

    @classmethod
    def from_state(
        cls, state: Mapping[str, object], *, topology: CPUTopology, reserved: CPUSet
    ) -> CPUPolicy:
        """A policy restored from :meth:`to_state` output: it answers exactly as the
        one that saved it. ``ValueError`` naming the problem when the state does not
        fit this node (CPUs that are not online or are reserved, overlapping dedicated
        sets, malformed fields); the caller then sets the checkpoint aside."""
        policy = cls(topology=topology, reserved=reserved)
        policy._state = decode_state(state, topology=topology, reserved=reserved)
        return policy

    # ---- ResourcePolicy ----------------------------------------------------------------

    def topology_hints(self, request: ContainerRequest) -> Mapping[str, tuple[TopologyHint, ...]]:
        """NUMA hints for a NUMA-bound dedicated container (see the module docstring);
        an empty mapping for everything else."""
        self._check(request)
        milli = _milli_cpu(request)
        self._pool_for(request)  # an invalid cpuset_pool is refused at hint time too
        memory = request.enhancements.memory
        if request.level is not QoSLevel.DEDICATED_CORES or not memory.numa_binding:
            return {}
        self._check_dedicated_request(request, milli)
        state = self._state
        pools = self._pools()
        uid = request.pod_uid
        entries = dict(state.containers.get(uid, {}))
        entries.setdefault(request.container_name, self._entry(request, milli))
        needed = required_cpus(entries.values())
        current = state.dedicated.get(uid)
        if current is None:
            return {
                RESOURCE: self._numa_hints(
                    exclusive=memory.numa_exclusive, count=needed, pools=pools
                )
            }
        if current.numa_nodes is None:
            return {}
        fits = needed <= len(current.cpus) or (
            not current.numa_exclusive
            and len(pools.free.intersection(self._cpus_of(current.numa_nodes)))
            >= needed - len(current.cpus)
        )
        hint = TopologyHint(nodes=frozenset(current.numa_nodes), preferred=True)
        return {RESOURCE: (hint,) if fits else ()}

    def allocate(self, request: ContainerRequest) -> ContainerAllocation:
        """Place the container (see the module docstring) and record it.

        Idempotent: a known container gets its current answer. Raises
        :class:`InvalidRequest` for a malformed request and :class:`AllocationRefused`
        when the CPUs are not there; the state is then unchanged.
        """
        self._check(request)
        state = self._state
        uid = request.pod_uid
        known = state.containers.get(uid, {})
        existing = known.get(request.container_name)
        if existing is not None:
            return self._answer(uid, existing, self._pools())
        milli = _milli_cpu(request)
        pool = self._pool_for(request)
        for other in known.values():
            if other.level is not request.level:
                raise InvalidRequest(
                    f"{_who(request)}: QoS level {request.level.value}, but the pod's other "
                    f"containers were allocated as {other.level.value}"
                )
        entry = self._entry(request, milli, pool=pool)
        entries = {**known, request.container_name: entry}
        dedicated = state.dedicated
        if request.level is QoSLevel.DEDICATED_CORES:
            self._check_dedicated_request(request, milli)
            chosen = self._dedicated_set(
                request, needed=required_cpus(entries.values()), pools=self._pools()
            )
            dedicated = MappingProxyType({**state.dedicated, uid: chosen})
        containers = dict(state.containers)
        containers[uid] = MappingProxyType(entries)
        self._state = replace(
            state,
            containers=MappingProxyType(containers),
            dedicated=dedicated,
            generation=state.generation + 1,
        )
        return self._answer(uid, entry, self._pools())

    def remove_pod(self, pod_uid: PodUID) -> None:
        """Forget the pod and give its exclusive CPUs back; an unknown pod is not an error."""
        state = self._state
        if pod_uid not in state.containers:
            return
        containers = {uid: c for uid, c in state.containers.items() if uid != pod_uid}
        dedicated = {uid: d for uid, d in state.dedicated.items() if uid != pod_uid}
        self._state = replace(
            state,
            containers=MappingProxyType(containers),
            dedicated=MappingProxyType(dedicated),
            generation=state.generation + 1,
        )

    def allocations(self) -> NodeAllocations:
        """Every container's answer, from the current pools."""
        pools = self._pools()
        return {
            uid: {name: self._answer(uid, entry, pools) for name, entry in entries.items()}
            for uid, entries in self._state.containers.items()
        }

    # ---- for the sysadvisor, enforcement and observability ----------------------------------

    @property
    def generation(self) -> int:
        """Increases by one on every change of the state (allocate of a new container,
        removal of a known pod, a new reclaim size); restored from checkpoints."""
        return self._state.generation

    @property
    def reclaim_size(self) -> int | None:
        """The reclaim pool size the sysadvisor set; None: reclaim on share."""
        return self._state.reclaim_size

    def set_reclaim_size(self, size: int | None) -> None:
        """Make the ``size`` highest-numbered CPUs of the share pool the reclaim pool
        (clamped so that the share pool keeps one CPU; 0 is reclaim on share, see
        :mod:`agent.qrm.cpu.pools`); None restores reclaim on share. ``ValueError``
        for a negative size."""
        if size is not None and (isinstance(size, bool) or size < 0):
            raise ValueError(f"reclaim size {size!r} must be None or an integer >= 0")
        state = self._state
        if size == state.reclaim_size:
            return
        self._state = replace(state, reclaim_size=size, generation=state.generation + 1)

    def topology_capacity(self) -> Mapping[str, TopologyCapacity]:
        """CPUs per NUMA node; allocatable leaves out the reserved CPUs."""
        return {
            RESOURCE: TopologyCapacity(
                capacity={node: float(len(cpus)) for node, cpus in self._node_cpus.items()},
                allocatable={
                    node: float(len(cpus.difference(self._reserved)))
                    for node, cpus in self._node_cpus.items()
                },
            )
        }

    def pools(self) -> Mapping[str, CPUSet]:
        """``reserve``, ``share``, ``reclaim`` and ``dedicated/<pod uid>`` -> cpuset (the
        effective sets: with nothing free, share and reclaim are the reserve)."""
        return self._pools().as_mapping()

    def dedicated(self) -> Mapping[PodUID, DedicatedSet]:
        """Pod UID -> its exclusive CPUs with their NUMA binding (for the reporter's
        topology zones and for observability)."""
        return self._state.dedicated

    def current_pools(self) -> Pools:
        """The pools as one value (with the free CPUs and the fall-back flag)."""
        return self._pools()

    def to_state(self) -> dict[str, JSONValue]:
        """Everything needed to answer identically after a restart (JSON-able)."""
        return encode_state(self._state)

    # ---- decisions ----------------------------------------------------------------------

    def _check(self, request: ContainerRequest) -> None:
        if request.resource_name != RESOURCE:
            raise InvalidRequest(f"resource {request.resource_name!r}: this plugin manages 'cpu'")
        if not valid_pod_uid(request.pod_uid):
            raise InvalidRequest(f"pod UID {request.pod_uid!r} is not a Kubernetes UID")
        if not valid_container_name(request.container_name):
            raise InvalidRequest(f"container name {request.container_name!r} is not valid")

    @staticmethod
    def _check_dedicated_request(request: ContainerRequest, milli: int) -> None:
        if milli <= 0:
            raise InvalidRequest(
                f"{_who(request)}: a dedicated_cores container must request CPUs "
                f"(resource 'cpu' is {request.requests.get(RESOURCE, 'missing')})"
            )

    @staticmethod
    def _pool_for(request: ContainerRequest) -> str:
        wanted = request.enhancements.cpu.cpuset_pool
        level = request.level
        if level is QoSLevel.DEDICATED_CORES:
            return POOL_DEDICATED
        if level is QoSLevel.RECLAIMED_CORES:
            return POOL_RECLAIM
        if level is QoSLevel.SHARED_CORES:
            if wanted not in (None, POOL_SHARE):
                raise InvalidRequest(
                    f"{CPU_ENHANCEMENT_ANNOTATION}: cpuset_pool {wanted!r} is not a pool of "
                    f"this node; shared_cores pods run in the {POOL_SHARE!r} pool"
                )
            return POOL_SHARE
        if wanted is None:
            return POOL_RESERVE
        if wanted not in NAMED_POOLS:
            raise InvalidRequest(
                f"{CPU_ENHANCEMENT_ANNOTATION}: cpuset_pool {wanted!r} is not a pool of this "
                f"node; system_cores pods may name {', '.join(NAMED_POOLS)}"
            )
        return wanted

    @staticmethod
    def _entry(
        request: ContainerRequest, milli: int, *, pool: str = POOL_DEDICATED
    ) -> ContainerEntry:
        return ContainerEntry(
            level=request.level,
            pool=pool,
            container_type=request.container_type,
            container_index=request.container_index,
            milli_cpu=milli,
            hint=request.hint,
        )

    def _pools(self) -> Pools:
        state = self._state
        cached = self._pools_cache
        # Pools depend on the dedicated sets and the reclaim size only: a shared
        # or reclaimed allocation (the common case) keeps the same mapping object.
        key = (state.dedicated, state.reclaim_size)
        if cached is not None and cached[0][0] is key[0] and cached[0][1] == key[1]:
            return cached[1]
        pools = compute_pools(
            online=self._online,
            reserved=self._reserved,
            dedicated={uid: ded.cpus for uid, ded in state.dedicated.items()},
            reclaim_size=state.reclaim_size,
        )
        self._pools_cache = (key, pools)
        return pools

    def _cpus_of(self, nodes: CPUSet) -> CPUSet:
        out = CPUSet.of(())
        for node in nodes:
            out = out.union(self._node_cpus[node])
        return out

    def _exclusive_capacity(self, pools: Pools) -> dict[int, int]:
        """NUMA node -> CPUs a NUMA-exclusive pod would get there, for nodes without
        dedicated CPUs in use."""
        out: dict[int, int] = {}
        for node, cpus in self._node_cpus.items():
            usable = cpus.difference(self._reserved)
            if usable.issubset(pools.free):
                out[node] = len(usable)
        return out

    def _numa_hints(self, *, exclusive: bool, count: int, pools: Pools) -> tuple[TopologyHint, ...]:
        if exclusive:
            available = self._exclusive_capacity(pools)
        else:
            available = {
                n: len(cpus.intersection(pools.free)) for n, cpus in self._node_cpus.items()
            }
        return numa_hints(node_ids=list(self._node_cpus), available=available, count=count)

    def _free_text(self, pools: Pools, nodes: CPUSet | None = None) -> str:
        chosen = self._node_cpus if nodes is None else {n: self._node_cpus[n] for n in nodes}
        per_node = ", ".join(
            f"node {n}: {len(cpus.intersection(pools.free))}" for n, cpus in chosen.items()
        )
        total = sum(len(cpus.intersection(pools.free)) for cpus in chosen.values())
        return f"{total} free ({per_node})"

    def _bound_nodes(self, request: ContainerRequest, *, needed: int, pools: Pools) -> CPUSet:
        """The NUMA nodes of the kubelet's hint (checked), or the policy's own best hint."""
        hint = request.hint
        if hint is not None and hint.nodes:
            unknown = sorted(n for n in hint.nodes if n not in self._node_cpus)
            if unknown:
                raise InvalidRequest(
                    f"{_who(request)}: the hint names NUMA nodes {unknown} that this node "
                    f"lacks (it has {CPUSet.of(self._node_cpus)})"
                )
            return CPUSet.of(hint.nodes)
        exclusive = request.enhancements.memory.numa_exclusive
        own = self._numa_hints(exclusive=exclusive, count=needed, pools=pools)
        if not own:
            kind = "on whole NUMA nodes" if exclusive else "on one set of adjacent NUMA nodes"
            raise AllocationRefused(
                f"{_who(request)}: asked {needed} exclusive CPUs {kind}, {self._free_text(pools)}"
            )
        return CPUSet.of(next(h for h in own if h.preferred).nodes)

    def _dedicated_set(
        self, request: ContainerRequest, *, needed: int, pools: Pools
    ) -> DedicatedSet:
        current = self._state.dedicated.get(request.pod_uid)
        if current is not None:
            if needed <= len(current.cpus):
                return current
            return self._grow(request, current=current, needed=needed, pools=pools)
        memory = request.enhancements.memory
        if not memory.numa_binding:
            cpus = take_cpus(self._topology, free=pools.free, count=needed)
            if cpus is None:
                raise AllocationRefused(
                    f"{_who(request)}: asked {needed} exclusive CPUs, {self._free_text(pools)}"
                )
            return DedicatedSet(cpus=cpus, numa_nodes=None, numa_exclusive=False)
        nodes = self._bound_nodes(request, needed=needed, pools=pools)
        if memory.numa_exclusive:
            return self._whole_nodes(request, nodes=nodes, needed=needed, pools=pools)
        cpus = take_cpus(
            self._topology, free=pools.free.intersection(self._cpus_of(nodes)), count=needed
        )
        if cpus is None:
            raise AllocationRefused(
                f"{_who(request)}: asked {needed} exclusive CPUs on NUMA nodes {nodes}, "
                f"{self._free_text(pools, nodes)}"
            )
        return DedicatedSet(cpus=cpus, numa_nodes=nodes, numa_exclusive=False)

    def _whole_nodes(
        self, request: ContainerRequest, *, nodes: CPUSet, needed: int, pools: Pools
    ) -> DedicatedSet:
        usable = self._cpus_of(nodes).difference(self._reserved)
        in_use = usable.difference(pools.free)
        if in_use or len(usable) < needed:
            why = (
                f"dedicated CPUs {in_use} are in use there"
                if in_use
                else f"they have only {len(usable)} non-reserved CPUs"
            )
            raise AllocationRefused(
                f"{_who(request)}: asked {needed} exclusive CPUs on whole NUMA nodes {nodes}, "
                f"but {why}; {self._free_text(pools, nodes)}"
            )
        return DedicatedSet(cpus=usable, numa_nodes=nodes, numa_exclusive=True)

    def _grow(
        self, request: ContainerRequest, *, current: DedicatedSet, needed: int, pools: Pools
    ) -> DedicatedSet:
        """``current`` plus more CPUs: first the free SMT siblings of its own CPUs (which
        completes its cores), then from its NUMA nodes (only those when it is bound)."""
        extra = needed - len(current.cpus)
        if current.numa_exclusive:
            raise AllocationRefused(
                f"{_who(request)}: the pod's containers now need {needed} exclusive CPUs, but "
                f"it holds NUMA nodes {current.numa_nodes} whole, {len(current.cpus)} CPUs"
            )
        own_cores = CPUSet.of(
            cpu
            for core in self._topology.cores().values()
            if core.intersection(current.cpus)
            for cpu in core
        )
        siblings = CPUSet.of(sorted(pools.free.intersection(own_cores))[:extra])
        grown = current.cpus.union(siblings)
        extra -= len(siblings)
        free = pools.free.difference(siblings)
        if current.numa_nodes is not None:
            added = take_cpus(
                self._topology,
                free=free.intersection(self._cpus_of(current.numa_nodes)),
                count=extra,
            )
            if added is None:
                raise AllocationRefused(
                    f"{_who(request)}: the pod's containers now need {needed} exclusive CPUs, "
                    f"{needed - len(current.cpus)} more than it holds, on NUMA nodes "
                    f"{current.numa_nodes}; {self._free_text(pools, current.numa_nodes)}"
                )
            return replace(current, cpus=grown.union(added))
        near = CPUSet.of(
            n for n, cpus in self._node_cpus.items() if cpus.intersection(current.cpus)
        )
        added = take_cpus(self._topology, free=free.intersection(self._cpus_of(near)), count=extra)
        if added is None:
            added = take_cpus(self._topology, free=free, count=extra)
        if added is None:
            raise AllocationRefused(
                f"{_who(request)}: the pod's containers now need {needed} exclusive CPUs, "
                f"{needed - len(current.cpus)} more than it holds; {self._free_text(pools)}"
            )
        return replace(current, cpus=grown.union(added))

    def _answer(self, uid: PodUID, entry: ContainerEntry, pools: Pools) -> ContainerAllocation:
        cpus = pools.dedicated[uid] if entry.pool == POOL_DEDICATED else pools.named(entry.pool)
        assignments = {
            node: len(cpus.intersection(node_cpus))
            for node, node_cpus in self._node_cpus.items()
            if cpus.intersection(node_cpus)
        }
        return {
            RESOURCE: AllocationInfo(
                oci_property_name=OCI_PROPERTY,
                allocation_result=str(cpus),
                allocated_quantity=float(len(cpus)),
                is_node_resource=True,
                is_scalar_resource=True,
                annotations={POOL_ANNOTATION: entry.pool},
                hints=(entry.hint,) if entry.hint is not None else (),
                topology_assignments=assignments,
            )
        }
