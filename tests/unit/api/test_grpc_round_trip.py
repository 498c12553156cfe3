"""A real gRPC round trip over a unix socket, as the kubelet talks to a plugin.

One grpc.server serves both the plugin watcher's Registration service and the
ResourcePlugin service on one socket, the way every plugin in the agent does;
the client plays the kubelet.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from katalyst.api.pluginregistration import api_pb2 as reg_pb2
from katalyst.api.pluginregistration import api_pb2_grpc as reg_grpc
from katalyst.api.resourceplugin.v1alpha1 import api_pb2 as rp_pb2
from katalyst.api.resourceplugin.v1alpha1 import api_pb2_grpc as rp_grpc

# The UNIX socket path limit (sun_path) is 108 bytes including the NUL.
_SUN_PATH_MAX = 107


class _Registration(reg_grpc.RegistrationServicer):
    """Answers the plugin watcher like a cpu plugin, and records its verdicts."""

    def __init__(self) -> None:
        self.statuses: list[reg_pb2.RegistrationStatus] = []

    def GetInfo(
        self, request: reg_pb2.InfoRequest, context: grpc.ServicerContext
    ) -> reg_pb2.PluginInfo:
        return reg_pb2.PluginInfo(
            type="ResourcePlugin", name="cpu", supported_versions=["v1alpha1"]
        )

    def NotifyRegistrationStatus(
        self, request: reg_pb2.RegistrationStatus, context: grpc.ServicerContext
    ) -> reg_pb2.RegistrationStatusResponse:
        self.statuses.append(request)
        return reg_pb2.RegistrationStatusResponse()


class _CpuPlugin(rp_grpc.ResourcePluginServicer):
    """Allocates the first CPUs of the hinted NUMA node; everything else is left
    to the generated base class, which answers UNIMPLEMENTED."""

    def GetResourcePluginOptions(
        self, request: rp_pb2.Empty, context: grpc.ServicerContext
    ) -> rp_pb2.ResourcePluginOptions:
        return rp_pb2.ResourcePluginOptions(
            pre_start_required=False, with_topology_alignment=True, need_reconcile=True
        )

    def Allocate(
        self, request: rp_pb2.ResourceRequest, context: grpc.ServicerContext
    ) -> rp_pb2.ResourceAllocationResponse:
        cores = int(request.resource_requests["cpu"])
        numa = request.hint.nodes[0]
        info = rp_pb2.ResourceAllocationInfo(
            oci_property_name="CpusetCpus",
            is_node_resource=True,
            is_scalar_resource=True,
            allocated_quantity=float(cores),
            allocation_result=f"0-{cores - 1}",
            envs={"CPUSET_NUMA": str(numa)},
            resource_hints=rp_pb2.ListOfTopologyHints(hints=[request.hint]),
            topology_assignments={numa: cores},
        )
        return rp_pb2.ResourceAllocationResponse(
            pod_uid=request.pod_uid,
            pod_namespace=request.pod_namespace,
            pod_name=request.pod_name,
            container_name=request.container_name,
            container_type=request.container_type,
            container_index=request.container_index,
            resource_name=request.resource_name,
            allocation_result=rp_pb2.ResourceAllocation(
                resource_allocation={request.resource_name: info}
            ),
            native_qos_class=request.native_qos_class,
        )


@dataclass(frozen=True)
class _Served:
    """What the fixture hands a test: the registration servicer and a client channel."""

    registration: _Registration
    channel: grpc.Channel


@pytest.fixture
def served(tmp_path: Path) -> Iterator[_Served]:
    socket = tmp_path / "cpu.sock"
    assert len(str(socket)) <= _SUN_PATH_MAX, f"socket path too long for AF_UNIX: {socket}"
    registration = _Registration()
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    reg_grpc.add_RegistrationServicer_to_server(registration, server)
    rp_grpc.add_ResourcePluginServicer_to_server(_CpuPlugin(), server)
    assert server.add_insecure_port(f"unix://{socket}") != 0, f"cannot bind {socket}"
    server.start()
    channel = grpc.insecure_channel(f"unix://{socket}")
    try:
        yield _Served(registration=registration, channel=channel)
    finally:
        channel.close()
        server.stop(grace=None).wait()


def _request() -> rp_pb2.ResourceRequest:
    return rp_pb2.ResourceRequest(
        pod_uid="3f6c1a52-uid",
        pod_namespace="default",
        pod_name="web-0",
        container_name="main",
        container_type=rp_pb2.MAIN,
        container_index=0,
        resource_name="cpu",
        hint=rp_pb2.TopologyHint(nodes=[1], preferred=True),
        resource_requests={"cpu": 2.0},
        annotations={"katalyst.kubewharf.io/qos_level": "dedicated_cores"},
        native_qos_class="Guaranteed",
    )


def _check_allocation(response: rp_pb2.ResourceAllocationResponse) -> None:
    assert response.pod_uid == "3f6c1a52-uid"
    assert response.container_type == rp_pb2.MAIN
    assert response.native_qos_class == "Guaranteed"
    info = response.allocation_result.resource_allocation["cpu"]
    assert info.oci_property_name == "CpusetCpus"
    assert info.allocated_quantity == 2.0
    assert info.allocation_result == "0-1"
    assert dict(info.envs) == {"CPUSET_NUMA": "1"}
    assert list(info.resource_hints.hints) == [rp_pb2.TopologyHint(nodes=[1], preferred=True)]
    assert dict(info.topology_assignments) == {1: 2}


def test_kubelet_conversation_through_generated_stubs(served: _Served) -> None:
    registration = reg_grpc.RegistrationStub(served.channel)
    plugin = rp_grpc.ResourcePluginStub(served.channel)

    info = registration.GetInfo(reg_pb2.InfoRequest(), timeout=10)
    assert info == reg_pb2.PluginInfo(
        type="ResourcePlugin", name="cpu", supported_versions=["v1alpha1"]
    )

    verdict = reg_pb2.RegistrationStatus(plugin_registered=False, error="resource taken")
    registration.NotifyRegistrationStatus(verdict, timeout=10)
    assert served.registration.statuses == [verdict]

    options = plugin.GetResourcePluginOptions(rp_pb2.Empty(), timeout=10)
    assert options.with_topology_alignment
    assert options.need_reconcile
    assert not options.pre_start_required

    _check_allocation(plugin.Allocate(_request(), timeout=10))


def test_server_answers_on_the_kubelets_method_paths(served: _Served) -> None:
    # The Go kubelet dials fixed method paths; call them by name, without the
    # generated stubs, so a renamed package or service would fail here.
    get_info = served.channel.unary_unary(
        "/pluginregistration.Registration/GetInfo",
        request_serializer=reg_pb2.InfoRequest.SerializeToString,
        response_deserializer=reg_pb2.PluginInfo.FromString,
    )
    assert get_info(reg_pb2.InfoRequest(), timeout=10).name == "cpu"

    allocate = served.channel.unary_unary(
        "/resourceplugin.v1alpha1.ResourcePlugin/Allocate",
        request_serializer=rp_pb2.ResourceRequest.SerializeToString,
        response_deserializer=rp_pb2.ResourceAllocationResponse.FromString,
    )
    _check_allocation(allocate(_request(), timeout=10))


def test_an_rpc_the_servicer_does_not_override_is_unimplemented(served: _Served) -> None:
    plugin = rp_grpc.ResourcePluginStub(served.channel)
    with pytest.raises(grpc.RpcError) as raised:
        plugin.RemovePod(rp_pb2.RemovePodRequest(pod_uid="3f6c1a52-uid"), timeout=10)
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
