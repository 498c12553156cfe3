"""The GPU resource policy (``qrm_gpu_plugin``): shares of GPU memory, isolated by MPS.

The resource is ``resource.katalyst.kubewharf.io/gpu_memory`` in **MiB**, the
request value as sent: ``gpu_memory: "8192"`` asks for 8 GiB of GPU memory. The
kubelet sends a quantity's value, so ``gpu_memory: 8Gi`` arrives as 8589934592 and
asks for 8 PiB, which no GPU has: it is refused, and the message says the unit. A
value that is not a whole, positive number of MiB is INVALID_ARGUMENT.

Which GPUs, per container:

* the pod annotation :data:`GPU_INDICES_ANNOTATION` (``"1"``, ``"0,3"``), written
  by the scheduler extender when it binds the pod, names them; an index this node
  does not have, a repeated index or a malformed list is INVALID_ARGUMENT;
* without it, the one GPU with the most free memory (spreading pods), preferring
  GPUs on the NUMA nodes of the kubelet's hint, then the lowest index.

A request over N GPUs is split evenly: each gets ``request // N`` MiB, the first
``request % N`` one more, so that the shares add up to the request. A GPU that
cannot take its share refuses the whole request (RESOURCE_EXHAUSTED, "gpu 1 has
4096 MiB free, pod default/x needs 8192 MiB"), and nothing changes.

As for memory, a pod's need on a GPU is the larger of its largest init container's
share there and the sum of its other containers' (init containers run first, one
at a time).

The answer is one ``ResourceAllocationInfo``: the indices as ``allocation_result``,
the MiB as ``allocated_quantity`` (per NUMA node in ``topology_assignments`` where
the GPUs' nodes are known), and for the container:

* ``NVIDIA_VISIBLE_DEVICES``: the GPUs' UUIDs, comma-separated;
* ``CUDA_MPS_PINNED_DEVICE_MEM_LIMIT``: ``<ordinal>=<MiB>M`` per GPU, comma-separated,
  the ordinal being the GPU's place in ``NVIDIA_VISIBLE_DEVICES`` (what the
  container's CUDA sees: ``0=4096M,1=4096M``). MPS does not apply a limit keyed
  by UUID, which is why NVIDIA's device plugin keys it by ordinal too;
* ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE``: the share of the GPU's memory, in percent,
  rounded up, 1 to 100 (the largest over the container's GPUs);

so that a node running the MPS control daemon enforces the share; and the
annotations :data:`GPU_INDICES_ANNOTATION`, :data:`GPU_UUIDS_ANNOTATION` and
:data:`GPU_MEMORY_ANNOTATION` (MiB per GPU, in the order of the indices).

A policy without GPUs (no GPU, no driver) refuses every request, saying so.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from agent.gpu.inventory import GPU
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
from katalyst.qos import GPU_INDICES_ANNOTATION, RESOURCE_GPU_MEMORY, PodUID

__all__ = [
    "ENV_ACTIVE_THREAD_PERCENTAGE",
    "ENV_PINNED_MEM_LIMIT",
    "ENV_VISIBLE_DEVICES",
    "GPU_INDICES_ANNOTATION",
    "GPU_MEMORY_ANNOTATION",
    "GPU_UUIDS_ANNOTATION",
    "PLUGIN_NAME",
    "RESOURCE",
    "STATE_VERSION",
    "GPUPlan",
    "GPUPolicy",
    "parse_gpu_indices",
]

PLUGIN_NAME: Final = "qrm_gpu_plugin"
RESOURCE: Final = RESOURCE_GPU_MEMORY
#: On the answer: the chosen GPUs' UUIDs, comma-separated, in the order of the indices.
GPU_UUIDS_ANNOTATION: Final = "katalyst.kubewharf.io/gpu_uuids"
#: On the answer: the MiB given on each GPU, comma-separated, in the order of the indices.
GPU_MEMORY_ANNOTATION: Final = "katalyst.kubewharf.io/gpu_memory_mib"
ENV_VISIBLE_DEVICES: Final = "NVIDIA_VISIBLE_DEVICES"
ENV_PINNED_MEM_LIMIT: Final = "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"
ENV_ACTIVE_THREAD_PERCENTAGE: Final = "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"
STATE_VERSION: Final = 1

# Where a request looks like bytes rather than MiB (a "1Mi" or more written as a
# binary quantity), the refusal says the unit.
_MIB: Final = 1 << 20


@dataclass(frozen=True, slots=True)
class GPUPlan:
    """One container's GPU decision."""

    shares: tuple[tuple[int, int], ...]
    """(GPU index, MiB) per GPU, in the order chosen."""
    init: bool = False
    """An init container: it runs before the others."""

    @property
    def indices(self) -> tuple[int, ...]:
        return tuple(index for index, _ in self.shares)

    @property
    def request_mib(self) -> int:
        return sum(mib for _, mib in self.shares)


