"""The GPU policy's decisions: GPU choice, shares, refusals, environment, hints, state."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.gpu import GPU, FakeGPUInventory
from agent.qrm.gpu import (
    GPU_INDICES_ANNOTATION,
    GPU_MEMORY_ANNOTATION,
    GPU_UUIDS_ANNOTATION,
    GPUPolicy,
    build_gpu_policy,
    parse_gpu_indices,
)
from agent.qrm.gpu.policy import (
    ENV_ACTIVE_THREAD_PERCENTAGE,
    ENV_PINNED_MEM_LIMIT,
    ENV_VISIBLE_DEVICES,
    PLUGIN_NAME,
    RESOURCE,
)
from agent.qrm.types import (
    AllocationRefused,
    ContainerRequest,
    ContainerType,
    InvalidRequest,
    ResourcePolicy,
    TopologyHint,
)
from katalyst.checkpoint import CheckpointStore
from katalyst.qos import QOS_LEVEL_ANNOTATION, PodUID, parse_enhancements, parse_qos_level

G0 = GPU(index=0, uuid="GPU-0000", memory_mib=16384, numa_node=0)
G1 = GPU(index=1, uuid="GPU-1111", memory_mib=16384, numa_node=0)
G2 = GPU(index=2, uuid="GPU-2222", memory_mib=16384, numa_node=1)
G3 = GPU(index=3, uuid="GPU-3333", memory_mib=16384, numa_node=1)


def four_gpus() -> GPUPolicy:
    """Four 16 GiB GPUs, two on each of two NUMA nodes."""
    return GPUPolicy([G0, G1, G2, G3])


def request(
    uid: str,
    mib: float | None = 4096,
    *,
    indices: str | None = None,
    container: str = "app",
    container_type: ContainerType = ContainerType.MAIN,
    hint: set[int] | None = None,
) -> ContainerRequest:
    annotations = {QOS_LEVEL_ANNOTATION: "shared_cores"}
    if indices is not None:
        annotations[GPU_INDICES_ANNOTATION] = indices
    level = parse_qos_level(annotations)
    return ContainerRequest(
        pod_uid=PodUID(uid),
        pod_namespace="default",
        pod_name=uid,
        container_name=container,
        container_type=container_type,
        container_index=0,
        resource_name=RESOURCE,
        requests={} if mib is None else {RESOURCE: float(mib)},
        level=level,
        enhancements=parse_enhancements(annotations, level),
        annotations=annotations,
        hint=TopologyHint(nodes=frozenset(hint), preferred=True) if hint is not None else None,
    )


def test_names_and_protocol() -> None:
    policy: ResourcePolicy = four_gpus()
    assert policy.plugin_name == PLUGIN_NAME == "qrm_gpu_plugin"
    assert policy.resource_name == RESOURCE == "resource.katalyst.kubewharf.io/gpu_memory"
    assert GPU_INDICES_ANNOTATION == "katalyst.kubewharf.io/gpu_indices"


def test_the_annotated_gpu_gets_the_share_with_its_environment() -> None:
    policy = four_gpus()
    info = policy.allocate(request("a", 4096, indices="1"))[RESOURCE]
    assert info.allocation_result == "1"
    assert info.allocated_quantity == 4096.0
    assert info.envs == {
        ENV_VISIBLE_DEVICES: "GPU-1111",
        ENV_PINNED_MEM_LIMIT: "0=4096M",
        ENV_ACTIVE_THREAD_PERCENTAGE: "25",
    }
    assert info.annotations == {
        GPU_INDICES_ANNOTATION: "1",
        GPU_UUIDS_ANNOTATION: "GPU-1111",
        GPU_MEMORY_ANNOTATION: "4096",
    }
    assert info.topology_assignments == {0: 4096}
    assert info.hints == (TopologyHint(nodes=frozenset({0}), preferred=True),)
    assert policy.used_mib(1) == 4096 and policy.free_mib(1) == 12288
    assert policy.free_mib(0) == 16384


def test_thread_percentage_rounds_up_and_stays_in_range() -> None:
    policy = four_gpus()
    small = policy.allocate(request("a", 1, indices="0"))[RESOURCE]
    assert small.envs[ENV_ACTIVE_THREAD_PERCENTAGE] == "1"
    odd = policy.allocate(request("b", 5000, indices="1"))[RESOURCE]
    assert odd.envs[ENV_ACTIVE_THREAD_PERCENTAGE] == "31"  # 30.5 rounded up
    whole = policy.allocate(request("c", 16384, indices="2"))[RESOURCE]
    assert whole.envs[ENV_ACTIVE_THREAD_PERCENTAGE] == "100"


def test_without_the_annotation_the_gpu_with_most_free_memory() -> None:
    policy = four_gpus()
    chosen = [
        policy.allocate(request(uid, 8192))[RESOURCE].allocation_result
        for uid in ("a", "b", "c", "d", "e")
    ]
    assert chosen == ["0", "1", "2", "3", "0"]


def test_without_the_annotation_the_hint_node_first() -> None:
    policy = four_gpus()
    info = policy.allocate(request("a", 8192, hint={1}))[RESOURCE]
    assert info.allocation_result == "2"


def test_overcommit_is_refused_naming_the_numbers_and_nothing_changes() -> None:
    policy = four_gpus()
    policy.allocate(request("filler", 12288, indices="1"))
    before = policy.to_state()
    generation = policy.generation
    with pytest.raises(AllocationRefused) as refused:
        policy.allocate(request("x", 8192, indices="1"))
    assert "gpu 1 has 4096 MiB free, pod default/x needs 8192" in str(refused.value)
    assert policy.to_state() == before
    assert policy.generation == generation


def test_no_gpu_fits_without_the_annotation() -> None:
    policy = GPUPolicy([G0, G1])
    policy.allocate(request("a", 10000, indices="0"))
    policy.allocate(request("b", 12000, indices="1"))
    before = policy.to_state()
    with pytest.raises(AllocationRefused, match="gpu 0 has 6384 MiB free, gpu 1 has 4384"):
        policy.allocate(request("x", 8192))
    assert policy.to_state() == before


def test_a_bytes_quantity_is_refused_saying_the_unit() -> None:
    with pytest.raises(AllocationRefused, match="is in MiB"):
        four_gpus().allocate(request("x", 8 * 1024**3))


def test_a_multi_gpu_pod_is_split_evenly() -> None:
    policy = four_gpus()
    info = policy.allocate(request("train", 10001, indices="3,1"))[RESOURCE]
    assert info.allocation_result == "3,1"
    assert info.allocated_quantity == 10001.0
    assert info.envs == {
        ENV_VISIBLE_DEVICES: "GPU-3333,GPU-1111",
        ENV_PINNED_MEM_LIMIT: "0=5001M,1=5000M",
        ENV_ACTIVE_THREAD_PERCENTAGE: "31",
    }
    assert info.annotations[GPU_MEMORY_ANNOTATION] == "5001,5000"
    assert info.topology_assignments == {0: 5000, 1: 5001}
    assert info.hints == (TopologyHint(nodes=frozenset({0, 1}), preferred=True),)
    assert (policy.used_mib(3), policy.used_mib(1)) == (5001, 5000)


def test_a_multi_gpu_pod_is_refused_when_one_gpu_lacks_its_share() -> None:
    policy = four_gpus()
    policy.allocate(request("filler", 14000, indices="2"))
    before = policy.to_state()
    with pytest.raises(AllocationRefused, match=r"gpu 2 has 2384 MiB free.*needs 4096"):
        policy.allocate(request("train", 8192, indices="0,2"))
    assert policy.to_state() == before
    assert policy.used_mib(0) == 0


@pytest.mark.parametrize(
    ("indices", "match"),
    [
        ("7", "GPU 7 does not exist on this node"),
        ("0,9,8", "GPU 9, 8 does not exist"),
        ("", "'' is not a GPU index"),
        ("0,,1", "'' is not a GPU index"),
        ("-1", "'-1' is not a GPU index"),
        ("a", "'a' is not a GPU index"),
        ("1,1", "GPU 1 is listed twice"),
    ],
)
def test_bad_annotations_are_invalid(indices: str, match: str) -> None:
    policy = four_gpus()
    with pytest.raises(InvalidRequest, match=match):
        policy.allocate(request("x", 1024, indices=indices))
    with pytest.raises(InvalidRequest, match=match):
        policy.topology_hints(request("x", 1024, indices=indices))
    assert policy.to_state()["pods"] == {}


@pytest.mark.parametrize("mib", [1.5, -1.0, float("nan"), float("inf")])
def test_quantities_that_are_not_whole_mib_are_invalid(mib: float) -> None:
    with pytest.raises(InvalidRequest, match="whole, non-negative number of MiB"):
        four_gpus().allocate(request("x", mib))


def test_a_request_for_nothing_gets_nothing() -> None:
    policy = four_gpus()
    assert policy.allocate(request("x", None)) == {}
    assert policy.allocate(request("x", 0)) == {}
    assert policy.topology_hints(request("x", 0)) == {}
    assert policy.allocations() == {}


def test_no_gpus_refuses_clearly() -> None:
    policy = GPUPolicy([])
    with pytest.raises(AllocationRefused, match="this node has no GPU"):
        policy.allocate(request("x", 1024))
    assert policy.topology_capacity() == {}
    assert policy.topology_hints(request("x", 1024)) == {}


def test_allocate_is_idempotent_and_a_changed_request_is_decided_again() -> None:
    policy = four_gpus()
    first = policy.allocate(request("a", 4096, indices="0"))
    generation = policy.generation
    assert policy.allocate(request("a", 4096, indices="0")) == first
    assert policy.generation == generation
    # Grown: decided as if the old share were gone (12288 + 4096 would not fit twice).
    policy.allocate(request("a", 16384, indices="0"))
    assert policy.used_mib(0) == 16384


def test_init_containers_run_before_the_others() -> None:
    policy = GPUPolicy([G0])
    policy.allocate(request("p", 12000, container="setup", container_type=ContainerType.INIT))
    policy.allocate(request("p", 8000, container="main"))
    policy.allocate(request("p", 4000, container="side"))
    # The pod holds max(12000, 8000 + 4000) = 12000, not 24000.
    assert policy.used_mib(0) == 12000
    with pytest.raises(AllocationRefused, match="gpu 0 has 4384 MiB free"):
        policy.allocate(request("q", 8000, indices="0"))


def test_remove_pod_gives_the_memory_back() -> None:
    policy = four_gpus()
    policy.allocate(request("a", 16384, indices="0"))
    policy.remove_pod(PodUID("a"))
    policy.remove_pod(PodUID("unknown"))
    assert policy.free_mib(0) == 16384
    policy.allocate(request("b", 16384, indices="0"))


def test_allocations_list_every_container() -> None:
    policy = four_gpus()
    policy.allocate(request("a", 1024, indices="0", container="one"))
    policy.allocate(request("a", 2048, indices="0", container="two"))
    allocations = policy.allocations()
    assert set(allocations) == {"a"}
    assert {
        name: c[RESOURCE].allocated_quantity for name, c in allocations[PodUID("a")].items()
    } == {
        "one": 1024.0,
        "two": 2048.0,
    }


def test_hints_with_the_annotation_name_the_gpus_nodes() -> None:
    policy = four_gpus()
    assert policy.topology_hints(request("a", 4096, indices="2")) == {
        RESOURCE: (TopologyHint(nodes=frozenset({1}), preferred=True),)
    }
    policy.allocate(request("filler", 16000, indices="2"))
    assert policy.topology_hints(request("a", 4096, indices="2")) == {
        RESOURCE: (TopologyHint(nodes=frozenset({1}), preferred=False),)
    }


def test_hints_without_the_annotation_name_the_nodes_with_room() -> None:
    policy = four_gpus()
    both = (
        TopologyHint(nodes=frozenset({0}), preferred=True),
        TopologyHint(nodes=frozenset({1}), preferred=True),
    )
    assert policy.topology_hints(request("a", 8192)) == {RESOURCE: both}
    policy.allocate(request("f0", 16000, indices="0"))
    policy.allocate(request("f1", 16000, indices="1"))
    assert policy.topology_hints(request("a", 8192)) == {RESOURCE: both[1:]}
    policy.allocate(request("f2", 16000, indices="2"))
    policy.allocate(request("f3", 16000, indices="3"))
    assert policy.topology_hints(request("a", 8192)) == {RESOURCE: ()}


def test_hints_without_numa_say_no_preference() -> None:
    policy = GPUPolicy([GPU(index=0, uuid="GPU-x", memory_mib=8192)])
    assert policy.topology_hints(request("a", 1024)) == {}
    info = policy.allocate(request("a", 1024))[RESOURCE]
    assert info.hints == () and info.topology_assignments == {}
    capacity = policy.topology_capacity()[RESOURCE]
    assert capacity.capacity == {0: 8192.0}


def test_topology_capacity_per_numa_node() -> None:
    capacity = four_gpus().topology_capacity()[RESOURCE]
    assert capacity.capacity == {0: 32768.0, 1: 32768.0}
    assert capacity.allocatable == capacity.capacity


def test_state_round_trip_answers_identically() -> None:
    policy = four_gpus()
    policy.allocate(request("a", 10001, indices="3,1"))
    policy.allocate(request("b", 2048, container="init", container_type=ContainerType.INIT))
    state = json.loads(json.dumps(policy.to_state()))
    restored = GPUPolicy.from_state(state, gpus=[G0, G1, G2, G3])
    assert restored.allocations() == policy.allocations()
    assert restored.to_state() == policy.to_state()
    assert [restored.used_mib(i) for i in range(4)] == [policy.used_mib(i) for i in range(4)]


def test_a_state_naming_a_vanished_gpu_is_refused() -> None:
    policy = four_gpus()
    policy.allocate(request("a", 1024, indices="3"))
    state = policy.to_state()
    with pytest.raises(ValueError, match=r"GPU 3 .* is not on this node any more"):
        GPUPolicy.from_state(state, gpus=[G0, G1, G2])
    swapped = GPU(index=3, uuid="GPU-new", memory_mib=16384, numa_node=1)
    with pytest.raises(ValueError, match=r"GPU 3 \('GPU-3333'\).*3 GPU-new"):
        GPUPolicy.from_state(state, gpus=[G0, G1, G2, swapped])


def test_a_state_beyond_a_smaller_gpu_is_refused() -> None:
    policy = four_gpus()
    policy.allocate(request("a", 16000, indices="0"))
    smaller = GPU(index=0, uuid="GPU-0000", memory_mib=8192)
    with pytest.raises(ValueError, match="GPU 0: the restored pods hold 16000 MiB"):
        GPUPolicy.from_state(policy.to_state(), gpus=[smaller])


@pytest.mark.parametrize(
    "state",
    [
        {},
        {"version": 2, "pods": {}},
        {"version": 1, "pods": []},
        {"version": 1, "pods": {"a b": {"app": {"gpus": []}}}},
        {"version": 1, "pods": {"a": {}}},
        {"version": 1, "pods": {"a": {"App!": {"gpus": []}}}},
        {"version": 1, "pods": {"a": {"app": {"gpus": []}}}},
        {"version": 1, "pods": {"a": {"app": {"gpus": [{"index": 0}]}}}},
        {"version": 1, "pods": {"a": {"app": {"gpus": [{"index": "0", "uuid": "", "mib": 1}]}}}},
        {
            "version": 1,
            "pods": {"a": {"app": {"gpus": [{"index": 0, "uuid": "GPU-0000", "mib": -1}]}}},
        },
        {
            "version": 1,
            "pods": {
                "a": {
                    "app": {
                        "gpus": [
                            {"index": 0, "uuid": "GPU-0000", "mib": 1},
                            {"index": 0, "uuid": "GPU-0000", "mib": 1},
                        ]
                    }
                }
            },
        },
        {
            "version": 1,
            "pods": {
                "a": {"app": {"gpus": [{"index": 0, "uuid": "GPU-0000", "mib": 1}], "init": "yes"}}
            },
        },
    ],
)
def test_malformed_states_are_refused(state: dict[str, object]) -> None:
    policy = four_gpus()
    policy.allocate(request("keep", 1024, indices="0"))
    before = policy.to_state()
    with pytest.raises(ValueError, match=r"state|pod|version|GPU"):
        policy.restore(state)
    assert policy.to_state() == before


def test_duplicate_gpus_are_refused() -> None:
    with pytest.raises(ValueError, match="GPU 0 is listed more than once"):
        GPUPolicy([G0, G0])
    with pytest.raises(ValueError, match="UUID GPU-0000"):
        GPUPolicy([G0, GPU(index=5, uuid="GPU-0000", memory_mib=1)])


@pytest.mark.parametrize(("text", "expected"), [("0", (0,)), ("3,1", (3, 1)), (" 2 , 0 ", (2, 0))])
def test_parse_gpu_indices(text: str, expected: tuple[int, ...]) -> None:
    assert parse_gpu_indices(text) == expected


def test_build_restores_from_the_checkpoint_or_starts_fresh(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "checkpoints")
    inventory = FakeGPUInventory([G0, G1])
    policy, gpus = build_gpu_policy(store=store, inventory=inventory)
    assert gpus == (G0, G1)
    policy.allocate(request("a", 1024, indices="1"))
    store.save(policy.plugin_name, policy.to_state())
    again, _ = build_gpu_policy(store=store, inventory=inventory)
    assert again.used_mib(1) == 1024
    # GPU 1 vanished: the checkpoint is set aside and the policy starts fresh.
    fresh, _ = build_gpu_policy(store=store, inventory=FakeGPUInventory([G0]))
    assert fresh.allocations() == {}


def test_build_without_a_driver_has_no_gpus(tmp_path: Path) -> None:
    class NoDriver:
        def gpus(self) -> tuple[GPU, ...]:
            return ()

    policy, gpus = build_gpu_policy(
        store=CheckpointStore(tmp_path / "checkpoints"), inventory=NoDriver()
    )
    assert gpus == () and policy.gpus == ()
