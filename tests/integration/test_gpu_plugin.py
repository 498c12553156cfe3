"""The GPU plugin behind the real :class:`PluginServer`, driven over its unix socket
by the kubelet emulator with the real ``resourceplugin`` protos.

The GPUs come from a fake NVML inventory: four 16 GiB GPUs, two on each of two
NUMA nodes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from agent.gpu import GPU, FakeGPUInventory
from agent.qrm.gpu import (
    GPU_INDICES_ANNOTATION,
    GPU_MEMORY_ANNOTATION,
    GPU_UUIDS_ANNOTATION,
    GPUPolicy,
)
from agent.qrm.gpu.policy import (
    ENV_ACTIVE_THREAD_PERCENTAGE,
    ENV_PINNED_MEM_LIMIT,
    ENV_VISIBLE_DEVICES,
    PLUGIN_NAME,
    RESOURCE,
)
from agent.qrm.server import PluginServer
from katalyst.api.resourceplugin.v1alpha1 import api_pb2 as rp_pb2
from katalyst.clock import FakeClock
from katalyst.qos import QOS_LEVEL_ANNOTATION
from tests.support.kubelet import (
    Container,
    KubeletEmulator,
    PluginCallError,
    Pod,
    TopologyAffinityError,
)

GPUS = (
    GPU(index=0, uuid="GPU-0000", memory_mib=16384, numa_node=0, pci_bus_id="0000:1a:00.0"),
    GPU(index=1, uuid="GPU-1111", memory_mib=16384, numa_node=0, pci_bus_id="0000:1b:00.0"),
    GPU(index=2, uuid="GPU-2222", memory_mib=16384, numa_node=1, pci_bus_id="0000:9a:00.0"),
    GPU(index=3, uuid="GPU-3333", memory_mib=16384, numa_node=1, pci_bus_id="0000:9b:00.0"),
)


@pytest.fixture
def gpu() -> GPUPolicy:
    return GPUPolicy(FakeGPUInventory(GPUS).gpus())


@pytest.fixture
async def served(gpu: GPUPolicy, short_dir: Path) -> AsyncIterator[Path]:
    """The socket directory, with the GPU plugin serving in it."""
    async with PluginServer(gpu, socket_dir=short_dir, clock=FakeClock()):
        yield short_dir


@pytest.fixture
async def kubelet(served: Path) -> AsyncIterator[KubeletEmulator]:
    """A best-effort topology manager: a pod that fits nowhere reaches Allocate."""
    async with KubeletEmulator(numa_nodes=(0, 1), topology_policy="best-effort") as emulator:
        registered = await emulator.discover(served)
        assert [(p.socket.name, p.resource) for p in registered] == [
            (f"{PLUGIN_NAME}.sock", RESOURCE)
        ]
        yield emulator


def pod(uid: str, mib: float, *, indices: str | None = None) -> Pod:
    annotations = {QOS_LEVEL_ANNOTATION: "shared_cores"}
    if indices is not None:
        annotations[GPU_INDICES_ANNOTATION] = indices
    return Pod(
        uid=uid,
        name=uid,
        containers=(Container(name="app", requests={RESOURCE: mib}),),
        annotations=annotations,
    )


async def test_the_extenders_gpu_gets_the_share_with_mps_environment(
    kubelet: KubeletEmulator,
) -> None:
    admitted = (await kubelet.admit(pod("infer", 4096, indices="2")))["app"]
    hints = admitted.hints[RESOURCE].resource_hints[RESOURCE].hints
    assert [(list(h.nodes), h.preferred) for h in hints] == [([1], True)]
    assert admitted.hint.nodes == frozenset({1})
    allocation = admitted.allocations[RESOURCE][RESOURCE]
    assert allocation["allocation_result"] == "2"
    assert allocation["allocated_quantity"] == 4096.0
    assert allocation["envs"] == {
        ENV_VISIBLE_DEVICES: "GPU-2222",
        ENV_PINNED_MEM_LIMIT: "0=4096M",
        ENV_ACTIVE_THREAD_PERCENTAGE: "25",
    }
    assert allocation["annotations"] == {
        GPU_INDICES_ANNOTATION: "2",
        GPU_UUIDS_ANNOTATION: "GPU-2222",
        GPU_MEMORY_ANNOTATION: "4096",
    }
    assert allocation["topology_assignments"] == {1: 4096}
    reconciled = await kubelet.reconcile()
    assert reconciled[RESOURCE]["infer"]["app"][RESOURCE] == allocation


async def test_a_multi_gpu_pod_is_split_over_its_gpus(kubelet: KubeletEmulator) -> None:
    admitted = (await kubelet.admit(pod("train", 20000, indices="0,1")))["app"]
    allocation = admitted.allocations[RESOURCE][RESOURCE]
    assert allocation["allocation_result"] == "0,1"
    assert allocation["envs"][ENV_VISIBLE_DEVICES] == "GPU-0000,GPU-1111"
    assert allocation["envs"][ENV_PINNED_MEM_LIMIT] == "0=10000M,1=10000M"
    assert allocation["envs"][ENV_ACTIVE_THREAD_PERCENTAGE] == "62"
    assert allocation["topology_assignments"] == {0: 20000}


async def test_without_the_annotation_the_emptiest_gpu(kubelet: KubeletEmulator) -> None:
    await kubelet.admit(pod("a", 8192, indices="0"))
    await kubelet.admit(pod("b", 8192, indices="2"))
    await kubelet.admit(pod("c", 4096, indices="3"))
    # The merged hint is node 0 (the narrowest preferred); GPU 1 is empty there.
    admitted = (await kubelet.admit(pod("d", 4096)))["app"]
    assert admitted.allocations[RESOURCE][RESOURCE]["allocation_result"] == "1"


async def test_overcommit_is_refused_with_the_numbers(
    kubelet: KubeletEmulator, gpu: GPUPolicy
) -> None:
    await kubelet.admit(pod("filler", 12288, indices="1"))
    before = gpu.to_state()
    with pytest.raises(PluginCallError) as refused:
        await kubelet.admit(pod("x", 8192, indices="1"))
    assert refused.value.rpc == "Allocate"
    assert refused.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "gpu 1 has 4096 MiB free, pod default/x needs 8192" in refused.value.details
    assert gpu.to_state() == before
    # Removing the filler gives the memory back.
    await kubelet.remove("filler")
    admitted = await kubelet.admit(pod("x", 8192, indices="1"))
    assert admitted["app"].allocations[RESOURCE][RESOURCE]["allocation_result"] == "1"


async def test_a_restricted_topology_manager_refuses_at_the_hints(served: Path) -> None:
    async with KubeletEmulator(numa_nodes=(0, 1), topology_policy="restricted") as kubelet:
        await kubelet.discover(served)
        await kubelet.admit(pod("filler", 16000, indices="3"))
        with pytest.raises(TopologyAffinityError):
            await kubelet.admit(pod("x", 1024, indices="3"))


@pytest.mark.parametrize(
    ("indices", "mib", "says"),
    [
        ("9", 1024.0, "GPU 9 does not exist on this node"),
        ("0,x", 1024.0, "'x' is not a GPU index"),
        ("0", 1.5, "whole, non-negative number of MiB"),
    ],
)
async def test_bad_requests_are_invalid_arguments(
    kubelet: KubeletEmulator, gpu: GPUPolicy, indices: str, mib: float, says: str
) -> None:
    with pytest.raises(PluginCallError) as invalid:
        await kubelet.admit(pod("x", mib, indices=indices))
    assert invalid.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert says in invalid.value.details
    assert gpu.allocations() == {}


async def test_topology_aware_views_report_gpu_memory(kubelet: KubeletEmulator) -> None:
    await kubelet.admit(pod("infer", 3000, indices="2"))
    stub = kubelet.plugin(RESOURCE).stub
    allocatable = await stub.GetTopologyAwareAllocatableResources(
        rp_pb2.GetTopologyAwareAllocatableResourcesRequest(), timeout=10
    )
    memory = allocatable.allocatable_resources[RESOURCE]
    assert memory.aggregated_capacity_quantity == 65536.0
    assert [(q.node, q.resource_value) for q in memory.topology_aware_capacity_quantity_list] == [
        (0, 32768.0),
        (1, 32768.0),
    ]
    held = await stub.GetTopologyAwareResources(
        rp_pb2.GetTopologyAwareResourcesRequest(pod_uid="infer", container_name="app"),
        timeout=10,
    )
    resource = held.container_topology_aware_resources.allocated_resources[RESOURCE]
    assert resource.aggregated_quantity == 3000.0
    assert [(q.node, q.resource_value) for q in resource.topology_aware_quantity_list] == [
        (1, 3000.0)
    ]


async def test_a_node_without_gpus_refuses_clearly(short_dir: Path) -> None:
    async with (
        PluginServer(GPUPolicy(()), socket_dir=short_dir, clock=FakeClock()),
        KubeletEmulator(numa_nodes=(0, 1), topology_policy="best-effort") as kubelet,
    ):
        await kubelet.discover(short_dir)
        with pytest.raises(PluginCallError) as refused:
            await kubelet.admit(pod("x", 1024))
        assert refused.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "this node has no GPU" in refused.value.details
