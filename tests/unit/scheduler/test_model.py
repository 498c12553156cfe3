from __future__ import annotations

from typing import Any

import pytest

from katalyst.qos import GPU_INDICES_ANNOTATION, RDMA_DEVICES_ANNOTATION
from scheduler_plugins.plugins.model import (
    RequestError,
    node_view,
    parse_cnr,
    parse_pod,
    parse_quantity,
)
from tests.unit.scheduler.helpers import GIB, cnr_json, gpu_zone, nic_zone, pod_json


@pytest.mark.parametrize(
    ("text", "value"),
    [("1500", 1500), ("4Gi", 4 * GIB), ("1k", 1000), ("0.5", 1), (7, 7), ("100m", 1)],
)
def test_quantities(text: str | int, value: int) -> None:
    assert parse_quantity(text, "x") == value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-1", "is negative"),
        ("abc", "is not a quantity"),
        ("1Xi", "is not a quantity"),
        (True, "is not a quantity"),
        (None, "is not a quantity"),
    ],
)
def test_bad_quantities_name_the_field(text: Any, message: str) -> None:
    with pytest.raises(RequestError, match=f"^where: .*{message}"):
        parse_quantity(text, "where")


def test_a_pod_sums_its_containers_and_takes_limits_for_missing_requests() -> None:
    pod = pod_json(millicpu=1000, memory="1Gi", gpu_memory=8192, gpu_count=2, rdma=1)
    pod["spec"]["containers"].append(
        {
            "name": "b",
            "resources": {"limits": {"resource.katalyst.kubewharf.io/reclaimed_millicpu": "500"}},
        }
    )
    req = parse_pod(pod)
    # gpu_memory is the pod's: 8192 MiB over 2 GPUs is 4096 on each.
    assert (req.millicpu, req.memory, req.gpu_memory_mib, req.gpu_count, req.rdma) == (
        1500,
        GIB,
        4096,
        2,
        1,
    )
    assert req.policy == "soft"
    assert req.wants_gpu and req.wants_reclaimed


def test_gpu_count_defaults_to_one_and_indices_are_read() -> None:
    req = parse_pod(pod_json(gpu_memory=100, annotations={GPU_INDICES_ANNOTATION: "0,3"}))
    assert req.gpu_count == 1
    assert req.gpu_indices == (0, 3)


@pytest.mark.parametrize(
    ("pod", "field"),
    [
        ("nope", "Pod: not an object"),
        ({"spec": {"containers": []}}, "Pod.metadata: missing"),
        ({"metadata": {"name": "a"}}, "Pod.spec: missing"),
        ({"metadata": {"name": "a"}, "spec": {}}, "Pod.spec.containers: missing"),
        (pod_json(millicpu=-5), "Pod.spec.containers[0].resources.limits"),
        (pod_json(memory="lots"), "reclaimed_memory]: 'lots' is not a quantity"),
        (pod_json(gpu_memory=10, gpu_count="two"), "gpu_count]: 'two' is not a whole number"),
        (pod_json(gpu_memory=10, gpu_count=0), "must be at least 1"),
        (pod_json(gpu_memory=10, gpu_count=-1), "gpu_count]: '-1' is negative"),
        (pod_json(policy="strict"), "topology_policy]: 'strict' is not one of hard, soft"),
    ],
)
def test_bad_pods_name_the_field(pod: Any, field: str) -> None:
    with pytest.raises(RequestError) as exc:
        parse_pod(pod)
    assert field in str(exc.value)


def test_a_cnr_gives_headroom_gpus_and_nics_and_pods_are_taken_off() -> None:
    cnr = parse_cnr(
        cnr_json(
            "n1",
            millicpu=4000,
            memory=8 * GIB,
            zones=[
                gpu_zone(0, allocations={"uid-a": 4096}),
                gpu_zone(1, numa=1, switch="sw1"),
                nic_zone("mlx5_0"),
                nic_zone("mlx5_1", numa=1, switch="sw1", allocated=True),
            ],
        )
    )
    assert (cnr.millicpu, cnr.memory) == (4000, 8 * GIB)
    assert [(g.index, g.uuid, g.numa, g.pcie_switch, g.allocated_mib) for g in cnr.gpus] == [
        (0, "GPU-0", 0, "sw0", 4096),
        (1, "GPU-1", 1, "sw1", 0),
    ]
    assert [(n.name, n.numa, n.allocated) for n in cnr.nics] == [
        ("mlx5_0", 0, False),
        ("mlx5_1", 1, True),
    ]
    # uid-a is already counted by the CNR on gpu 0; uid-b is not yet.
    a = parse_pod(pod_json("a", gpu_memory=4096, annotations={GPU_INDICES_ANNOTATION: "0"}))
    b = parse_pod(
        pod_json("b", millicpu=1000, gpu_memory=2048, annotations={GPU_INDICES_ANNOTATION: "0"})
    )
    view = node_view(cnr, "n1", [a, b])
    assert view.requested_millicpu == 1000
    assert view.gpus[0].allocated_mib == 4096 + 2048
    assert view.gpus[0].free_mib == 16384 - 6144


def test_a_node_without_cnr_has_no_headroom_and_bad_zones_are_skipped() -> None:
    assert node_view(None, "n", []).reclaimed_millicpu is None
    raw = cnr_json("n", millicpu=None, zones=[gpu_zone(0)])
    raw["status"]["topologyZone"].append({"type": "GPU", "name": "x", "resources": {}})
    cnr = parse_cnr(raw)
    assert cnr.millicpu is None
    assert [g.index for g in cnr.gpus] == [0]


def test_a_pods_gpu_memory_over_its_gpus_rounds_up_as_the_node_splits_it() -> None:
    req = parse_pod(pod_json(gpu_memory=10001, gpu_count=2))
    assert req.gpu_memory_mib == 5001  # the node puts 5001 and 5000: the larger must fit


def test_rdma_devices_are_read_from_the_annotation() -> None:
    req = parse_pod(pod_json(rdma=2, annotations={RDMA_DEVICES_ANNOTATION: "mlx5_0, mlx5_3"}))
    assert req.rdma_devices == ("mlx5_0", "mlx5_3")
    assert parse_pod(pod_json(rdma=1)).rdma_devices == ()
    assert parse_pod(pod_json(annotations={RDMA_DEVICES_ANNOTATION: ""})).rdma_devices == ()
    assert RDMA_DEVICES_ANNOTATION == "katalyst.kubewharf.io/rdma_devices"


def test_nics_named_by_pods_are_allocated_in_the_node_view() -> None:
    cnr = parse_cnr(
        cnr_json(
            "n1",
            zones=[
                nic_zone("mlx5_0"),
                nic_zone("mlx5_1"),
                nic_zone("mlx5_2", allocated=True),
                nic_zone("mlx5_3"),
            ],
        )
    )
    a = parse_pod(pod_json("a", rdma=1, annotations={RDMA_DEVICES_ANNOTATION: "mlx5_1"}))
    # mlx5_2 is allocated in the CNR already (and stays so); mlx5_9 is not on the node.
    b = parse_pod(pod_json("b", rdma=2, annotations={RDMA_DEVICES_ANNOTATION: "mlx5_2,mlx5_9"}))
    view = node_view(cnr, "n1", [a, b])
    assert [(n.name, n.allocated) for n in view.nics] == [
        ("mlx5_0", False),
        ("mlx5_1", True),
        ("mlx5_2", True),
        ("mlx5_3", False),
    ]
    # Without the pods only the CNR's allocation counts.
    assert [n.name for n in node_view(cnr, "n1", []).nics if n.allocated] == ["mlx5_2"]
