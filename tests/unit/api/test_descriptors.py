"""The generated descriptors say what the architecture document says.

Each table below is transcribed from the "Kubelet QoS resource manager hook:
wire protocol" section of the architecture document (types the document leaves
implicit, such as labels being map<string,string>, come from the kubelet's own
definition). A changed tag number or type breaks the patched kubelet on the
other end of the socket, silently: protobuf would just drop or misread the
field. So every field is pinned here.
"""

from __future__ import annotations

import struct
from types import MappingProxyType

import pytest
from google.protobuf.descriptor import (
    Descriptor,
    FieldDescriptor,
    FileDescriptor,
    ServiceDescriptor,
)

from katalyst.api.pluginregistration import api_pb2 as reg_pb2
from katalyst.api.resourceplugin.v1alpha1 import api_pb2 as rp_pb2

_SCALARS = MappingProxyType(
    {
        FieldDescriptor.TYPE_STRING: "string",
        FieldDescriptor.TYPE_BOOL: "bool",
        FieldDescriptor.TYPE_DOUBLE: "double",
        FieldDescriptor.TYPE_UINT64: "uint64",
        FieldDescriptor.TYPE_INT64: "int64",
    }
)


def _type_name(field: FieldDescriptor) -> str:
    """Render a field's type as it is written in a .proto file."""
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        message = field.message_type
        assert message is not None
        if message.GetOptions().map_entry:
            key = message.fields_by_name["key"]
            value = message.fields_by_name["value"]
            return f"map<{_type_name(key)},{_type_name(value)}>"
        name = message.name
    elif field.type == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        name = field.enum_type.name
    else:
        name = _SCALARS[field.type]
    return f"repeated {name}" if field.is_repeated else name


# The nine identity fields that the request and both responses share.
_CONTAINER_IDENTITY = (
    ("pod_uid", 1, "string"),
    ("pod_namespace", 2, "string"),
    ("pod_name", 3, "string"),
    ("container_name", 4, "string"),
    ("container_type", 5, "ContainerType"),
    ("container_index", 6, "uint64"),
    ("pod_role", 7, "string"),
    ("pod_type", 8, "string"),
    ("resource_name", 9, "string"),
)

_RESOURCE_PLUGIN_FIELDS: dict[str, tuple[tuple[str, int, str], ...]] = {
    "ResourceRequest": (
        *_CONTAINER_IDENTITY,
        ("hint", 10, "TopologyHint"),
        ("resource_requests", 11, "map<string,double>"),
        ("labels", 12, "map<string,string>"),
        ("annotations", 13, "map<string,string>"),
        ("native_qos_class", 14, "string"),
    ),
    "TopologyHint": (
        ("nodes", 1, "repeated uint64"),
        ("preferred", 2, "bool"),
    ),
    "ListOfTopologyHints": (("hints", 1, "repeated TopologyHint"),),
    "ResourceAllocationResponse": (
        *_CONTAINER_IDENTITY,
        ("allocation_result", 10, "ResourceAllocation"),
        ("labels", 11, "map<string,string>"),
        ("annotations", 12, "map<string,string>"),
        ("native_qos_class", 13, "string"),
    ),
    "ResourceAllocation": (("resource_allocation", 1, "map<string,ResourceAllocationInfo>"),),
    "ResourceAllocationInfo": (
        ("oci_property_name", 1, "string"),
        ("is_node_resource", 2, "bool"),
        ("is_scalar_resource", 3, "bool"),
        ("allocated_quantity", 4, "double"),
        ("allocation_result", 5, "string"),
        ("envs", 6, "map<string,string>"),
        ("annotations", 7, "map<string,string>"),
        ("resource_hints", 8, "ListOfTopologyHints"),
        ("topology_assignments", 9, "map<uint64,uint64>"),
    ),
    "ResourceHintsResponse": (
        *_CONTAINER_IDENTITY,
        ("resource_hints", 10, "map<string,ListOfTopologyHints>"),
        ("labels", 11, "map<string,string>"),
        ("annotations", 12, "map<string,string>"),
        ("native_qos_class", 13, "string"),
    ),
    "RemovePodRequest": (("pod_uid", 1, "string"),),
    "GetResourcesAllocationResponse": (("pod_resources", 1, "map<string,ContainerResources>"),),
    "ContainerResources": (("container_resources", 1, "map<string,ResourceAllocation>"),),
    "ResourcePluginOptions": (
        ("pre_start_required", 1, "bool"),
        ("with_topology_alignment", 2, "bool"),
        ("need_reconcile", 3, "bool"),
    ),
}

