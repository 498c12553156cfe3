from __future__ import annotations

import pytest

from katalyst.clock import FakeClock
from katalyst.qos import RDMA_DEVICES_ANNOTATION
from scheduler_plugins.plugins import gpu_share, rdma_topology, reclaimed_fit
from scheduler_plugins.plugins.model import (
    Gpu,
    Nic,
    NodeView,
    PodRequest,
    node_view,
    parse_cnr,
    parse_pod,
)
from scheduler_plugins.state import ClusterState
from tests.unit.scheduler.helpers import cnr_json, gpu_zone, nic_zone, pod_json


def req(**kw: object) -> PodRequest:
    return PodRequest(uid="u", namespace="default", name="p", **kw)  # type: ignore[arg-type]


def node(**kw: object) -> NodeView:
    return NodeView(name="n", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("pod", "view", "reason"),
    [
        (req(), node(), None),
        (
            req(millicpu=1),
            node(),
            "node reports no reclaimed resources (no CustomNodeResource yet)",
        ),
        (req(millicpu=1000), node(reclaimed_millicpu=2000, reclaimed_memory=10), None),
        (
            req(millicpu=1000),
            node(reclaimed_millicpu=2000, reclaimed_memory=10, requested_millicpu=1500),
            "reclaimed_millicpu: node has 500 free, pod needs 1000",
        ),
        (
            req(memory=11),
            node(reclaimed_millicpu=2000, reclaimed_memory=10),
            "reclaimed_memory: node has 10 bytes free, pod needs 11",
        ),
    ],
)
def test_reclaimed_fit_filter(pod: PodRequest, view: NodeView, reason: str | None) -> None:
    assert reclaimed_fit.filter(pod, view) == reason


def test_reclaimed_fit_score_least_and_most_allocated() -> None:
    pod = req(millicpu=1000, memory=100)
    empty = node(reclaimed_millicpu=4000, reclaimed_memory=400)
    busy = node(
        reclaimed_millicpu=4000, reclaimed_memory=400, requested_millicpu=2000, requested_memory=200
    )
    assert reclaimed_fit.score(pod, empty) == 75
    assert reclaimed_fit.score(pod, busy) == 25
    assert reclaimed_fit.score(pod, empty, "most-allocated") == 25
    assert reclaimed_fit.score(pod, busy, "most-allocated") == 75
    assert reclaimed_fit.score(req(), empty) is None


GPUS = (
    Gpu(index=0, uuid="a", memory_mib=16384, allocated_mib=12288),
    Gpu(index=1, uuid="b", memory_mib=16384, allocated_mib=4096),
    Gpu(index=2, uuid="c", memory_mib=16384),
)


@pytest.mark.parametrize(
    ("pod", "gpus", "reason"),
    [
        (req(), (), None),
        (req(gpu_memory_mib=1, gpu_count=1), (), "node reports no GPUs"),
        (req(gpu_memory_mib=4096, gpu_count=1), GPUS, None),
        (req(gpu_memory_mib=12288, gpu_count=2), GPUS, None),
        (
            req(gpu_memory_mib=8192, gpu_count=1),
            GPUS[:2],
            None,
        ),
        (
            req(gpu_memory_mib=16000, gpu_count=1),
            GPUS[:2],
            "gpu 0 has 4096 MiB free, gpu 1 has 12288 MiB free, pod needs 16000",
        ),
        (
            req(gpu_memory_mib=12288, gpu_count=3),
            GPUS,
            "gpu 0 has 4096 MiB free, gpu 1 has 12288 MiB free, gpu 2 has 16384 MiB free, "
            "pod needs 3 GPUs with 12288 each",
        ),
    ],
)
def test_gpu_share_filter(pod: PodRequest, gpus: tuple[Gpu, ...], reason: str | None) -> None:
    assert gpu_share.filter(pod, node(gpus=gpus)) == reason


@pytest.mark.parametrize(
    ("count", "mib", "strategy", "chosen"),
    [
        (1, 4096, "binpack", (0,)),
        (1, 4096, "spread", (2,)),
        (2, 4096, "binpack", (0, 1)),
        (2, 4096, "spread", (1, 2)),
        (1, 8192, "binpack", (1,)),
        (4, 1, "binpack", ()),
    ],
)
def test_gpu_share_choose(
    count: int, mib: int, strategy: gpu_share.Strategy, chosen: tuple[int, ...]
) -> None:
    pod = req(gpu_memory_mib=mib, gpu_count=count)
    assert gpu_share.choose(pod, node(gpus=GPUS), strategy) == chosen


def test_gpu_share_score_binpack_prefers_fuller_gpus_spread_emptier() -> None:
    pod = req(gpu_memory_mib=4096, gpu_count=1)
    full = node(gpus=(Gpu(index=0, uuid="a", memory_mib=8192, allocated_mib=4096),))
    empty = node(gpus=(Gpu(index=0, uuid="a", memory_mib=8192),))
    assert gpu_share.score(pod, full) == 100
    assert gpu_share.score(pod, empty) == 50
    assert gpu_share.score(pod, full, "spread") == 0
    assert gpu_share.score(pod, empty, "spread") == 50
    assert gpu_share.score(req(), empty) is None


