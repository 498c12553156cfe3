"""The node's GPUs and RDMA NICs as CNR zones: built from the GPU plugin's plans,
replaced whole in the CNR's topology, and reported again when an allocation changes."""

from __future__ import annotations

import dataclasses
from typing import Any

from agent.gpu.inventory import GPU, RDMADevice
from agent.qrm.gpu.policy import GPUPolicy
from agent.reporter import ReclaimSample, Target
from agent.reporter.devices import device_zones, rdma_allocations
from agent.reporter.wire import cnr_status_patch, replace_device_zones
from katalyst.clock import FakeClock
from katalyst.qos import RDMA_DEVICES_ANNOTATION, RESOURCE_GPU_MEMORY, RESOURCE_RDMA, PodView
from scheduler_plugins.plugins.model import parse_cnr
from tests.unit.reporter.support import GIB, make_planner, succeed

GPUS = (
    GPU(index=0, uuid="GPU-aaa", memory_mib=81920, numa_node=0, pcie_switch="0000:10:00.0"),
    GPU(index=1, uuid="GPU-bbb", memory_mib=81920, numa_node=1),
)
NIC = RDMADevice(name="mlx5_0", netdevs=("eth2",), numa_node=0, pcie_switch="0000:10:00.0")


def test_gpu_and_nic_zones_carry_what_the_extender_reads() -> None:
    zones = device_zones(GPUPolicy(GPUS), [NIC])
    assert [(z["type"], z["name"]) for z in zones] == [
        ("GPU", "0"),
        ("GPU", "1"),
        ("NIC", "mlx5_0"),
    ]
    gpu0 = zones[0]
    assert gpu0["resources"]["capacity"] == {RESOURCE_GPU_MEMORY: "81920"}
    attrs = {a["name"]: a["value"] for a in gpu0["attributes"]}
    assert attrs == {"uuid": "GPU-aaa", "numa_node": "0", "pcie_switch": "0000:10:00.0"}
    assert gpu0["allocations"] == []
    nic = {a["name"]: a["value"] for a in zones[2]["attributes"]}
    assert nic == {"netdevs": "eth2", "numa_node": "0", "pcie_switch": "0000:10:00.0"}
    assert device_zones(None) == ()


def test_device_zones_replace_the_stored_ones_and_keep_the_rest() -> None:
    stored: list[Any] = [
        {"type": "Socket", "name": "0", "resources": {}},
        {"type": "GPU", "name": "7", "resources": {}},  # a GPU that is gone
    ]
    ours = device_zones(GPUPolicy(GPUS[:1]))
    merged = replace_device_zones(stored, ours)
    assert [(z["type"], z["name"]) for z in merged] == [("Socket", "0"), ("GPU", "0")]


def test_the_cnr_patch_writes_the_device_zones() -> None:
    planner = make_planner(FakeClock())
    devices = device_zones(GPUPolicy(GPUS[:1]))
    planner.observe(ReclaimSample(cpus=1.0, memory_bytes=GIB, devices=devices))
    report = planner.due()
    assert report is not None
    patch = cnr_status_patch(report.values, {"metadata": {"resourceVersion": "5"}})
    types = [z["type"] for z in patch["status"]["topologyZone"]]
    assert "GPU" in types


async def test_a_changed_allocation_is_reported_after_the_rate_limit() -> None:
    clock = FakeClock()
    planner = make_planner(clock, min_interval_s=5.0)
    base = device_zones(GPUPolicy(GPUS[:1]))
    planner.observe(ReclaimSample(cpus=1.0, memory_bytes=GIB, devices=base))
    succeed(planner)
    taken = list(base)
    taken[0] = dict(taken[0], allocations=[{"consumer": "u1", "requests": {"x": "1"}}])
    await clock.advance(1)
    planner.observe(ReclaimSample(cpus=1.0, memory_bytes=GIB, devices=tuple(taken)))
    assert planner.due() is None  # within the rate limit
    await clock.advance(5)
    planner.observe(ReclaimSample(cpus=1.0, memory_bytes=GIB, devices=tuple(taken)))
    report = planner.due()
    assert report is not None and report.targets == {Target.CNR: "change"}
    assert dataclasses.replace(report.values).devices == tuple(taken)


def _view(uid: str, annotations: dict[str, str]) -> PodView:
    return PodView.from_dict(
        {
            "metadata": {
                "name": f"p-{uid}",
                "namespace": "ml",
                "uid": uid,
                "annotations": annotations,
            },
            "spec": {"containers": [{"name": "c"}]},
        }
    )


def test_a_nic_named_by_a_bound_pod_is_reported_allocated_to_it() -> None:
    pods = [
        _view("u2", {RDMA_DEVICES_ANNOTATION: "mlx5_0, mlx5_9"}),  # mlx5_9: not here
        _view("u1", {RDMA_DEVICES_ANNOTATION: "mlx5_0,"}),
        _view("u3", {}),
    ]
    holders = rdma_allocations(pods)
    assert holders == {"mlx5_0": ("u1", "u2"), "mlx5_9": ("u2",)}
    other = RDMADevice(name="mlx5_1", netdevs=("eth3",), numa_node=1)
    zones = device_zones(None, [other, NIC], holders)
    assert [(z["name"], z["allocations"]) for z in zones] == [
        (
            "mlx5_0",
            [
                {"consumer": "u1", "requests": {RESOURCE_RDMA: "1"}},
                {"consumer": "u2", "requests": {RESOURCE_RDMA: "1"}},
            ],
        ),
        ("mlx5_1", []),
    ]
    # The extender reads exactly this: the held NIC is taken, the other is free.
    cnr = parse_cnr({"metadata": {"name": "n"}, "status": {"topologyZone": list(zones)}})
    assert [(n.name, n.allocated) for n in cnr.nics] == [("mlx5_0", True), ("mlx5_1", False)]
