"""An in-process fake of the kube-apiserver, for tests.

:class:`FakeApiServer` serves plain HTTP on an ephemeral port of 127.0.0.1 (aiohttp)
and speaks the wire format of the real API server closely enough for the official
``kubernetes`` client (sync and ``kubernetes.aio``: ``CoreV1Api``,
``CustomObjectsApi``, ``CoordinationV1Api``) and for an agent or a controller started
with ``--kubeconfig`` (see :meth:`FakeApiServer.kubeconfig`). A test plays "the
cluster" through the Python methods (as the scheduler, the kubelet or an SRE would),
and inspects what the clients sent through :attr:`FakeApiServer.requests`,
:attr:`~FakeApiServer.patches` and :attr:`~FakeApiServer.writes`.

What it serves
--------------

Every resource is a :class:`ResourceType` served by one generic store (a watch cache
with history), so that the same rules hold for all of them:

* built in: ``pods`` (v1, namespaced), ``nodes`` (v1, cluster-scoped, with
  ``/status``), ``leases`` (``coordination.k8s.io/v1``, namespaced);
* custom resources (as the apiextensions-apiserver serves a CRD), by default
  (:data:`DEFAULT_CUSTOM_RESOURCES`): ``customnoderesources``
  (``node.katalyst.kubewharf.io/v1alpha1``, cluster-scoped), and in
  ``config.katalyst.kubewharf.io/v1alpha1`` ``katalystcustomconfigs`` and
  ``adminqosconfigurations`` (namespaced) and ``customnodeconfigs``
  (cluster-scoped), all four with the status subresource as katalyst-api's CRDs
  declare it. A test chooses the set with ``FakeApiServer(custom_resources=...)`` or
  adds one with :meth:`~FakeApiServer.register` (:func:`custom_resource` describes
  one; its ``validate`` hook plays the CRD's schema).

Verbs, on the paths the client builds (``/api/v1/...``, ``/apis/GROUP/VERSION/...``,
namespaced under ``namespaces/NS/``): list, watch, get, create (POST), replace (PUT),
patch, delete; ``/status`` GET, PUT and PATCH where the type has the subresource.
Pods take no PUT or PATCH (405; tests change pods with
:meth:`~FakeApiServer.update_pod`) but have the ``eviction`` subresource.
``POST /api/v1/namespaces/{ns}/events`` stores core/v1 Events.

How faithfully
--------------

* One global, monotonically increasing ``resourceVersion`` (a decimal string on the
  wire, as etcd revisions are); every write bumps it. A write that changes nothing is
  not a write: no new resourceVersion, no watch event (the apiserver skips no-op
  updates the same way), whether it came over HTTP or from a Python method.
* ``GET /version`` (and ``/version/``, which the client's VersionApi asks for),
  ``/healthz``, ``/livez``, ``/readyz``.
* List: ``{Kind}List`` at the current resourceVersion. Items of built-in kinds carry
  no ``kind``/``apiVersion``; items of custom resources do, and their list metadata
  has ``continue: ""`` (the unstructured encoding). A single object and watch event
  objects always carry both.
* ``fieldSelector`` (``=``, ``==``, ``!=``; comma is AND) over the fields the real
  server supports per type: pods (``spec.nodeName``, ``status.phase``, ... with the
  defaults the server would have stored: ``spec.nodeName=`` finds unscheduled pods),
  nodes (``metadata.name``, ``spec.unschedulable``), custom resources
  (``metadata.name``, and ``metadata.namespace`` when namespaced, as
  apiextensions' field label conversion), leases (``metadata.name``,
  ``metadata.namespace``). Any other field is a 400 with the real message
  (``field label not supported: <f>``; leases: ``"<f>" is not a known field
  selector: only "metadata.name", "metadata.namespace"``).
* ``labelSelector`` with ``=``, ``==``, ``!=``, ``in``, ``notin``, ``key`` and ``!key``;
  anything else is a 400.
* Watch semantics of the watch cache (``cacher.go``), per resource: events newer
  than ``resourceVersion``; absent or ``"0"`` starts with a synthetic ADDED per
  matching object; an object that stops matching the selectors is sent as DELETED
  (its previous state with the event's resourceVersion), one that starts matching as
  ADDED; a resourceVersion older than the compacted history is a 200 stream with one
  ERROR event (``Status`` 410 ``Expired``, ``too old resource version: RV
  (OLDEST)``); BOOKMARK events (the type's kind and apiVersion, the current
  resourceVersion) every ``bookmark_interval`` seconds when ``allowWatchBookmarks``;
  the stream ends after ``timeoutSeconds``. A live watch that falls behind a
  :meth:`~FakeApiServer.compact` (it had not yet been sent events that were
  forgotten) is closed, as the cacher terminates a watcher it cannot serve.
* Create: the server owns ``uid`` and ``creationTimestamp`` (a client's are
  replaced), custom resources get ``generation: 1``, ``generateName`` is honoured;
  409 ``AlreadyExists``; 422 without a name or for one that is not an RFC 1123
  subdomain; 400 for a namespace that differs from the URL's, for an
  ``apiVersion``/``kind`` that is not the type's, and (custom resources only, as the
  unstructured decoder) for a body without ``kind``/``apiVersion``; 500 for a body
  with a ``resourceVersion`` (the etcd3 store's check). With the status subresource a
  create drops the status (apiextensions' strategy). A pod's status is reset to
  ``Pending`` and it needs ``spec.containers`` (422).
* Replace (PUT) and patch, the registry's update path: the name (and namespace) in
  the object must be the URL's (400); a ``metadata.resourceVersion`` that is not the
  stored one is a 409 ``Conflict`` ("the object has been modified; please apply your
  changes to the latest version and try again"); none at all is allowed for built-in
  kinds (an unconditional update) and a 422 for custom resources (``must be specified
  for an update``: their strategy refuses unconditional updates); a PUT whose
  ``metadata.uid`` differs is a 409 (the storage precondition: "... StorageError:
  invalid object, Code: 4, Key: /registry/..., AdditionalErrorMsg: Precondition
  failed: UID in precondition: ..."), a patch that changes the uid a 422 (``field is
  immutable``). ``uid``, ``creationTimestamp`` and ``generation`` are the server's.
  Status subresource: a write to the main resource keeps the stored status; a write
  to ``/status`` takes only the status (custom resources: everything else, metadata
  included, stays; nodes: the spec stays and metadata may change). Custom resources
  bump ``generation`` when anything but metadata changes (apiextensions' strategy:
  with the subresource that is the spec). Updates never create (404).
* Patch types: ``application/merge-patch+json`` (RFC 7386: maps merge, ``null``
  deletes, lists are replaced) for every type; ``application/json-patch+json`` (RFC
  6902: add, remove, replace, move, copy, test; an operation that does not apply is
  the real generic 422 "the server rejected our request due to an error in our
  request") for custom resources; ``application/strategic-merge-patch+json`` for
  built-in kinds (as merge patch, except that the Node's ``status.conditions``,
  ``status.addresses`` and ``status.volumesAttached`` merge by their patch merge key;
  ``$patch``-style directives are a 400); custom resources answer a strategic merge
  patch with 415 ``UnsupportedMediaType`` and the real message. JSON patch on built-in
  kinds and apply patches are 415 naming this fake.
* Delete: honours ``DeleteOptions.preconditions`` (``uid``, ``resourceVersion``; a
  mismatch is the storage precondition's 409 ``Conflict``); answers the deleted pod
  for pods and a ``Status`` ``Success`` with ``details`` (name, group, kind, uid) for
  the rest, as their registries do. Deletes are immediate (no finalizers, no
  ``deletionTimestamp``).
* Eviction (``policy/v1``, ``pods/{name}/eviction``) deletes the pod at once and
  answers 201 with a ``Status``; ``deleteOptions.preconditions.uid`` as delete does;
  a body whose ``kind`` is not ``Eviction`` is a 400.
* Binding (``pods/{name}/binding``, as kube-scheduler and extenders bind): sets
  ``spec.nodeName`` to the Binding's ``target.name`` and merges the Binding's
  ``metadata.annotations`` into the pod's (the pod registry's
  ``setPodHostAndAnnotations``), then answers 201 with a ``Status``; 409 ``Conflict``
  when the pod is already bound (``pod X is already assigned to node "Y"``) or the
  Binding's ``metadata.uid`` is not the pod's; 400 for another ``kind`` or no
  ``target.name``. Accepted bodies are kept in :attr:`~FakeApiServer.bindings`.
* Events: ``POST /api/v1/namespaces/{ns}/events`` (core/v1) stores the Event (with a
  uid, a creationTimestamp and a resourceVersion, as the server does) in
  :attr:`~FakeApiServer.events` and answers 201 with it; 409 ``AlreadyExists`` for a
  name already used in the namespace, 400 for a namespace that differs from the
  URL's, 422 without ``metadata.name``, ``involvedObject`` or ``reason``.
* Nodes: quantities of ``status.capacity``/``allocatable`` are stored in their
  canonical form (``"2000"`` reads back as ``"2k"``; a bad one is a 400 with
  apimachinery's message).
* CustomNodeResources: the CRD schema's rules a status writer can break are checked
  (422 ``Invalid``: ``status.resources`` and each top-level zone's ``type`` and
  ``resources`` are required, quantities must match the CRD's pattern) and its
  default applied (``status.topologyPolicy: none``).
* Leases: ``spec.acquireTime``/``renewTime`` are MicroTime, decoded as the server's
  ``time.Parse(RFC3339Micro)`` does: exactly six fractional digits are required
  (``2026-01-01T00:00:00.000000Z``; an offset such as ``+00:00`` is accepted) and
  they are stored in UTC with ``Z``. ``datetime.isoformat()`` of an instant with
  ``microsecond == 0`` has no fraction, so the real server (and this fake) refuses
  it with a 400 ``Lease in version "v1" cannot be handled as a Lease: parsing time
  ...``. Wrong JSON types are a 400 too; ``leaseDurationSeconds <= 0`` and
  ``leaseTransitions < 0`` are a 422.
* Errors are ``Status`` objects with the real ``reason``, ``code``, ``details`` and
  messages (``pods "x" not found``, ``leases.coordination.k8s.io "x" already
  exists``, ``Operation cannot be fulfilled on customnodeconfigs....``). An unserved
  resource is a 404: the ``Status`` "the server could not find the requested
  resource" under ``/api/v1`` and built-in groups (go-restful), and Go's plain-text
  ``404 page not found`` under any other group (the apiextensions-apiserver
  delegates an unknown CRD, scope or subresource to ``http.NotFound``).
* Bearer-token authentication: a wrong token is 401; no token is
  ``system:anonymous``, who may read ``/version`` and the health endpoints but is
  403 on every resource (the default RBAC of a real cluster), with the real message.
* Outages: :meth:`~FakeApiServer.start_outage` (or the
  :meth:`~FakeApiServer.outage` context manager) makes every request fail until
  :meth:`~FakeApiServer.end_outage`: ``"unavailable"`` answers a ``Status`` 503
  ``ServiceUnavailable``, ``"reset"`` resets the TCP connection without an answer;
  either way open watches are closed. The cluster's Python methods keep working, so
  a test can change objects during the outage.
* Test hooks: :meth:`~FakeApiServer.compact`, :meth:`~FakeApiServer.drop_watches`
  (clean end or TCP abort), :meth:`~FakeApiServer.fail_next`,
  :meth:`~FakeApiServer.wait_for_watches`, :attr:`~FakeApiServer.requests`,
  :attr:`~FakeApiServer.patches`, :attr:`~FakeApiServer.writes` and
  :meth:`~FakeApiServer.writes_to` (every write request per object, with its answer
  and whether it changed the object: write suppression is asserted with these),
  :attr:`~FakeApiServer.evictions`, :attr:`~FakeApiServer.events`; the generic
  cluster methods (:meth:`~FakeApiServer.objects`, :meth:`~FakeApiServer.get_object`,
  :meth:`~FakeApiServer.create_object`, :meth:`~FakeApiServer.update_object`,
  :meth:`~FakeApiServer.delete_object`; :meth:`~FakeApiServer.create_object` keeps the
  status given, as another writer would have left it) and the per-kind ones for pods,
  nodes and CNRs; :func:`pod_manifest`, :func:`node_manifest`,
  :func:`object_manifest` and :func:`micro_time` build objects.

What it leaves out: every other resource and API group (namespaces need not exist;
Events can be created but not read, listed, watched or updated over HTTP), discovery
(``/api``, ``/apis``), CRD objects themselves, OpenAPI schema validation and pruning
(only what a ``validate`` hook checks), strategic-merge ``$patch`` directives and
list merge keys beyond the Node's, JSON patch on built-in kinds, apply patches and
managedFields, binary-unit canonical forms (``"1024Ki"`` stays as sent; the real
server writes ``"1Mi"``), graceful deletion and finalizers (deletes are immediate),
deletecollection, PodDisruptionBudgets (every eviction is allowed; use
:meth:`~FakeApiServer.fail_next` with 429 for a blocked one), admission and defaulting
(beyond a pod's ``Pending`` and the CNR's default), validation beyond what is listed,
pagination (``limit``/``continue`` are ignored and everything is returned), list
``resourceVersion`` semantics (a list is always the latest state), watches from a
resourceVersion in the future (served as if it were current, where the real server
would wait and then answer 504), ``sendInitialEvents`` (watch-list), per-resource
watch-cache windows (one compaction point for all), multiple versions of a resource,
protobuf/CBOR, TLS, and ``dryRun``.

The Python methods are synchronous and may be called from any thread; the server runs
on the event loop that called :meth:`~FakeApiServer.start`.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import copy
import json
import logging
import re
import secrets
import socket
import string
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, NamedTuple, Self

import yaml
from aiohttp import web

from katalyst.qos import QoSValidationError
from katalyst.qos.quantity import parse_quantity
from tests.support import rbac
from tests.support import rbac as rbac_  # the name `rbac` is also a parameter

log = logging.getLogger(__name__)

Obj = dict[str, Any]
"""A Kubernetes object as wire JSON (camelCase keys, as the API server sends it)."""

PodJSON = Obj
"""A Pod (or any object) as wire JSON; the name predates the other kinds."""

EventType = Literal["ADDED", "MODIFIED", "DELETED"]

OutageMode = Literal["unavailable", "reset"]

DEFAULT_TOKEN: Final = "katalyst-fake-apiserver-token"  # noqa: S105 - a test credential

_JSON: Final = "application/json"
MERGE_PATCH: Final = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH: Final = "application/strategic-merge-patch+json"
JSON_PATCH: Final = "application/json-patch+json"
APPLY_PATCH: Final = "application/apply-patch+yaml"

CNR_GROUP: Final = "node.katalyst.kubewharf.io"
CNR_VERSION: Final = "v1alpha1"
CNR_PLURAL: Final = "customnoderesources"
CNR_KIND: Final = "CustomNodeResource"
CNR_PATH: Final = f"/apis/{CNR_GROUP}/{CNR_VERSION}/{CNR_PLURAL}"
"""The CNR collection (cluster-scoped, as katalyst-api's CRD declares it)."""

CONFIG_GROUP: Final = "config.katalyst.kubewharf.io"
CONFIG_VERSION: Final = "v1alpha1"

MICRO_TIME_LAYOUT: Final = "2006-01-02T15:04:05.000000Z07:00"
"""metav1.RFC3339Micro, the Go layout a MicroTime is parsed and written with."""

# The `reason` the API server puts in a Status for each code it uses
# (k8s.io/apimachinery/pkg/apis/meta/v1/types.go, StatusReason*).
_REASONS: Final[Mapping[int, str]] = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}

