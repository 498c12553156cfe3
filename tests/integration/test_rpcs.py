"""The RPCs the policy does not take part in: empty, valid or UNIMPLEMENTED answers."""

from __future__ import annotations

import grpc
import pytest

from katalyst.api.resourceplugin.v1alpha1 import api_pb2 as rp_pb2
from tests.integration.fake_policy import FakePolicy
from tests.support.kubelet import KubeletEmulator


async def test_associated_device_rpcs_answer_empty(kubelet: KubeletEmulator) -> None:
    stub = kubelet.plugin("cpu").stub
    request = rp_pb2.AssociatedDeviceRequest(
        resource_request=rp_pb2.ResourceRequest(pod_uid="uid-1", container_name="app"),
        device_request=[rp_pb2.DeviceRequest(device_name="nic", device_request=1)],
        accompany_resource_name="nvidia.com/gpu",
        device_name="nic",
    )
    assert (
        await stub.GetAssociatedDeviceTopologyHints(request, timeout=10)
        == rp_pb2.AssociatedDeviceHintsResponse()
    )
    assert (
        await stub.AllocateAssociatedDevice(request, timeout=10)
        == rp_pb2.AssociatedDeviceAllocationResponse()
    )
    update = rp_pb2.UpdateAllocatableAssociatedDevicesRequest(
        device_name="nic", devices=[rp_pb2.AssociatedDevice(ID="eth0", health="Healthy")]
    )
    assert (
        await stub.UpdateAllocatableAssociatedDevices(update, timeout=10)
        == rp_pb2.UpdateAllocatableAssociatedDevicesResponse()
    )


async def test_topology_aware_resources_of_an_unknown_container_are_a_valid_empty_view(
    kubelet: KubeletEmulator,
) -> None:
    stub = kubelet.plugin("cpu").stub
    resources = await stub.GetTopologyAwareResources(
        rp_pb2.GetTopologyAwareResourcesRequest(pod_uid="uid-1", container_name="app"),
        timeout=10,
    )
    assert resources.pod_uid == "uid-1"
    assert resources.container_topology_aware_resources.container_name == "app"
    assert dict(resources.container_topology_aware_resources.allocated_resources) == {}


async def test_topology_aware_allocatable_comes_from_the_policy(
    kubelet: KubeletEmulator, policy: FakePolicy
) -> None:
    policy.capacity = {0: 4.0, 1: 2.0}
    allocatable = await kubelet.plugin("cpu").stub.GetTopologyAwareAllocatableResources(
        rp_pb2.GetTopologyAwareAllocatableResourcesRequest(), timeout=10
    )
    cpu = allocatable.allocatable_resources["cpu"]
    assert cpu.aggregated_capacity_quantity == 6.0
    assert [(q.node, q.resource_value) for q in cpu.topology_aware_capacity_quantity_list] == [
        (0, 4.0),
        (1, 2.0),
    ]
    assert all(q.topology_level == rp_pb2.NUMA for q in cpu.topology_aware_capacity_quantity_list)


async def test_a_policy_bug_in_a_topology_view_is_an_internal_error(
    kubelet: KubeletEmulator, policy: FakePolicy
) -> None:
    policy.fail_next = RuntimeError("boom")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await kubelet.plugin("cpu").stub.GetTopologyAwareAllocatableResources(
            rp_pb2.GetTopologyAwareAllocatableResourcesRequest(), timeout=10
        )
    assert err.value.code() is grpc.StatusCode.INTERNAL


async def test_pre_start_container_answers_empty(kubelet: KubeletEmulator) -> None:
    response = await kubelet.plugin("cpu").stub.PreStartContainer(
        rp_pb2.PreStartContainerRequest(pod_uid="uid-1", container_name="app"), timeout=10
    )
    assert response == rp_pb2.PreStartContainerResponse()


async def test_pod_scope_rpcs_are_unimplemented_with_a_clear_message(
    policy: FakePolicy, kubelet: KubeletEmulator
) -> None:
    stub = kubelet.plugin("cpu").stub
    request = rp_pb2.PodResourceRequest(pod_uid="uid-1", resource_name="cpu")
    for call in (stub.AllocateForPod, stub.GetPodTopologyHints):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(request, timeout=10)
        assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "pod-scope topology policy is not supported" in (raised.value.details() or "")
    assert policy.seen == []
    # And the server carries on.
    assert (await kubelet.reconcile()) == {"cpu": {}}
