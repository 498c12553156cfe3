"""The JSON the reporter sends, field for field with katalyst-api's CNR types."""

from __future__ import annotations

from typing import Any

from agent.reporter import (
    Reclaimed,
    ZoneAmount,
    cnr_object,
    cnr_status_patch,
    merge_zones,
    node_status_patch,
    topology_zones,
)

CPU = "resource.katalyst.kubewharf.io/reclaimed_millicpu"
MEM = "resource.katalyst.kubewharf.io/reclaimed_memory"

VALUES = Reclaimed(
    millicpu=3000,
    memory_bytes=6000,
    zones=(
        ZoneAmount(numa=0, socket=0, millicpu=2000, memory_bytes=1000),
        ZoneAmount(numa=1, socket=0, millicpu=1000, memory_bytes=2000),
        ZoneAmount(numa=2, socket=1, millicpu=0, memory_bytes=3000),
    ),
)


def _numa(name: str, cpu: str, mem: str) -> dict[str, Any]:
    amounts = {CPU: cpu, MEM: mem}
    return {
        "type": "Numa",
        "name": name,
        "resources": {"allocatable": amounts, "capacity": dict(amounts)},
    }


def test_node_status_patch_sets_capacity_and_allocatable() -> None:
    patch = node_status_patch(VALUES)
    assert patch == {
        "status": {
            "capacity": {CPU: "3000", MEM: "6000"},
            "allocatable": {CPU: "3000", MEM: "6000"},
        }
    }


def test_a_new_cnr_is_named_after_its_node_and_has_no_status() -> None:
    assert cnr_object("node-a") == {
        "apiVersion": "node.katalyst.kubewharf.io/v1alpha1",
        "kind": "CustomNodeResource",
        "metadata": {"name": "node-a"},
        "spec": {},
    }


def test_topology_zones_nest_numa_zones_in_their_socket() -> None:
    assert topology_zones(VALUES) == [
        {
            "type": "Socket",
            "name": "0",
            "resources": {},
            "children": [_numa("0", "2000", "1000"), _numa("1", "1000", "2000")],
        },
        {
            "type": "Socket",
            "name": "1",
            "resources": {},
            "children": [_numa("2", "0", "3000")],
        },
    ]


def test_cnr_status_patch_of_a_fresh_cnr() -> None:
    stored = {"metadata": {"name": "node-a", "resourceVersion": "42"}}
    patch = cnr_status_patch(VALUES, stored)
    assert patch == {
        "metadata": {"resourceVersion": "42"},
        "status": {
            "resources": {
                "allocatable": {CPU: "3000", MEM: "6000"},
                "capacity": {CPU: "3000", MEM: "6000"},
            },
            "topologyZone": topology_zones(VALUES),
        },
    }


def test_without_zones_the_topology_is_left_alone() -> None:
    patch = cnr_status_patch(Reclaimed(millicpu=1, memory_bytes=2), {"metadata": {}})
    assert patch == {
        "status": {
            "resources": {"allocatable": {CPU: "1", MEM: "2"}, "capacity": {CPU: "1", MEM: "2"}}
        }
    }


def test_merge_keeps_what_other_writers_put_in_the_zones() -> None:
    gpu = {"type": "GPU", "name": "gpu-0", "resources": {"capacity": {"nvidia.com/gpu": "1"}}}
    stored = [
        gpu,
        {
            "type": "Socket",
            "name": "0",
            "resources": {},
            "attributes": [{"name": "vendor", "value": "x"}],
            "children": [
                {
                    "type": "Numa",
                    "name": "0",
                    "resources": {
                        "allocatable": {"cpu": "16", CPU: "1"},
                        "capacity": {"cpu": "16"},
                    },
                    "allocations": [{"consumer": "ns/pod/uid", "requests": {"cpu": "2"}}],
                    "siblings": [{"type": "Numa", "name": "1"}],
                },
                {"type": "NIC", "name": "eth0", "resources": {}},
            ],
        },
    ]
    before = repr(stored)

    merged = merge_zones(stored, topology_zones(VALUES))

    assert repr(stored) == before  # the input is not modified
    assert merged[0] == gpu
    socket0 = merged[1]
    assert socket0["attributes"] == [{"name": "vendor", "value": "x"}]
    numa0, nic, numa1 = socket0["children"]
    assert numa0["resources"] == {
        "allocatable": {"cpu": "16", CPU: "2000", MEM: "1000"},
        "capacity": {"cpu": "16", CPU: "2000", MEM: "1000"},
    }
    assert numa0["allocations"] == [{"consumer": "ns/pod/uid", "requests": {"cpu": "2"}}]
    assert numa0["siblings"] == [{"type": "Numa", "name": "1"}]
    assert nic == {"type": "NIC", "name": "eth0", "resources": {}}
    assert numa1 == _numa("1", "1000", "2000")
    assert merged[2] == topology_zones(VALUES)[1]  # socket 1 was missing: appended


def test_merge_into_garbage_starts_afresh() -> None:
    assert merge_zones(None, topology_zones(VALUES)) == topology_zones(VALUES)
    assert merge_zones("nonsense", topology_zones(VALUES)) == topology_zones(VALUES)
    merged = merge_zones([7, {"type": "Socket", "name": "0"}], topology_zones(VALUES))
    assert merged[0] == 7
    assert merged[1]["children"] == topology_zones(VALUES)[0]["children"]


def test_merging_twice_changes_nothing() -> None:
    once = merge_zones([], topology_zones(VALUES))
    assert merge_zones(once, topology_zones(VALUES)) == once