# Beyond the architecture document: fields of the same service in Katalyst's
# patched kubelet (kubewharf/kubelet pkg/apis/resourceplugin/v1alpha1/api.proto),
# pinned here as well so that a slip in them cannot go unnoticed either.
_UPSTREAM_EXTRA_FIELDS: dict[str, tuple[tuple[str, int, str], ...]] = {
    "ResourceRequest": (("runtime_class", 15, "string"),),
    "ResourcePluginOptions": (
        ("associated_devices", 4, "repeated string"),
        ("extra_resources", 5, "repeated string"),
    ),
    "ResourceAllocationInfo": (
        ("mounts", 10, "repeated Mount"),
        ("devices", 11, "repeated DeviceSpec"),
    ),
    "PodResourceRequest": (
        ("pod_uid", 1, "string"),
        ("pod_namespace", 2, "string"),
        ("pod_name", 3, "string"),
        ("pod_role", 4, "string"),
        ("pod_type", 5, "string"),
        ("resource_name", 6, "string"),
        ("hint", 7, "TopologyHint"),
        ("resource_requests", 8, "map<string,double>"),
        ("labels", 9, "map<string,string>"),
        ("annotations", 10, "map<string,string>"),
    ),
    "TopologyAwareQuantity": (
        ("resource_value", 1, "double"),
        ("node", 2, "uint64"),
        ("name", 3, "string"),
        ("type", 4, "string"),
        ("topology_level", 5, "TopologyLevel"),
        ("annotations", 6, "map<string,string>"),
    ),
    "DeviceRequest": (
        ("device_name", 1, "string"),
        ("hint", 2, "TopologyHint"),
        ("available_devices", 3, "repeated string"),
        ("reusable_devices", 4, "repeated string"),
        ("device_request", 5, "uint64"),
    ),
}

_REGISTRATION_FIELDS: dict[str, tuple[tuple[str, int, str], ...]] = {
    "PluginInfo": (
        ("type", 1, "string"),
        ("name", 2, "string"),
        ("endpoint", 3, "string"),
        ("supported_versions", 4, "repeated string"),
    ),
    "RegistrationStatus": (
        ("plugin_registered", 1, "bool"),
        ("error", 2, "string"),
    ),
}


def _cases(
    file: FileDescriptor, table: dict[str, tuple[tuple[str, int, str], ...]], prefix: str = ""
) -> list[object]:
    return [
        pytest.param(
            file.message_types_by_name[message],
            name,
            number,
            type_name,
            id=f"{prefix}{message}.{name}",
        )
        for message, fields in table.items()
        for name, number, type_name in fields
    ]


_CASES = (
    _cases(rp_pb2.DESCRIPTOR, _RESOURCE_PLUGIN_FIELDS)
    + _cases(rp_pb2.DESCRIPTOR, _UPSTREAM_EXTRA_FIELDS, "upstream-")
    + _cases(reg_pb2.DESCRIPTOR, _REGISTRATION_FIELDS)
)


@pytest.mark.parametrize(("message", "name", "number", "type_name"), _CASES)
def test_field_has_the_documented_tag_and_type(
    message: Descriptor, name: str, number: int, type_name: str
) -> None:
    field = message.fields_by_name[name]
    assert field.number == number
    assert _type_name(field) == type_name


def test_the_type_renderer_tells_types_apart() -> None:
    # The renderer is what the table is compared against; check it on fields
    # whose types differ only in ways it must notice.
    fields = rp_pb2.ResourceAllocationInfo.DESCRIPTOR.fields_by_name
    assert _type_name(fields["envs"]) != _type_name(fields["topology_assignments"])
    assert _type_name(rp_pb2.TopologyHint.DESCRIPTOR.fields_by_name["nodes"]) != "uint64"