_Plans = dict[PodUID, dict[str, GPUPlan]]


def parse_gpu_indices(text: str) -> tuple[int, ...]:
    """The indices of :data:`GPU_INDICES_ANNOTATION`; ValueError naming the problem."""
    parts = [part.strip() for part in text.split(",")]
    indices: list[int] = []
    for part in parts:
        if not part.isascii() or not part.isdigit():
            raise ValueError(f"{part!r} is not a GPU index (a non-negative integer)")
        index = int(part)
        if index in indices:
            raise ValueError(f"GPU {index} is listed twice")
        indices.append(index)
    return tuple(indices)


def _split(request: int, n: int) -> list[int]:
    """``request`` MiB over ``n`` GPUs: even shares adding up to the request."""
    base, extra = divmod(request, n)
    return [base + (1 if i < extra else 0) for i in range(n)]


def _pod_usage(plans: Iterable[GPUPlan]) -> dict[int, int]:
    """A pod's MiB per GPU: the larger of its largest init container's share and the
    sum of its other containers' shares there."""
    listed = [(plan.init, dict(plan.shares)) for plan in plans]
    indices = {index for _, shares in listed for index in shares}
    return {
        i: effective_request((init, shares.get(i, 0)) for init, shares in listed) for i in indices
    }


class GPUPolicy(PolicyBase):
    """The GPU plugin's decisions and state (pure; the server serializes calls)."""

    PLUGIN_NAME = PLUGIN_NAME
    RESOURCE = RESOURCE

    def __init__(self, gpus: Sequence[GPU]) -> None:
        """
        :param gpus: the node's GPUs (:meth:`GPUInventory.gpus`); may be empty, in
            which case every request is refused.
        """
        by_index: dict[int, GPU] = {}
        uuids: set[str] = set()
        for gpu in gpus:
            if not isinstance(gpu, GPU):
                raise ValueError(f"gpus must be GPU objects, got {gpu!r}")
            if gpu.index in by_index:
                raise ValueError(f"GPU {gpu.index} is listed more than once")
            if gpu.uuid in uuids:
                raise ValueError(f"GPU UUID {gpu.uuid} is listed more than once")
            by_index[gpu.index] = gpu
            uuids.add(gpu.uuid)
        self._gpus = dict(sorted(by_index.items()))
        self._numa_known = any(g.numa_node is not None for g in self._gpus.values())
        self._plans: _Plans = {}
        self.generation = 0
        """Bumps on every change of the allocations."""

    # ---- ResourcePolicy -------------------------------------------------------------

    def topology_hints(self, request: ContainerRequest) -> Mapping[str, tuple[TopologyHint, ...]]:
        """The NUMA nodes of the GPUs the container would get.

        With the annotation: one hint, the chosen GPUs' nodes, preferred when they
        can take the shares. Without: one preferred hint per NUMA node with a GPU
        that fits (none at all: "cannot be satisfied", and Allocate says why). An
        empty mapping ("no preference") when the GPUs' nodes are unknown (or there
        are no GPUs: Allocate refuses) or the request is for nothing."""
        ask = self._ask(request)
        if not self._numa_known or ask == 0:
            return {}
        trial = self._without(request.pod_uid, request.container_name)
        named = self._named(request)
        if named is not None:
            nodes = {self._gpus[i].numa_node for i in named}
            if None in nodes:
                return {}
            shares = list(zip(named, _split(ask, len(named)), strict=True))
            fits = all(self._fits(request, trial, i, mib) for i, mib in shares)
            known = frozenset(n for n in nodes if n is not None)
            return {RESOURCE: (TopologyHint(nodes=known, preferred=fits),)}
        fitting = [g for g in self._gpus.values() if self._fits(request, trial, g.index, ask)]
        if any(g.numa_node is None for g in fitting):
            return {}
        numa = sorted({g.numa_node for g in fitting if g.numa_node is not None})
        return {RESOURCE: tuple(TopologyHint(nodes=frozenset({n}), preferred=True) for n in numa)}

    def allocate(self, request: ContainerRequest) -> ContainerAllocation:
        """Choose the container's GPUs and account its shares.

        Idempotent: the same request for the same container gets the same answer; a
        changed request is decided again as if the earlier allocation were gone. On
        refusal nothing changes."""
        ask = self._ask(request)
        if ask == 0:
            return {}
        if not self._gpus:
            raise AllocationRefused(
                f"{RESOURCE}: this node has no GPU (none found, or no NVIDIA driver); "
                f"pod {_pod(request)} needs {ask} MiB"
            )
        named = self._named(request)
        init = request.container_type is ContainerType.INIT
        existing = self._plans.get(request.pod_uid, {}).get(request.container_name)
        if (
            existing is not None
            and existing.request_mib == ask
            and existing.init == init
            and (named is None or existing.indices == named)
        ):
            return self._answer(existing)
        trial = self._without(request.pod_uid, request.container_name)
        if named is not None:
            shares = tuple(zip(named, _split(ask, len(named)), strict=True))
            for index, mib in shares:
                if not self._fits(request, trial, index, mib):
                    raise AllocationRefused(
                        f"gpu {index} has {self._free(index, trial)} MiB free, pod "
                        f"{_pod(request)} needs {mib}"
                        + (f" (its share of {ask})" if len(shares) > 1 else "")
                        + f" MiB of {RESOURCE}"
                        + self._unit_hint(ask)
                    )
        else:
            shares = ((self._choose(request, ask, trial).index, ask),)
        plan = GPUPlan(shares=shares, init=init)
        containers = trial.get(request.pod_uid, {})
        trial[request.pod_uid] = {**containers, request.container_name: plan}
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
        """MiB per NUMA node (a GPU whose node is unknown counts on node 0); an empty
        mapping when the node has no GPUs."""
        if not self._gpus:
            return {}
        capacity: dict[int, float] = {}
        for gpu in self._gpus.values():
            node = gpu.numa_node if gpu.numa_node is not None else 0
            capacity[node] = capacity.get(node, 0.0) + float(gpu.memory_mib)
        ordered = dict(sorted(capacity.items()))
        return {RESOURCE: TopologyCapacity(capacity=ordered, allocatable=dict(ordered))}

    # ---- for the agent's report ------------------------------------------------------

    @property
    def gpus(self) -> tuple[GPU, ...]:
        """The GPUs this policy shares out, by index."""
        return tuple(self._gpus.values())

    def used_mib(self, index: int) -> int:
        """MiB given out on GPU ``index`` (KeyError if unknown)."""
        return self._used(self._known(index), self._plans)

    def free_mib(self, index: int) -> int:
        """MiB still free on GPU ``index`` (KeyError if unknown)."""
        return self._free(self._known(index), self._plans)

    def usage_by_pod(self) -> dict[str, dict[int, int]]:
        """Pod UID -> GPU index -> the MiB the pod holds there (init containers
        overlapping the others, as :func:`_pod_usage` counts them)."""
        return {str(uid): _pod_usage(c.values()) for uid, c in self._plans.items()}

    def plans(self) -> Mapping[PodUID, Mapping[str, GPUPlan]]:
        """Every container's plan."""
        return {uid: dict(containers) for uid, containers in self._plans.items()}

    # ---- decisions -------------------------------------------------------------------

    def _known(self, index: int) -> int:
        if index not in self._gpus:
            raise KeyError(f"no GPU {index!r} here (GPUs: {self._names()})")
        return index

    def _names(self) -> str:
        return ", ".join(str(i) for i in self._gpus) or "none"

    @staticmethod
    def _ask(request: ContainerRequest) -> int:
        value = request.requests.get(RESOURCE, 0.0)
        if not (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(value)
            and value >= 0
            and float(value).is_integer()
        ):
            raise InvalidRequest(
                f"resource {RESOURCE!r}: {value!r} is not a whole, non-negative number of MiB"
            )
        return int(value)

    def _named(self, request: ContainerRequest) -> tuple[int, ...] | None:
        """The GPUs of the pod's annotation, checked against this node; None without it."""
        text = request.annotations.get(GPU_INDICES_ANNOTATION)
        if text is None:
            return None
        try:
            indices = parse_gpu_indices(text)
        except ValueError as exc:
            raise InvalidRequest(f"annotation {GPU_INDICES_ANNOTATION} {text!r}: {exc}") from None
        missing = [i for i in indices if i not in self._gpus]
        if missing:
            raise InvalidRequest(
                f"annotation {GPU_INDICES_ANNOTATION}: GPU "
                f"{', '.join(str(i) for i in missing)} does not exist on this node "
                f"(GPUs: {self._names()})"
            )
        return indices

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

    @staticmethod
    def _used(index: int, plans: _Plans) -> int:
        return sum(_pod_usage(c.values()).get(index, 0) for c in plans.values())

    def _free(self, index: int, plans: _Plans) -> int:
        return max(self._gpus[index].memory_mib - self._used(index, plans), 0)

    def _fits(self, request: ContainerRequest, trial: _Plans, index: int, mib: int) -> bool:
        """Whether the container's ``mib`` on GPU ``index`` fits beside everyone else
        (its pod's own usage there counted as the pod's, init rule included)."""
        siblings = trial.get(request.pod_uid, {})
        probe = GPUPlan(shares=((index, mib),), init=request.container_type is ContainerType.INIT)
        before = _pod_usage(siblings.values()).get(index, 0)
        after = _pod_usage([*siblings.values(), probe]).get(index, 0)
        return after - before <= self._free(index, trial)

    def _choose(self, request: ContainerRequest, ask: int, trial: _Plans) -> GPU:
        hint = request.hint.nodes if request.hint is not None and request.hint.nodes else None
        fitting = [g for g in self._gpus.values() if self._fits(request, trial, g.index, ask)]
        if not fitting:
            state = ", ".join(f"gpu {i} has {self._free(i, trial)} MiB free" for i in self._gpus)
            raise AllocationRefused(
                f"no GPU can take pod {_pod(request)}'s {ask} MiB of {RESOURCE}: {state}"
                + self._unit_hint(ask)
            )

        def rank(gpu: GPU) -> tuple[int, int, int]:
            near = 0 if hint is None or gpu.numa_node in hint else 1
            return (near, -self._free(gpu.index, trial), gpu.index)

        return min(fitting, key=rank)

    def _unit_hint(self, ask: int) -> str:
        largest = max(g.memory_mib for g in self._gpus.values())
        if ask > largest and ask >= _MIB:
            return (
                f" ({RESOURCE} is in MiB: {ask} MiB is more than any GPU here has; "
                f"a quantity such as 8Gi is bytes, write 8192)"
            )
        return ""

    def _answer(self, plan: GPUPlan) -> ContainerAllocation:
        gpus = [self._gpus[i] for i in plan.indices]
        uuids = ",".join(g.uuid for g in gpus)
        percent = max(
            min(max(math.ceil(mib * 100 / self._gpus[i].memory_mib), 1), 100)
            for i, mib in plan.shares
        )
        per_node: dict[int, int] = {}
        for gpu, (_, mib) in zip(gpus, plan.shares, strict=True):
            if gpu.numa_node is not None:
                per_node[gpu.numa_node] = per_node.get(gpu.numa_node, 0) + mib
        nodes = frozenset(per_node)
        return {
            RESOURCE: AllocationInfo(
                # No OCI property carries a GPU: the container runtime's NVIDIA hook
                # reads the environment.
                oci_property_name="",
                allocation_result=",".join(str(i) for i in plan.indices),
                allocated_quantity=float(plan.request_mib),
                is_node_resource=True,
                is_scalar_resource=True,
                envs={
                    ENV_VISIBLE_DEVICES: uuids,
                    # By the ordinal the container sees (NVIDIA_VISIBLE_DEVICES
                    # order), not by UUID: limits set by UUID are not applied
                    # (NVIDIA k8s-device-plugin 0.15 switched to ordinals for this).
                    ENV_PINNED_MEM_LIMIT: ",".join(
                        f"{ordinal}={mib}M" for ordinal, (_, mib) in enumerate(plan.shares)
                    ),
                    ENV_ACTIVE_THREAD_PERCENTAGE: str(percent),
                },
                annotations={
                    GPU_INDICES_ANNOTATION: ",".join(str(i) for i in plan.indices),
                    GPU_UUIDS_ANNOTATION: uuids,
                    GPU_MEMORY_ANNOTATION: ",".join(str(mib) for _, mib in plan.shares),
                },
                hints=(TopologyHint(nodes=nodes, preferred=True),) if nodes else (),
                topology_assignments=dict(sorted(per_node.items())),
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
                        "gpus": [
                            {"index": i, "uuid": self._gpus[i].uuid, "mib": mib}
                            for i, mib in plan.shares
                        ],
                        "init": plan.init,
                    }
                    for name, plan in containers.items()
                }
                for uid, containers in self._plans.items()
            },
        }

    @classmethod
    def from_state(cls, state: Mapping[str, object], *, gpus: Sequence[GPU]) -> GPUPolicy:
        """A policy restored from :meth:`to_state`.

        Raises ValueError, naming the problem, when the state is malformed or no
        longer fits the node: a GPU that vanished (or whose index now names another
        UUID), or shares beyond a GPU's memory. The agent then sets the checkpoint
        aside and starts fresh (``restore_or_new``)."""
        policy = cls(gpus)
        policy.restore(state)
        return policy

    def restore(self, state: Mapping[str, object]) -> None:
        """Load :meth:`to_state` output; ValueError if it does not fit this node,
        leaving the policy as it was."""
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
                plans[PodUID(uid)] = {
                    str(name): self._restore_plan(f"pod {uid!r} container {name!r}", name, raw)
                    for name, raw in containers.items()
                }
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"gpu policy state is malformed: {exc!r}") from exc
        for index, gpu in self._gpus.items():
            used = self._used(index, plans)
            if used > gpu.memory_mib:
                raise ValueError(
                    f"GPU {index}: the restored pods hold {used} MiB, more than its "
                    f"{gpu.memory_mib} MiB"
                )
        self._plans = plans
        self.generation += 1

    def _restore_plan(self, where: str, name: object, raw: object) -> GPUPlan:
        if not isinstance(name, str) or not valid_container_name(name):
            raise ValueError(f"{where}: not a container name")
        if not isinstance(raw, Mapping):
            raise ValueError(f"{where}: not an object")
        entries = raw["gpus"]
        if not isinstance(entries, list) or not entries:
            raise ValueError(f"{where}: 'gpus' is not a non-empty list")
        shares: list[tuple[int, int]] = []
        for entry in entries:
            index, uuid, mib = entry["index"], entry["uuid"], entry["mib"]
            if isinstance(index, bool) or not isinstance(index, int):
                raise ValueError(f"{where}: GPU index {index!r} is not an integer")
            gpu = self._gpus.get(index)
            if gpu is None or gpu.uuid != uuid:
                raise ValueError(
                    f"{where}: GPU {index} ({uuid!r}) is not on this node any more "
                    f"(GPUs: {', '.join(f'{g.index} {g.uuid}' for g in self._gpus.values())})"
                )
            if isinstance(mib, bool) or not isinstance(mib, int) or mib < 0:
                raise ValueError(f"{where}: mib {mib!r} is not a non-negative integer")
            if index in (i for i, _ in shares):
                raise ValueError(f"{where}: GPU {index} is listed twice")
            shares.append((index, mib))
        init = raw.get("init", False)
        if not isinstance(init, bool):
            raise ValueError(f"{where}: init: expected true or false, got {init!r}")
        return GPUPlan(shares=tuple(shares), init=init)


def _pod(request: ContainerRequest) -> str:
    return f"{request.pod_namespace}/{request.pod_name}"
