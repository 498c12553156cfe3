"""The extender over real HTTP on loopback, with kube-scheduler's payloads (Go field
names, as ``k8s.io/kube-scheduler/extender/v1`` encodes them). Cluster state is fed
straight into :class:`ClusterState`; the API-server path has its own test."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from katalyst.clock import FakeClock
from scheduler_plugins.extender import Extender, Strategies
from scheduler_plugins.server import make_app
from scheduler_plugins.state import ClusterState
from tests.unit.scheduler.helpers import GIB, cnr_json, gpu_zone, nic_zone, pod_json

TTL = 30.0


@dataclass
class RecordingBinder:
    calls: list[tuple[str, str, str, str, dict[str, str]]] = field(default_factory=list)
    fail: str | None = None

    async def bind(
        self, namespace: str, name: str, uid: str, node: str, annotations: Mapping[str, str]
    ) -> None:
        if self.fail:
            raise RuntimeError(self.fail)
        self.calls.append((namespace, name, uid, node, dict(annotations)))


@dataclass
class Harness:
    url: str
    session: aiohttp.ClientSession
    state: ClusterState
    binder: RecordingBinder
    clock: FakeClock

    async def post(self, verb: str, body: Any) -> Any:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        async with self.session.post(f"{self.url}/{verb}", data=data) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()

    async def status(self, verb: str, data: bytes) -> int:
        async with self.session.post(f"{self.url}/{verb}", data=data) as resp:
            return resp.status


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    clock = FakeClock()
    state = ClusterState(clock=clock, assume_ttl_s=TTL)
    binder = RecordingBinder()
    extender = Extender(state=state, binder=binder, strategies=Strategies())
    server = TestServer(make_app(extender, max_body_bytes=256 * 1024), host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession() as session:
        yield Harness(str(server.make_url("")).rstrip("/"), session, state, binder, clock)
    await server.close()


def names_args(pod: dict[str, Any], *names: str) -> dict[str, Any]:
    return {"Pod": pod, "Nodes": None, "NodeNames": list(names)}


def node_obj(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {},
        "status": {"allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"}},
    }


def full_args(pod: dict[str, Any], *names: str) -> dict[str, Any]:
    return {
        "Pod": pod,
        "Nodes": {"metadata": {}, "items": [node_obj(n) for n in names]},
        "NodeNames": None,
    }


def bind_args(pod: dict[str, Any], node: str) -> dict[str, Any]:
    meta = pod["metadata"]
    return {
        "PodName": meta["name"],
        "PodNamespace": meta["namespace"],
        "PodUID": meta["uid"],
        "Node": node,
    }


def reclaimed_cluster(h: Harness) -> None:
    h.state.set_cnr(cnr_json("big", millicpu=8000, memory=16 * GIB))
    h.state.set_cnr(cnr_json("small", millicpu=1000, memory=16 * GIB))
    h.state.set_pod(pod_json("busy", millicpu=6000, node="big"))


async def test_reclaimed_pod_names_mode_filter_prioritize_bind(harness: Harness) -> None:
    reclaimed_cluster(harness)
    pod = pod_json("r", millicpu=1500, memory=GIB)
    result = await harness.post("filter", names_args(pod, "big", "small", "ghost"))
    assert result == {
        "Nodes": None,
        "NodeNames": ["big"],
        "FailedNodes": {},
        "FailedAndUnresolvableNodes": {
            "small": "reclaimed-fit: reclaimed_millicpu: node has 1000 free, pod needs 1500",
            "ghost": "no CustomNodeResource for node ghost",
        },
        "Error": "",
    }
    scores = await harness.post("prioritize", names_args(pod, "big"))
    # least-allocated: cpu (6000+1500)/8000 used, memory 1/16 used -> ~5
    assert scores == [{"Host": "big", "Score": 5}]
    assert await harness.post("bind", bind_args(pod, "big")) == {"Error": ""}
    assert harness.binder.calls == [("default", "r", "uid-r", "big", {})]


async def test_a_resolvable_failure_is_only_failed(harness: Harness) -> None:
    reclaimed_cluster(harness)
    result = await harness.post("filter", names_args(pod_json("r", millicpu=3000), "big"))
    assert result["FailedNodes"] == {
        "big": "reclaimed-fit: reclaimed_millicpu: node has 2000 free, pod needs 3000"
    }
    assert result["NodeNames"] == []


async def test_reclaimed_pod_full_node_mode(harness: Harness) -> None:
    reclaimed_cluster(harness)
    result = await harness.post("filter", full_args(pod_json("r", millicpu=1500), "big", "small"))
    assert result["NodeNames"] is None
    assert [n["metadata"]["name"] for n in result["Nodes"]["items"]] == ["big"]
    assert result["Nodes"]["items"][0] == node_obj("big")
    assert list(result["FailedAndUnresolvableNodes"]) == ["small"]
    scores = await harness.post("prioritize", full_args(pod_json("r", millicpu=1500), "big"))
    assert scores == [{"Host": "big", "Score": 5}]


def gpu_cluster(h: Harness) -> None:
    h.state.set_cnr(cnr_json("g1", zones=[gpu_zone(0, memory=16384), gpu_zone(1, memory=16384)]))
    h.state.set_cnr(cnr_json("g2", zones=[gpu_zone(0, memory=8192, allocations={"x": 4096})]))


@pytest.mark.parametrize("mode", ["names", "full"])
async def test_gpu_pod_filter_prioritize_bind_writes_gpu_indices(
    harness: Harness, mode: str
) -> None:
    gpu_cluster(harness)
    pod = pod_json("g", gpu_memory=8192)
    make = names_args if mode == "names" else full_args
    result = await harness.post("filter", make(pod, "g1", "g2"))
    passed = (
        result["NodeNames"]
        if mode == "names"
        else [n["metadata"]["name"] for n in result["Nodes"]["items"]]
    )
    assert passed == ["g1"]
    assert result["FailedAndUnresolvableNodes"] == {}
    assert result["FailedNodes"] == {"g2": "gpu-share: gpu 0 has 4096 MiB free, pod needs 8192"}
    assert await harness.post("prioritize", make(pod, "g1")) == [{"Host": "g1", "Score": 5}]
    assert await harness.post("bind", bind_args(pod, "g1")) == {"Error": ""}
    assert harness.binder.calls[-1][3:] == ("g1", {"katalyst.kubewharf.io/gpu_indices": "0"})


async def test_the_assume_cache_prevents_a_double_booking(harness: Harness) -> None:
    harness.state.set_cnr(cnr_json("g", zones=[gpu_zone(0, memory=16384)]))
    first, second = pod_json("a", gpu_memory=12288), pod_json("b", gpu_memory=12288)
    # Both pass filter before either binds...
    assert (await harness.post("filter", names_args(first, "g")))["NodeNames"] == ["g"]
    assert (await harness.post("filter", names_args(second, "g")))["NodeNames"] == ["g"]
    # ...the first bind takes the share, the second is refused.
    assert await harness.post("bind", bind_args(first, "g")) == {"Error": ""}
    answer = await harness.post("bind", bind_args(second, "g"))
    assert answer["Error"] == (
        "pod default/b no longer fits node g: gpu-share: gpu 0 has 4096 MiB free, pod needs 12288"
    )
    # A new filter sees the assumed pod too.
    result = await harness.post("filter", names_args(second, "g"))
    assert result["FailedNodes"] == {"g": "gpu-share: gpu 0 has 4096 MiB free, pod needs 12288"}
    # When the binding shows up in the watch, the pod counts as bound (not twice).
    bound = pod_json(
        "a", gpu_memory=12288, node="g", annotations={"katalyst.kubewharf.io/gpu_indices": "0"}
    )
    harness.state.set_pod(bound)
    assert harness.state.assumed() == {}
    result = await harness.post("filter", names_args(second, "g"))
    assert result["FailedNodes"] == {"g": "gpu-share: gpu 0 has 4096 MiB free, pod needs 12288"}


async def test_an_assumed_pod_expires_when_its_binding_never_shows_up(harness: Harness) -> None:
    harness.state.set_cnr(cnr_json("g", zones=[gpu_zone(0, memory=16384)]))
    first, second = pod_json("a", gpu_memory=12288), pod_json("b", gpu_memory=12288)
    await harness.post("filter", names_args(first, "g"))
    assert await harness.post("bind", bind_args(first, "g")) == {"Error": ""}
    assert (await harness.post("filter", names_args(second, "g")))["NodeNames"] == []
    await harness.clock.advance(TTL - 1)
    assert (await harness.post("filter", names_args(second, "g")))["NodeNames"] == []
    await harness.clock.advance(1)
    assert (await harness.post("filter", names_args(second, "g")))["NodeNames"] == ["g"]


async def test_a_failed_bind_is_an_error_and_assumes_nothing(harness: Harness) -> None:
    harness.state.set_cnr(cnr_json("g", zones=[gpu_zone(0, memory=16384)]))
    pod = pod_json("a", gpu_memory=12288)
    await harness.post("filter", names_args(pod, "g"))
    harness.binder.fail = 'HTTP 409: pod a is already assigned to node "h"'
    answer = await harness.post("bind", bind_args(pod, "g"))
    assert answer["Error"].startswith("binding default/a to g: HTTP 409")
    assert harness.state.assumed() == {}


async def test_rdma_hard_policy_over_http(harness: Harness) -> None:
    harness.state.set_cnr(
        cnr_json(
            "split",
            zones=[
                gpu_zone(0, numa=0, switch="a"),
                gpu_zone(1, numa=1, switch="b"),
                nic_zone("mlx5_0", numa=1, switch="c"),
            ],
        )
    )
    harness.state.set_cnr(
        cnr_json(
            "aligned",
            zones=[
                gpu_zone(0, numa=0, switch="s0"),
                gpu_zone(1, numa=0, switch="s0"),
                nic_zone("mlx5_0", numa=0, switch="s0"),
            ],
        )
    )
    pod = pod_json("t", gpu_memory=1024, gpu_count=2, rdma=1, policy="hard")
    result = await harness.post("filter", names_args(pod, "split", "aligned"))
    assert result["NodeNames"] == ["aligned"]
    assert result["FailedAndUnresolvableNodes"]["split"].startswith(
        "rdma-topology: topology_policy hard: no NUMA node has 2 GPUs"
    )
    soft = pod_json("s", gpu_memory=1024, gpu_count=2, rdma=1)
    # gpu-share (binpack) 6 on both; rdma-topology 0 split, 100 aligned (one switch).
    assert await harness.post("prioritize", names_args(soft, "split", "aligned")) == [
        {"Host": "split", "Score": 0},
        {"Host": "aligned", "Score": 5},
    ]
    assert (await harness.post("filter", names_args(soft, "split")))["NodeNames"] == ["split"]


async def test_the_assume_cache_prevents_an_rdma_nic_double_booking(harness: Harness) -> None:
    # Two GPUs and one NIC on switch s0 (numa 0); the other NIC is on numa 1.
    harness.state.set_cnr(
        cnr_json(
            "r",
            zones=[
                gpu_zone(0, numa=0, switch="s0"),
                gpu_zone(1, numa=0, switch="s0"),
                nic_zone("mlx5_0", numa=0, switch="s0"),
                nic_zone("mlx5_1", numa=1, switch="s1"),
            ],
        )
    )
    first = pod_json("a", gpu_memory=1024, rdma=1, policy="hard")
    second = pod_json("b", gpu_memory=1024, rdma=1, policy="hard")
    # Both pass filter before either binds...
    assert (await harness.post("filter", names_args(first, "r")))["NodeNames"] == ["r"]
    assert (await harness.post("filter", names_args(second, "r")))["NodeNames"] == ["r"]
    # ...the first bind takes the aligned NIC and writes it next to its GPU...
    assert await harness.post("bind", bind_args(first, "r")) == {"Error": ""}
    assert harness.binder.calls[-1][3:] == (
        "r",
        {
            "katalyst.kubewharf.io/gpu_indices": "0",
            "katalyst.kubewharf.io/rdma_devices": "mlx5_0",
        },
    )
    # ...and the second, whose GPUs would still fit, finds no aligned NIC left.
    refused = (
        "rdma-topology: topology_policy hard: no NUMA node has 1 GPUs with 1024 MiB free "
        "and 1 free RDMA NICs (numa 0: 2 GPUs, 0 NICs; numa 1: 0 GPUs, 1 NICs)"
    )
    answer = await harness.post("bind", bind_args(second, "r"))
    assert answer["Error"] == f"pod default/b no longer fits node r: {refused}"
    assert len(harness.binder.calls) == 1
    result = await harness.post("filter", names_args(second, "r"))
    assert result["NodeNames"] == [] and result["FailedNodes"] == {"r": refused}
    # When the binding shows up in the watch, its annotation keeps the NIC taken.
    harness.state.set_pod(
        pod_json(
            "a",
            gpu_memory=1024,
            rdma=1,
            policy="hard",
            node="r",
            annotations=harness.binder.calls[-1][4],
        )
    )
    assert harness.state.assumed() == {}
    result = await harness.post("filter", names_args(second, "r"))
    assert result["FailedNodes"] == {"r": refused}
    # A soft pod still binds, to the NIC that is left.
    soft = pod_json("c", gpu_memory=1024, rdma=1)
    assert (await harness.post("filter", names_args(soft, "r")))["NodeNames"] == ["r"]
    assert await harness.post("bind", bind_args(soft, "r")) == {"Error": ""}
    assert harness.binder.calls[-1][4]["katalyst.kubewharf.io/rdma_devices"] == "mlx5_1"


async def test_a_single_nic_is_not_given_twice(harness: Harness) -> None:
    harness.state.set_cnr(cnr_json("one", zones=[gpu_zone(0), gpu_zone(1), nic_zone("mlx5_0")]))
    first, second = pod_json("a", gpu_memory=1024, rdma=1), pod_json("b", gpu_memory=1024, rdma=1)
    await harness.post("filter", names_args(first, "one"))
    await harness.post("filter", names_args(second, "one"))
    assert await harness.post("bind", bind_args(first, "one")) == {"Error": ""}
    answer = await harness.post("bind", bind_args(second, "one"))
    assert answer["Error"] == (
        "pod default/b no longer fits node one: "
        "rdma-topology: node has 0 free RDMA NICs, pod needs 1"
    )


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"Pod": {"metadata": {"name": "x"}}, "NodeNames": ["n"]}, "Pod.spec: missing"),
        ({"Pod": pod_json(millicpu=-1), "NodeNames": ["n"]}, "is negative"),
        ({"Pod": pod_json(memory="a lot"), "NodeNames": ["n"]}, "is not a quantity"),
        ({"Pod": pod_json(), "NodeNames": [1, 2]}, "NodeNames: not a list of node names"),
        ({"Pod": pod_json(), "Nodes": None, "NodeNames": None}, "neither NodeNames nor Nodes"),
        ({"Pod": pod_json(), "Nodes": {"items": [{}]}}, "Nodes.items[0].metadata.name"),
    ],
)
async def test_bad_filter_inputs_are_200_with_error_and_pass_no_node(
    harness: Harness, body: dict[str, Any], error: str
) -> None:
    harness.state.set_cnr(cnr_json("n"))
    result = await harness.post("filter", body)
    assert error in result["Error"]
    assert result["NodeNames"] is None and result["Nodes"] is None


async def test_bad_bodies_are_400_and_big_ones_413(harness: Harness) -> None:
    assert await harness.status("filter", b"{not json") == 400
    assert await harness.status("prioritize", b"[1, 2]") == 400
    assert await harness.status("bind", b"\xff\xfe") == 400
    assert await harness.status("filter", b" " * (256 * 1024 + 1)) == 413


async def test_bad_bind_and_prioritize_inputs(harness: Harness) -> None:
    assert (await harness.post("bind", {"PodName": "a"}))["Error"] == "PodNamespace: missing"
    assert await harness.post("prioritize", {"Pod": pod_json(), "NodeNames": "n"}) == []
    scores = await harness.post("prioritize", names_args({"metadata": {}}, "n"))
    assert scores == [{"Host": "n", "Score": 0}]
    ghost = pod_json("g", gpu_memory=1)
    await harness.post("filter", names_args(ghost, "nowhere"))
    answer = await harness.post("bind", bind_args(ghost, "nowhere"))
    assert answer == {"Error": "no CustomNodeResource for node nowhere"}
    assert harness.binder.calls == []


async def test_remembered_verdicts_follow_cnr_and_pod_changes(harness: Harness) -> None:
    harness.state.set_cnr(cnr_json("g", zones=[gpu_zone(0, memory=16384)]))
    pod = pod_json("a", gpu_memory=8192)
    assert (await harness.post("filter", names_args(pod, "g")))["NodeNames"] == ["g"]
    # Same shape, new CNR: the verdict is recomputed.
    harness.state.set_cnr(cnr_json("g", zones=[gpu_zone(0, memory=4096)]))
    twin = pod_json("b", gpu_memory=8192)
    result = await harness.post("filter", names_args(twin, "g"))
    assert result["FailedAndUnresolvableNodes"] == {
        "g": "gpu-share: gpu 0 has 4096 MiB free, pod needs 8192"
    }
    # Same shape, a pod bound on the node: recomputed too.
    harness.state.set_cnr(cnr_json("g", zones=[gpu_zone(0, memory=16384)]))
    assert (await harness.post("filter", names_args(twin, "g")))["NodeNames"] == ["g"]
    harness.state.set_pod(
        pod_json(
            "c", gpu_memory=12288, node="g", annotations={"katalyst.kubewharf.io/gpu_indices": "0"}
        )
    )
    result = await harness.post("filter", names_args(twin, "g"))
    assert result["FailedNodes"] == {"g": "gpu-share: gpu 0 has 4096 MiB free, pod needs 8192"}
