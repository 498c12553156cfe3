"""The CPU policy's decisions on a two-NUMA SMT machine and a flat two-CPU one.

The two-NUMA machine: node 0 is CPUs 0-7, node 1 is 8-15, SMT siblings are pairs
(0-1, 2-3, ...). CPUs 0-1 (core 0) are reserved, so 2-7 and 8-15 are free.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from agent.qrm.cpu import POOL_ANNOTATION, CPUPolicy
from agent.qrm.types import (
    AllocationRefused,
    ContainerRequest,
    ContainerType,
    InvalidRequest,
    PluginOptions,
    ResourcePolicy,
    TopologyHint,
)
from katalyst.cpuset import CPUSet
from katalyst.qos import PodUID
from katalyst.topology import CPUTopology
from tests.unit.qrm.cpu.machines import request

RESERVED = CPUSet.parse("0-1")


@pytest.fixture
def policy(numa2: CPUTopology) -> CPUPolicy:
    return CPUPolicy(topology=numa2, reserved=RESERVED)


def cpuset_of(policy: CPUPolicy, uid: str, container: str = "app") -> str:
    return policy.allocations()[PodUID(uid)][container]["cpu"].allocation_result


def dedicated(
    uid: str,
    cpu: float,
    *,
    hint: set[int] | None = None,
    numa_binding: bool = False,
    numa_exclusive: bool = False,
    container: str = "app",
    container_type: ContainerType = ContainerType.MAIN,
) -> ContainerRequest:
    return request(
        uid,
        level="dedicated_cores",
        cpu=cpu,
        hint=hint,
        numa_binding=numa_binding,
        numa_exclusive=numa_exclusive,
        container=container,
        container_type=container_type,
    )


# ---- identity and construction ---------------------------------------------------------


def test_identity_and_options(policy: CPUPolicy) -> None:
    as_protocol: ResourcePolicy = policy
    assert as_protocol.plugin_name == "qrm_cpu_plugin"
    assert as_protocol.resource_name == "cpu"
    assert policy.options() == PluginOptions(
        pre_start_required=False, with_topology_alignment=True, need_reconcile=True
    )


def test_reserved_cpus_must_be_online(numa2: CPUTopology) -> None:
    with pytest.raises(ValueError, match=r"reserved CPUs 16,20 are not online"):
        CPUPolicy(topology=numa2, reserved=CPUSet.parse("0,16,20"))


def test_reserved_cpus_must_not_be_empty(numa2: CPUTopology) -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        CPUPolicy(topology=numa2, reserved=CPUSet.of(()))


# ---- placement per QoS level -------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "pool", "cpus"),
    [
        ("shared_cores", "share", "2-15"),
        ("reclaimed_cores", "reclaim", "2-15"),
        ("system_cores", "reserve", "0-1"),
    ],
)
def test_each_level_runs_in_its_pool(policy: CPUPolicy, level: str, pool: str, cpus: str) -> None:
    answer = policy.allocate(request("p1", level=level, cpu=0.5))
    info = answer["cpu"]
    assert info.oci_property_name == "CpusetCpus"
    assert info.allocation_result == cpus
    assert info.allocated_quantity == len(CPUSet.parse(cpus))
    assert info.is_node_resource and info.is_scalar_resource
    assert info.annotations == {POOL_ANNOTATION: pool}
    assert sum(info.topology_assignments.values()) == len(CPUSet.parse(cpus))


def test_topology_assignments_count_cpus_per_numa_node(policy: CPUPolicy) -> None:
    info = policy.allocate(request("p1"))["cpu"]
    assert dict(info.topology_assignments) == {0: 6, 1: 8}
    info = policy.allocate(request("p2", level="system_cores"))["cpu"]
    assert dict(info.topology_assignments) == {0: 2}


@pytest.mark.parametrize(
    ("pool", "cpus"), [("reserve", "0-1"), ("share", "2-15"), ("reclaim", "2-15")]
)
def test_system_pod_runs_in_the_pool_it_names(policy: CPUPolicy, pool: str, cpus: str) -> None:
    info = policy.allocate(request("p1", level="system_cores", cpuset_pool=pool))["cpu"]
    assert info.allocation_result == cpus
    assert info.annotations[POOL_ANNOTATION] == pool


def test_an_unknown_pool_name_is_an_invalid_request(policy: CPUPolicy) -> None:
    with pytest.raises(InvalidRequest, match=r"cpuset_pool 'batch'.*reserve, share, reclaim"):
        policy.allocate(request("p1", level="system_cores", cpuset_pool="batch"))
    with pytest.raises(InvalidRequest, match=r"cpuset_pool 'batch'"):
        policy.allocate(request("p2", level="shared_cores", cpuset_pool="batch"))
    with pytest.raises(InvalidRequest, match=r"cpuset_pool 'batch'"):
        policy.topology_hints(request("p2", level="system_cores", cpuset_pool="batch"))
    assert policy.allocations() == {}


def test_shared_pod_may_name_the_share_pool(policy: CPUPolicy) -> None:
    info = policy.allocate(request("p1", cpuset_pool="share"))["cpu"]
    assert info.allocation_result == "2-15"


def test_a_request_for_another_resource_is_invalid(policy: CPUPolicy) -> None:
    with pytest.raises(InvalidRequest, match="'memory'"):
        policy.allocate(replace(request("p1"), resource_name="memory"))


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_a_bad_cpu_quantity_is_invalid(policy: CPUPolicy, bad: float) -> None:
    with pytest.raises(InvalidRequest, match="resource 'cpu'"):
        policy.allocate(request("p1", cpu=bad))


def test_containers_of_one_pod_must_share_a_level(policy: CPUPolicy) -> None:
    policy.allocate(request("p1"))
    with pytest.raises(InvalidRequest, match="allocated as shared_cores"):
        policy.allocate(dedicated("p1", 2, container="other"))


# ---- dedicated cores -------------------------------------------------------------------------


def test_dedicated_takes_whole_cores_on_one_numa_node(
    policy: CPUPolicy, numa2: CPUTopology
) -> None:
    info = policy.allocate(dedicated("d1", 4))["cpu"]
    cpus = CPUSet.parse(info.allocation_result)
    # Best fit: node 0 (6 free) over node 1 (8 free); two whole cores.
    assert cpus == CPUSet.parse("2-5")
    assert all(
        core.issubset(cpus) or not core.intersection(cpus) for core in numa2.cores().values()
    )
    assert info.annotations == {POOL_ANNOTATION: "dedicated"}
    assert dict(info.topology_assignments) == {0: 4}
    assert cpuset_of(policy, "d1") == "2-5"
    assert policy.pools()["share"] == CPUSet.parse("6-15")


def test_dedicated_odd_count_breaks_one_core_only(policy: CPUPolicy) -> None:
    assert policy.allocate(dedicated("d1", 3))["cpu"].allocation_result == "2-4"
    # The next single CPU completes the broken core rather than breaking another.
    assert policy.allocate(dedicated("d2", 1))["cpu"].allocation_result == "5"


def test_dedicated_prefers_the_node_with_whole_cores(policy: CPUPolicy) -> None:
    policy.allocate(dedicated("d1", 1))  # CPU 2: core 2-3 broken
    policy.allocate(dedicated("d2", 1))  # CPU 3 completes it
    policy.allocate(dedicated("d3", 1))  # CPU 4: core 4-5 broken
    # Node 0's free 5, 6-7 fit 3 CPUs without breaking a whole core; node 1 would
    # have to break one (8-9, 10).
    assert policy.allocate(dedicated("d4", 3))["cpu"].allocation_result == "5-7"
    assert policy.allocate(dedicated("d5", 3))["cpu"].allocation_result == "8-10"
    # One CPU: the broken core's sibling, not a new core.
    assert policy.allocate(dedicated("d6", 1))["cpu"].allocation_result == "11"


def test_a_fractional_request_rounds_up(policy: CPUPolicy) -> None:
    info = policy.allocate(dedicated("d1", 2.5))["cpu"]
    assert len(CPUSet.parse(info.allocation_result)) == 3
    assert info.allocated_quantity == 3.0


@pytest.mark.parametrize("cpu", [0.0, None])
def test_a_dedicated_request_of_nothing_is_invalid(policy: CPUPolicy, cpu: float | None) -> None:
    with pytest.raises(InvalidRequest, match="must request CPUs"):
        policy.allocate(request("d1", level="dedicated_cores", cpu=cpu))
    assert policy.generation == 0


def test_dedicated_spills_to_a_second_node_only_when_it_must(policy: CPUPolicy) -> None:
    info = policy.allocate(dedicated("d1", 10))["cpu"]
    # The fullest node (1) whole, then the rest on node 0 as whole cores.
    assert info.allocation_result == "2-3,8-15"
    assert dict(info.topology_assignments) == {0: 2, 1: 8}


def test_numa_binding_follows_the_hint(policy: CPUPolicy) -> None:
    info = policy.allocate(dedicated("d1", 2, hint={1}, numa_binding=True))["cpu"]
    assert info.allocation_result == "8-9"
    assert info.hints == (TopologyHint(nodes=frozenset({1}), preferred=True),)
    info = policy.allocate(dedicated("d2", 2, hint={0}, numa_binding=True))["cpu"]
    assert info.allocation_result == "2-3"


def test_numa_binding_without_a_hint_uses_the_first_preferred_hint(policy: CPUPolicy) -> None:
    info = policy.allocate(dedicated("d1", 7, numa_binding=True))["cpu"]
    assert info.allocation_result == "8-14"
    assert info.hints == ()


def test_numa_binding_refuses_when_the_hinted_node_is_short(policy: CPUPolicy) -> None:
    before = policy.to_state()
    with pytest.raises(AllocationRefused) as refused:
        policy.allocate(dedicated("d1", 7, hint={0}, numa_binding=True))
    message = str(refused.value)
    assert "asked 7 exclusive CPUs on NUMA nodes 0" in message
    assert "6 free (node 0: 6)" in message
    assert policy.to_state() == before


def test_a_hint_naming_unknown_nodes_is_invalid(policy: CPUPolicy) -> None:
    with pytest.raises(InvalidRequest, match=r"NUMA nodes \[3\]"):
        policy.allocate(dedicated("d1", 2, hint={1, 3}, numa_binding=True))


def test_numa_exclusive_takes_whole_nodes(policy: CPUPolicy) -> None:
    policy.allocate(request("s1"))
    info = policy.allocate(dedicated("d1", 2, hint={1}, numa_exclusive=True))["cpu"]
    assert info.allocation_result == "8-15"
    assert info.allocated_quantity == 8.0
    assert cpuset_of(policy, "s1") == "2-7"
    # Nobody else may take CPUs on node 1 any more.
    with pytest.raises(AllocationRefused, match="node 1: 0"):
        policy.allocate(dedicated("d2", 1, hint={1}, numa_binding=True))
    # Node 0 has CPUs 0-1 reserved: an exclusive pod there gets the other six.
    info = policy.allocate(dedicated("d3", 4, hint={0}, numa_exclusive=True))["cpu"]
    assert info.allocation_result == "2-7"


def test_numa_exclusive_refuses_a_node_with_dedicated_cpus_in_use(policy: CPUPolicy) -> None:
    policy.allocate(dedicated("d1", 1, hint={1}, numa_binding=True))
    before = policy.to_state()
    with pytest.raises(AllocationRefused) as refused:
        policy.allocate(dedicated("d2", 2, hint={1}, numa_exclusive=True))
    message = str(refused.value)
    assert "asked 2 exclusive CPUs on whole NUMA nodes 1" in message
    assert "dedicated CPUs 8 are in use there" in message
    assert policy.to_state() == before


def test_numa_exclusive_refuses_more_than_the_nodes_hold(policy: CPUPolicy) -> None:
    with pytest.raises(AllocationRefused, match="only 6 non-reserved CPUs"):
        policy.allocate(dedicated("d1", 7, hint={0}, numa_exclusive=True))


def test_refusal_says_what_was_asked_and_what_is_free_and_changes_nothing(
    policy: CPUPolicy,
) -> None:
    policy.allocate(request("s1"))
    policy.allocate(dedicated("d1", 4))
    before = policy.to_state()
    generation = policy.generation
    with pytest.raises(AllocationRefused) as refused:
        policy.allocate(dedicated("d2", 11))
    assert "asked 11 exclusive CPUs, 10 free (node 0: 2, node 1: 8)" in str(refused.value)
    assert policy.to_state() == before
    assert policy.generation == generation
    assert PodUID("d2") not in policy.allocations()


# ---- pools follow the dedicated sets -----------------------------------------------------


def test_pools_are_recomputed_after_allocate_and_remove(policy: CPUPolicy) -> None:
    policy.allocate(request("s1"))
    policy.allocate(request("r1", level="reclaimed_cores", cpu=None))
    policy.allocate(request("y1", level="system_cores", cpuset_pool="share"))
    generation = policy.generation
    policy.allocate(dedicated("d1", 4, hint={1}, numa_binding=True))
    assert policy.generation == generation + 1
    for uid in ("s1", "r1", "y1"):
        assert cpuset_of(policy, uid) == "2-7,12-15"
    assert dict(policy.pools()) == {
        "reserve": CPUSet.parse("0-1"),
        "share": CPUSet.parse("2-7,12-15"),
        "reclaim": CPUSet.parse("2-7,12-15"),
        "dedicated/d1": CPUSet.parse("8-11"),
    }
    policy.remove_pod(PodUID("d1"))
    assert policy.generation == generation + 2
    for uid in ("s1", "r1", "y1"):
        assert cpuset_of(policy, uid) == "2-15"
    assert "dedicated/d1" not in policy.pools()


def test_removing_an_unknown_pod_is_not_an_error(policy: CPUPolicy) -> None:
    policy.allocate(request("s1"))
    generation = policy.generation
    policy.remove_pod(PodUID("nobody"))
    assert policy.generation == generation
    assert set(policy.allocations()) == {PodUID("s1")}


def test_shared_pods_fall_back_to_the_reserve_when_everything_is_dedicated(
    policy: CPUPolicy,
) -> None:
    policy.allocate(request("s1"))
    policy.allocate(request("r1", level="reclaimed_cores"))
    policy.allocate(dedicated("d1", 14))
    assert cpuset_of(policy, "s1") == "0-1"
    assert cpuset_of(policy, "r1") == "0-1"
    assert policy.current_pools().share_fallback
    with pytest.raises(AllocationRefused, match="asked 1 exclusive CPUs, 0 free"):
        policy.allocate(dedicated("d2", 1))


# ---- reclaim pool size ------------------------------------------------------------------------


def test_set_reclaim_size_moves_the_highest_share_cpus_to_reclaim(policy: CPUPolicy) -> None:
    policy.allocate(request("s1"))
    policy.allocate(request("r1", level="reclaimed_cores"))
    generation = policy.generation
    policy.set_reclaim_size(3)
    assert policy.reclaim_size == 3
    assert policy.generation == generation + 1
    assert cpuset_of(policy, "s1") == "2-12"
    assert cpuset_of(policy, "r1") == "13-15"
    policy.set_reclaim_size(3)
    assert policy.generation == generation + 1, "no change, no bump"
    # A dedicated pod takes from the share pool; reclaim keeps the highest CPUs.
    policy.allocate(dedicated("d1", 8, hint={1}, numa_binding=True))
    assert cpuset_of(policy, "s1") == "2-4"
    assert cpuset_of(policy, "r1") == "5-7"
    policy.set_reclaim_size(None)
    assert cpuset_of(policy, "s1") == cpuset_of(policy, "r1") == "2-7"


def test_reclaim_size_is_clamped_so_share_keeps_one_cpu(policy: CPUPolicy) -> None:
    policy.allocate(request("s1"))
    policy.set_reclaim_size(100)
    assert cpuset_of(policy, "s1") == "2"
    assert policy.pools()["reclaim"] == CPUSet.parse("3-15")


def test_reclaim_size_zero_is_reclaim_on_share(policy: CPUPolicy) -> None:
    policy.set_reclaim_size(0)
    assert policy.pools()["reclaim"] == policy.pools()["share"] == CPUSet.parse("2-15")


def test_a_negative_reclaim_size_is_refused(policy: CPUPolicy) -> None:
    with pytest.raises(ValueError, match="-1"):
        policy.set_reclaim_size(-1)


# ---- idempotence, init and sidecar containers -----------------------------------------------


def test_allocating_the_same_container_again_gives_the_same_answer(policy: CPUPolicy) -> None:
    first = policy.allocate(dedicated("d1", 2))
    generation = policy.generation
    assert policy.allocate(dedicated("d1", 2)) == first
    assert policy.allocate(dedicated("d1", 6)) == first, "a retry never re-sizes"
    assert policy.generation == generation
    shared = policy.allocate(request("s1"))
    assert policy.allocate(request("s1")) == shared


def test_init_container_of_a_shared_pod_runs_in_the_share_pool(policy: CPUPolicy) -> None:
    info = policy.allocate(request("s1", container="init", container_type=ContainerType.INIT))
    assert info["cpu"].allocation_result == "2-15"


def test_init_container_creates_the_pod_set_and_main_grows_it(policy: CPUPolicy) -> None:
    init = dedicated("d1", 2, container="init", container_type=ContainerType.INIT)
    assert policy.allocate(init)["cpu"].allocation_result == "2-3"
    main = policy.allocate(dedicated("d1", 4))["cpu"]
    assert main.allocation_result == "2-5", "the init container's CPUs are kept"
    assert cpuset_of(policy, "d1", "init") == "2-5", "init runs on the pod's whole set"


def test_growth_first_completes_the_pods_own_cores(policy: CPUPolicy) -> None:
    init = dedicated("d1", 1, container="init", container_type=ContainerType.INIT)
    assert policy.allocate(init)["cpu"].allocation_result == "2"
    assert policy.allocate(dedicated("d1", 3))["cpu"].allocation_result == "2-4"


def test_an_init_container_that_asks_more_sizes_the_pod_set(policy: CPUPolicy) -> None:
    init = dedicated("d1", 4, container="init", container_type=ContainerType.INIT)
    policy.allocate(init)
    assert policy.allocate(dedicated("d1", 2))["cpu"].allocation_result == "2-5"
    assert policy.pools()["dedicated/d1"] == CPUSet.parse("2-5")


def test_sidecars_add_to_the_pod_set_and_everyone_runs_on_all_of_it(policy: CPUPolicy) -> None:
    policy.allocate(dedicated("d1", 2))
    sidecar = dedicated("d1", 1, container="proxy", container_type=ContainerType.SIDECAR)
    assert policy.allocate(sidecar)["cpu"].allocation_result == "2-4"
    assert cpuset_of(policy, "d1") == "2-4"
    init = dedicated("d1", 3, container="init", container_type=ContainerType.INIT)
    policy.allocate(init)  # 3 <= max(3, 2 + 1): no growth
    assert policy.pools()["dedicated/d1"] == CPUSet.parse("2-4")


def test_a_numa_bound_pod_grows_only_on_its_nodes(policy: CPUPolicy) -> None:
    policy.allocate(dedicated("d1", 4, hint={0}, numa_binding=True))
    policy.allocate(dedicated("d2", 1, hint={0}, numa_binding=True))
    before = policy.to_state()
    sidecar = dedicated(
        "d1", 2, container="proxy", container_type=ContainerType.SIDECAR, numa_binding=True
    )
    assert policy.topology_hints(sidecar) == {"cpu": ()}
    with pytest.raises(AllocationRefused, match=r"need 6 exclusive CPUs, 2 more.*node 0: 1"):
        policy.allocate(sidecar)
    assert policy.to_state() == before


def test_a_numa_exclusive_pod_does_not_grow_past_its_nodes(policy: CPUPolicy) -> None:
    policy.allocate(dedicated("d1", 2, hint={1}, numa_exclusive=True))
    fits = dedicated("d1", 6, container="proxy", container_type=ContainerType.SIDECAR)
    policy.allocate(fits)
    assert policy.pools()["dedicated/d1"] == CPUSet.parse("8-15")
    too_many = dedicated("d1", 1, container="more", container_type=ContainerType.SIDECAR)
    with pytest.raises(AllocationRefused, match="holds NUMA nodes 1 whole, 8 CPUs"):
        policy.allocate(too_many)


# ---- hints -----------------------------------------------------------------------------------


def _hint(nodes: set[int], preferred: bool = True) -> TopologyHint:
    return TopologyHint(nodes=frozenset(nodes), preferred=preferred)


def test_only_numa_bound_dedicated_requests_get_hints(policy: CPUPolicy) -> None:
    assert policy.topology_hints(request("s1")) == {}
    assert policy.topology_hints(request("s1", numa_binding=True)) == {}
    assert policy.topology_hints(dedicated("d1", 2)) == {}


def test_hints_offer_every_node_that_fits(policy: CPUPolicy) -> None:
    hints = policy.topology_hints(dedicated("d1", 2, numa_binding=True))
    assert hints == {"cpu": (_hint({0}), _hint({1}))}


def test_hints_skip_a_node_that_is_too_small(policy: CPUPolicy) -> None:
    # Node 0 has 6 free CPUs; {0, 1} fits but contains the smaller fit {1}.
    assert policy.topology_hints(dedicated("d1", 7, numa_binding=True)) == {"cpu": (_hint({1}),)}


def test_hints_offer_adjacent_nodes_when_no_single_node_fits(policy: CPUPolicy) -> None:
    assert policy.topology_hints(dedicated("d1", 10, numa_binding=True)) == {
        "cpu": (_hint({0, 1}),)
    }


def test_no_fitting_nodes_is_an_empty_hint_list(policy: CPUPolicy) -> None:
    assert policy.topology_hints(dedicated("d1", 15, numa_binding=True)) == {"cpu": ()}


def test_exclusive_hints_skip_nodes_with_dedicated_cpus_in_use(policy: CPUPolicy) -> None:
    policy.allocate(dedicated("d1", 1, hint={0}, numa_binding=True))
    hints = policy.topology_hints(dedicated("d2", 1, numa_exclusive=True))
    assert hints == {"cpu": (_hint({1}),)}
    # The non-exclusive hint still offers both nodes.
    hints = policy.topology_hints(dedicated("d2", 1, numa_binding=True))
    assert hints == {"cpu": (_hint({0}), _hint({1}))}


def test_a_pod_with_a_set_is_hinted_its_own_nodes(policy: CPUPolicy) -> None:
    policy.allocate(dedicated("d1", 2, hint={1}, numa_binding=True))
    sidecar = dedicated(
        "d1", 1, container="proxy", container_type=ContainerType.SIDECAR, numa_binding=True
    )
    assert policy.topology_hints(sidecar) == {"cpu": (_hint({1}),)}
    # A retry of the allocated container gets the same.
    assert policy.topology_hints(dedicated("d1", 2, numa_binding=True)) == {"cpu": (_hint({1}),)}


def test_hints_refuse_a_bad_request(policy: CPUPolicy) -> None:
    with pytest.raises(InvalidRequest, match="must request CPUs"):
        policy.topology_hints(dedicated("d1", 0, numa_binding=True))


# ---- a flat two-CPU machine ---------------------------------------------------------------------


def test_flat_machine(flat2: CPUTopology) -> None:
    policy = CPUPolicy(topology=flat2, reserved=CPUSet.parse("0"))
    assert policy.allocate(request("s1"))["cpu"].allocation_result == "1"
    assert policy.topology_hints(dedicated("d1", 1, numa_binding=True)) == {"cpu": (_hint({0}),)}
    with pytest.raises(AllocationRefused, match="asked 2 exclusive CPUs, 1 free"):
        policy.allocate(dedicated("d1", 2))
    assert policy.allocate(dedicated("d1", 1))["cpu"].allocation_result == "1"
    assert cpuset_of(policy, "s1") == "0", "nothing left: shared pods fall back to the reserve"
    policy.remove_pod(PodUID("d1"))
    assert cpuset_of(policy, "s1") == "1"
