"""The network plugin behind the real :class:`PluginServer`, driven over its unix
socket by the kubelet emulator with the real ``resourceplugin`` protos.

The NICs come from a sysfs tree read by :func:`read_nics`: two 10 Gbit/s ports,
one on each NUMA node, with 10 % of each kept for the system (9000 Mbit/s each).
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from agent.qrm.network import (
    BANDWIDTH_ANNOTATION,
    NIC_NAME_ANNOTATION,
    QOS_CLASS_ANNOTATION,
    NetworkPolicy,
    read_nics,
)
from agent.qrm.network.policy import RESOURCE
from agent.qrm.server import PluginServer
from katalyst.api.resourceplugin.v1alpha1 import api_pb2 as rp_pb2
from katalyst.clock import FakeClock
from katalyst.qos import MEMORY_ENHANCEMENT_ANNOTATION, QOS_LEVEL_ANNOTATION
from tests.support.kubelet import (
    Container,
    KubeletEmulator,
    PluginCallError,
    Pod,
    TopologyAffinityError,
)
from tests.unit.qrm.network.machines import write_nic


@pytest.fixture
def network(tmp_path: Path) -> NetworkPolicy:
    sysfs = tmp_path / "sys"
    write_nic(sysfs, "eth0", speed="10000", numa="0", pci="0000:3b:00.0")
    write_nic(sysfs, "eth1", speed="10000", numa="1", pci="0000:af:00.0")
    write_nic(sysfs, "lo")
    inventory = read_nics(sysfs)
    assert [nic.name for nic in inventory.nics] == ["eth0", "eth1"]
    return NetworkPolicy(inventory.nics, reserved_ratio=0.1)


@pytest.fixture
async def served(network: NetworkPolicy, short_dir: Path) -> AsyncIterator[Path]:
    """The socket directory, with the network plugin serving in it."""
    async with PluginServer(network, socket_dir=short_dir, clock=FakeClock()):
        yield short_dir


@pytest.fixture
async def kubelet(served: Path) -> AsyncIterator[KubeletEmulator]:
    """A best-effort topology manager: a pod that fits nowhere reaches Allocate."""
    async with KubeletEmulator(numa_nodes=(0, 1), topology_policy="best-effort") as emulator:
        registered = await emulator.discover(served)
        assert [plugin.resource for plugin in registered] == [RESOURCE]
        yield emulator


def pod(uid: str, mbit: float, *, level: str = "shared_cores", bound: bool = False) -> Pod:
    annotations = {QOS_LEVEL_ANNOTATION: level}
    if bound:
        annotations[MEMORY_ENHANCEMENT_ANNOTATION] = json.dumps({"numa_binding": "true"})
    return Pod(
        uid=uid,
        name=uid,
        containers=(Container(name="app", requests={RESOURCE: mbit}),),
        annotations=annotations,
    )


async def test_an_allocation_that_fits_names_the_nic(kubelet: KubeletEmulator) -> None:
    admitted = (await kubelet.admit(pod("web", 300)))["app"]
    hints = admitted.hints[RESOURCE].resource_hints[RESOURCE].hints
    assert [(list(h.nodes), h.preferred) for h in hints] == [([0], True), ([1], True)]
    assert admitted.hint.nodes == frozenset({0})  # the narrowest preferred
    allocation = admitted.allocations[RESOURCE][RESOURCE]
    assert allocation["allocation_result"] == "eth0"
    assert allocation["allocated_quantity"] == 300.0
    assert allocation["is_scalar_resource"] and allocation["is_node_resource"]
    assert allocation["topology_assignments"] == {0: 300}
    assert allocation["annotations"] == {
        NIC_NAME_ANNOTATION: "eth0",
        BANDWIDTH_ANNOTATION: "300",
        QOS_CLASS_ANNOTATION: "shared",
    }
    # Reconciliation reports it; a second pod goes to the NIC with more room.
    reconciled = await kubelet.reconcile()
    assert reconciled[RESOURCE]["web"]["app"][RESOURCE] == allocation
    other = (await kubelet.admit(pod("api", 100)))["app"].allocations[RESOURCE][RESOURCE]
    assert other["allocation_result"] == "eth1"


async def test_a_numa_bound_pod_gets_the_nic_on_its_node(kubelet: KubeletEmulator) -> None:
    await kubelet.admit(pod("filler", 8000))  # eth0
    admitted = (await kubelet.admit(pod("db", 500, level="dedicated_cores", bound=True)))["app"]
    allocation = admitted.allocations[RESOURCE][RESOURCE]
    # Both nodes fit, so the merged hint is node 0, and eth0 is the one there,
    # though eth1 has far more free (an unbound pod would go there).
    assert admitted.hint.nodes == frozenset({0})
    assert allocation["allocation_result"] == "eth0"
    assert allocation["annotations"][QOS_CLASS_ANNOTATION] == "system"


async def test_a_pod_that_fits_nowhere_is_refused_with_the_numbers(
    kubelet: KubeletEmulator, network: NetworkPolicy
) -> None:
    await kubelet.admit(pod("a", 8800))
    await kubelet.admit(pod("b", 8900))
    before = network.to_state()
    with pytest.raises(PluginCallError) as refused:
        await kubelet.admit(pod("web", 300))
    assert refused.value.rpc == "Allocate"
    assert refused.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    details = refused.value.details
    assert "nic eth0 has 200 Mbit/s free of 9000" in details
    assert "nic eth1 has 100 Mbit/s free of 9000" in details
    assert "pod default/web asks 300 Mbit/s" in details
    assert network.to_state() == before
    # Removing a pod gives its bandwidth back: the same pod now fits.
    await kubelet.remove("a")
    admitted = await kubelet.admit(pod("web", 300))
    assert admitted["app"].allocations[RESOURCE][RESOURCE]["allocation_result"] == "eth0"


async def test_a_restricted_topology_manager_refuses_at_the_hints(served: Path) -> None:
    async with KubeletEmulator(numa_nodes=(0, 1), topology_policy="restricted") as kubelet:
        await kubelet.discover(served)
        await kubelet.admit(pod("a", 8800))
        await kubelet.admit(pod("b", 8900))
        with pytest.raises(TopologyAffinityError):
            await kubelet.admit(pod("web", 300))


@pytest.mark.parametrize("mbit", [-300.0, math.nan, math.inf])
async def test_a_bad_bandwidth_is_an_invalid_argument_naming_the_resource(
    kubelet: KubeletEmulator, network: NetworkPolicy, mbit: float
) -> None:
    with pytest.raises(PluginCallError) as invalid:
        await kubelet.admit(pod("web", mbit))
    assert invalid.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert RESOURCE in invalid.value.details
    assert network.allocations() == {}


async def test_topology_aware_views_report_the_nic_bandwidth(kubelet: KubeletEmulator) -> None:
    await kubelet.admit(pod("web", 1500))
    stub = kubelet.plugin(RESOURCE).stub
    allocatable = await stub.GetTopologyAwareAllocatableResources(
        rp_pb2.GetTopologyAwareAllocatableResourcesRequest(), timeout=10
    )
    bandwidth = allocatable.allocatable_resources[RESOURCE]
    assert bandwidth.aggregated_capacity_quantity == 20000.0
    assert bandwidth.aggregated_allocatable_quantity == 18000.0
    per_node = [
        (q.node, q.resource_value) for q in bandwidth.topology_aware_allocatable_quantity_list
    ]
    assert per_node == [(0, 9000.0), (1, 9000.0)]
    assert [
        (q.node, q.resource_value) for q in bandwidth.topology_aware_capacity_quantity_list
    ] == [(0, 10000.0), (1, 10000.0)]

    held = await stub.GetTopologyAwareResources(
        rp_pb2.GetTopologyAwareResourcesRequest(pod_uid="web", container_name="app"), timeout=10
    )
    resource = held.container_topology_aware_resources.allocated_resources[RESOURCE]
    assert resource.aggregated_quantity == 1500.0
    assert [(q.node, q.resource_value) for q in resource.topology_aware_quantity_list] == [
        (0, 1500.0)
    ]


async def test_reclaimed_pods_are_placed_but_not_guaranteed(kubelet: KubeletEmulator) -> None:
    admitted = await kubelet.admit(pod("batch", 20000, level="reclaimed_cores"))
    allocation = admitted["app"].allocations[RESOURCE][RESOURCE]
    assert allocation["allocation_result"] == "eth0"
    assert allocation["allocated_quantity"] == 0.0
    assert allocation["annotations"][BANDWIDTH_ANNOTATION] == "0"
    assert allocation["annotations"][QOS_CLASS_ANNOTATION] == "reclaimed"