# Go's strconv.ParseBool, which the apiserver uses for boolean query parameters.
_TRUE: Final = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE: Final = frozenset({"0", "f", "F", "FALSE", "false", "False"})

_WRITE_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})

_WriteNote = tuple[str, str, str, str]
# What a write request addressed (resource, namespace, name, subresource) once its
# handler knows, and whether it changed the store: read back for RecordedWrite.
_WRITE: Final = web.RequestKey[_WriteNote]("fake_apiserver_write")
_CHANGED: Final = web.RequestKey("fake_apiserver_changed", bool)
_ALL_VERBS: Final = frozenset({"get", "list", "watch", "create", "update", "patch", "delete"})

# Groups that kube-apiserver serves itself (go-restful: an unknown resource there is
# a Status 404); any other group goes to the apiextensions-apiserver.
_BUILTIN_GROUPS: Final = frozenset({"", "apps", "batch", "policy", "autoscaling", "extensions"})


def _first_pod_ip(pod: Obj) -> str:
    ips = _get(pod, "status", "podIPs") or []
    if ips and isinstance(ips[0], Mapping):
        return str(ips[0].get("ip", ""))
    return str(_get(pod, "status", "podIP") or "")


def _get(obj: Mapping[str, Any], *path: str) -> Any:
    cur: Any = obj
    for key in path:
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(key)
    return cur


FieldGetter = Callable[[Obj], str]
"""The value of one selectable field of an object, as the field selector sees it."""


def _text(default: str, *path: str) -> FieldGetter:
    def getter(obj: Obj) -> str:
        value = _get(obj, *path)
        return default if value is None else str(value)

    return getter


def _flag(*path: str) -> FieldGetter:
    return lambda obj: "true" if _get(obj, *path) else "false"


_NAME_FIELD: Final = _text("", "metadata", "name")
_NAMESPACE_FIELD: Final = _text("", "metadata", "namespace")

# The pod fields a fieldSelector may name (pkg/apis/core/v1/conversion.go, the Pod
# field label conversion; values as pkg/registry/core/pod/strategy.go
# PodToSelectableFields computes them). The defaults are what the server's defaulting
# would have stored, so that a pod created here without them selects the same way.
_POD_FIELDS: Final[Mapping[str, FieldGetter]] = {
    "metadata.name": _NAME_FIELD,
    "metadata.namespace": _NAMESPACE_FIELD,
    "spec.nodeName": _text("", "spec", "nodeName"),
    "spec.restartPolicy": _text("Always", "spec", "restartPolicy"),
    "spec.schedulerName": _text("default-scheduler", "spec", "schedulerName"),
    "spec.serviceAccountName": _text("", "spec", "serviceAccountName"),
    "spec.hostNetwork": _flag("spec", "hostNetwork"),
    "status.phase": _text("", "status", "phase"),
    "status.podIP": _first_pod_ip,
    "status.podIPs": _first_pod_ip,
    "status.nominatedNodeName": _text("", "status", "nominatedNodeName"),
}

# The Node's (NodeToSelectableFields; the conversion accepts these two).
_NODE_FIELDS: Final[Mapping[str, FieldGetter]] = {
    "metadata.name": _NAME_FIELD,
    "spec.unschedulable": _flag("spec", "unschedulable"),
}

_FIELD_NOT_SUPPORTED: Final = "field label not supported: {}"
# runtime.DefaultMetaV1FieldSelectorConversion, for kinds without their own.
_META_FIELDS_ONLY: Final = (
    '"{}" is not a known field selector: only "metadata.name", "metadata.namespace"'
)