def test_packages_are_the_kubelets() -> None:
    assert rp_pb2.DESCRIPTOR.package == "resourceplugin.v1alpha1"
    assert reg_pb2.DESCRIPTOR.package == "pluginregistration"
    # proto3 semantics (no presence for scalars, so zero values are not sent),
    # as in the kubelet's definitions.
    assert not rp_pb2.ResourceRequest.DESCRIPTOR.fields_by_name["pod_uid"].has_presence
    assert not reg_pb2.RegistrationStatus.DESCRIPTOR.fields_by_name[
        "plugin_registered"
    ].has_presence


def test_container_type_values() -> None:
    assert {value.name: value.number for value in rp_pb2.ContainerType.DESCRIPTOR.values} == {
        "INIT": 0,
        "MAIN": 1,
        "SIDECAR": 2,
        "EPHEMERAL": 3,
    }
    assert rp_pb2.MAIN == 1
    assert rp_pb2.ContainerType.Name(rp_pb2.EPHEMERAL) == "EPHEMERAL"


def _rpcs(service: ServiceDescriptor) -> dict[str, tuple[str, str]]:
    """gRPC method path -> (request type, response type), as a client dials it."""
    return {
        f"/{service.full_name}/{method.name}": (method.input_type.name, method.output_type.name)
        for method in service.methods
    }


def test_resource_plugin_rpcs() -> None:
    rpcs = _rpcs(rp_pb2.DESCRIPTOR.services_by_name["ResourcePlugin"])
    prefix = "/resourceplugin.v1alpha1.ResourcePlugin/"
    documented = {
        "GetTopologyHints": ("ResourceRequest", "ResourceHintsResponse"),
        "GetPodTopologyHints": ("PodResourceRequest", "PodResourceHintsResponse"),
        "RemovePod": ("RemovePodRequest", "RemovePodResponse"),
        "GetResourcesAllocation": (
            "GetResourcesAllocationRequest",
            "GetResourcesAllocationResponse",
        ),
        "GetTopologyAwareResources": (
            "GetTopologyAwareResourcesRequest",
            "GetTopologyAwareResourcesResponse",
        ),
        "GetTopologyAwareAllocatableResources": (
            "GetTopologyAwareAllocatableResourcesRequest",
            "GetTopologyAwareAllocatableResourcesResponse",
        ),
        "GetResourcePluginOptions": ("Empty", "ResourcePluginOptions"),
        "Allocate": ("ResourceRequest", "ResourceAllocationResponse"),
        "AllocateForPod": ("PodResourceRequest", "PodResourceAllocationResponse"),
        "PreStartContainer": ("PreStartContainerRequest", "PreStartContainerResponse"),
    }
    for name, types in documented.items():
        assert rpcs[prefix + name] == types


def test_plugin_watcher_rpcs() -> None:
    assert _rpcs(reg_pb2.DESCRIPTOR.services_by_name["Registration"]) == {
        "/pluginregistration.Registration/GetInfo": ("InfoRequest", "PluginInfo"),
        "/pluginregistration.Registration/NotifyRegistrationStatus": (
            "RegistrationStatus",
            "RegistrationStatusResponse",
        ),
    }


def test_a_known_message_encodes_to_hand_assembled_bytes() -> None:
    # Wire bytes assembled by hand from the tag numbers, independent of the
    # generated code: what a Go kubelet sends for the same request.
    expected = (
        # field 1 (pod_uid), length-delimited: "u1"
        b"\x0a\x02u1"
        # field 10 (hint), a 6-byte TopologyHint: nodes [0, 1] packed, preferred true
        + b"\x52\x06\x0a\x02\x00\x01\x10\x01"
        # field 11 (resource_requests), one 14-byte map entry: key "cpu", double 2.0
        + b"\x5a\x0e\x0a\x03cpu\x11"
        + struct.pack("<d", 2.0)
    )
    request = rp_pb2.ResourceRequest(
        pod_uid="u1",
        hint=rp_pb2.TopologyHint(nodes=[0, 1], preferred=True),
        resource_requests={"cpu": 2.0},
    )
    assert request.SerializeToString(deterministic=True) == expected
    assert rp_pb2.ResourceRequest.FromString(expected) == request
