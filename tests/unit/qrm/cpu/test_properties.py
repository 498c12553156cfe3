"""Properties over random sequences of dedicated pods coming and going."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from agent.qrm.cpu import CPUPolicy, compute_pools
from agent.qrm.types import AllocationRefused, ContainerType, TopologyHint
from katalyst.cpuset import CPUSet
from katalyst.qos import PodUID
from katalyst.topology import CPUTopology
from tests.unit.qrm.cpu.machines import request

RESERVED = CPUSet.parse("0-1")
NUMA_MODES = ("none", "binding", "exclusive")

_op = st.tuples(
    st.sampled_from(["allocate", "allocate", "allocate", "remove"]),
    st.integers(min_value=0, max_value=5),  # pod; its NUMA mode is NUMA_MODES[pod % 3]
    st.integers(min_value=1, max_value=9),  # CPUs
    st.sampled_from(["app", "proxy"]),  # main or sidecar: a sidecar may grow the pod's set
    st.booleans(),  # follow the policy's preferred hint, or pick node 0 regardless
)


def _check_invariants(policy: CPUPolicy, topology: CPUTopology) -> None:
    pools = policy.current_pools()
    online = topology.online
    union = CPUSet.of(())
    for uid, cpus in pools.dedicated.items():
        assert cpus, f"pod {uid} holds no CPUs"
        assert not cpus.intersection(RESERVED), f"pod {uid} holds reserved CPUs"
        assert not cpus.intersection(union), f"pod {uid} overlaps another pod"
        union = union.union(cpus)
    assert not pools.share.intersection(union)
    assert pools.share.union(union).union(RESERVED) == online
    assert pools.share, "the share pool is never empty"
    if pools.share == RESERVED:
        assert union == online.difference(RESERVED), "fallback only when all is dedicated"
    nodes = topology.numa_nodes()
    for uid, ded in policy.dedicated().items():
        assert ded.cpus == pools.dedicated[uid]
        if ded.numa_nodes is None:
            continue
        on_nodes = CPUSet.of(cpu for n in ded.numa_nodes for cpu in nodes[n])
        assert ded.cpus.issubset(on_nodes), f"pod {uid} strays off its NUMA nodes"
        if ded.numa_exclusive:
            assert ded.cpus == on_nodes.difference(RESERVED), f"pod {uid} lacks whole nodes"
    for containers in policy.allocations().values():
        for answer in containers.values():
            assert CPUSet.parse(answer["cpu"].allocation_result)


@given(ops=st.lists(_op, max_size=25))
def test_dedicated_pods_coming_and_going_keep_the_pools_sound(
    numa2: CPUTopology, ops: list[tuple[str, int, int, str, bool]]
) -> None:
    policy = CPUPolicy(topology=numa2, reserved=RESERVED)
    policy.allocate(request("shared"))
    for kind, pod, size, container, follow_hint in ops:
        uid = f"d{pod}"
        generation = policy.generation
        if kind == "remove":
            policy.remove_pod(PodUID(uid))
            _check_invariants(policy, numa2)
            continue
        mode = NUMA_MODES[pod % 3]
        req = request(
            uid,
            level="dedicated_cores",
            cpu=size,
            container=container,
            container_type=ContainerType.MAIN if container == "app" else ContainerType.SIDECAR,
            numa_binding=mode != "none",
            numa_exclusive=mode == "exclusive",
        )
        if mode != "none":
            hints = policy.topology_hints(req).get("cpu", ())
            preferred = [h for h in hints if h.preferred]
            chosen = preferred[0] if follow_hint and preferred else None
            req = replace(req, hint=chosen or TopologyHint(frozenset({0}), preferred=False))
        before = policy.to_state()
        try:
            policy.allocate(req)
        except AllocationRefused:
            assert policy.to_state() == before, "a refusal changes nothing"
            assert policy.generation == generation
        _check_invariants(policy, numa2)


@given(
    dedicated=st.lists(st.integers(min_value=2, max_value=15), unique=True),
    size=st.none() | st.integers(min_value=0, max_value=20),
)
def test_pools_partition_the_free_cpus(dedicated: list[int], size: int | None) -> None:
    online = CPUSet.parse("0-15")
    pools = compute_pools(
        online=online,
        reserved=RESERVED,
        dedicated={PodUID("a"): CPUSet.of(dedicated)} if dedicated else {},
        reclaim_size=size,
    )
    free = online.difference(RESERVED).difference(CPUSet.of(dedicated))
    assert pools.free == free
    assert pools.share and pools.reclaim
    if not free:
        assert pools.share == pools.reclaim == RESERVED
    elif pools.share == pools.reclaim:
        assert pools.share == free
    else:
        assert pools.share.union(pools.reclaim) == free
        assert not pools.share.intersection(pools.reclaim)
        assert max(pools.share) < min(pools.reclaim)