class ApiError(Exception):
    """An error the server answers with a ``Status`` object."""

    def __init__(
        self, code: int, message: str, *, reason: str | None = None, details: Obj | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or _REASONS.get(code, "Unknown")
        self.details = details

    def status(self) -> Obj:
        """The ``Status`` object, as the server writes it."""
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if self.details is not None:
            body["details"] = self.details
        body["code"] = self.code
        return body


class _PlainNotFound(Exception):
    """Go's ``http.NotFound``: what a path no handler serves gets outside go-restful."""


# --- resource types ------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ResourceType:
    """One resource the server serves: its name on the wire and its registry's rules.

    Build a custom resource with :func:`custom_resource`; the built-in ones are
    :data:`PODS`, :data:`NODES` and :data:`LEASES`."""

    group: str
    """API group; ``""`` for the core group."""
    version: str
    plural: str
    """The resource name in URLs (``katalystcustomconfigs``)."""
    kind: str
    namespaced: bool
    status_subresource: bool = False
    """Whether ``/status`` is served and the status is written only through it."""
    validate: Callable[[Obj], None] | None = None
    """Called on every object about to be stored (HTTP and Python writes alike) with
    the complete object; may default or canonicalize fields in place; raises
    :class:`ApiError` (a 422 for a schema violation) to refuse it. Plays the CRD's
    OpenAPI schema, or a built-in kind's decoding and validation."""
    builtin: bool = False
    """A kind kube-apiserver serves itself rather than a CRD: unconditional updates
    are allowed, strategic merge patch is accepted, JSON patch is not implemented,
    list items carry no kind, no ``generation``."""
    field_labels: Mapping[str, FieldGetter] | None = None
    """The fields a fieldSelector may name; None: ``metadata.name`` (and
    ``metadata.namespace`` when namespaced), as for custom resources."""
    field_error: str = _FIELD_NOT_SUPPORTED
    """The 400 message for any other field (``{}`` is the field)."""
    merge_keys: Mapping[tuple[str, ...], str] = field(default_factory=dict)
    """Strategic merge patch: lists merged by key rather than replaced (built-ins)."""
    verbs: frozenset[str] = _ALL_VERBS
    prepare_create: Callable[[Obj], None] | None = None
    """The registry's PrepareForCreate beyond the common rules (may raise ApiError)."""
    storage_prefix: str | None = None
    """The etcd key prefix below ``/registry/`` (default: ``GROUP/PLURAL`` for custom
    resources, ``PLURAL`` for built-ins); it appears in precondition errors."""

    @property
    def api_version(self) -> str:
        """``group/version``, or ``version`` for the core group."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """``plural.group`` (``plural`` for the core group), as errors name it."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        """``Kind.group`` (``Kind`` for the core group), as validation errors name it."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def path(self) -> str:
        """The collection across namespaces (or of a cluster-scoped resource)."""
        root = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        return f"{root}/{self.plural}"

    def collection_path(self, namespace: str | None = None) -> str:
        """The collection in ``namespace`` (all namespaces, or cluster-scoped: None)."""
        if namespace is None:
            return self.path
        root = self.path.rsplit("/", 1)[0]
        return f"{root}/namespaces/{namespace}/{self.plural}"

    def object_path(self, name: str, namespace: str | None = None) -> str:
        """The URL path of one object."""
        return f"{self.collection_path(namespace if self.namespaced else None)}/{name}"

    def fields(self) -> Mapping[str, FieldGetter]:
        """The selectable fields."""
        if self.field_labels is not None:
            return self.field_labels
        if self.namespaced:
            return {"metadata.name": _NAME_FIELD, "metadata.namespace": _NAMESPACE_FIELD}
        return {"metadata.name": _NAME_FIELD}

    def storage_key(self, namespace: str, name: str) -> str:
        prefix = self.storage_prefix or (
            f"{self.group}/{self.plural}" if not self.builtin and self.group else self.plural
        )
        return (
            f"/registry/{prefix}/{namespace}/{name}" if namespace else f"/registry/{prefix}/{name}"
        )


def custom_resource(
    group: str,
    version: str,
    plural: str,
    kind: str,
    *,
    namespaced: bool,
    status_subresource: bool = True,
    validate: Callable[[Obj], None] | None = None,
) -> ResourceType:
    """A custom resource as a CRD with one served version declares it."""
    return ResourceType(
        group=group,
        version=version,
        plural=plural,
        kind=kind,
        namespaced=namespaced,
        status_subresource=status_subresource,
        validate=validate,
    )


def _details(group: str, kind: str, name: str | None) -> Obj:
    details: Obj = {"name": name} if name else {}
    if group:
        details["group"] = group
    details["kind"] = kind
    return details


def _not_found(rtype: ResourceType, name: str) -> ApiError:
    return ApiError(
        404,
        f'{rtype.qualified} "{name}" not found',
        details=_details(rtype.group, rtype.plural, name),
    )


def _already_exists(rtype: ResourceType, name: str) -> ApiError:
    return ApiError(
        409,
        f'{rtype.qualified} "{name}" already exists',
        reason="AlreadyExists",
        details=_details(rtype.group, rtype.plural, name),
    )


def _modified(rtype: ResourceType, name: str) -> ApiError:
    """The optimistic-lock Conflict (``registry.OptimisticLockErrorMsg``)."""
    return ApiError(
        409,
        f'Operation cannot be fulfilled on {rtype.qualified} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        reason="Conflict",
        details=_details(rtype.group, rtype.plural, name),
    )


def _precondition_failed(
    rtype: ResourceType, namespace: str, name: str, *, what: str, wanted: object, actual: object
) -> ApiError:
    """A failed storage precondition (``storage.Preconditions.Check``), which
    ``InterpretUpdateError``/``InterpretDeleteError`` turn into a Conflict."""
    key = rtype.storage_key(namespace, name)
    return ApiError(
        409,
        f'Operation cannot be fulfilled on {rtype.qualified} "{name}": StorageError: invalid '
        f"object, Code: 4, Key: {key}, ResourceVersion: 0, AdditionalErrorMsg: Precondition "
        f"failed: {what} in precondition: {wanted}, {what} in object meta: {actual}",
        reason="Conflict",
        details=_details(rtype.group, rtype.plural, name),
    )


def _invalid(
    group: str, kind: str, name: str, field_path: str, problem: str, *, cause: str = ""
) -> ApiError:
    """A 422 ``Invalid`` (``errors.NewInvalid``) for one field error."""
    qualified = f"{kind}.{group}" if group else kind
    details = _details(group, kind, name)
    reason = cause or (
        "FieldValueRequired" if problem.startswith("Required value") else "FieldValueInvalid"
    )
    details["causes"] = [{"reason": reason, "message": problem, "field": field_path}]
    return ApiError(
        422, f'{qualified} "{name}" is invalid: {field_path}: {problem}', details=details
    )


def _kind_invalid(rtype: ResourceType, name: str, field_path: str, problem: str) -> ApiError:
    return _invalid(rtype.group, rtype.kind, name, field_path, problem)


def _unserved(group: str) -> Exception:
    if group in _BUILTIN_GROUPS or group.endswith(".k8s.io"):
        return ApiError(404, "the server could not find the requested resource", details={})
    return _PlainNotFound()


def _bad_body(rtype: ResourceType, problem: str) -> ApiError:
    """A body the decoder refuses (``transformDecodeError``)."""
    return ApiError(
        400,
        f'{rtype.kind} in version "{rtype.version}" cannot be handled as a {rtype.kind}: {problem}',
    )


def _forbidden_for_anonymous(request: web.Request) -> ApiError:
    """The 403 that the default RBAC gives ``system:anonymous`` for ``request``."""
    attrs = rbac.attributes(request.method, request.match_info, request.query)
    if attrs is None:
        return ApiError(
            403, f'forbidden: User "system:anonymous" cannot get path "{request.path}"', details={}
        )
    return _forbidden(attrs, "system:anonymous")


def _forbidden(attrs: rbac.Attributes, user: str) -> ApiError:
    plural = attrs.resource.split("/", 1)[0]
    return ApiError(
        403, attrs.describe(user), details=_details(attrs.group, plural, attrs.name or None)
    )


# --- selectors -----------------------------------------------------------------------


def _split_unescaped(selector: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside parentheses and not escaped with a backslash."""
    parts: list[str] = []
    depth = 0
    cur: list[str] = []
    escaped = False
    for ch in selector:
        if escaped:
            cur.append(ch)
            escaped = False
        elif ch == "\\":
            cur.append(ch)
            escaped = True
        elif ch == "(":
            depth += 1
            cur.append(ch)
        elif ch == ")":
            depth -= 1
            cur.append(ch)
        elif ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


@dataclass(frozen=True)
class _FieldTerm:
    field: str
    equal: bool
    value: str
    getter: FieldGetter

    def matches(self, obj: Obj) -> bool:
        return (self.getter(obj) == self.value) == self.equal


def parse_field_selector(
    selector: str,
    fields: Mapping[str, FieldGetter] = _POD_FIELDS,
    *,
    unsupported: str = _FIELD_NOT_SUPPORTED,
) -> tuple[_FieldTerm, ...]:
    """Parse a ``fieldSelector`` over ``fields`` (the pod's by default) the way the
    apiserver does; `ApiError` 400 (``unsupported`` names an unknown field) if bad."""
    terms: list[_FieldTerm] = []
    for part in _split_unescaped(selector):
        if not part:
            continue
        # fields.splitTerm: the first position at which any operator starts, trying
        # "!=" before "==" before "=".
        for i in range(len(part)):
            op = next((o for o in ("!=", "==", "=") if part.startswith(o, i)), None)
            if op is not None:
                lhs, rhs = part[:i], part[i + len(op) :]
                break
        else:
            raise ApiError(400, f"invalid selector: '{selector}'; can't understand '{part}'")
        getter = fields.get(lhs)
        if getter is None:
            raise ApiError(400, unsupported.format(lhs))
        value = rhs.replace("\\,", ",").replace("\\=", "=")
        terms.append(_FieldTerm(lhs, op != "!=", value, getter))
    return tuple(terms)


@dataclass(frozen=True)
class _LabelTerm:
    key: str
    op: Literal["in", "notin", "exists", "!exists"]
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op == "in":
            return present and labels[self.key] in self.values
        # `!=` and `notin` select objects without the label too (labels.Requirement).
        return not present or labels[self.key] not in self.values


def parse_label_selector(selector: str) -> tuple[_LabelTerm, ...]:
    """Parse a ``labelSelector`` (equality, set and existence forms); `ApiError` 400."""
    terms: list[_LabelTerm] = []
    for raw in _split_unescaped(selector):
        part = raw.strip()
        if not part:
            if selector.strip():
                raise ApiError(400, f"unable to parse requirement: empty term in {selector!r}")
            continue
        term = _parse_label_term(part)
        if term is None:
            raise ApiError(
                400,
                f"unable to parse requirement: {part!r} "
                "(this fake understands =, ==, !=, in, notin, key and !key)",
            )
        terms.append(term)
    return tuple(terms)


_LABEL_CHARS: Final = frozenset(string.ascii_letters + string.digits + "-_./")


def _label_token(text: str) -> bool:
    return bool(text) and all(c in _LABEL_CHARS for c in text)


def _parse_label_term(part: str) -> _LabelTerm | None:
    if part.startswith("!"):
        key = part[1:].strip()
        return _LabelTerm(key, "!exists") if _label_token(key) else None
    for op in ("!=", "==", "="):
        if op in part:
            key, _, value = part.partition(op)
            key, value = key.strip(), value.strip()
            if not _label_token(key) or (value and not _label_token(value)):
                return None
            return _LabelTerm(key, "notin" if op == "!=" else "in", frozenset({value}))
    words = part.split(None, 1)
    if len(words) == 1:
        return _LabelTerm(part, "exists") if _label_token(part) else None
    key, rest = words
    for op in ("notin", "in"):
        if rest.startswith(op):
            values = rest[len(op) :].strip()
            if not (values.startswith("(") and values.endswith(")")):
                return None
            items = frozenset(v.strip() for v in values[1:-1].split(","))
            if not _label_token(key) or not all(v == "" or _label_token(v) for v in items):
                return None
            return _LabelTerm(key, "in" if op == "in" else "notin", items)
    return None


@dataclass(frozen=True)
class _Selector:
    namespace: str | None
    fields: tuple[_FieldTerm, ...]
    labels: tuple[_LabelTerm, ...]

    def matches(self, obj: Obj) -> bool:
        if self.namespace is not None and _get(obj, "metadata", "namespace") != self.namespace:
            return False
        labels = _get(obj, "metadata", "labels") or {}
        return all(t.matches(obj) for t in self.fields) and all(
            t.matches(labels) for t in self.labels
        )


# --- records and store internals -----------------------------------------------------


@dataclass(frozen=True)
class _Change:
    """One write, as the watch cache keeps it: the object after and before."""

    rv: int
    type: EventType
    obj: Obj
    prev: Obj | None


class RecordedRequest(NamedTuple):
    """A request the server saw (equal to a plain ``(method, path, query)`` tuple)."""

    method: str
    path: str
    query: dict[str, str]


class RecordedPatch(NamedTuple):
    """A PATCH the server saw: where, as what, and the decoded body."""

    path: str
    content_type: str
    body: Any


class RecordedWrite(NamedTuple):
    """A write request (POST, PUT, PATCH, DELETE) to one object, and its outcome."""

    method: str
    resource: str
    """``plural.group`` (``plural`` for the core group), as :attr:`ResourceType.qualified`."""
    namespace: str
    """``""`` for a cluster-scoped object."""
    name: str
    """The object's name (a create's, once known; ``""`` if the request never got
    that far, e.g. refused during an outage)."""
    subresource: str
    """``""``, ``"status"``, ``"eviction"`` or ``"binding"``."""
    code: int
    """The HTTP status answered; 0 for a connection reset without an answer."""
    changed: bool
    """Whether the store changed (a new resourceVersion): false for a refused write
    and for a no-op one."""


@dataclass(eq=False)
class _Store:
    rtype: ResourceType
    objects: dict[tuple[str, str], Obj] = field(default_factory=dict)
    history: list[_Change] = field(default_factory=list)


@dataclass(eq=False)
class _Watcher:
    request: web.Request
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    dropped: bool = False


@dataclass(frozen=True)
class _Target:
    """What a resource request addresses."""

    store: _Store
    namespace: str | None
    """The URL's namespace; None for a cluster-scoped path."""
    name: str | None
    sub: str

    @property
    def rtype(self) -> ResourceType:
        return self.store.rtype

    def key(self, name: str | None = None) -> tuple[str, str]:
        return self.namespace or "", name if name is not None else self.name or ""


def _obj_key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _with_rv(obj: Obj, rv: int) -> Obj:
    out = copy.deepcopy(obj)
    out.setdefault("metadata", {})["resourceVersion"] = str(rv)
    return out


def _as_list_item(rtype: ResourceType, obj: Obj) -> Obj:
    if not rtype.builtin:
        return obj  # unstructured: custom resources keep their kind in a list
    # The real list encodes typed items without their own kind/apiVersion.
    return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}


def _timestamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _dumps(obj: Any) -> bytes:
    # Go's json.Encoder (what the apiserver's serializer uses) writes compact JSON and a
    # trailing newline; the sync client's line reader depends on the newline.
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def _success(*, code: int | None = None, details: Obj | None = None) -> Obj:
    """A success ``Status`` as the server writes it (a delete's carries ``details``,
    an eviction's or a binding's the 201 ``code``)."""
    body: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
    if details is not None:
        body["details"] = details
    if code is not None:
        body["code"] = code
    return body


def _json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=_dumps(body), status=status, content_type=_JSON)


def _parse_bool(query: Mapping[str, str], name: str) -> bool:
    value = query.get(name)
    if value is None or value == "":
        return False
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ApiError(400, f'{name}: Invalid value: "{value}": not a boolean')


