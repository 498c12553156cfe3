"""The memory policy's decisions, per QoS level, on a two-NUMA node."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from agent.qrm.memory.policy import (
    LIMIT_ANNOTATION,
    OOM_SCORE_ADJ_ANNOTATION,
    PROTECTION_ANNOTATION,
    MemoryPolicy,
    oom_score_adj_for,
)
from agent.qrm.types import (
    AllocationRefused,
    ContainerRequest,
    ContainerType,
    InvalidRequest,
    TopologyHint,
)
from katalyst.qos import (
    MEMORY_ENHANCEMENT_ANNOTATION,
    QOS_LEVEL_ANNOTATION,
    RESOURCE_RECLAIMED_MEMORY,
    PodUID,
    parse_enhancements,
    parse_qos_level,
)

GiB = 1024**3


def _request(
    uid: str,
    *,
    level: str = "shared_cores",
    memory: dict[str, str] | None = None,
    requests: dict[str, float] | None = None,
    hint: set[int] | None = None,
    container: str = "app",
) -> ContainerRequest:
    annotations = {QOS_LEVEL_ANNOTATION: level}
    if memory is not None:
        annotations[MEMORY_ENHANCEMENT_ANNOTATION] = json.dumps(memory)
    parsed = parse_qos_level(annotations)
    return ContainerRequest(
        pod_uid=PodUID(uid),
        pod_namespace="default",
        pod_name=uid,
        container_name=container,
        container_type=ContainerType.MAIN,
        container_index=0,
        resource_name="memory",
        requests=requests if requests is not None else {"memory": float(GiB)},
        level=parsed,
        enhancements=parse_enhancements(annotations, parsed),
        annotations=annotations,
        hint=TopologyHint(nodes=frozenset(hint), preferred=True) if hint is not None else None,
    )


def _policy() -> MemoryPolicy:
    return MemoryPolicy(numa_memory={0: 8 * GiB, 1: 8 * GiB}, reserved={0: GiB})


BOUND = {"numa_binding": "true"}


def test_unbound_pods_may_use_every_node_and_shared_ones_are_protected() -> None:
    policy = _policy()
    answer = policy.allocate(_request("p1"))["memory"]
    assert answer.oci_property_name == "CpusetMems"
    assert answer.allocation_result == "0-1"
    assert answer.annotations[PROTECTION_ANNOTATION] == str(GiB)
    assert LIMIT_ANNOTATION not in answer.annotations
    assert answer.annotations[OOM_SCORE_ADJ_ANNOTATION] == "0"
    assert policy.topology_hints(_request("p1")) == {}


def test_reclaimed_pods_are_limited_to_their_reclaimed_request() -> None:
    policy = _policy()
    request = _request(
        "r1", level="reclaimed_cores", requests={RESOURCE_RECLAIMED_MEMORY: float(2 * GiB)}
    )
    answer = policy.allocate(request)["memory"]
    assert answer.annotations[LIMIT_ANNOTATION] == str(2 * GiB)
    assert PROTECTION_ANNOTATION not in answer.annotations
    assert answer.annotations[OOM_SCORE_ADJ_ANNOTATION] == "333"
    plan = policy.plans()[PodUID("r1")]["app"]
    assert plan.limit == 2 * GiB


def test_oom_priority_from_the_enhancement() -> None:
    policy = _policy()
    request = _request("d1", level="dedicated_cores", memory={"oom_priority": "150"})
    answer = policy.allocate(request)["memory"]
    assert answer.annotations[OOM_SCORE_ADJ_ANNOTATION] == "-500"
    ignored = _request("i1", memory={"oom_priority": "-300"})
    assert OOM_SCORE_ADJ_ANNOTATION not in policy.allocate(ignored)["memory"].annotations


@pytest.mark.parametrize(
    ("priority", "adj"), [(-100, 333), (0, 0), (100, -333), (200, -667), (300, -999), (-300, None)]
)
def test_oom_priority_map(priority: int, adj: int | None) -> None:
    assert oom_score_adj_for(priority) == adj


def test_numa_binding_follows_the_hint_and_is_accounted() -> None:
    policy = _policy()
    hints = policy.topology_hints(_request("d1", level="dedicated_cores", memory=BOUND))
    assert hints == {
        "memory": (
            TopologyHint(nodes=frozenset({0}), preferred=True),
            TopologyHint(nodes=frozenset({1}), preferred=True),
        )
    }
    request = _request(
        "d1", level="dedicated_cores", memory=BOUND, requests={"memory": 6 * GiB}, hint={1}
    )
    answer = policy.allocate(request)["memory"]
    assert answer.allocation_result == "1"
    assert dict(answer.topology_assignments) == {1: 6 * GiB}
    assert policy.free_bound_memory()[1] == 2 * GiB
    # Node 1 has 2 GiB left; node 0 has 7 GiB (8 minus 1 reserved).
    big = _request("d2", level="dedicated_cores", memory=BOUND, requests={"memory": 3 * GiB})
    assert policy.topology_hints(big) == {
        "memory": (TopologyHint(nodes=frozenset({0}), preferred=True),)
    }


def test_a_bound_pod_that_does_not_fit_is_refused_and_nothing_changes() -> None:
    policy = _policy()
    policy.allocate(
        _request(
            "d1", level="dedicated_cores", memory=BOUND, requests={"memory": 6 * GiB}, hint={1}
        )
    )
    before = policy.to_state()
    generation = policy.generation
    too_big = _request(
        "d2", level="dedicated_cores", memory=BOUND, requests={"memory": 3 * GiB}, hint={1}
    )
    with pytest.raises(AllocationRefused, match=r"asked 3221225472 bytes on NUMA nodes 1"):
        policy.allocate(too_big)
    assert policy.to_state() == before
    assert policy.generation == generation


def test_numa_exclusive_takes_the_node_alone() -> None:
    policy = _policy()
    exclusive = {"numa_binding": "true", "numa_exclusive": "true"}
    policy.allocate(
        _request(
            "x1", level="dedicated_cores", memory=exclusive, requests={"memory": GiB}, hint={1}
        )
    )
    other = _request(
        "d2", level="dedicated_cores", memory=BOUND, requests={"memory": GiB}, hint={1}
    )
    with pytest.raises(AllocationRefused, match="exclusively taken"):
        policy.allocate(other)
    hints = policy.topology_hints(_request("d3", level="dedicated_cores", memory=BOUND))
    assert hints == {"memory": (TopologyHint(nodes=frozenset({0}), preferred=True),)}


def test_containers_of_one_bound_pod_share_its_nodes() -> None:
    policy = _policy()
    policy.allocate(_request("d1", level="dedicated_cores", memory=BOUND, hint={1}))
    sidecar = _request("d1", level="dedicated_cores", memory=BOUND, container="sidecar")
    assert policy.topology_hints(sidecar) == {
        "memory": (TopologyHint(nodes=frozenset({1}), preferred=True),)
    }
    assert policy.allocate(sidecar)["memory"].allocation_result == "1"


def test_allocate_is_idempotent_and_remove_gives_memory_back() -> None:
    policy = _policy()
    request = _request(
        "d1", level="dedicated_cores", memory=BOUND, requests={"memory": 4 * GiB}, hint={0}
    )
    first = policy.allocate(request)
    generation = policy.generation
    assert policy.allocate(request) == first
    assert policy.generation == generation
    assert policy.free_bound_memory()[0] == 3 * GiB
    policy.remove_pod(PodUID("d1"))
    policy.remove_pod(PodUID("unknown"))
    assert policy.free_bound_memory()[0] == 7 * GiB
    assert policy.allocations() == {}


def test_state_round_trip_answers_identically() -> None:
    policy = _policy()
    policy.allocate(_request("a", requests={"memory": float(GiB)}))
    policy.allocate(_request("b", level="dedicated_cores", memory=BOUND, hint={1}))
    state = json.loads(json.dumps(policy.to_state()))
    restored = _policy()
    restored.restore(state)
    assert restored.allocations() == policy.allocations()
    assert restored.free_bound_memory() == policy.free_bound_memory()


@pytest.mark.parametrize(
    "state",
    [
        {"version": 99, "pods": {}},
        {"version": 1},
        {"version": 1, "pods": []},
        {"version": 1, "pods": {"a": {"app": {"mems": "7"}}}},
        {
            "version": 1,
            "pods": {
                "a": {
                    "app": {
                        "mems": "5",
                        "bound": True,
                        "exclusive": False,
                        "request": 1,
                        "limit": None,
                        "protection": None,
                        "oom_score_adj": None,
                        "level": "shared_cores",
                    }
                }
            },
        },
    ],
)
def test_a_state_that_does_not_fit_is_refused(state: dict[str, object]) -> None:
    policy = _policy()
    with pytest.raises(ValueError, match=r"state|NUMA|pods|'mems'|bound"):
        policy.restore(state)
    assert policy.allocations() == {}


def test_bad_numbers_are_invalid_requests() -> None:
    policy = _policy()
    with pytest.raises(InvalidRequest, match="memory"):
        policy.allocate(_request("a", requests={"memory": -1.0}))
    with pytest.raises(InvalidRequest, match="NUMA nodes"):
        policy.allocate(_request("b", level="dedicated_cores", memory=BOUND, hint={7}))


def test_construction_is_checked() -> None:
    with pytest.raises(ValueError, match="at least one"):
        MemoryPolicy(numa_memory={})
    with pytest.raises(ValueError, match="unknown NUMA"):
        MemoryPolicy(numa_memory={0: GiB}, reserved={3: 1})


def test_a_pod_larger_than_one_node_is_hinted_adjacent_nodes() -> None:
    policy = _policy()
    big = _request("d1", level="dedicated_cores", memory=BOUND, requests={"memory": 10 * GiB})
    assert policy.topology_hints(big) == {
        "memory": (TopologyHint(nodes=frozenset({0, 1}), preferred=True),)
    }
    answer = policy.allocate(
        _request(
            "d1", level="dedicated_cores", memory=BOUND, requests={"memory": 10 * GiB}, hint={0, 1}
        )
    )["memory"]
    assert answer.allocation_result == "0-1"
    # Spread by free memory: node 0 has 7 GiB free (1 reserved), node 1 the rest.
    assert dict(answer.topology_assignments) == {0: 7 * GiB, 1: 3 * GiB}


def test_without_a_hint_the_policy_picks_its_own_preferred_node() -> None:
    policy = _policy()
    answer = policy.allocate(_request("d1", level="dedicated_cores", memory=BOUND))["memory"]
    assert answer.allocation_result == "0"
    huge = _request("d2", level="dedicated_cores", memory=BOUND, requests={"memory": 64 * GiB})
    with pytest.raises(AllocationRefused, match="asked"):
        policy.allocate(huge)


def test_an_init_container_overlaps_the_main_ones_in_the_accounting() -> None:
    policy = _policy()  # node 0: 8 GiB, 1 reserved -> 7 GiB for bound pods
    init = _request(
        "d1", level="dedicated_cores", memory=BOUND, requests={"memory": 4 * GiB}, hint={0}
    )
    init = replace(init, container_name="setup", container_type=ContainerType.INIT)
    policy.allocate(init)
    main = _request("d1", level="dedicated_cores", memory=BOUND, requests={"memory": 5 * GiB})
    assert policy.allocate(main)["memory"].allocation_result == "0"
    # The pod needs max(4, 5) = 5 GiB, not 9.
    assert policy.free_bound_memory()[0] == 2 * GiB
    too_much = replace(main, container_name="sidecar", container_type=ContainerType.SIDECAR)
    with pytest.raises(AllocationRefused):
        policy.allocate(too_much)  # 5 + 5 = 10 GiB > 7


def test_what_the_hints_offer_allocate_accepts_even_when_nodes_are_uneven() -> None:
    policy = _policy()
    policy.allocate(
        _request(
            "d1", level="dedicated_cores", memory=BOUND, requests={"memory": 6 * GiB}, hint={1}
        )
    )
    # Free: node 0 7 GiB, node 1 2 GiB. 8 GiB fits only on both together.
    ask = _request("d2", level="dedicated_cores", memory=BOUND, requests={"memory": 8 * GiB})
    (hint,) = policy.topology_hints(ask)["memory"]
    assert hint.nodes == frozenset({0, 1})
    answer = policy.allocate(replace(ask, hint=hint))["memory"]
    assert dict(answer.topology_assignments) == {0: 7 * GiB, 1: GiB}
    assert policy.free_bound_memory() == {0: 0, 1: GiB}
