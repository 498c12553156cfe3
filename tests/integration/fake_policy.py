"""A dict-backed :class:`~agent.qrm.types.ResourcePolicy` for the plugin server's tests.

It keeps one quantity of capacity per NUMA node and no pools: enough to exercise
every path of the server (hints, allocation, refusal, removal, reconciliation)
without depending on the real CPU and memory policies. It records every request
it receives, so a test can check that the server passed each wire field through,
and that a rejected request never reached it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from agent.qrm.types import (
    AllocationInfo,
    AllocationRefused,
    ContainerAllocation,
    ContainerRequest,
    InvalidRequest,
    NodeAllocations,
    PluginOptions,
    TopologyCapacity,
    TopologyHint,
)
from katalyst.qos import PodUID

#: An annotation that makes the fake raise InvalidRequest (a policy-level check).
REJECT_ANNOTATION = "test.katalyst.io/reject"


class FakePolicy:
    """Allocates ``requests[resource_name]`` on the first preferred NUMA node that fits."""

    def __init__(
        self,
        *,
        plugin_name: str = "qrm_fake_cpu",
        resource_name: str = "cpu",
        oci_property_name: str = "CpusetCpus",
        numa_capacity: Mapping[int, float] | None = None,
        preferred_numa: Sequence[int] | None = None,
        options: PluginOptions | None = None,
    ) -> None:
        self._plugin_name = plugin_name
        self._resource_name = resource_name
        self._oci = oci_property_name
        self.capacity: dict[int, float] = dict(numa_capacity or {0: 4.0, 1: 4.0})
        self.preferred_numa = (
            tuple(preferred_numa) if preferred_numa is not None else tuple(self.capacity)
        )
        self._options = options or PluginOptions()
        self.seen: list[ContainerRequest] = []
        """Every request that reached the policy, in order."""
        self.removed: list[PodUID] = []
        self.fail_next: Exception | None = None
        """Raised (once) by the next call: simulates a bug in the policy."""
        # pod UID -> container -> (NUMA node, quantity, request)
        self._state: dict[PodUID, dict[str, tuple[int, float, ContainerRequest]]] = {}

    @property
    def plugin_name(self) -> str:
        return self._plugin_name

    @property
    def resource_name(self) -> str:
        return self._resource_name

    def _maybe_fail(self) -> None:
        if self.fail_next is not None:
            err, self.fail_next = self.fail_next, None
            raise err

    def _free(self, node: int) -> float:
        used = sum(q for c in self._state.values() for n, q, _ in c.values() if n == node)
        return self.capacity[node] - used

    def options(self) -> PluginOptions:
        self._maybe_fail()
        return self._options

    def topology_hints(self, request: ContainerRequest) -> Mapping[str, tuple[TopologyHint, ...]]:
        self._maybe_fail()
        self.seen.append(request)
        quantity = request.requests.get(self._resource_name, 0.0)
        fitting = [n for n in self.preferred_numa if self._free(n) >= quantity]
        hints = [TopologyHint(frozenset({n}), preferred=True) for n in fitting]
        # Spanning every node always "fits" as a last resort, never preferred.
        hints.append(TopologyHint(frozenset(self.capacity), preferred=False))
        return {self._resource_name: tuple(hints)}

    def allocate(self, request: ContainerRequest) -> ContainerAllocation:
        self._maybe_fail()
        self.seen.append(request)
        if request.annotations.get(REJECT_ANNOTATION):
            raise InvalidRequest(f"{REJECT_ANNOTATION}: {request.annotations[REJECT_ANNOTATION]}")
        existing = self._state.get(request.pod_uid, {}).get(request.container_name)
        if existing is not None:  # idempotent per container
            node, quantity, _ = existing
        else:
            quantity = request.requests.get(self._resource_name, 0.0)
            candidates = sorted(request.hint.nodes) if request.hint else sorted(self.capacity)
            node = next((n for n in candidates if self._free(n) >= quantity), -1)
            if node < 0:
                free = {n: self._free(n) for n in candidates}
                raise AllocationRefused(
                    f"{self._resource_name}: asked {quantity:g} on NUMA {candidates}, free {free}"
                )
            self._state.setdefault(request.pod_uid, {})[request.container_name] = (
                node,
                quantity,
                request,
            )
        return {self._resource_name: self._info(node, quantity, request)}

    def _info(self, node: int, quantity: float, request: ContainerRequest) -> AllocationInfo:
        return AllocationInfo(
            oci_property_name=self._oci,
            allocation_result=str(node),
            allocated_quantity=quantity,
            is_node_resource=True,
            is_scalar_resource=True,
            envs={"FAKE_NUMA": str(node), "FAKE_LEVEL": request.level.value},
            annotations={"fake.katalyst.io/container": request.container_name},
            hints=(request.hint,) if request.hint else (),
            topology_assignments={node: int(quantity)},
        )

    def remove_pod(self, pod_uid: PodUID) -> None:
        self._maybe_fail()
        self.removed.append(pod_uid)
        self._state.pop(pod_uid, None)

    def allocations(self) -> NodeAllocations:
        self._maybe_fail()
        return {
            uid: {
                name: {self._resource_name: self._info(node, quantity, request)}
                for name, (node, quantity, request) in containers.items()
            }
            for uid, containers in self._state.items()
        }

    def topology_capacity(self) -> Mapping[str, TopologyCapacity]:
        self._maybe_fail()
        return {
            self._resource_name: TopologyCapacity(
                capacity=dict(self.capacity), allocatable=dict(self.capacity)
            )
        }