def _meta(obj: Obj) -> Obj:
    """``obj["metadata"]``, made a dict if it is missing or not one."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = obj["metadata"] = {}
    return meta


def _without(obj: Mapping[str, Any], *keys: str) -> Obj:
    return {k: v for k, v in obj.items() if k not in keys}


# RFC 1123 subdomain (apimachinery's IsDNS1123Subdomain), the rule for object names.
_DNS1123_SUBDOMAIN: Final = re.compile(
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
)
_DNS1123_MESSAGE: Final = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
    "'-' or '.', and must start and end with an alphanumeric character (e.g. "
    "'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)


def _check_name(rtype: ResourceType, name: str) -> None:
    if len(name) > 253:
        raise _kind_invalid(
            rtype,
            name,
            "metadata.name",
            f'Invalid value: "{name}": must be no more than 253 characters',
        )
    if not _DNS1123_SUBDOMAIN.fullmatch(name):
        raise _kind_invalid(
            rtype, name, "metadata.name", f'Invalid value: "{name}": {_DNS1123_MESSAGE}'
        )


# --- patches -------------------------------------------------------------------------


def json_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: ``patch`` applied to ``target`` (neither is modified)."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = json_merge_patch(out.get(key), value)
    return out


def _strategic_merge(
    target: Any, patch: Any, keys: Mapping[tuple[str, ...], str], path: tuple[str, ...] = ()
) -> Any:
    if isinstance(patch, Mapping):
        out = copy.deepcopy(target) if isinstance(target, dict) else {}
        for key, value in patch.items():
            if str(key).startswith("$"):
                raise ApiError(400, f"this fake does not implement the directive {key!r}")
            if value is None:
                out.pop(key, None)
            else:
                out[key] = _strategic_merge(out.get(key), value, keys, (*path, str(key)))
        return out
    merge_key = keys.get(path)
    if isinstance(patch, list) and merge_key is not None and isinstance(target, list):
        out_list = copy.deepcopy(target)
        for item in patch:
            index = next(
                (
                    i
                    for i, old in enumerate(out_list)
                    if isinstance(old, Mapping)
                    and isinstance(item, Mapping)
                    and old.get(merge_key) == item.get(merge_key)
                ),
                None,
            )
            if index is None:
                out_list.append(copy.deepcopy(item))
            else:
                out_list[index] = _strategic_merge(out_list[index], item, keys, path)
        return out_list
    return copy.deepcopy(patch)


class JsonPatchError(ValueError):
    """A JSON patch operation that does not apply to the document."""


def _pointer(path: object) -> list[str]:
    """RFC 6901: the reference tokens of a JSON pointer."""
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise JsonPatchError(f"invalid JSON pointer: {path!r}")
    if not path:
        return []
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def _index(ref: str, size: int, *, insert: bool) -> int:
    if insert and ref == "-":
        return size
    if not ref.isdigit() or (len(ref) > 1 and ref.startswith("0")):
        raise JsonPatchError(f"invalid array index: {ref!r}")
    index = int(ref)
    if index > size or (not insert and index == size):
        raise JsonPatchError(f"array index out of bounds: {index}")
    return index


def _walk(doc: Any, tokens: list[str], what: str) -> Any:
    cur = doc
    for token in tokens:
        if isinstance(cur, dict) and token in cur:
            cur = cur[token]
        elif isinstance(cur, list):
            cur = cur[_index(token, len(cur), insert=False)]
        else:
            raise JsonPatchError(f"{what}: doc is missing path: /{'/'.join(tokens)}")
    return cur


def _json_equal(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902: ``operations`` applied to a copy of ``target``.

    ``ApiError`` 400 for a document that is not a list of operations (as
    ``jsonpatch.DecodePatch``); :class:`JsonPatchError` for an operation that does not
    apply (a missing path, a failed ``test``)."""
    if not isinstance(operations, list) or not all(isinstance(o, Mapping) for o in operations):
        raise ApiError(400, "json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = copy.deepcopy(target)
    for op in operations:
        kind = op.get("op")
        tokens = _pointer(op.get("path"))
        if kind in ("add", "replace", "test") and "value" not in op:
            raise JsonPatchError(f"{kind} operation: missing value")
        if kind == "test":
            if not _json_equal(_walk(doc, tokens, "test operation"), op["value"]):
                raise JsonPatchError(f"testing value {op.get('path')} failed: test failed")
            continue
        if kind in ("move", "copy"):
            source = _pointer(op.get("from"))
            value = copy.deepcopy(_walk(doc, source, f"{kind} operation"))
            if kind == "move":
                doc = _remove_at(doc, source)
            doc = _add_at(doc, tokens, value, replace=False)
        elif kind == "add":
            doc = _add_at(doc, tokens, copy.deepcopy(op["value"]), replace=False)
        elif kind == "replace":
            _walk(doc, tokens, "replace operation does not apply")
            doc = _add_at(doc, tokens, copy.deepcopy(op["value"]), replace=True)
        elif kind == "remove":
            doc = _remove_at(doc, tokens)
        else:
            raise JsonPatchError(f"Unexpected kind: {kind}")
    return doc


def _add_at(doc: Any, tokens: list[str], value: Any, *, replace: bool) -> Any:
    if not tokens:
        return value
    parent = _walk(doc, tokens[:-1], "add operation does not apply")
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        index = _index(last, len(parent), insert=not replace)
        if replace:
            parent[index] = value
        else:
            parent.insert(index, value)
    else:
        raise JsonPatchError(
            f"add operation does not apply: doc is missing path: /{'/'.join(tokens)}"
        )
    return doc


def _remove_at(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        raise JsonPatchError("unable to remove the whole document")
    parent = _walk(doc, tokens[:-1], "remove operation does not apply")
    last = tokens[-1]
    if isinstance(parent, dict) and last in parent:
        del parent[last]
    elif isinstance(parent, list):
        del parent[_index(last, len(parent), insert=False)]
    else:
        raise JsonPatchError(f"Unable to remove nonexistent key: {last}: missing value")
    return doc


# --- per-kind rules --------------------------------------------------------------------

# apimachinery's quantity regular expression, as the Node decoder reports it.
_QUANTITY_RE: Final = "^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
# The CRD's OpenAPI pattern for a quantity (controller-gen's for resource.Quantity).
_CRD_QUANTITY_RE: Final = re.compile(
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
    r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
_BINARY_SUFFIXES: Final = ("Ki", "Mi", "Gi", "Ti", "Pi", "Ei")


def _canonical_quantity(value: object, where: str) -> str:
    """A Node quantity as the API server stores it: its canonical form (``"2000"`` is
    ``"2k"``, ``"1500m"`` stays). A binary-suffixed quantity is kept as sent (the
    real server canonicalizes those too, in binary units; this fake does not)."""
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str):
        raise ApiError(400, f"{where}: quantities must be strings or integers, got {value!r}")
    try:
        quantity = parse_quantity(text, key=where, allow_negative=True)
    except QoSValidationError:
        raise ApiError(
            400, f"{where}: quantities must match the regular expression '{_QUANTITY_RE}'"
        ) from None
    if text.endswith(_BINARY_SUFFIXES):
        return text
    return str(quantity)


def _canonical_node(node: Obj) -> None:
    status = node.get("status")
    if not isinstance(status, dict):
        return
    for field_name in ("capacity", "allocatable"):
        resources = status.get(field_name)
        if isinstance(resources, dict):
            for key in list(resources):
                resources[key] = _canonical_quantity(resources[key], f"status.{field_name}[{key}]")


def _cnr_invalid(name: str, problem: str) -> ApiError:
    field_path, _, detail = problem.partition(": ")
    return _invalid(CNR_GROUP, CNR_KIND, name, field_path, detail)


def _check_resource_list(name: str, where: str, value: object) -> None:
    if value is None:
        return
    if not isinstance(value, Mapping):
        raise _cnr_invalid(
            name,
            f'{where}: Invalid value: "{type(value).__name__}": {where} '
            "in body must be of type object",
        )
    for key, amount in value.items():
        text = str(amount) if isinstance(amount, int) and not isinstance(amount, bool) else amount
        if not isinstance(text, str) or not _CRD_QUANTITY_RE.match(text):
            raise _cnr_invalid(
                name,
                f'{where}.{key}: Invalid value: "{amount}": {where}.{key} in body should '
                f"match '{_CRD_QUANTITY_RE.pattern}'",
            )


def _check_resources(name: str, where: str, value: object) -> None:
    if not isinstance(value, Mapping):
        raise _cnr_invalid(name, f"{where}: Required value")
    for field_name in ("allocatable", "capacity"):
        _check_resource_list(name, f"{where}.{field_name}", value.get(field_name))


def _validate_cnr_status(cnr: Obj) -> None:
    """The CRD schema's rules on ``status`` that a reporter can break (the required
    fields, quantities), and its one default (``topologyPolicy: none``)."""
    name = str(_get(cnr, "metadata", "name") or "")
    status = cnr.get("status")
    if status is None:
        return
    if not isinstance(status, dict):
        raise _cnr_invalid(name, "status: Invalid value: status in body must be of type object")
    _check_resources(name, "status.resources", status.get("resources"))
    zones = status.get("topologyZone")
    if zones is not None:
        if not isinstance(zones, list):
            raise _cnr_invalid(name, "status.topologyZone: Invalid value: must be of type array")
        for i, zone in enumerate(zones):
            where = f"status.topologyZone[{i}]"
            if not isinstance(zone, Mapping) or not zone.get("type"):
                raise _cnr_invalid(name, f"{where}.type: Required value")
            # `children` is schemaless in the CRD (x-kubernetes-preserve-unknown-fields):
            # only the top-level zones are validated.
            _check_resources(name, f"{where}.resources", zone.get("resources"))
    status.setdefault("topologyPolicy", "none")


def _prepare_pod_create(pod: Obj) -> None:
    name = str(_get(pod, "metadata", "name") or "")
    containers = _get(pod, "spec", "containers")
    if not isinstance(containers, list) or not containers:
        raise _invalid("", "Pod", name, "spec.containers", "Required value")
    # The pod strategy's PrepareForCreate: a fresh status.
    pod["status"] = {"phase": "Pending"}


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def parse_micro_time(text: str) -> datetime:
    """A MicroTime as the API server decodes it: Go's ``time.Parse(RFC3339Micro, text)``,
    which needs exactly six fractional digits. ``ValueError`` with Go's message."""
    prefix = f'parsing time "{text}" as "{MICRO_TIME_LAYOUT}": cannot parse '
    match = re.match(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})", text)
    if match is None:
        raise ValueError(f'{prefix}"{text}" as "2006"')
    rest = text[match.end() :]
    fraction = re.match(r"[.,](\d{6})", rest)
    if fraction is None:
        raise ValueError(f'{prefix}"{rest}" as ".000000"')
    zone_text = rest[7:]
    zone = re.fullmatch(r"Z|([+-])(\d{2}):(\d{2})", zone_text)
    if zone is None:
        raise ValueError(f'{prefix}"{zone_text}" as "Z07:00"')
    if zone_text == "Z":
        tz: timezone = UTC
    else:
        offset = timedelta(hours=int(zone.group(2)), minutes=int(zone.group(3)))
        tz = timezone(-offset if zone.group(1) == "-" else offset)
    try:
        year, month, day, hour, minute, second = (int(g) for g in match.groups())
        return datetime(year, month, day, hour, minute, second, int(fraction.group(1)), tzinfo=tz)
    except ValueError as e:
        raise ValueError(f'parsing time "{text}": {e}') from None


def micro_time(when: datetime) -> str:
    """``when`` (aware) as the API server writes a MicroTime:
    ``2026-01-01T00:00:00.000000Z``."""
    if when.tzinfo is None:
        raise ValueError("micro_time needs an aware datetime")
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# Lease spec fields: (Go type, decoder). The times are MicroTime.
_LEASE_INTS: Final = ("leaseDurationSeconds", "leaseTransitions")
_LEASE_STRINGS: Final = ("holderIdentity", "preferredHolder", "strategy")
_LEASE_TIMES: Final = ("acquireTime", "renewTime")


def _validate_lease(lease: Obj) -> None:
    """Decoding (JSON types, MicroTime) and ``ValidateLeaseSpec`` of a Lease; the
    times are stored as the server re-encodes them (UTC, six digits, ``Z``)."""
    rtype = LEASES
    spec = lease.get("spec")
    if spec is None:
        return
    if not isinstance(spec, dict):
        raise _bad_body(
            rtype,
            f"json: cannot unmarshal {_json_type(spec)} into Go struct field Lease.spec of "
            "type v1.LeaseSpec",
        )
    for key in list(spec):
        if spec[key] is None:
            del spec[key]  # a nil pointer: omitted when the server writes it back
    for key in _LEASE_INTS:
        value = spec.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise _bad_body(
                rtype,
                f"json: cannot unmarshal {_json_type(value)} into Go struct field "
                f"LeaseSpec.spec.{key} of type int32",
            )
    for key in _LEASE_STRINGS:
        value = spec.get(key)
        if value is not None and not isinstance(value, str):
            raise _bad_body(
                rtype,
                f"json: cannot unmarshal {_json_type(value)} into Go struct field "
                f"LeaseSpec.spec.{key} of type string",
            )
    for key in _LEASE_TIMES:
        value = spec.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise _bad_body(
                rtype, f"json: cannot unmarshal {_json_type(value)} into Go value of type string"
            )
        try:
            spec[key] = micro_time(parse_micro_time(value))
        except ValueError as e:
            raise _bad_body(rtype, str(e)) from None
    name = str(_get(lease, "metadata", "name") or "")
    duration = spec.get("leaseDurationSeconds")
    if duration is not None and duration <= 0:
        raise _kind_invalid(
            rtype,
            name,
            "spec.leaseDurationSeconds",
            f"Invalid value: {duration}: must be greater than 0",
        )
    transitions = spec.get("leaseTransitions")
    if transitions is not None and transitions < 0:
        raise _kind_invalid(
            rtype,
            name,
            "spec.leaseTransitions",
            f"Invalid value: {transitions}: must be greater than or equal to 0",
        )


# The Node's lists that a strategic merge patch merges by key rather than replaces
# (the patchMergeKey tags of k8s.io/api/core/v1 NodeStatus); every other list is
# replaced, as a JSON merge patch would.
_NODE_MERGE_KEYS: Final[Mapping[tuple[str, ...], str]] = {
    ("status", "conditions"): "type",
    ("status", "addresses"): "type",
    ("status", "volumesAttached"): "name",
}

PODS: Final = ResourceType(
    group="",
    version="v1",
    plural="pods",
    kind="Pod",
    namespaced=True,
    builtin=True,
    field_labels=_POD_FIELDS,
    verbs=frozenset({"get", "list", "watch", "create", "delete", "patch"}),
    prepare_create=_prepare_pod_create,
)
"""core/v1 pods: no update or patch over HTTP (tests play the kubelet in Python)."""

NODES: Final = ResourceType(
    group="",
    version="v1",
    plural="nodes",
    kind="Node",
    namespaced=False,
    status_subresource=True,
    validate=_canonical_node,
    builtin=True,
    field_labels=_NODE_FIELDS,
    merge_keys=_NODE_MERGE_KEYS,
    storage_prefix="minions",
)
"""core/v1 nodes (etcd keeps them under ``/registry/minions``)."""

LEASES: Final = ResourceType(
    group="coordination.k8s.io",
    version="v1",
    plural="leases",
    kind="Lease",
    namespaced=True,
    validate=_validate_lease,
    builtin=True,
    field_error=_META_FIELDS_ONLY,
)
"""coordination.k8s.io/v1 leases, for leader election."""

SECRETS: Final = ResourceType(
    group="",
    version="v1",
    plural="secrets",
    kind="Secret",
    namespaced=True,
    builtin=True,
)
"""core/v1 secrets (not served unless a test registers them: :meth:`FakeApiServer.register`)."""

MUTATING_WEBHOOK_CONFIGURATIONS: Final = ResourceType(
    group="admissionregistration.k8s.io",
    version="v1",
    plural="mutatingwebhookconfigurations",
    kind="MutatingWebhookConfiguration",
    namespaced=False,
    builtin=True,
    merge_keys={("webhooks",): "name"},
)
"""admissionregistration.k8s.io/v1, cluster-scoped (registered by a test, as SECRETS)."""

VALIDATING_WEBHOOK_CONFIGURATIONS: Final = ResourceType(
    group="admissionregistration.k8s.io",
    version="v1",
    plural="validatingwebhookconfigurations",
    kind="ValidatingWebhookConfiguration",
    namespaced=False,
    builtin=True,
    merge_keys={("webhooks",): "name"},
)
"""admissionregistration.k8s.io/v1, cluster-scoped (registered by a test, as SECRETS)."""

ENDPOINT_SLICES: Final = ResourceType(
    group="discovery.k8s.io",
    version="v1",
    plural="endpointslices",
    kind="EndpointSlice",
    namespaced=True,
    builtin=True,
    verbs=frozenset({"get", "list", "watch", "create", "update", "delete"}),
)
"""discovery.k8s.io/v1 endpointslices, namespaced (registered by a test, as SECRETS)."""

CUSTOM_NODE_RESOURCES: Final = custom_resource(
    CNR_GROUP, CNR_VERSION, CNR_PLURAL, CNR_KIND, namespaced=False, validate=_validate_cnr_status
)
KATALYST_CUSTOM_CONFIGS: Final = custom_resource(
    CONFIG_GROUP, CONFIG_VERSION, "katalystcustomconfigs", "KatalystCustomConfig", namespaced=True
)
ADMIN_QOS_CONFIGURATIONS: Final = custom_resource(
    CONFIG_GROUP,
    CONFIG_VERSION,
    "adminqosconfigurations",
    "AdminQoSConfiguration",
    namespaced=True,
)
CUSTOM_NODE_CONFIGS: Final = custom_resource(
    CONFIG_GROUP, CONFIG_VERSION, "customnodeconfigs", "CustomNodeConfig", namespaced=False
)

BUILTIN_RESOURCES: Final = (PODS, NODES, LEASES)
"""Always served."""

DEFAULT_CUSTOM_RESOURCES: Final = (
    CUSTOM_NODE_RESOURCES,
    KATALYST_CUSTOM_CONFIGS,
    ADMIN_QOS_CONFIGURATIONS,
    CUSTOM_NODE_CONFIGS,
)
"""The CRDs installed unless a test chooses others: Katalyst's, each with the status
subresource as katalyst-api declares it."""


def _main_strategy(rtype: ResourceType, current: Obj, new: Obj) -> Obj:
    """PrepareForUpdate of the main resource: with the status subresource, the
    status is not the request's to change."""
    if rtype.status_subresource:
        if "status" in current:
            new["status"] = copy.deepcopy(current["status"])
        else:
            new.pop("status", None)
    return new


def _status_strategy(rtype: ResourceType, current: Obj, new: Obj) -> Obj:
    """PrepareForUpdate of ``/status``."""
    if rtype.builtin:
        # The node's status strategy: the spec stays, metadata may change.
        if "spec" in current:
            new["spec"] = copy.deepcopy(current["spec"])
        else:
            new.pop("spec", None)
        return new
    # apiextensions' status strategy keeps nothing of the request but its status.
    result = copy.deepcopy(current)
    if "status" in new:
        result["status"] = new["status"]
    else:
        result.pop("status", None)
    return result


def _spec_changed(rtype: ResourceType, current: Obj, new: Obj) -> bool:
    """apiextensions' rule for a new generation: anything but metadata changed (the
    status, when it has its own subresource, is compared too, but the strategy has
    already restored it)."""
    skip = ("metadata", "status") if rtype.status_subresource else ("metadata",)
    return _without(current, *skip) != _without(new, *skip)


class FakeApiServer:
    """The fake apiserver; ``async with FakeApiServer() as api: ... api.url``."""

    def __init__(
        self,
        *,
        token: str | None = DEFAULT_TOKEN,
        bookmark_interval: float = 1.0,
        initial_resource_version: int = 1,
        custom_resources: Iterable[ResourceType] = DEFAULT_CUSTOM_RESOURCES,
        rbac: bool | rbac_.Policy = True,
    ) -> None:
        """``rbac``: our processes (known by their User-Agent) may only do what the
        shipped manifests grant them (:mod:`tests.support.rbac`), or this policy. ``token``: the
        bearer token clients must send (None: accept any request,
        anonymous included). ``bookmark_interval``: seconds between BOOKMARK events on
        watches that allow them. ``initial_resource_version``: the resourceVersion
        before the first write. ``custom_resources``: the CRDs installed (pods, nodes
        and leases are always served)."""
        self.token = token
        self.rbac = rbac
        self.bookmark_interval = bookmark_interval
        self.requests: list[RecordedRequest] = []
        """Every request seen, in order (failed and rejected ones included)."""
        self.patches: list[RecordedPatch] = []
        """Every PATCH (path, content type, decoded body), in order, refused ones included."""
        self.writes: list[RecordedWrite] = []
        """Every write request to a resource (POST, PUT, PATCH, DELETE) with its outcome,
        in order; refused ones (errors, outages, injected failures) included. Writes
        made through the Python methods are the cluster's, not clients', and are not
        recorded."""
        self.evictions: list[Obj] = []
        """The Eviction bodies of accepted evictions, in order."""
        self.bindings: list[Obj] = []
        """The Binding bodies of accepted bindings, in order."""
        self.events: list[Obj] = []
        """The core/v1 Events created, as stored (uid, resourceVersion added), in order."""
        # Reentrant: update_object's `mutate` runs under it and may read the store.
        self._lock = threading.RLock()
        self._rv = initial_resource_version
        self._compacted_rv = initial_resource_version
        self._stores: dict[tuple[str, str, str], _Store] = {}
        for rtype in (*BUILTIN_RESOURCES, *custom_resources):
            self.register(rtype)
        self._watchers: set[_Watcher] = set()
        self._failures: list[int] = []
        self._outage: OutageMode | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    # --- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Listen on an ephemeral port of 127.0.0.1."""
        if self._runner is not None:
            raise RuntimeError("FakeApiServer is already started")
        self._loop = asyncio.get_running_loop()
        app = web.Application(middlewares=[self._middleware])
        self._add_routes(app.router)
        # handler_cancellation: a watch whose client went away is cancelled at once
        # rather than lingering (and counting in open_watches) until its next write.
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=2.0
        )
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", 0))
            site = web.SockSite(runner, sock)
            await site.start()
        except BaseException:
            sock.close()
            await runner.cleanup()
            raise
        host, port = sock.getsockname()[:2]
        self._url = f"http://{host}:{port}"
        self._runner = runner
        log.debug("fake apiserver listening on %s", self._url)

    async def stop(self) -> None:
        """End every watch cleanly and stop listening. Idempotent."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self.drop_watches()
        await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        if self._url is None:
            raise RuntimeError("FakeApiServer is not started")
        return self._url

    def kubeconfig(self, path: Path, *, token: str | None = None) -> Path:
        """Write a kubeconfig for this server (context ``fake``, namespace ``default``,
        a bearer token) to ``path``, creating its directory, and return ``path``.

        The token written is ``token`` if given (e.g. a wrong one), else the server's
        :attr:`token` as it is now; no user token when both are None."""
        token = token if token is not None else self.token
        user: dict[str, str] = {} if token is None else {"token": token}
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": user}],
            "contexts": [
                {
                    "name": "fake",
                    "context": {"cluster": "fake", "user": "fake", "namespace": "default"},
                }
            ],
            "current-context": "fake",
            "preferences": {},
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    # --- resource types ----------------------------------------------------------

    def register(self, rtype: ResourceType) -> ResourceType:
        """Serve ``rtype`` from now on (as installing its CRD would) and return it.
        ``ValueError`` if a resource of that group, version and plural is served."""
        key = (rtype.group, rtype.version, rtype.plural)
        with self._lock:
            if key in self._stores:
                raise ValueError(f"{rtype.qualified}/{rtype.version} is already served")
            self._stores[key] = _Store(rtype)
        return rtype

    def resource(self, resource: ResourceType | str) -> ResourceType:
        """The served type named by ``resource``: a :class:`ResourceType`, or
        ``plural.group`` (``"leases.coordination.k8s.io"``), or a plural served by
        one group only (``"leases"``). ``KeyError`` if none is served."""
        return self._store(resource).rtype

    @property
    def resources(self) -> list[ResourceType]:
        """Every served type."""
        with self._lock:
            return [s.rtype for s in self._stores.values()]

    def _store(self, resource: ResourceType | str) -> _Store:
        with self._lock:
            if isinstance(resource, ResourceType):
                store = self._stores.get((resource.group, resource.version, resource.plural))
                if store is not None:
                    return store
                raise KeyError(f"{resource.qualified} is not served")
            plural, _, group = resource.partition(".")
            found = [
                s
                for s in self._stores.values()
                if s.rtype.plural == plural and (not group or s.rtype.group == group)
            ]
            if len(found) != 1:
                raise KeyError(f"{resource!r} names {len(found)} served resources")
            return found[0]

    # --- the cluster, driven by the test -----------------------------------------

    @property
    def resource_version(self) -> str:
        """The current (latest) resourceVersion."""
        with self._lock:
            return str(self._rv)

    def objects(self, resource: ResourceType | str, namespace: str | None = None) -> list[Obj]:
        """Copies of the stored objects of ``resource`` (in ``namespace``, or all),
        ordered by namespace and name."""
        store = self._store(resource)
        with self._lock:
            return [
                copy.deepcopy(store.objects[k])
                for k in sorted(store.objects)
                if namespace is None or k[0] == namespace
            ]

    def get_object(
        self, resource: ResourceType | str, name: str, *, namespace: str = ""
    ) -> Obj | None:
        """A copy of one object, or None (``namespace`` for namespaced resources)."""
        store = self._store(resource)
        with self._lock:
            obj = store.objects.get((namespace, name))
            return None if obj is None else copy.deepcopy(obj)

    def create_object(self, resource: ResourceType | str, obj: Mapping[str, Any]) -> Obj:
        """Store a new object as another writer's create (and status update) would have
        left it, and return the stored copy (an ADDED event).

        Fills ``kind``, ``apiVersion``, ``metadata.namespace`` (``default``, for
        namespaced resources; dropped for cluster-scoped ones), and when absent
        ``metadata.uid``, ``metadata.creationTimestamp`` (give an old one to play an
        object created long ago) and, for custom resources, ``metadata.generation``
        (1). The status is kept. The type's ``validate`` hook runs. ``ValueError``
        without a name, for an object the hook refuses, or if it exists."""
        store = self._store(resource)
        rtype = store.rtype
        new = copy.deepcopy(dict(obj))
        new.update(kind=rtype.kind, apiVersion=rtype.api_version)
        meta = _meta(new)
        if rtype.namespaced:
            meta.setdefault("namespace", "default")
        else:
            meta.pop("namespace", None)
        if not rtype.builtin:
            meta.setdefault("generation", 1)
        try:
            if not meta.get("name"):
                raise ApiError(422, f"a {rtype.kind} needs metadata.name")
            if rtype.validate is not None:
                rtype.validate(new)
            with self._lock:
                return self._insert(store, new)
        except ApiError as e:
            raise ValueError(e.message) from None

    def update_object(
        self,
        resource: ResourceType | str,
        name: str,
        mutate: Callable[[Obj], None],
        *,
        namespace: str = "",
    ) -> Obj:
        """Apply ``mutate`` to a copy of the object and store it (a MODIFIED event), as
        another writer's update would; return the stored copy. A mutation that changes
        nothing writes nothing. Custom resources get a new ``generation`` when anything
        but metadata and status changes. ``KeyError`` if there is no such object;
        ``ValueError`` if ``mutate`` renames it or changes its UID, or the type's
        ``validate`` hook refuses the result."""
        store = self._store(resource)
        rtype = store.rtype
        with self._lock:
            current = store.objects.get((namespace, name))
            if current is None:
                where = f"{namespace}/{name}" if namespace else name
                raise KeyError(f"{rtype.qualified} {where} not found")
            new = copy.deepcopy(current)
            mutate(new)
            meta = _meta(new)
            for key in ("name", "namespace", "uid"):
                if meta.get(key) != current["metadata"].get(key):
                    raise ValueError(f"an update may not change metadata.{key}")
            new.update(kind=rtype.kind, apiVersion=rtype.api_version)
            if not rtype.builtin:
                generation = int(current["metadata"].get("generation", 1))
                if _spec_changed(rtype, current, new):
                    generation += 1
                meta["generation"] = generation
            try:
                if rtype.validate is not None:
                    rtype.validate(new)
            except ApiError as e:
                raise ValueError(e.message) from None
            return self._replace(store, current, new)[0]

    def delete_object(self, resource: ResourceType | str, name: str, *, namespace: str = "") -> Obj:
        """Delete an object at once (a DELETED event) and return its last state,
        carrying the deletion's resourceVersion. ``KeyError`` if there is none."""
        store = self._store(resource)
        with self._lock:
            if (namespace, name) not in store.objects:
                where = f"{namespace}/{name}" if namespace else name
                raise KeyError(f"{store.rtype.qualified} {where} not found")
            return self._remove(store, (namespace, name))

    # --- pods, nodes and CNRs (the generic methods, with each kind's defaults) -----

    def pods(self) -> list[Obj]:
        """Copies of every stored pod, ordered by namespace and name."""
        return self.objects(PODS)

    def get_pod(self, namespace: str, name: str) -> Obj | None:
        """A copy of one pod, or None."""
        return self.get_object(PODS, name, namespace=namespace)

    def create_pod(self, pod: Mapping[str, Any]) -> Obj:
        """Store a new pod (as a controller's create would) and return the stored copy.

        Fills ``kind``, ``apiVersion``, ``metadata.namespace`` (``default``),
        ``metadata.uid`` (a uuid4, unless given: tests often need a known pod UID),
        ``metadata.creationTimestamp`` and ``status.phase`` (``Pending``) when absent.
        ``ValueError`` if it has no name or already exists."""
        obj = copy.deepcopy(dict(pod))
        status = obj.get("status")
        if not isinstance(status, dict):
            status = obj["status"] = {}
        status.setdefault("phase", "Pending")
        return self.create_object(PODS, obj)

    def update_pod(self, namespace: str, name: str, mutate: Callable[[Obj], None]) -> Obj:
        """Apply ``mutate`` to a copy of the pod and store it (a MODIFIED event), as the
        kubelet's status update or a controller's update would; return the stored
        copy. A mutation that changes nothing writes nothing. ``KeyError`` if there is
        no such pod; ``ValueError`` if ``mutate`` renames it or changes its UID."""
        return self.update_object(PODS, name, mutate, namespace=namespace)

    def delete_pod(self, namespace: str, name: str) -> Obj:
        """Delete a pod at once (no grace period) and return its last state, carrying
        the deletion's resourceVersion. ``KeyError`` if there is no such pod."""
        return self.delete_object(PODS, name, namespace=namespace)

    def nodes(self) -> list[Obj]:
        """Copies of every stored Node, ordered by name."""
        return self.objects(NODES)

    def get_node(self, name: str) -> Obj | None:
        """A copy of one Node, or None."""
        return self.get_object(NODES, name)

    def create_node(self, node: Mapping[str, Any]) -> Obj:
        """Store a new Node (as the kubelet's registration would) and return the stored
        copy: ``kind``, ``apiVersion``, ``metadata.uid`` (unless given),
        ``creationTimestamp`` and ``resourceVersion`` filled in, the quantities of
        ``status.capacity``/``status.allocatable`` in their canonical form.
        ``ValueError`` without a name, for a bad quantity, or if it exists."""
        return self.create_object(NODES, node)

    def update_node(self, name: str, mutate: Callable[[Obj], None]) -> Obj:
        """Apply ``mutate`` to a copy of the Node and store it (as the kubelet's status
        update would, or an admin's label change); return the stored copy.
        ``KeyError`` if there is no such node."""
        return self.update_object(NODES, name, mutate)

    def delete_node(self, name: str) -> Obj:
        """Delete a Node and return its last state. ``KeyError`` if there is none."""
        return self.delete_object(NODES, name)

    def cnrs(self) -> list[Obj]:
        """Copies of every stored CustomNodeResource, ordered by name."""
        return self.objects(CUSTOM_NODE_RESOURCES)

    def get_cnr(self, name: str) -> Obj | None:
        """A copy of one CustomNodeResource, or None."""
        return self.get_object(CUSTOM_NODE_RESOURCES, name)

    def create_cnr(self, cnr: Mapping[str, Any]) -> Obj:
        """Store a new CustomNodeResource *with* the status given (as another writer's
        create and status update would leave it) and return the stored copy.
        ``ValueError`` without a name, for a status the CRD's schema refuses, or if it
        exists."""
        return self.create_object(CUSTOM_NODE_RESOURCES, cnr)

    def update_cnr(self, name: str, mutate: Callable[[Obj], None]) -> Obj:
        """Apply ``mutate`` to a copy of the CNR and store it (another writer's update);
        return the stored copy. ``KeyError`` if there is none, ``ValueError`` for a
        status the schema refuses."""
        return self.update_object(CUSTOM_NODE_RESOURCES, name, mutate)

    def delete_cnr(self, name: str) -> Obj:
        """Delete a CNR and return its last state. ``KeyError`` if there is none."""
        return self.delete_object(CUSTOM_NODE_RESOURCES, name)

    # --- what clients did ------------------------------------------------------------

    def writes_to(
        self,
        resource: ResourceType | str,
        name: str,
        *,
        namespace: str = "",
        subresource: str | None = None,
    ) -> list[RecordedWrite]:
        """The write requests clients sent to one object (creates included), in order;
        only those to ``subresource`` (``""`` is the object itself) if given.
        ``len(api.writes_to(...))`` counts the writes a controller made;
        ``[w for w in ... if w.changed]`` the ones that changed something."""
        qualified = self.resource(resource).qualified
        return [
            w
            for w in list(self.writes)
            if w.resource == qualified
            and w.name == name
            and w.namespace == namespace
            and (subresource is None or w.subresource == subresource)
        ]

    # --- failures ------------------------------------------------------------------

    def compact(self) -> None:
        """Forget the event history, as etcd compaction and the watch cache's window
        do: a watch from any resourceVersion older than the current one now gets 410.
        """
        with self._lock:
            for store in self._stores.values():
                store.history.clear()
            self._compacted_rv = self._rv
        self._wake_watchers()

    def fail_next(self, n: int, status: int = 500) -> None:
        """Answer the next ``n`` requests (any path, watches included) with a ``Status``
        error of code ``status`` instead of serving them (requests refused by an outage
        do not count)."""
        with self._lock:
            self._failures.extend([status] * n)

    def start_outage(self, mode: OutageMode = "unavailable") -> int:
        """Fail every request from now on until :meth:`end_outage`, and close the open
        watches; return how many were closed.

        ``"unavailable"``: a ``Status`` 503 ``ServiceUnavailable`` (an apiserver that is
        shutting down or overloaded, a load balancer without a healthy backend); open
        watches end cleanly. ``"reset"``: the TCP connection is reset without an answer
        (a crashed apiserver); open watches are reset too. The Python methods keep
        working: the cluster goes on while clients cannot see it."""
        with self._lock:
            self._outage = mode
        return self.drop_watches(abort=mode == "reset")

    def end_outage(self) -> None:
        """Serve requests again (after :meth:`start_outage`)."""
        with self._lock:
            self._outage = None

    @property
    def outage_mode(self) -> OutageMode | None:
        """The current outage, or None while serving."""
        with self._lock:
            return self._outage

    @contextlib.contextmanager
    def outage(self, mode: OutageMode = "unavailable") -> Iterator[None]:
        """``with api.outage(): ...``: :meth:`start_outage` for the block."""
        self.start_outage(mode)
        try:
            yield
        finally:
            self.end_outage()

    # --- watches -----------------------------------------------------------------

    @property
    def open_watches(self) -> int:
        """How many watch streams are open now."""
        with self._lock:
            return len(self._watchers)

    async def wait_for_watches(self, count: int = 1, *, timeout: float = 5.0) -> None:
        """Wait until at least ``count`` watch streams are open (``TimeoutError``)."""
        async with asyncio.timeout(timeout):
            while self.open_watches < count:
                await asyncio.sleep(0.01)

    def drop_watches(self, *, abort: bool = False) -> int:
        """Close every open watch stream from the server side and return how many.

        ``abort=False`` ends each stream cleanly (the terminating chunk), as the
        apiserver does at ``timeoutSeconds`` or on graceful shutdown; ``abort=True``
        resets the TCP connection, as a crashed apiserver or a load balancer would."""
        with self._lock:
            watchers = list(self._watchers)
            for w in watchers:
                w.dropped = True

        def act() -> None:
            for w in watchers:
                transport = w.request.transport
                if abort and transport is not None:
                    # The connection's loss cancels the handler (handler_cancellation).
                    transport.abort()
                else:
                    w.wake.set()

        self._on_loop(act)
        return len(watchers)

    # --- store internals (the caller holds the lock) -------------------------------

    def _on_loop(self, fn: Callable[[], None]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            fn()
        else:
            loop.call_soon_threadsafe(fn)

    def _wake_watchers(self) -> None:
        with self._lock:
            watchers = list(self._watchers)

        def wake() -> None:
            for w in watchers:
                w.wake.set()

        self._on_loop(wake)

    def _insert(self, store: _Store, obj: Obj) -> Obj:
        """Store a new object (409 AlreadyExists) and return a copy."""
        key = _obj_key(obj)
        if key in store.objects:
            raise _already_exists(store.rtype, key[1])
        self._rv += 1
        meta = obj["metadata"]
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", _timestamp())
        meta["resourceVersion"] = str(self._rv)
        stored = copy.deepcopy(obj)
        store.objects[key] = stored
        store.history.append(_Change(self._rv, "ADDED", stored, None))
        self._wake_watchers()
        return copy.deepcopy(stored)

    def _replace(self, store: _Store, current: Obj, new: Obj) -> tuple[Obj, bool]:
        """Store ``new`` over ``current``; a write that changes nothing keeps the
        resourceVersion and sends no event, as the apiserver's no-op updates do.
        Returns a copy of what is stored and whether it changed."""
        _meta(new)["resourceVersion"] = current["metadata"]["resourceVersion"]
        if new == current:
            return copy.deepcopy(current), False
        self._rv += 1
        new["metadata"]["resourceVersion"] = str(self._rv)
        stored = copy.deepcopy(new)
        store.objects[_obj_key(current)] = stored
        store.history.append(_Change(self._rv, "MODIFIED", stored, current))
        self._wake_watchers()
        return copy.deepcopy(stored), True

    def _remove(self, store: _Store, key: tuple[str, str]) -> Obj:
        prev = store.objects.pop(key)
        self._rv += 1
        gone = _with_rv(prev, self._rv)
        store.history.append(_Change(self._rv, "DELETED", gone, prev))
        self._wake_watchers()
        return copy.deepcopy(gone)

    # --- HTTP: routing, middleware, authentication -----------------------------------

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        # The client's VersionApi asks for "/version/"; the apiserver serves both.
        router.add_get("/version", self._version)
        router.add_get("/version/", self._version)
        for probe in ("/healthz", "/livez", "/readyz"):
            router.add_get(probe, self._health)
        router.add_post("/api/v1/namespaces/{namespace}/{plural:events}", self._create_event_http)
        # Namespaced paths first: "/api/v1/namespaces/ns/pods" also has the shape of a
        # cluster-scoped object's subresource.
        for root in ("/api/{version:v1}", "/apis/{group}/{version}"):
            for base in (f"{root}/namespaces/{{namespace}}/{{plural}}", f"{root}/{{plural}}"):
                router.add_route("*", base, self._serve)
                router.add_route("*", base + "/{name}", self._serve)
                router.add_route("*", base + "/{name}/{sub}", self._serve)

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        self.requests.append(RecordedRequest(request.method, request.path, dict(request.query)))
        with self._lock:
            outage = self._outage
            failure = self._failures.pop(0) if self._failures and outage is None else None
        if outage == "reset":
            self._record_write(request, 0)
            transport = request.transport
            if transport is not None:
                transport.abort()
            # The connection's loss cancels this handler (handler_cancellation).
            await asyncio.sleep(60)
            raise web.HTTPServiceUnavailable
        response = await self._answer(request, handler, outage=outage, failure=failure)
        self._record_write(request, response.status)
        return response

    async def _answer(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        *,
        outage: OutageMode | None,
        failure: int | None,
    ) -> web.StreamResponse:
        try:
            if outage is not None:
                raise ApiError(503, "fake apiserver: outage (simulated)")
            if failure is not None:
                raise ApiError(failure, f"fake apiserver: injected failure ({failure})")
            self._authenticate(request)
            self._authorize(request)
            return await handler(request)
        except ApiError as e:
            return _json_response(e.status(), e.code)
        except _PlainNotFound:
            # Go's http.NotFound.
            return web.Response(
                status=404,
                text="404 page not found\n",
                content_type="text/plain",
                headers={"X-Content-Type-Options": "nosniff"},
            )
        except web.HTTPNotFound:
            status = ApiError(404, "the server could not find the requested resource", details={})
            return _json_response(status.status(), 404)
        except web.HTTPMethodNotAllowed:
            return _json_response(_method_not_allowed().status(), 405)

    def _record_write(self, request: web.Request, code: int) -> None:
        if request.method not in _WRITE_METHODS:
            return
        noted = request.get(_WRITE)
        if noted is not None:
            resource, namespace, name, sub = noted
        else:
            info = request.match_info
            plural = info.get("plural")
            if plural is None:
                return
            group = info.get("group", "")
            resource = f"{plural}.{group}" if group else plural
            namespace = info.get("namespace", "")
            name = info.get("name", "")
            sub = info.get("sub", "")
        self.writes.append(
            RecordedWrite(
                request.method,
                resource,
                namespace,
                name,
                sub,
                code,
                request.get(_CHANGED, False),
            )
        )

    def _authorize(self, request: web.Request) -> None:
        """RBAC for our own processes (by their User-Agent), with the rules we ship
        (:mod:`tests.support.rbac`); other clients (the tests) may do anything."""
        if not self.rbac:
            return
        account = rbac.process_of(request.headers.get("User-Agent"))
        if account is None:
            return
        attrs = rbac.attributes(request.method, request.match_info, request.query)
        if attrs is None:
            return
        policy = self.rbac if isinstance(self.rbac, rbac.Policy) else rbac.shipped_policy()
        if policy.allowing(account, attrs) is None:
            raise _forbidden(attrs, account)
        rbac.EXERCISED.add((account, attrs.verb, attrs.group, attrs.resource))

    def _authenticate(self, request: web.Request) -> None:
        if self.token is None:
            return
        auth = request.headers.get("Authorization")
        if auth is None:
            # Anonymous: the default RBAC lets system:anonymous read only these.
            if request.path in ("/version", "/version/", "/healthz", "/livez", "/readyz"):
                return
            raise _forbidden_for_anonymous(request)
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token, self.token):
            raise ApiError(401, "Unauthorized")

    async def _version(self, request: web.Request) -> web.StreamResponse:
        return _json_response(
            {
                "major": "1",
                "minor": "37",
                "emulationMajor": "1",
                "emulationMinor": "37",
                "minCompatibilityMajor": "1",
                "minCompatibilityMinor": "36",
                "gitVersion": "v1.37.0-fake",
                "gitCommit": "0000000000000000000000000000000000000000",
                "gitTreeState": "clean",
                "buildDate": "2026-01-01T00:00:00Z",
                "goVersion": "go1.26.0",
                "compiler": "gc",
                "platform": "linux/amd64",
            }
        )

    async def _health(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok", content_type="text/plain")

    # --- HTTP: resources -------------------------------------------------------------

    def _target(self, request: web.Request) -> _Target:
        info = request.match_info
        group = info.get("group", "")
        with self._lock:
            store = self._stores.get((group, info["version"], info["plural"]))
        if store is None:
            raise _unserved(group)
        namespace = info.get("namespace")
        name = info.get("name")
        if namespace is not None and not store.rtype.namespaced:
            raise _unserved(group)
        if namespace is None and name is not None and store.rtype.namespaced:
            raise _unserved(group)
        return _Target(store, namespace, name, info.get("sub", ""))

    def _note_write(self, request: web.Request, target: _Target, name: str) -> None:
        request[_WRITE] = (target.rtype.qualified, target.namespace or "", name, target.sub)

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        target = self._target(request)
        rtype = target.rtype
        method = request.method
        if method in _WRITE_METHODS:
            self._note_write(request, target, target.name or "")
        if target.name is None:
            if method == "GET":
                watch = _parse_bool(request.query, "watch")
                self._allow(rtype, "watch" if watch else "list")
                return await self._list_or_watch(request, target, watch=watch)
            if method == "POST" and (target.namespace is not None or not rtype.namespaced):
                self._allow(rtype, "create")
                return await self._create_http(request, target)
            raise _method_not_allowed()
        if target.sub == "eviction" and rtype is PODS:
            if method != "POST":
                raise _method_not_allowed()
            return await self._evict_http(request, target)
        if target.sub == "binding" and rtype is PODS:
            if method != "POST":
                raise _method_not_allowed()
            return await self._bind_http(request, target)
        if target.sub not in ("", "status") or (
            target.sub == "status" and not rtype.status_subresource
        ):
            raise _unserved(rtype.group)
        if method == "GET":
            self._allow(rtype, "get")
            return await self._get_http(target)
        if method == "PUT":
            self._allow(rtype, "update")
            return await self._replace_http(request, target)
        if method == "PATCH":
            self._allow(rtype, "patch")
            return await self._patch_http(request, target)
        if method == "DELETE" and not target.sub:
            self._allow(rtype, "delete")
            return await self._delete_http(request, target)
        raise _method_not_allowed()

    @staticmethod
    def _allow(rtype: ResourceType, verb: str) -> None:
        if verb not in rtype.verbs:
            raise _method_not_allowed()

    def _selector(self, request: web.Request, target: _Target) -> _Selector:
        query = request.query
        rtype = target.rtype
        return _Selector(
            namespace=target.namespace,
            fields=parse_field_selector(
                query.get("fieldSelector", ""), rtype.fields(), unsupported=rtype.field_error
            ),
            labels=parse_label_selector(query.get("labelSelector", "")),
        )

    async def _list_or_watch(
        self, request: web.Request, target: _Target, *, watch: bool
    ) -> web.StreamResponse:
        selector = self._selector(request, target)
        if watch:
            return await self._watch(request, target.store, selector)
        rtype = target.rtype
        objects = target.store.objects
        with self._lock:
            items = [
                _as_list_item(rtype, objects[k])
                for k in sorted(objects)
                if selector.matches(objects[k])
            ]
            meta: Obj = {"resourceVersion": str(self._rv)}
        if not rtype.builtin:
            meta = {"continue": "", **meta}
        return _json_response(
            {
                "kind": f"{rtype.kind}List",
                "apiVersion": rtype.api_version,
                "metadata": meta,
                "items": items,
            }
        )

    async def _get_http(self, target: _Target) -> web.StreamResponse:
        with self._lock:
            obj = target.store.objects.get(target.key())
            if obj is None:
                raise _not_found(target.rtype, target.name or "")
            return _json_response(obj)

    async def _read_json(self, request: web.Request) -> Obj:
        try:
            body = json.loads(await request.read())
        except ValueError as e:
            raise ApiError(
                400, f"the body of the request could not be decoded as JSON: {e}"
            ) from None
        if not isinstance(body, dict):
            raise ApiError(400, "the body of the request is not a JSON object")
        return body

    async def _read_object(self, request: web.Request, target: _Target) -> Obj:
        """The object in a create or replace: decoded, its apiVersion and kind checked
        as the type's decoder does."""
        rtype = target.rtype
        raw = await request.read()
        obj = await self._read_json(request)
        name = _get(obj, "metadata", "name")
        if target.name is None and isinstance(name, str):
            self._note_write(request, target, name)  # a create: its name, if it has one
        version, kind = obj.get("apiVersion"), obj.get("kind")
        if not rtype.builtin and (not version or not kind):
            # The unstructured decoder needs both; transformDecodeError's message.
            text = raw.decode("utf-8", "replace")
            missing = "Kind" if not kind else "apiVersion"
            summary = text if len(text) <= 30 else text[:30] + " ..."
            raise ApiError(
                400,
                f"the object provided is unrecognized (must be of type {rtype.kind}): Object "
                f"'{missing}' is missing in '{text}' ({summary})",
            )
        if version and version != rtype.api_version:
            raise ApiError(
                400,
                f"the API version in the data ({version}) does not match the expected API "
                f"version ({rtype.api_version})",
            )
        if kind and kind != rtype.kind:
            raise ApiError(
                400,
                f"the kind in the data ({kind}) does not match the expected kind ({rtype.kind})",
            )
        obj.update(apiVersion=rtype.api_version, kind=rtype.kind)
        return obj

    async def _create_http(self, request: web.Request, target: _Target) -> web.StreamResponse:
        rtype = target.rtype
        obj = await self._read_object(request, target)
        meta = _meta(obj)
        if rtype.namespaced:
            if meta.get("namespace", target.namespace) != target.namespace:
                raise ApiError(
                    400,
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request",
                )
            meta["namespace"] = target.namespace
        else:
            meta.pop("namespace", None)
        name = str(meta.get("name") or "")
        if not name and meta.get("generateName"):
            alphabet = "bcdfghjklmnpqrstvwxz2456789"  # apiserver's SimpleNameGenerator
            name = meta["generateName"] + "".join(secrets.choice(alphabet) for _ in range(5))
        if not name:
            raise _kind_invalid(
                rtype,
                "",
                "metadata.name",
                "Required value: name or generateName is required",
            )
        self._note_write(request, target, name)
        meta["name"] = name
        _check_name(rtype, name)
        if meta.get("resourceVersion"):
            # The etcd3 store's check (an internal error, not a validation one).
            raise ApiError(500, "resourceVersion should not be set on objects to be created")
        # What the server owns: system metadata (a client's uid and timestamps are
        # overwritten, FillObjectMetaSystemFields), a first generation for custom
        # resources; with the status subresource a create resets the status.
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_timestamp())
        if not rtype.builtin:
            meta["generation"] = 1
        if rtype.status_subresource and not rtype.builtin:
            obj.pop("status", None)
        if rtype.prepare_create is not None:
            rtype.prepare_create(obj)
        if rtype.validate is not None:
            rtype.validate(obj)
        with self._lock:
            stored = self._insert(target.store, obj)
        request[_CHANGED] = True
        return _json_response(stored, 201)

    async def _replace_http(self, request: web.Request, target: _Target) -> web.StreamResponse:
        obj = await self._read_object(request, target)
        with self._lock:
            current = target.store.objects.get(target.key())
            if current is None:
                raise _not_found(target.rtype, target.name or "")
            stored, changed = self._update(target, current, obj, patch=False)
        request[_CHANGED] = changed
        return _json_response(stored)

    async def _read_patch(self, request: web.Request, rtype: ResourceType) -> Any:
        """The decoded body of a PATCH of a supported type (recorded either way)."""
        content_type = request.content_type
        raw = await request.read()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        self.patches.append(RecordedPatch(request.path, content_type, body))
        accepted = [JSON_PATCH, MERGE_PATCH, APPLY_PATCH]
        if rtype.builtin:
            # Built-in kinds only: custom resources have no Go struct to carry patch tags.
            accepted.append(STRATEGIC_MERGE_PATCH)
        if content_type not in accepted:
            raise ApiError(
                415,
                "the body of the request was in an unknown format - accepted media types "
                "include: " + ", ".join(accepted),
            )
        if content_type == APPLY_PATCH or (content_type == JSON_PATCH and rtype.builtin):
            raise ApiError(415, f"this fake apiserver does not implement {content_type} patches")
        if isinstance(body, str):
            raise ApiError(
                400, f"the body of the request could not be decoded as JSON: {body[:80]!r}"
            )
        if content_type != JSON_PATCH and not isinstance(body, dict):
            raise ApiError(400, "the body of the request is not a JSON object")
        return body

    async def _patch_http(self, request: web.Request, target: _Target) -> web.StreamResponse:
        rtype = target.rtype
        patch = await self._read_patch(request, rtype)
        with self._lock:
            current = target.store.objects.get(target.key())
            if current is None:
                raise _not_found(rtype, target.name or "")
            if request.content_type == STRATEGIC_MERGE_PATCH:
                patched = _strategic_merge(current, patch, rtype.merge_keys)
            elif request.content_type == JSON_PATCH:
                try:
                    patched = json_patch(current, patch)
                except JsonPatchError as e:
                    # patch.go answers a patch that does not apply with the generic 422.
                    log.debug("JSON patch of %s does not apply: %s", request.path, e)
                    raise ApiError(
                        422,
                        "the server rejected our request due to an error in our request",
                        details={},
                    ) from None
                if not isinstance(patched, dict):
                    raise ApiError(400, "the patched object is not a JSON object")
            else:
                patched = json_merge_patch(current, patch)
            stored, changed = self._update(target, current, patched, patch=True)
        request[_CHANGED] = changed
        return _json_response(stored)

    def _update(self, target: _Target, current: Obj, new: Obj, *, patch: bool) -> tuple[Obj, bool]:
        """The registry's update path (the caller holds the lock): name checks,
        preconditions, optimistic concurrency, the strategy, then the store."""
        rtype = target.rtype
        name = target.name or ""
        meta = _meta(new)
        # handlers.checkName
        if meta.get("name", "") != name:
            raise ApiError(
                400,
                f"the name of the object ({meta.get('name', '')}) does not match the name on "
                f"the URL ({name})",
            )
        if rtype.namespaced:
            if meta.get("namespace") and meta["namespace"] != target.namespace:
                raise ApiError(
                    400,
                    f"the namespace of the object ({meta['namespace']}) does not match the "
                    f"namespace on the request ({target.namespace})",
                )
            meta["namespace"] = target.namespace
        else:
            meta.pop("namespace", None)
        old = current["metadata"]
        # A PUT's uid is a storage precondition (defaultUpdatedObjectInfo.Preconditions).
        uid = meta.get("uid")
        if not patch and uid and uid != old.get("uid"):
            raise _precondition_failed(
                rtype, target.namespace or "", name, what="UID", wanted=uid, actual=old.get("uid")
            )
        version = meta.get("resourceVersion")
        if not version:
            if not rtype.builtin:
                # customResourceStrategy.AllowUnconditionalUpdate is false.
                raise _invalid(
                    rtype.group,
                    rtype.plural,
                    name,
                    "metadata.resourceVersion",
                    "Invalid value: 0x0: must be specified for an update",
                )
        elif version != old.get("resourceVersion"):
            raise _modified(rtype, name)
        if target.sub == "status":
            result = _status_strategy(rtype, current, new)
        else:
            result = _main_strategy(rtype, current, new)
        # rest.BeforeUpdate: the server's metadata.
        result.update(kind=rtype.kind, apiVersion=rtype.api_version)
        meta = _meta(result)
        if not meta.get("uid"):
            meta["uid"] = old.get("uid")
        elif meta["uid"] != old.get("uid"):
            raise _kind_invalid(
                rtype, name, "metadata.uid", f'Invalid value: "{meta["uid"]}": field is immutable'
            )
        for key in ("creationTimestamp", "generation"):
            if key in old:
                meta[key] = old[key]
            else:
                meta.pop(key, None)
        if not rtype.builtin and _spec_changed(rtype, current, result):
            meta["generation"] = int(old.get("generation", 1)) + 1
        if rtype.validate is not None:
            rtype.validate(result)
        return self._replace(target.store, current, result)

    async def _delete_http(self, request: web.Request, target: _Target) -> web.StreamResponse:
        rtype = target.rtype
        raw = await request.read()
        options: Obj = {}
        if raw.strip():
            options = await self._read_json(request)
        preconditions = options.get("preconditions") or {}
        if not isinstance(preconditions, dict):
            raise ApiError(400, "preconditions: must be an object")
        with self._lock:
            key = target.key()
            current = target.store.objects.get(key)
            if current is None:
                raise _not_found(rtype, target.name or "")
            self._check_delete_preconditions(rtype, current, preconditions)
            gone = self._remove(target.store, key)
        request[_CHANGED] = True
        if rtype is PODS:
            return _json_response(gone)
        details = _details(rtype.group, rtype.plural, target.name)
        details["uid"] = gone["metadata"].get("uid")
        return _json_response(_success(details=details))

    @staticmethod
    def _check_delete_preconditions(
        rtype: ResourceType, current: Obj, preconditions: Mapping[str, Any]
    ) -> None:
        meta = current["metadata"]
        namespace, name = _obj_key(current)
        uid = preconditions.get("uid")
        if uid is not None and uid != meta.get("uid"):
            raise _precondition_failed(
                rtype, namespace, name, what="UID", wanted=uid, actual=meta.get("uid")
            )
        version = preconditions.get("resourceVersion")
        if version is not None and version != meta.get("resourceVersion"):
            raise _precondition_failed(
                rtype,
                namespace,
                name,
                what="ResourceVersion",
                wanted=version,
                actual=meta.get("resourceVersion"),
            )

    async def _evict_http(self, request: web.Request, target: _Target) -> web.StreamResponse:
        name = target.name or ""
        body = await self._read_json(request)
        if body.get("kind", "Eviction") != "Eviction":
            raise ApiError(400, f"expected an Eviction, got kind {body.get('kind')!r}")
        body_name = _get(body, "metadata", "name")
        if body_name is not None and body_name != name:
            raise ApiError(400, "name in URL does not match name in Eviction object")
        preconditions = _get(body, "deleteOptions", "preconditions") or {}
        with self._lock:
            key = target.key()
            current = target.store.objects.get(key)
            if current is None:
                raise _not_found(PODS, name)
            # The eviction deletes through the pod store, with its preconditions.
            self._check_delete_preconditions(PODS, current, preconditions)
            self._remove(target.store, key)
            self.evictions.append(body)
        request[_CHANGED] = True
        return _json_response(_success(code=201), 201)

    async def _bind_http(self, request: web.Request, target: _Target) -> web.StreamResponse:
        name = target.name or ""
        body = await self._read_json(request)
        if body.get("kind", "Binding") != "Binding":
            raise ApiError(400, f"expected a Binding, got kind {body.get('kind')!r}")
        node = _get(body, "target", "name")
        if not isinstance(node, str) or not node:
            raise ApiError(400, "Binding target.name is required")
        annotations = _get(body, "metadata", "annotations") or {}
        uid = _get(body, "metadata", "uid")
        with self._lock:
            current = target.store.objects.get(target.key())
            if current is None:
                raise _not_found(PODS, name)
            meta = current["metadata"]
            if uid and uid != meta.get("uid"):
                raise ApiError(
                    409,
                    f'Operation cannot be fulfilled on pods/binding "{name}": '
                    f"UID mismatch: {uid} != {meta.get('uid')}",
                    reason="Conflict",
                    details=_details("", "pods/binding", name),
                )
            bound = _get(current, "spec", "nodeName")
            if bound:
                raise ApiError(
                    409,
                    f'Operation cannot be fulfilled on pods/binding "{name}": pod {name} is '
                    f'already assigned to node "{bound}"',
                    reason="Conflict",
                    details=_details("", "pods/binding", name),
                )

            def mutate(pod: Obj) -> None:
                pod.setdefault("spec", {})["nodeName"] = node
                if annotations:
                    pod["metadata"].setdefault("annotations", {}).update(annotations)

            self.update_object(PODS, name, mutate, namespace=target.namespace or "")
            self.bindings.append(body)
        request[_CHANGED] = True
        return _json_response(_success(code=201), 201)

    async def _create_event_http(self, request: web.Request) -> web.StreamResponse:
        namespace = request.match_info["namespace"]
        obj = await self._read_json(request)
        meta = _meta(obj)
        if meta.get("namespace", namespace) != namespace:
            raise ApiError(
                400,
                "the namespace of the provided object does not match the namespace sent on "
                "the request",
            )
        name = meta.get("name") or ""
        request[_WRITE] = ("events", namespace, name, "")
        missing = [
            path
            for path, value in (
                ("metadata.name", name),
                ("involvedObject", obj.get("involvedObject")),
                ("reason", obj.get("reason")),
            )
            if not value
        ]
        if missing:
            raise ApiError(
                422,
                f'Event "{name}" is invalid: {missing[0]}: Required value',
                details={"name": name, "kind": "Event"},
            )
        with self._lock:
            if any(
                _get(e, "metadata", "namespace") == namespace
                and _get(e, "metadata", "name") == name
                for e in self.events
            ):
                raise ApiError(
                    409,
                    f'events "{name}" already exists',
                    reason="AlreadyExists",
                    details={"name": name, "kind": "events"},
                )
            # A write like any other: it takes the next resourceVersion.
            self._rv += 1
            meta.update(
                namespace=namespace,
                uid=str(uuid.uuid4()),
                creationTimestamp=_timestamp(),
                resourceVersion=str(self._rv),
            )
            obj.update(kind="Event", apiVersion="v1")
            self.events.append(copy.deepcopy(obj))
        request[_CHANGED] = True
        return _json_response(obj, 201)

    # --- watch -----------------------------------------------------------------------

    async def _watch(
        self, request: web.Request, store: _Store, selector: _Selector
    ) -> web.StreamResponse:
        query = request.query
        bookmarks = _parse_bool(query, "allowWatchBookmarks")
        timeout: int | None = None
        if query.get("timeoutSeconds"):
            try:
                timeout = int(query["timeoutSeconds"])
            except ValueError:
                raise ApiError(
                    400, f'timeoutSeconds: Invalid value: "{query["timeoutSeconds"]}"'
                ) from None
        rv_param = query.get("resourceVersion", "")
        since: int | None = None
        if rv_param not in ("", "0"):
            try:
                since = int(rv_param)
            except ValueError:
                raise ApiError(400, f'invalid resource version: "{rv_param}"') from None
            if since < 0:
                raise ApiError(400, f'invalid resource version: "{rv_param}"')

        response = web.StreamResponse(status=200, headers={"Content-Type": _JSON})
        response.enable_chunked_encoding()
        watcher = _Watcher(request)
        initial: list[Obj] = []
        expired: str | None = None
        with self._lock:
            if since is None:
                # RV unset or "0": the current state as synthetic ADDED events, then
                # everything after it.
                initial = [store.objects[k] for k in sorted(store.objects)]
                cursor = self._rv
            elif since < self._compacted_rv:
                expired = f"too old resource version: {since} ({self._compacted_rv})"
                cursor = since
            else:
                cursor = since
            if expired is None:
                self._watchers.add(watcher)
        try:
            await response.prepare(request)
            if expired is not None:
                status = ApiError(410, expired).status()
                await response.write(_dumps({"type": "ERROR", "object": status}))
                await response.write_eof()
                return response
            for obj in initial:
                if selector.matches(obj):
                    await response.write(_dumps({"type": "ADDED", "object": obj}))
            await self._follow(
                response,
                watcher,
                store,
                selector,
                cursor=cursor,
                bookmarks=bookmarks,
                timeout=timeout,
            )
        finally:
            with self._lock:
                self._watchers.discard(watcher)
        return response

    async def _follow(
        self,
        response: web.StreamResponse,
        watcher: _Watcher,
        store: _Store,
        selector: _Selector,
        *,
        cursor: int,
        bookmarks: bool,
        timeout: int | None,
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        next_bookmark = loop.time() + self.bookmark_interval if bookmarks else None
        rtype = store.rtype
        while True:
            # Clear before reading the history, so that a write after the read wakes us.
            watcher.wake.clear()
            with self._lock:
                if watcher.dropped:
                    break
                if cursor < self._compacted_rv:
                    log.debug("watch fell behind a compaction at %d; closing", cursor)
                    break
                start = bisect.bisect_right(store.history, cursor, key=lambda c: c.rv)
                changes = store.history[start:]
                cursor = self._rv
            for change in changes:
                event = _watch_event(change, selector)
                if event is not None:
                    await response.write(_dumps(event))
            now = loop.time()
            if deadline is not None and now >= deadline:
                break
            if next_bookmark is not None and now >= next_bookmark:
                # Every change up to `cursor` has been sent, so a client may resume there.
                bookmark = {
                    "kind": rtype.kind,
                    "apiVersion": rtype.api_version,
                    "metadata": {"resourceVersion": str(cursor)},
                }
                await response.write(_dumps({"type": "BOOKMARK", "object": bookmark}))
                next_bookmark = now + self.bookmark_interval
            wake_at = min((t for t in (deadline, next_bookmark) if t is not None), default=None)
            try:
                async with asyncio.timeout_at(wake_at):
                    await watcher.wake.wait()
            except TimeoutError:
                pass
        await response.write_eof()


def _method_not_allowed() -> ApiError:
    return ApiError(
        405, "the server does not allow this method on the requested resource", details={}
    )


def _watch_event(change: _Change, selector: _Selector) -> Obj | None:
    """The event a watcher with ``selector`` gets for ``change``, if any: the watch
    cache's cacheWatcher.convertToWatchEvent."""
    cur = change.type != "DELETED" and selector.matches(change.obj)
    old = change.prev is not None and selector.matches(change.prev)
    if cur and not old:
        return {"type": "ADDED", "object": change.obj}
    if cur and old:
        return {"type": "MODIFIED", "object": change.obj}
    if old and change.prev is not None:
        # The previous state, with the event's resourceVersion.
        return {"type": "DELETED", "object": _with_rv(change.prev, change.rv)}
    return None


# --- manifests -----------------------------------------------------------------------


def pod_manifest(
    name: str,
    *,
    namespace: str = "default",
    uid: str | None = None,
    node_name: str | None = None,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    phase: str | None = None,
    containers: Iterable[str] = ("main",),
) -> Obj:
    """A minimal valid Pod (wire JSON) for :meth:`FakeApiServer.create_pod` or a POST."""
    meta: Obj = {"name": name, "namespace": namespace}
    if uid is not None:
        meta["uid"] = uid
    if labels:
        meta["labels"] = dict(labels)
    if annotations:
        meta["annotations"] = dict(annotations)
    spec: Obj = {
        "containers": [{"name": c, "image": "registry.k8s.io/pause:3.10"} for c in containers]
    }
    if node_name is not None:
        spec["nodeName"] = node_name
    pod: Obj = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}
    if phase is not None:
        pod["status"] = {"phase": phase}
    return pod


