"""The JSON the reporter sends: the Node status patch, the CNR and its status patch.

Field names follow katalyst-api's ``pkg/apis/node/v1alpha1/types.go``
(``CustomNodeResource``: ``status.resources.{allocatable,capacity}`` and
``status.topologyZone``, a tree of ``{"type", "name", "resources", "children", ...}``
zones) and katalyst-core's headroom reporter, which publishes the reclaimed
resources in ``status.resources`` and per NUMA node in ``Numa`` zones nested in
their ``Socket`` zone, each named by its id in decimal
(``pkg/util/cnr_topology.go``, ``GenerateNumaZoneNode``/``GenerateSocketZoneNode``).

Quantities are decimal integers in strings: ``reclaimed_millicpu`` counts
milli-cores as a plain integer (``"1500"``, not ``"1500m"``: it is an extended
resource, and those are integral), ``reclaimed_memory`` counts bytes.

Both patches are JSON merge patches (RFC 7386, ``application/merge-patch+json``),
which mean the same for a built-in object and a custom resource (custom resources
take no strategic merge patch: 415). Maps merge key by key, so the kubelet's
``cpu``, ``memory``, ``pods`` and other writers' resources are left alone; a list is
replaced whole, so the CNR's ``topologyZone`` is sent as the stored list with our
amounts merged in (:func:`merge_zones`) and the patch carries the stored
``metadata.resourceVersion``: the API server refuses it with 409 Conflict if
another writer changed the CNR in between, instead of losing that writer's zones.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, Final

from agent.reporter.model import Reclaimed
from katalyst.qos import RESOURCE_RECLAIMED_MEMORY, RESOURCE_RECLAIMED_MILLICPU

__all__ = [
    "CNR_API_VERSION",
    "CNR_GROUP",
    "CNR_KIND",
    "CNR_PLURAL",
    "CNR_VERSION",
    "MERGE_PATCH",
    "ZONE_NUMA",
    "ZONE_SOCKET",
    "cnr_object",
    "cnr_status_patch",
    "merge_zones",
    "node_status_patch",
    "replace_device_zones",
    "resource_list",
    "topology_zones",
]

CNR_GROUP: Final = "node.katalyst.kubewharf.io"
CNR_VERSION: Final = "v1alpha1"
CNR_API_VERSION: Final = f"{CNR_GROUP}/{CNR_VERSION}"
CNR_KIND: Final = "CustomNodeResource"
CNR_PLURAL: Final = "customnoderesources"
"""Cluster-scoped: ``/apis/node.katalyst.kubewharf.io/v1alpha1/customnoderesources/{name}``."""

ZONE_SOCKET: Final = "Socket"
"""``TopologyTypeSocket``."""
ZONE_NUMA: Final = "Numa"
"""``TopologyTypeNuma`` (spelt so on the wire, not ``NUMA``)."""

MERGE_PATCH: Final = "application/merge-patch+json"
"""The content type of every patch the reporter sends."""

JSON = dict[str, Any]


def resource_list(millicpu: int, memory_bytes: int) -> dict[str, str]:
    """A ``ResourceList`` with the two reclaimed resources."""
    return {
        RESOURCE_RECLAIMED_MILLICPU: str(millicpu),
        RESOURCE_RECLAIMED_MEMORY: str(memory_bytes),
    }


def node_status_patch(values: Reclaimed) -> JSON:
    """The merge patch of ``/api/v1/nodes/{name}/status``: the reclaimed resources as
    extended resources, in capacity and allocatable alike (the kubelet copies every
    capacity key it does not reserve into allocatable on its next status update)."""
    resources = resource_list(values.millicpu, values.memory_bytes)
    return {"status": {"capacity": resources, "allocatable": dict(resources)}}


def cnr_object(node_name: str) -> JSON:
    """A new CNR for ``node_name`` (the CNR is named after its node). Its status is
    written afterwards: with the status subresource enabled (katalyst-api's CRD), the
    API server drops the status of a create."""
    return {
        "apiVersion": CNR_API_VERSION,
        "kind": CNR_KIND,
        "metadata": {"name": node_name},
        "spec": {},
    }


def topology_zones(values: Reclaimed) -> list[JSON]:
    """The Socket zones, each with its Numa zones as children carrying the per-NUMA
    amounts; sorted by type then name (as katalyst-core's zone generator does). A
    Socket zone has empty ``resources``: the field is required by the CRD's schema."""
    sockets: dict[int, list[JSON]] = {}
    for zone in values.zones:
        resources = resource_list(zone.millicpu, zone.memory_bytes)
        sockets.setdefault(zone.socket, []).append(
            {
                "type": ZONE_NUMA,
                "name": str(zone.numa),
                "resources": {"allocatable": resources, "capacity": dict(resources)},
            }
        )
    out: list[JSON] = [
        {
            "type": ZONE_SOCKET,
            "name": str(socket),
            "resources": {},
            "children": sorted(children, key=lambda z: z["name"]),
        }
        for socket, children in sockets.items()
    ]
    return sorted(out, key=lambda z: z["name"])


def _same(zone: object, other: Mapping[str, Any]) -> bool:
    return (
        isinstance(zone, Mapping)
        and zone.get("type") == other["type"]
        and zone.get("name") == other["name"]
    )


def _merge_into(siblings: list[Any], ours: Mapping[str, Any]) -> None:
    match = next((z for z in siblings if _same(z, ours)), None)
    if not isinstance(match, dict):
        siblings.append(copy.deepcopy(dict(ours)))
        return
    resources = match.get("resources")
    if not isinstance(resources, dict):
        resources = match["resources"] = {}
    for kind in ("allocatable", "capacity"):
        amounts = ours["resources"].get(kind)
        if amounts:
            stored = resources.get(kind)
            if not isinstance(stored, dict):
                stored = resources[kind] = {}
            stored.update(amounts)
    children = ours.get("children")
    if children:
        stored_children = match.get("children")
        if not isinstance(stored_children, list):
            stored_children = match["children"] = []
        for child in children:
            _merge_into(stored_children, child)


def merge_zones(stored: object, ours: list[JSON]) -> list[Any]:
    """``stored`` (a CNR's ``status.topologyZone``) with the amounts of ``ours``.

    A zone is identified by its type and name among its siblings. Our resource keys
    are set in a matching zone's allocatable and capacity; everything else there
    (other resources, attributes, allocations, siblings, other children, other
    zones) is kept as stored, in its order; our zones that are missing are appended.
    A stored value that is not a list counts as no zones."""
    merged: list[Any] = copy.deepcopy(stored) if isinstance(stored, list) else []
    for zone in ours:
        _merge_into(merged, zone)
    return merged


DEVICE_ZONE_TYPES: Final = ("GPU", "NIC")
"""Zone types the agent owns whole: written as they are, stale ones removed."""


def replace_device_zones(zones: list[Any], devices: Sequence[Mapping[str, Any]]) -> list[Any]:
    """``zones`` (top level) with the zones of each device type the agent reports (GPU,
    NIC) replaced by ``devices``: for those types it is the writer, and a GPU or an
    allocation that is gone must go. Types it does not report are left as stored
    (another writer's, or none), and so is everything when it reports no device."""
    ours = {d.get("type") for d in devices} & set(DEVICE_ZONE_TYPES)
    kept = [z for z in zones if not (isinstance(z, Mapping) and z.get("type") in ours)]
    return kept + [copy.deepcopy(dict(d)) for d in devices]


def cnr_status_patch(values: Reclaimed, stored: Mapping[str, Any]) -> JSON:
    """The merge patch of ``.../customnoderesources/{name}/status`` over the CNR as
    last read (``stored``): the reclaimed resources in ``status.resources``, the
    merged ``status.topologyZone`` when per-NUMA amounts are known, and the stored
    ``metadata.resourceVersion`` as the precondition."""
    resources = resource_list(values.millicpu, values.memory_bytes)
    status: JSON = {"resources": {"allocatable": resources, "capacity": dict(resources)}}
    if values.zones or values.devices:
        stored_status = stored.get("status")
        current = stored_status.get("topologyZone") if isinstance(stored_status, Mapping) else None
        merged = merge_zones(current, topology_zones(values))
        status["topologyZone"] = replace_device_zones(merged, values.devices)
    patch: JSON = {"status": status}
    meta = stored.get("metadata")
    version = meta.get("resourceVersion") if isinstance(meta, Mapping) else None
    if isinstance(version, str) and version:
        patch["metadata"] = {"resourceVersion": version}
    return patch