TOPO_GPUS = (
    Gpu(index=0, uuid="a", memory_mib=100, numa=0, pcie_switch="s0"),
    Gpu(index=1, uuid="b", memory_mib=100, numa=0, pcie_switch="s1"),
    Gpu(index=2, uuid="c", memory_mib=100, numa=1, pcie_switch="s2"),
    Gpu(index=3, uuid="d", memory_mib=100, numa=1, pcie_switch="s2"),
)


@pytest.mark.parametrize(
    ("nics", "count", "policy", "expected"),
    [
        # A NIC on s2 (numa 1): GPUs 2,3 share its switch.
        ((Nic(name="m0", numa=1, pcie_switch="s2"),), 2, "hard", (None, 100, (2, 3))),
        # A NIC on s1 (numa 0): one GPU on its switch...
        ((Nic(name="m0", numa=0, pcie_switch="s1"),), 1, "hard", (None, 100, (1,))),
        # ...two GPUs only on its NUMA node.
        ((Nic(name="m0", numa=0, pcie_switch="s9"),), 2, "hard", (None, 60, (0, 1))),
        # Three GPUs on no NUMA node: hard refuses, soft passes with 0.
        (
            (Nic(name="m0", numa=0, pcie_switch="s1"),),
            3,
            "hard",
            (
                "topology_policy hard: no NUMA node has 3 GPUs with 50 MiB free and 1 free RDMA "
                "NICs (numa 0: 2 GPUs, 1 NICs; numa 1: 2 GPUs, 0 NICs)",
                0,
                (0, 1, 2),
            ),
        ),
        ((Nic(name="m0", numa=0, pcie_switch="s1"),), 3, "soft", (None, 0, (0, 1, 2))),
        # No free NIC: refused whatever the policy.
        (
            (Nic(name="m0", numa=0, allocated=True),),
            1,
            "soft",
            ("node has 0 free RDMA NICs, pod needs 1", 0, None),
        ),
    ],
)
def test_rdma_topology(
    nics: tuple[Nic, ...],
    count: int,
    policy: str,
    expected: tuple[str | None, int, tuple[int, ...] | None],
) -> None:
    reason, score, gpus = expected
    pod = req(gpu_memory_mib=50, gpu_count=count, rdma=1, policy=policy)
    view = node(gpus=TOPO_GPUS, nics=nics)
    assert rdma_topology.filter(pod, view) == reason
    assert rdma_topology.score(pod, view) == score
    placement = rdma_topology.place(pod, view)
    assert (placement.gpus if placement else None) == gpus


def test_rdma_topology_ignores_pods_without_rdma() -> None:
    assert rdma_topology.filter(req(gpu_memory_mib=1, gpu_count=1), node()) is None
    assert rdma_topology.score(req(), node()) is None


def _two_switch_cnr() -> dict[str, object]:
    return cnr_json(
        "n",
        zones=[
            gpu_zone(0, numa=0, switch="s0"),
            gpu_zone(1, numa=1, switch="s1"),
            nic_zone("mlx5_0", numa=0, switch="s0"),
            nic_zone("mlx5_1", numa=1, switch="s1"),
        ],
    )


def test_rdma_placement_avoids_nics_taken_by_annotated_pods() -> None:
    cnr = parse_cnr(_two_switch_cnr())
    pod = req(gpu_memory_mib=1024, gpu_count=1, rdma=1, policy="hard")
    free = rdma_topology.place(pod, node_view(cnr, "n", []))
    assert free == rdma_topology.Placement(gpus=(0,), nics=("mlx5_0",), level="pcie_switch")
    holder = parse_pod(pod_json("h", rdma=1, annotations={RDMA_DEVICES_ANNOTATION: "mlx5_0"}))
    view = node_view(cnr, "n", [holder])
    # GPU 0 is still free, but its NIC is taken: the placement moves to switch s1.
    assert rdma_topology.place(pod, view) == rdma_topology.Placement(
        gpus=(1,), nics=("mlx5_1",), level="pcie_switch"
    )
    both = parse_pod(pod_json("b", rdma=2, annotations={RDMA_DEVICES_ANNOTATION: "mlx5_0,mlx5_1"}))
    full = node_view(cnr, "n", [both])
    assert rdma_topology.place(pod, full) is None
    assert rdma_topology.filter(pod, full) == "node has 0 free RDMA NICs, pod needs 1"
    assert rdma_topology.score(pod, full) == 0


async def test_assumed_nics_are_taken_until_the_assumption_expires() -> None:
    clock = FakeClock()
    state = ClusterState(clock=clock, assume_ttl_s=10.0)
    state.set_cnr(_two_switch_cnr())
    pod = parse_pod(pod_json("a", gpu_memory=1024, rdma=1))
    state.assume(pod, "n", (0,), ("mlx5_0",))
    view = state.view("n")
    assert [(n.name, n.allocated) for n in view.nics] == [("mlx5_0", True), ("mlx5_1", False)]
    assert view.gpus[0].allocated_mib == 1024
    await clock.advance(10.0)
    assert not any(n.allocated for n in state.view("n").nics)
