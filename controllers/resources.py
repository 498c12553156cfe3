"""The API resources the controller reads and writes, and the paths the API server
serves them on. Pure: no I/O, no ``kubernetes`` import.

A :class:`Resource` is what a list, a watch or a write needs to know: its group,
version and plural (the URL), whether it is namespaced, and its kind (the
``kind`` field a create must carry). Target config kinds are not known in
advance: a KCC names one by group, version and resource, and :func:`target_resource`
turns that into a :class:`Resource` (custom resources of the KCC's kind are
namespaced, as katalyst-api's are).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import quote

from katalyst.dynconfig import (
    ADMIN_QOS_GVR,
    ADMIN_QOS_KIND,
    CNC_GVR,
    CNC_KIND,
    CNR_GVR,
    CNR_KIND,
    KCC_GVR,
    KCC_KIND,
    GroupVersionResource,
)

__all__ = [
    "CNCS",
    "CNRS",
    "EVENTS",
    "KCCS",
    "LEASES",
    "NODES",
    "Resource",
    "target_resource",
]


@dataclass(frozen=True, slots=True, order=True)
class Resource:
    """One API resource (a plural in a group and version)."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        """``group/version``, or ``v1`` for the core group."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def gvr(self) -> GroupVersionResource:
        return GroupVersionResource(self.group, self.version, self.plural)

    @property
    def short(self) -> str:
        """``plural.group`` (``plural`` for the core group), as ``kubectl`` names it."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def _prefix(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"

    def collection_path(self, namespace: str | None = None) -> str:
        """The collection: every namespace when ``namespace`` is None (or the resource
        is cluster-scoped), else one namespace."""
        if self.namespaced and namespace:
            return f"{self._prefix()}/namespaces/{_segment(namespace)}/{self.plural}"
        return f"{self._prefix()}/{self.plural}"

    def object_path(self, name: str, namespace: str = "", subresource: str = "") -> str:
        """One object (and a subresource of it, ``status``)."""
        path = f"{self.collection_path(namespace or None)}/{_segment(name)}"
        if self.namespaced and not namespace:
            raise ValueError(f"{self.short} {name}: a namespaced resource needs a namespace")
        return f"{path}/{subresource}" if subresource else path


def _segment(text: str) -> str:
    return quote(text, safe="")


NODES: Final = Resource("", "v1", "nodes", "Node", namespaced=False)
LEASES: Final = Resource("coordination.k8s.io", "v1", "leases", "Lease", namespaced=True)
EVENTS: Final = Resource("", "v1", "events", "Event", namespaced=True)
KCCS: Final = Resource(KCC_GVR.group, KCC_GVR.version, KCC_GVR.resource, KCC_KIND, True)
CNCS: Final = Resource(CNC_GVR.group, CNC_GVR.version, CNC_GVR.resource, CNC_KIND, False)
"""Cluster-scoped, one per node, named as the node, with the status subresource."""
CNRS: Final = Resource(CNR_GVR.group, CNR_GVR.version, CNR_GVR.resource, CNR_KIND, False)
"""Cluster-scoped, one per node, named as the node; the agent's reporter writes the status."""

_KNOWN_KINDS: Final = {ADMIN_QOS_GVR: ADMIN_QOS_KIND}


def target_resource(gvr: GroupVersionResource) -> Resource:
    """The resource of a KCC's ``spec.targetType``. Its kind is known for
    ``AdminQoSConfiguration``; for another target type the plural stands in until an
    object's own ``kind`` field says (every custom resource the API server sends
    carries it)."""
    kind = _KNOWN_KINDS.get(gvr) or gvr.resource
    return Resource(gvr.group, gvr.version, gvr.resource, kind, namespaced=True)
