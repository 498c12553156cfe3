"""Admission through the kubelet emulator: hints, Allocate, errors, RemovePod, reconcile."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import grpc
import pytest

from agent.qrm.server import PluginServer
from agent.qrm.types import ContainerType, NodeAllocations, TopologyHint
from katalyst.api.resourceplugin.v1alpha1 import api_pb2 as rp_pb2
from katalyst.clock import FakeClock
from katalyst.qos import (
    MEMORY_ENHANCEMENT_ANNOTATION,
    QOS_LEVEL_ANNOTATION,
    QoSLevel,
)
from tests.integration.fake_policy import REJECT_ANNOTATION, FakePolicy
from tests.support.kubelet import (
    AllocationDict,
    Container,
    KubeletEmulator,
    MergedHint,
    PluginCallError,
    Pod,
    TopologyAffinityError,
    TopologyPolicy,
)

UID = "7d3c8e4a-0b9f-4c1e-9a55-2f0c1b6d8e90"


def _pod(
    *,
    uid: str = UID,
    annotations: dict[str, str] | None = None,
    containers: tuple[Container, ...] = (Container("app", {"cpu": 2.0}),),
) -> Pod:
    return Pod(uid=uid, name="web-0", containers=containers, annotations=annotations or {})


async def test_allocate_round_trip_preserves_every_field(
    policy: FakePolicy, kubelet: KubeletEmulator
) -> None:
    annotations = {
        QOS_LEVEL_ANNOTATION: "dedicated_cores",
        MEMORY_ENHANCEMENT_ANNOTATION: json.dumps({"numa_binding": "true"}),
        "example.com/note": "kept as is",
    }
    pod = Pod(
        uid=UID,
        name="web-0",
        namespace="shop",
        containers=(
            Container("setup", {"cpu": 1.0}, type=rp_pb2.INIT, index=0),
            Container("app", {"cpu": 2.0}, type=rp_pb2.MAIN, index=1),
        ),
        annotations=annotations,
        labels={"app": "web", "tier": "frontend"},
        native_qos_class="Guaranteed",
        pod_role="leader",
        pod_type="online",
    )
    admitted = await kubelet.admit(pod)

    # What the policy received: GetTopologyHints then Allocate, per container.
    assert [(r.container_name, r.hint) for r in policy.seen] == [
        ("setup", None),
        ("setup", TopologyHint(frozenset({0}), preferred=True)),
        ("app", None),
        ("app", TopologyHint(frozenset({0}), preferred=True)),
    ]
    request = policy.seen[3]
    assert request.pod_uid == UID
    assert (request.pod_namespace, request.pod_name) == ("shop", "web-0")
    assert request.container_type is ContainerType.MAIN
    assert request.container_index == 1
    assert policy.seen[1].container_type is ContainerType.INIT
    assert request.resource_name == "cpu"
    assert request.requests == {"cpu": 2.0}
    assert request.level is QoSLevel.DEDICATED_CORES
    assert request.enhancements.memory.numa_binding
    assert request.labels == {"app": "web", "tier": "frontend"}
    assert request.annotations == annotations
    assert request.native_qos_class == "Guaranteed"
    assert (request.pod_role, request.pod_type) == ("leader", "online")

    # What the kubelet got back: identity echoed, every allocation field.
    app = admitted["app"]
    assert app.hint == MergedHint(frozenset({0}), preferred=True)
    hints = app.hints["cpu"]
    assert [(list(h.nodes), h.preferred) for h in hints.resource_hints["cpu"].hints] == [
        ([0], True),
        ([1], True),
        ([0, 1], False),
    ]
    response = app.responses["cpu"]
    for answer in (hints, response):
        assert answer.pod_uid == UID
        assert (answer.pod_namespace, answer.pod_name) == ("shop", "web-0")
        assert answer.container_name == "app"
        assert answer.container_type == rp_pb2.MAIN
        assert answer.container_index == 1
        assert (answer.pod_role, answer.pod_type) == ("leader", "online")
        assert answer.resource_name == "cpu"
        assert dict(answer.labels) == {"app": "web", "tier": "frontend"}
        assert dict(answer.annotations) == annotations
        assert answer.native_qos_class == "Guaranteed"
    # The init container took 1 of NUMA 0's 4 CPUs; the app's 2 still fit there.
    assert app.allocations == {
        "cpu": {
            "cpu": AllocationDict(
                oci_property_name="CpusetCpus",
                is_node_resource=True,
                is_scalar_resource=True,
                allocated_quantity=2.0,
                allocation_result="0",
                envs={"FAKE_NUMA": "0", "FAKE_LEVEL": "dedicated_cores"},
                annotations={"fake.katalyst.io/container": "app"},
                resource_hints=[{"nodes": [0], "preferred": True}],
                topology_assignments={0: 2},
            )
        }
    }


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (QOS_LEVEL_ANNOTATION, "gold_cores"),
        (QOS_LEVEL_ANNOTATION, ""),
        (MEMORY_ENHANCEMENT_ANNOTATION, "{not json"),
        (MEMORY_ENHANCEMENT_ANNOTATION, json.dumps({"numa_binding": "yes"})),
    ],
)
async def test_a_malformed_annotation_is_invalid_argument_naming_the_key(
    policy: FakePolicy, kubelet: KubeletEmulator, key: str, value: str
) -> None:
    with pytest.raises(PluginCallError) as raised:
        await kubelet.admit(_pod(annotations={key: value}))
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.rpc == "GetTopologyHints"
    assert key in raised.value.details
    assert policy.seen == []  # never reached the policy
    # The server still serves the next request.
    admitted = await kubelet.admit(_pod(uid="good-pod"))
    assert admitted["app"].allocations["cpu"]["cpu"]["allocated_quantity"] == 2.0


@pytest.mark.parametrize("name", ["../x", "App", "a/b", "", "x" * 64])
async def test_an_invalid_container_name_is_invalid_argument(
    policy: FakePolicy, kubelet: KubeletEmulator, name: str
) -> None:
    with pytest.raises(PluginCallError) as raised:
        await kubelet.admit(_pod(containers=(Container(name, {"cpu": 1.0}),)))
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert '"container_name"' in raised.value.details
    assert policy.seen == []


@pytest.mark.parametrize("uid", ["../../etc", "a/b", "", "-leading-dash", "u" * 129])
async def test_an_invalid_pod_uid_is_invalid_argument(
    policy: FakePolicy, kubelet: KubeletEmulator, uid: str
) -> None:
    with pytest.raises(PluginCallError) as raised:
        await kubelet.admit(_pod(uid=uid))
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert '"pod_uid"' in raised.value.details
    with pytest.raises(PluginCallError) as raised:
        await kubelet.remove(uid)
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert '"pod_uid"' in raised.value.details
    assert policy.seen == []
    assert policy.removed == []


def _raw_request(**fields: object) -> rp_pb2.ResourceRequest:
    request = rp_pb2.ResourceRequest(
        pod_uid=UID,
        pod_namespace="default",
        pod_name="web-0",
        container_name="app",
        container_type=rp_pb2.MAIN,
        resource_name="cpu",
        resource_requests={"cpu": 1.0},
    )
    for name, value in fields.items():
        if name == "resource_requests":
            assert isinstance(value, dict)
            request.resource_requests.clear()
            request.resource_requests.update(value)
        else:
            setattr(request, name, value)
    return request


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"resource_name": "memory"}, '"resource_name"'),
        ({"container_type": 7}, '"container_type"'),
        ({"resource_requests": {"cpu": float("nan")}}, '"resource_requests[cpu]"'),
        ({"resource_requests": {"cpu": -1.0}}, '"resource_requests[cpu]"'),
    ],
)
async def test_other_malformed_request_fields_are_invalid_argument(
    policy: FakePolicy, kubelet: KubeletEmulator, fields: dict[str, object], named: str
) -> None:
    stub = kubelet.plugin("cpu").stub
    for call in (stub.GetTopologyHints, stub.Allocate):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(_raw_request(**fields), timeout=10)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert named in (raised.value.details() or "")
    assert policy.seen == []


async def test_a_refused_allocation_is_resource_exhausted_with_the_policys_message(
    policy: FakePolicy, server: PluginServer, socket_dir: Path
) -> None:
    # best-effort: the kubelet admits on a non-preferred hint, so Allocate runs.
    async with KubeletEmulator(numa_nodes=(0, 1), topology_policy="best-effort") as kubelet:
        await kubelet.discover(socket_dir)
        with pytest.raises(PluginCallError) as raised:
            await kubelet.admit(_pod(containers=(Container("app", {"cpu": 6.0}),)))
    assert raised.value.rpc == "Allocate"
    assert raised.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert raised.value.details == "cpu: asked 6 on NUMA [0, 1], free {0: 4.0, 1: 4.0}"


async def test_the_restricted_policy_rejects_without_calling_allocate(
    policy: FakePolicy, kubelet: KubeletEmulator
) -> None:
    with pytest.raises(TopologyAffinityError) as raised:
        await kubelet.admit(_pod(containers=(Container("app", {"cpu": 6.0}),)))
    assert raised.value.best == MergedHint(frozenset({0, 1}), preferred=False)
    assert [r.hint for r in policy.seen] == [None]  # hints only


async def test_invalid_request_from_the_policy_is_invalid_argument(
    kubelet: KubeletEmulator,
) -> None:
    with pytest.raises(PluginCallError) as raised:
        await kubelet.admit(_pod(annotations={REJECT_ANNOTATION: "no thanks"}))
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details == f"{REJECT_ANNOTATION}: no thanks"


async def test_a_policy_bug_is_internal_logged_and_the_server_keeps_serving(
    policy: FakePolicy, kubelet: KubeletEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    policy.fail_next = KeyError("secret internal detail")
    with (
        caplog.at_level(logging.ERROR, logger="agent.qrm.server"),
        pytest.raises(PluginCallError) as raised,
    ):
        await kubelet.admit(_pod())
    assert raised.value.code == grpc.StatusCode.INTERNAL
    assert "KeyError" in raised.value.details
    assert "secret internal detail" not in raised.value.details  # short, no internals
    (record,) = [r for r in caplog.records if r.exc_info]
    assert record.exc_info is not None and record.exc_info[0] is KeyError

    admitted = await kubelet.admit(_pod())
    assert admitted["app"].allocations["cpu"]["cpu"]["allocation_result"] == "0"


async def test_remove_pod_releases_and_unknown_pods_are_fine(
    policy: FakePolicy, kubelet: KubeletEmulator
) -> None:
    await kubelet.admit(_pod())
    await kubelet.admit(_pod(uid="other-pod"))
    assert set((await kubelet.reconcile())["cpu"]) == {UID, "other-pod"}

    await kubelet.remove(UID)
    await kubelet.remove("never-admitted")
    assert policy.removed == [UID, "never-admitted"]
    assert set((await kubelet.reconcile())["cpu"]) == {"other-pod"}


async def test_get_resources_allocation_shape(kubelet: KubeletEmulator) -> None:
    assert await kubelet.reconcile() == {"cpu": {}}
    await kubelet.admit(
        _pod(containers=(Container("app", {"cpu": 2.0}), Container("log", {"cpu": 3.0})))
    )
    assert await kubelet.reconcile() == {
        "cpu": {
            UID: {
                "app": {
                    "cpu": AllocationDict(
                        oci_property_name="CpusetCpus",
                        is_node_resource=True,
                        is_scalar_resource=True,
                        allocated_quantity=2.0,
                        allocation_result="0",
                        envs={"FAKE_NUMA": "0", "FAKE_LEVEL": "shared_cores"},
                        annotations={"fake.katalyst.io/container": "app"},
                        resource_hints=[{"nodes": [0], "preferred": True}],
                        topology_assignments={0: 2},
                    )
                },
                "log": {
                    "cpu": AllocationDict(
                        oci_property_name="CpusetCpus",
                        is_node_resource=True,
                        is_scalar_resource=True,
                        allocated_quantity=3.0,
                        allocation_result="1",
                        envs={"FAKE_NUMA": "1", "FAKE_LEVEL": "shared_cores"},
                        annotations={"fake.katalyst.io/container": "log"},
                        resource_hints=[{"nodes": [1], "preferred": True}],
                        topology_assignments={1: 3},
                    )
                },
            }
        }
    }


async def test_on_change_follows_allocate_and_remove_pod_only(
    socket_dir: Path, clock: FakeClock
) -> None:
    changes: list[int] = []

    async def on_change() -> None:
        changes.append(len(changes))

    async with (
        PluginServer(FakePolicy(), socket_dir=socket_dir, clock=clock, on_change=on_change),
        KubeletEmulator(numa_nodes=(0, 1)) as kubelet,
    ):
        await kubelet.discover(socket_dir)
        assert changes == []
        await kubelet.admit(_pod())  # GetTopologyHints + Allocate
        assert len(changes) == 1
        await kubelet.reconcile()
        assert len(changes) == 1
        await kubelet.remove(UID)
        assert len(changes) == 2


async def test_a_failing_on_change_is_logged_and_the_answer_still_goes_out(
    socket_dir: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    async def on_change() -> None:
        raise OSError("disk full")

    policy = FakePolicy()
    async with (
        PluginServer(policy, socket_dir=socket_dir, clock=clock, on_change=on_change),
        KubeletEmulator(numa_nodes=(0, 1)) as kubelet,
    ):
        await kubelet.discover(socket_dir)
        with caplog.at_level(logging.ERROR, logger="agent.qrm.server"):
            admitted = await kubelet.admit(_pod())
            await kubelet.remove(UID)
    assert admitted["app"].allocations["cpu"]["cpu"]["allocated_quantity"] == 2.0
    assert policy.removed == [UID]
    failures = [r for r in caplog.records if r.exc_info and r.exc_info[0] is OSError]
    assert len(failures) == 2


async def test_policy_calls_are_serialized_with_the_checkpoint(
    socket_dir: Path, clock: FakeClock
) -> None:
    # An Allocate holds the lock until its on_change (the checkpoint) returns; a
    # concurrent GetResourcesAllocation must not see the policy meanwhile.
    events: list[str] = []
    release = asyncio.Event()

    async def on_change() -> None:
        events.append("checkpoint-start")
        await release.wait()
        events.append("checkpoint-end")

    class Recording(FakePolicy):
        def allocations(self) -> NodeAllocations:
            events.append("allocations")
            return super().allocations()

    async with (
        PluginServer(Recording(), socket_dir=socket_dir, clock=clock, on_change=on_change),
        KubeletEmulator(numa_nodes=(0, 1)) as kubelet,
    ):
        await kubelet.discover(socket_dir)
        admitting = asyncio.create_task(kubelet.admit(_pod()))
        while "checkpoint-start" not in events:
            await asyncio.sleep(0.01)
        reconciling = asyncio.create_task(kubelet.reconcile())
        # Give the reconcile call ample time to reach the server, then release.
        await asyncio.sleep(0.2)
        release.set()
        await admitting
        await reconciling
    assert events == ["checkpoint-start", "checkpoint-end", "allocations"]


async def test_hints_from_two_plugins_are_merged(socket_dir: Path, clock: FakeClock) -> None:
    cpu = FakePolicy(preferred_numa=(0, 1))
    memory = FakePolicy(
        plugin_name="qrm_fake_memory",
        resource_name="memory",
        oci_property_name="CpusetMems",
        numa_capacity={0: 8e9, 1: 8e9},
        preferred_numa=(1,),
    )
    async with (
        PluginServer(cpu, socket_dir=socket_dir, clock=clock),
        PluginServer(memory, socket_dir=socket_dir, clock=clock),
        KubeletEmulator(numa_nodes=(0, 1)) as kubelet,
    ):
        found = await kubelet.discover(socket_dir)
        assert sorted(p.resource for p in found) == ["cpu", "memory"]
        admitted = await kubelet.admit(
            _pod(containers=(Container("app", {"cpu": 2.0, "memory": 1e9}),))
        )
    app = admitted["app"]
    # cpu prefers {0} or {1}, memory only {1}: the intersection is NUMA 1.
    assert app.hint == MergedHint(frozenset({1}), preferred=True)
    assert app.allocations["cpu"]["cpu"]["allocation_result"] == "1"
    assert app.allocations["memory"]["memory"]["oci_property_name"] == "CpusetMems"
    assert app.allocations["memory"]["memory"]["allocation_result"] == "1"
    assert memory.seen[-1].requests == {"memory": 1e9}
    assert cpu.seen[-1].requests == {"cpu": 2.0}


@pytest.mark.parametrize(
    ("topology_policy", "admitted_on"),
    [("restricted", None), ("best-effort", MergedHint(frozenset({0}), preferred=False))],
)
async def test_disjoint_preferences(
    socket_dir: Path,
    clock: FakeClock,
    topology_policy: TopologyPolicy,
    admitted_on: MergedHint | None,
) -> None:
    cpu = FakePolicy(preferred_numa=(0,))
    memory = FakePolicy(plugin_name="qrm_fake_memory", resource_name="memory", preferred_numa=(1,))
    async with (
        PluginServer(cpu, socket_dir=socket_dir, clock=clock),
        PluginServer(memory, socket_dir=socket_dir, clock=clock),
        KubeletEmulator(
            numa_nodes=(0, 1),
            topology_policy=topology_policy,
        ) as kubelet,
    ):
        await kubelet.discover(socket_dir)
        pod = _pod(containers=(Container("app", {"cpu": 1.0, "memory": 1.0}),))
        if admitted_on is None:
            with pytest.raises(TopologyAffinityError):
                await kubelet.admit(pod)
        else:
            # No preferred intersection: the narrowest merged hint, {0} (cpu's
            # preferred {0} with memory's non-preferred {0, 1}), not preferred.
            assert (await kubelet.admit(pod))["app"].hint == admitted_on


async def test_reclaimed_resources_go_to_the_cpu_plugin(
    policy: FakePolicy, kubelet: KubeletEmulator
) -> None:
    reclaimed = "resource.katalyst.kubewharf.io/reclaimed_millicpu"
    await kubelet.admit(
        _pod(
            annotations={QOS_LEVEL_ANNOTATION: "reclaimed_cores"},
            containers=(Container("batch", {reclaimed: 2000.0}),),
        )
    )
    assert policy.seen[-1].requests == {reclaimed: 2000.0}
    assert policy.seen[-1].level is QoSLevel.RECLAIMED_CORES


async def test_a_timed_out_allocate_still_completes_its_checkpoint(
    socket_dir: Path, clock: FakeClock
) -> None:
    # gRPC cancels the handler when the kubelet's deadline passes; the state
    # change and its checkpoint must not be torn apart by that.
    events: list[str] = []
    release = asyncio.Event()

    async def on_change() -> None:
        events.append("checkpoint-start")
        await release.wait()
        events.append("checkpoint-end")

    policy = FakePolicy()
    async with (
        PluginServer(policy, socket_dir=socket_dir, clock=clock, on_change=on_change),
        KubeletEmulator(numa_nodes=(0, 1)) as kubelet,
    ):
        await kubelet.discover(socket_dir)
        request = rp_pb2.ResourceRequest(
            pod_uid=UID,
            pod_name="web-0",
            container_name="app",
            container_type=rp_pb2.MAIN,
            resource_name="cpu",
            resource_requests={"cpu": 1.0},
            hint=rp_pb2.TopologyHint(nodes=[1], preferred=True),
        )
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await kubelet.plugin("cpu").stub.Allocate(request, timeout=0.2)
        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        release.set()
        reconciled = await kubelet.reconcile()  # waits for the policy lock
    assert events == ["checkpoint-start", "checkpoint-end"]
    assert reconciled["cpu"][UID]["app"]["cpu"]["allocation_result"] == "1"