def node_manifest(
    name: str,
    *,
    capacity: Mapping[str, str] | None = None,
    allocatable: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
) -> Obj:
    """A minimal Node (wire JSON) for :meth:`FakeApiServer.create_node`; capacity
    defaults to 4 CPUs, 8 GiB and 110 pods, allocatable to the capacity."""
    cap = dict(capacity) if capacity is not None else {"cpu": "4", "memory": "8Gi", "pods": "110"}
    meta: Obj = {"name": name}
    if labels:
        meta["labels"] = dict(labels)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": meta,
        "spec": {},
        "status": {
            "capacity": cap,
            "allocatable": dict(allocatable) if allocatable is not None else dict(cap),
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
        },
    }


def object_manifest(
    resource: ResourceType,
    name: str,
    *,
    namespace: str | None = None,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    spec: Mapping[str, Any] | None = None,
    status: Mapping[str, Any] | None = None,
) -> Obj:
    """An object of ``resource`` (wire JSON, ``apiVersion`` and ``kind`` set) for
    :meth:`FakeApiServer.create_object` or a client's create. ``namespace`` defaults
    to ``default`` for namespaced resources."""
    meta: Obj = {"name": name}
    if resource.namespaced:
        meta["namespace"] = namespace or "default"
    if labels:
        meta["labels"] = dict(labels)
    if annotations:
        meta["annotations"] = dict(annotations)
    obj: Obj = {"apiVersion": resource.api_version, "kind": resource.kind, "metadata": meta}
    if spec is not None:
        obj["spec"] = copy.deepcopy(dict(spec))
    if status is not None:
        obj["status"] = copy.deepcopy(dict(status))
    return obj
