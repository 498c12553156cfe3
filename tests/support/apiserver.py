"""An in-process fake of the kube-apiserver (pods, nodes, Katalyst CNRs), for tests.

:class:`FakeApiServer` serves plain HTTP on an ephemeral port of 127.0.0.1 (aiohttp)
and speaks the wire format of the real API server closely enough for the official
``kubernetes`` client (sync and ``kubernetes.aio``) and for an agent started with
``--kubeconfig`` (see :meth:`FakeApiServer.kubeconfig`). A test plays "the cluster"
through the Python methods (as the scheduler and the kubelet would), and inspects
what the client sent through :attr:`FakeApiServer.requests`.

What it fakes, and how faithfully:

* One global, monotonically increasing ``resourceVersion`` (a decimal string on the
  wire, as etcd revisions are); every write bumps it. A write that changes nothing is
  not a write: no new resourceVersion, no watch event (the apiserver skips no-op
  updates the same way).
* ``GET /version`` (and ``/version/``, which the client's VersionApi asks for),
  ``/healthz``, ``/livez``, ``/readyz``.
* Pods: list (cluster-wide and namespaced), get, create, delete, eviction
  (``policy/v1`` Eviction, which deletes the pod at once and answers 201 with a
  ``Status``), and watch. List items carry no ``kind``/``apiVersion``, as in the real
  list; a single object and watch event objects do.
* ``fieldSelector`` over the fields the real server supports for pods (``=``, ``==``,
  ``!=``; comma is AND); any other field is a 400 ``field label not supported: <f>``.
  Missing fields select as the server's defaults would (``spec.nodeName=`` finds
  unscheduled pods, ``spec.restartPolicy`` is ``Always``, ...).
* ``labelSelector`` with ``=``, ``==``, ``!=``, ``in``, ``notin``, ``key`` and ``!key``;
  anything else is a 400.
* Watch semantics of the watch cache (``cacher.go``): events newer than
  ``resourceVersion``; absent or ``"0"`` starts with a synthetic ADDED per matching
  object; an object that stops matching the selectors is sent as DELETED (its previous
  state with the event's resourceVersion), one that starts matching as ADDED; a
  resourceVersion older than the compacted history is a 200 stream with one ERROR
  event (``Status`` 410 ``Expired``, ``too old resource version: RV (OLDEST)``);
  BOOKMARK events every ``bookmark_interval`` seconds when ``allowWatchBookmarks``;
  the stream ends after ``timeoutSeconds``. A live watch that falls behind a
  :meth:`~FakeApiServer.compact` (it had not yet been sent events that were
  forgotten) is closed, as the cacher terminates a watcher it cannot serve.
* Events: ``POST /api/v1/namespaces/{ns}/events`` (core/v1) stores the Event (with a
  uid, a creationTimestamp and a resourceVersion, as the server does) in
  :attr:`~FakeApiServer.events` and answers 201 with it; 409 ``AlreadyExists`` for a
  name already used in the namespace, 400 for a namespace that differs from the
  URL's, 422 without ``metadata.name``, ``involvedObject`` or ``reason``.
* Eviction honours ``deleteOptions.preconditions.uid``: a pod whose UID differs is
  not deleted, 409 ``Conflict`` with the real message ("Precondition failed: UID in
  precondition: ..."). A body whose ``kind`` is not ``Eviction`` is a 400.
* Nodes (cluster-scoped): ``GET /api/v1/nodes/{name}`` (and ``/status``), ``PATCH``
  of the node and of its ``/status``. Patches are ``application/merge-patch+json``
  (RFC 7386: maps merge, ``null`` deletes, lists are replaced) or
  ``application/strategic-merge-patch+json`` (the same, except that
  ``status.conditions``, ``status.addresses`` and ``status.volumesAttached`` merge by
  their patch merge key; ``$patch``-style directives are a 400). The node strategies
  apply: a ``/status`` patch keeps the spec (and may change metadata), a patch of
  the node keeps the status. Quantities of ``status.capacity``/``allocatable`` are
  stored in their canonical form (``"2000"`` reads back as ``"2k"``; a bad one is a
  400 with apimachinery's message). Tests register nodes with
  :meth:`~FakeApiServer.create_node` (:func:`node_manifest` builds one) and play the
  kubelet with :meth:`~FakeApiServer.update_node`.
* CustomNodeResources (``node.katalyst.kubewharf.io/v1alpha1``, cluster-scoped, with
  the status subresource, as katalyst-api's CRD): ``POST`` (the status of a create is
  dropped, uid/creationTimestamp/``generation: 1`` set, 409 ``AlreadyExists``, 422
  without a name, 400 for a wrong ``apiVersion``/``kind``), ``GET`` (and ``/status``),
  ``PATCH`` of the object (status ignored; a spec change bumps ``generation``) and of
  ``/status`` (only the status is taken). Custom resources take no strategic merge
  patch: 415 ``UnsupportedMediaType`` with the real message. The CRD schema's rules a
  status writer can break are checked (422 ``Invalid``: ``status.resources`` and each
  top-level zone's ``type`` and ``resources`` are required, quantities must match the
  CRD's pattern) and its default applied (``status.topologyPolicy: none``).
* Preconditions on every PATCH: a ``metadata.resourceVersion`` in the patch that is
  not the stored one is a 409 ``Conflict`` ("the object has been modified; please
  apply your changes to the latest version and try again"); a different
  ``metadata.uid`` is a 409 too ("Precondition failed: UID in precondition: ...").
  Nodes and CNRs share the global resourceVersion but not the pod watch history.
* Errors are ``Status`` objects with the real ``reason`` and ``code``, and the real
  messages where a client might look at them (``pods "x" not found``, ``pods "x"
  already exists``, ``nodes "x" not found``,
  ``customnoderesources.node.katalyst.kubewharf.io "x" not found``, ``the server
  could not find the requested resource``).
* Bearer-token authentication: a wrong token is 401; no token is
  ``system:anonymous``, who may read ``/version`` and the health endpoints but is
  403 on pods, nodes and CNRs (the default RBAC of a real cluster).
* Test hooks: :meth:`~FakeApiServer.compact`, :meth:`~FakeApiServer.drop_watches`
  (clean end or TCP abort), :meth:`~FakeApiServer.fail_next`,
  :meth:`~FakeApiServer.wait_for_watches`, :attr:`~FakeApiServer.requests`,
  :attr:`~FakeApiServer.patches`, :attr:`~FakeApiServer.evictions`,
  :attr:`~FakeApiServer.events`, the node and CNR methods (``create_``, ``get_``,
  ``update_``, ``delete_``; :meth:`~FakeApiServer.create_cnr` keeps the status given,
  as another writer would have left it); :func:`pod_manifest` builds a minimal pod.

What it leaves out: every other resource and API group (namespaces need not exist;
Events can be created but not read, listed, watched or updated over HTTP), listing
and watching nodes and CNRs, deleting them over HTTP, ``PUT``, JSON patch and apply
patches (415, naming this fake), strategic-merge ``$patch`` directives, binary-unit
canonical forms (``"1024Ki"`` stays as sent; the real server writes ``"1Mi"``),
update/patch of pods over HTTP (405; tests change pods with
:meth:`~FakeApiServer.update_pod`),
graceful deletion (``deletionTimestamp``; deletes are immediate), PodDisruptionBudgets
(every eviction is allowed; use :meth:`~FakeApiServer.fail_next` with 429 for a
blocked one), admission and defaulting (only ``status.phase: Pending`` is set on
create), validation beyond the name and ``spec.containers`` being present, pagination
(``limit``/``continue`` are ignored and everything is returned), list
``resourceVersion`` semantics (a list is always the latest state), watches from a
resourceVersion in the future (served as if it were current, where the real server
would wait and then answer 504), ``sendInitialEvents`` (watch-list), protobuf/CBOR,
TLS, and ``dryRun``.

The Python methods are synchronous and may be called from any thread; the server runs
on the event loop that called :meth:`~FakeApiServer.start`.
"""

from __future__ import annotations

import asyncio
import bisect
import copy
import json
import logging
import re
import secrets
import socket
import string
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, NamedTuple, Self

import yaml
from aiohttp import web

from katalyst.qos import QoSValidationError
from katalyst.qos.quantity import parse_quantity

log = logging.getLogger(__name__)

PodJSON = dict[str, Any]
"""A Pod as wire JSON (camelCase keys, as the API server sends it)."""

EventType = Literal["ADDED", "MODIFIED", "DELETED"]

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


def _first_pod_ip(pod: PodJSON) -> str:
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


def _text(default: str, *path: str) -> Callable[[PodJSON], str]:
    def getter(pod: PodJSON) -> str:
        value = _get(pod, *path)
        return default if value is None else str(value)

    return getter


# The pod fields a fieldSelector may name (pkg/apis/core/v1/conversion.go, the Pod
# field label conversion; values as pkg/registry/core/pod/strategy.go
# PodToSelectableFields computes them). The defaults are what the server's defaulting
# would have stored, so that a pod created here without them selects the same way.
_POD_FIELDS: Final[Mapping[str, Callable[[PodJSON], str]]] = {
    "metadata.name": _text("", "metadata", "name"),
    "metadata.namespace": _text("", "metadata", "namespace"),
    "spec.nodeName": _text("", "spec", "nodeName"),
    "spec.restartPolicy": _text("Always", "spec", "restartPolicy"),
    "spec.schedulerName": _text("default-scheduler", "spec", "schedulerName"),
    "spec.serviceAccountName": _text("", "spec", "serviceAccountName"),
    "spec.hostNetwork": lambda pod: "true" if _get(pod, "spec", "hostNetwork") else "false",
    "status.phase": _text("", "status", "phase"),
    "status.podIP": _first_pod_ip,
    "status.podIPs": _first_pod_ip,
    "status.nominatedNodeName": _text("", "status", "nominatedNodeName"),
}


class ApiError(Exception):
    """An error the server answers with a ``Status`` object."""

    def __init__(
        self, code: int, message: str, *, reason: str | None = None, details: PodJSON | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or _REASONS.get(code, "Unknown")
        self.details = details

    def status(self) -> PodJSON:
        """The ``Status`` object, as the server writes it."""
        body: PodJSON = {
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


def _not_found(name: str) -> ApiError:
    return ApiError(404, f'pods "{name}" not found', details={"name": name, "kind": "pods"})


def _forbidden_for_anonymous(request: web.Request) -> ApiError:
    """The 403 that the default RBAC gives ``system:anonymous`` for ``request``."""
    user = 'User "system:anonymous"'
    path = request.path
    if request.match_info.http_exception:
        return ApiError(403, f'forbidden: {user} cannot get path "{path}"', details={})
    ns = request.match_info.get("namespace")
    name = request.match_info.get("name")
    group = ""
    if path.startswith(CNR_PATH):
        group, kind = CNR_GROUP, CNR_PLURAL
    elif path.startswith("/api/v1/nodes"):
        kind = "nodes"
    elif path.startswith("/api/v1/"):
        kind = "events" if path.endswith("/events") else "pods"
    else:
        return ApiError(403, f'forbidden: {user} cannot get path "{path}"', details={})
    resource = kind
    if path.endswith("/eviction"):
        verb, resource = "create", "pods/eviction"
    elif request.method == "GET":
        verb = "get" if name else "watch" if request.query.get("watch") in _TRUE else "list"
    else:
        verb = {"POST": "create", "DELETE": "delete", "PATCH": "patch", "PUT": "update"}.get(
            request.method, "get"
        )
    if name and path.endswith("/status"):
        resource = f"{kind}/status"
    scope = f'in the namespace "{ns}"' if ns else "at the cluster scope"
    qualified = f"{kind}.{group}" if group else kind
    subject = f'{qualified} "{name}"' if name else qualified
    details: PodJSON = {"name": name} if name else {}
    if group:
        details["group"] = group
    details["kind"] = kind
    return ApiError(
        403,
        f'{subject} is forbidden: {user} cannot {verb} resource "{resource}" '
        f'in API group "{group}" {scope}',
        details=details,
    )


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

    def matches(self, pod: PodJSON) -> bool:
        return (_POD_FIELDS[self.field](pod) == self.value) == self.equal


def parse_field_selector(selector: str) -> tuple[_FieldTerm, ...]:
    """Parse a pod ``fieldSelector`` the way the apiserver does; `ApiError` 400 if bad."""
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
        if lhs not in _POD_FIELDS:
            raise ApiError(400, f"field label not supported: {lhs}")
        terms.append(_FieldTerm(lhs, op != "!=", rhs.replace("\\,", ",").replace("\\=", "=")))
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

    def matches(self, pod: PodJSON) -> bool:
        if self.namespace is not None and _get(pod, "metadata", "namespace") != self.namespace:
            return False
        labels = _get(pod, "metadata", "labels") or {}
        return all(t.matches(pod) for t in self.fields) and all(
            t.matches(labels) for t in self.labels
        )


@dataclass(frozen=True)
class _Change:
    """One write, as the watch cache keeps it: the object after and before."""

    rv: int
    type: EventType
    obj: PodJSON
    prev: PodJSON | None


class RecordedRequest(NamedTuple):
    """A request the server saw (equal to a plain ``(method, path, query)`` tuple)."""

    method: str
    path: str
    query: dict[str, str]


@dataclass(eq=False)
class _Watcher:
    request: web.Request
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    dropped: bool = False


def _pod_key(pod: Mapping[str, Any]) -> tuple[str, str]:
    meta = pod.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _with_rv(pod: PodJSON, rv: int) -> PodJSON:
    out = copy.deepcopy(pod)
    out.setdefault("metadata", {})["resourceVersion"] = str(rv)
    return out


def _as_list_item(pod: PodJSON) -> PodJSON:
    # The real list encodes items without their own kind/apiVersion.
    return {k: v for k, v in pod.items() if k not in ("kind", "apiVersion")}


def _timestamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _dumps(obj: Any) -> bytes:
    # Go's json.Encoder (what the apiserver's serializer uses) writes compact JSON and a
    # trailing newline; the sync client's line reader depends on the newline.
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


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


class RecordedPatch(NamedTuple):
    """A PATCH the server saw: where, as what, and the decoded body."""

    path: str
    content_type: str
    body: Any


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


# The Node's lists that a strategic merge patch merges by key rather than replaces
# (the patchMergeKey tags of k8s.io/api/core/v1 NodeStatus); every other list is
# replaced, as a JSON merge patch would.
_NODE_MERGE_KEYS: Final[Mapping[tuple[str, ...], str]] = {
    ("status", "conditions"): "type",
    ("status", "addresses"): "type",
    ("status", "volumesAttached"): "name",
}


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


def _canonical_node(node: PodJSON) -> None:
    status = node.get("status")
    if not isinstance(status, dict):
        return
    for field_name in ("capacity", "allocatable"):
        resources = status.get(field_name)
        if isinstance(resources, dict):
            for key in list(resources):
                resources[key] = _canonical_quantity(resources[key], f"status.{field_name}[{key}]")


def _cnr_invalid(name: str, problem: str) -> ApiError:
    return ApiError(
        422,
        f'{CNR_KIND}.{CNR_GROUP} "{name}" is invalid: {problem}',
        details={
            "name": name,
            "group": CNR_GROUP,
            "kind": CNR_KIND,
            "causes": [{"reason": "FieldValueInvalid", "message": problem}],
        },
    )


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


def _validate_cnr_status(cnr: PodJSON) -> None:
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


def _kind_not_found(kind: str, name: str, group: str = "") -> ApiError:
    qualified = f"{kind}.{group}" if group else kind
    details: PodJSON = {"name": name}
    if group:
        details["group"] = group
    details["kind"] = kind
    return ApiError(404, f'{qualified} "{name}" not found', details=details)


def _modified(kind: str, name: str, group: str = "") -> ApiError:
    qualified = f"{kind}.{group}" if group else kind
    details: PodJSON = {"name": name}
    if group:
        details["group"] = group
    details["kind"] = kind
    return ApiError(
        409,
        f'Operation cannot be fulfilled on {qualified} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        reason="Conflict",
        details=details,
    )


def _restore_system_meta(obj: PodJSON, current: PodJSON) -> None:
    """Put back what a write may not change: kind, apiVersion, name, uid,
    creationTimestamp, generation (the caller bumps it)."""
    for key in ("kind", "apiVersion"):
        if key in current:
            obj[key] = current[key]
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = obj["metadata"] = {}
    old = current.get("metadata") or {}
    for key in ("name", "uid", "creationTimestamp", "generation"):
        if key in old:
            meta[key] = old[key]
        else:
            meta.pop(key, None)


def _check_preconditions(
    merged: PodJSON, current: PodJSON, *, kind: str, name: str, group: str = ""
) -> None:
    """A patch that names a resourceVersion or a uid applies only to that version of
    that object (409 Conflict otherwise), as the apiserver's update preconditions."""
    raw = merged.get("metadata")
    meta: PodJSON = raw if isinstance(raw, dict) else {}
    old = current["metadata"]
    uid = meta.get("uid")
    if uid is not None and uid != old.get("uid"):
        raise ApiError(
            409,
            f"Precondition failed: UID in precondition: {uid}, UID in object meta: "
            f"{old.get('uid')}",
            reason="Conflict",
            details={"name": name, "kind": kind},
        )
    version = meta.get("resourceVersion")
    if version is not None and version != old.get("resourceVersion"):
        raise _modified(kind, name, group)


def node_manifest(
    name: str,
    *,
    capacity: Mapping[str, str] | None = None,
    allocatable: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
) -> PodJSON:
    """A minimal Node (wire JSON) for :meth:`FakeApiServer.create_node`; capacity
    defaults to 4 CPUs, 8 GiB and 110 pods, allocatable to the capacity."""
    cap = dict(capacity) if capacity is not None else {"cpu": "4", "memory": "8Gi", "pods": "110"}
    meta: PodJSON = {"name": name}
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


class FakeApiServer:
    """The fake apiserver; ``async with FakeApiServer() as api: ... api.url``."""

    def __init__(
        self,
        *,
        token: str | None = DEFAULT_TOKEN,
        bookmark_interval: float = 1.0,
        initial_resource_version: int = 1,
    ) -> None:
        """``token``: the bearer token clients must send (None: accept any request,
        anonymous included). ``bookmark_interval``: seconds between BOOKMARK events on
        watches that allow them. ``initial_resource_version``: the resourceVersion
        before the first write."""
        self.token = token
        self.bookmark_interval = bookmark_interval
        self.requests: list[RecordedRequest] = []
        """Every request seen, in order (failed and rejected ones included)."""
        self.evictions: list[PodJSON] = []
        """The Eviction bodies of accepted evictions, in order."""
        self.events: list[PodJSON] = []
        """The core/v1 Events created, as stored (uid, resourceVersion added), in order."""
        # Reentrant: update_pod's `mutate` runs under it and may read the store.
        self._lock = threading.RLock()
        self._rv = initial_resource_version
        self._compacted_rv = initial_resource_version
        self.patches: list[RecordedPatch] = []
        """Every PATCH (path, content type, decoded body), in order, refused ones included."""
        self._pods: dict[tuple[str, str], PodJSON] = {}
        self._nodes: dict[str, PodJSON] = {}
        self._cnrs: dict[str, PodJSON] = {}
        self._history: list[_Change] = []
        self._watchers: set[_Watcher] = set()
        self._failures: list[int] = []
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

    # --- the cluster, driven by the test -----------------------------------------

    @property
    def resource_version(self) -> str:
        """The current (latest) resourceVersion."""
        with self._lock:
            return str(self._rv)

    def pods(self) -> list[PodJSON]:
        """Copies of every stored pod, ordered by namespace and name."""
        with self._lock:
            return [copy.deepcopy(self._pods[k]) for k in sorted(self._pods)]

    def get_pod(self, namespace: str, name: str) -> PodJSON | None:
        """A copy of one pod, or None."""
        with self._lock:
            pod = self._pods.get((namespace, name))
            return None if pod is None else copy.deepcopy(pod)

    def create_pod(self, pod: Mapping[str, Any]) -> PodJSON:
        """Store a new pod (as a controller's create would) and return the stored copy.

        Fills ``kind``, ``apiVersion``, ``metadata.namespace`` (``default``),
        ``metadata.uid`` (a uuid4, unless given: tests often need a known pod UID),
        ``metadata.creationTimestamp`` and ``status.phase`` (``Pending``) when absent.
        ``ValueError`` if it has no name or already exists."""
        obj = copy.deepcopy(dict(pod))
        obj["kind"] = "Pod"
        obj["apiVersion"] = "v1"
        meta = obj.setdefault("metadata", {})
        meta.setdefault("namespace", "default")
        if not meta.get("name"):
            raise ValueError("a pod needs metadata.name")
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", _timestamp())
        obj.setdefault("status", {}).setdefault("phase", "Pending")
        try:
            return self._create(obj)
        except ApiError as e:
            raise ValueError(e.message) from None

    def update_pod(self, namespace: str, name: str, mutate: Callable[[PodJSON], None]) -> PodJSON:
        """Apply ``mutate`` to a copy of the pod and store it (a MODIFIED event), as the
        kubelet's status update or a controller's update would; return the stored
        copy. A mutation that changes nothing writes nothing. ``KeyError`` if there is
        no such pod; ``ValueError`` if ``mutate`` renames it or changes its UID."""
        with self._lock:
            current = self._pods.get((namespace, name))
            if current is None:
                raise KeyError(f"pod {namespace}/{name} not found")
            obj = copy.deepcopy(current)
            mutate(obj)
            meta = obj.setdefault("metadata", {})
            for key in ("name", "namespace", "uid"):
                if meta.get(key) != current["metadata"].get(key):
                    raise ValueError(f"update_pod may not change metadata.{key}")
            meta["resourceVersion"] = current["metadata"]["resourceVersion"]
            if obj == current:
                return copy.deepcopy(current)
            self._rv += 1
            meta["resourceVersion"] = str(self._rv)
            # Stored as a copy: `mutate` may have kept a reference to `obj`.
            stored = copy.deepcopy(obj)
            self._pods[(namespace, name)] = stored
            self._history.append(_Change(self._rv, "MODIFIED", stored, current))
        self._wake_watchers()
        return obj

    def delete_pod(self, namespace: str, name: str) -> PodJSON:
        """Delete a pod at once (no grace period) and return its last state, carrying
        the deletion's resourceVersion. ``KeyError`` if there is no such pod."""
        try:
            return self._delete(namespace, name)
        except ApiError:
            raise KeyError(f"pod {namespace}/{name} not found") from None

    # --- nodes and CNRs, driven by the test ----------------------------------------

    def nodes(self) -> list[PodJSON]:
        """Copies of every stored Node, ordered by name."""
        with self._lock:
            return [copy.deepcopy(self._nodes[k]) for k in sorted(self._nodes)]

    def get_node(self, name: str) -> PodJSON | None:
        """A copy of one Node, or None."""
        with self._lock:
            node = self._nodes.get(name)
            return None if node is None else copy.deepcopy(node)

    def create_node(self, node: Mapping[str, Any]) -> PodJSON:
        """Store a new Node (as the kubelet's registration would) and return the stored
        copy: ``kind``, ``apiVersion``, ``metadata.uid`` (unless given),
        ``creationTimestamp`` and ``resourceVersion`` filled in, the quantities of
        ``status.capacity``/``status.allocatable`` in their canonical form.
        ``ValueError`` without a name, for a bad quantity, or if it exists."""
        obj = copy.deepcopy(dict(node))
        obj.update(kind="Node", apiVersion="v1")
        meta = obj.setdefault("metadata", {})
        meta.pop("namespace", None)
        try:
            if not meta.get("name"):
                raise ApiError(422, "a node needs metadata.name")
            _canonical_node(obj)
            return self._store_new(self._nodes, obj, kind="nodes")
        except ApiError as e:
            raise ValueError(e.message) from None

    def update_node(self, name: str, mutate: Callable[[PodJSON], None]) -> PodJSON:
        """Apply ``mutate`` to a copy of the Node and store it (as the kubelet's status
        update would); return the stored copy. ``KeyError`` if there is no such node."""
        with self._lock:
            current = self._nodes.get(name)
            if current is None:
                raise KeyError(f"node {name} not found")
            obj = copy.deepcopy(current)
            mutate(obj)
            _restore_system_meta(obj, current)
            _canonical_node(obj)
            return self._store_update(self._nodes, name, obj, current)

    def delete_node(self, name: str) -> PodJSON:
        """Delete a Node and return its last state. ``KeyError`` if there is none."""
        with self._lock:
            node = self._nodes.pop(name, None)
            if node is None:
                raise KeyError(f"node {name} not found")
            self._rv += 1
            return _with_rv(node, self._rv)

    def cnrs(self) -> list[PodJSON]:
        """Copies of every stored CustomNodeResource, ordered by name."""
        with self._lock:
            return [copy.deepcopy(self._cnrs[k]) for k in sorted(self._cnrs)]

    def get_cnr(self, name: str) -> PodJSON | None:
        """A copy of one CustomNodeResource, or None."""
        with self._lock:
            cnr = self._cnrs.get(name)
            return None if cnr is None else copy.deepcopy(cnr)

    def create_cnr(self, cnr: Mapping[str, Any]) -> PodJSON:
        """Store a new CustomNodeResource *with* the status given (as another writer's
        create and status update would leave it) and return the stored copy.
        ``ValueError`` without a name, for a status the CRD's schema refuses, or if it
        exists."""
        obj = copy.deepcopy(dict(cnr))
        obj.update(kind=CNR_KIND, apiVersion=f"{CNR_GROUP}/{CNR_VERSION}")
        meta = obj.setdefault("metadata", {})
        meta.pop("namespace", None)
        meta.setdefault("generation", 1)
        try:
            if not meta.get("name"):
                raise ApiError(422, "a CNR needs metadata.name")
            _validate_cnr_status(obj)
            return self._store_new(self._cnrs, obj, kind=CNR_PLURAL, group=CNR_GROUP)
        except ApiError as e:
            raise ValueError(e.message) from None

    def update_cnr(self, name: str, mutate: Callable[[PodJSON], None]) -> PodJSON:
        """Apply ``mutate`` to a copy of the CNR and store it (another writer's update);
        return the stored copy. ``KeyError`` if there is none, ``ValueError`` for a
        status the schema refuses."""
        with self._lock:
            current = self._cnrs.get(name)
            if current is None:
                raise KeyError(f"CNR {name} not found")
            obj = copy.deepcopy(current)
            mutate(obj)
            _restore_system_meta(obj, current)
            try:
                _validate_cnr_status(obj)
            except ApiError as e:
                raise ValueError(e.message) from None
            return self._store_update(self._cnrs, name, obj, current)

    def delete_cnr(self, name: str) -> PodJSON:
        """Delete a CNR and return its last state. ``KeyError`` if there is none."""
        with self._lock:
            cnr = self._cnrs.pop(name, None)
            if cnr is None:
                raise KeyError(f"CNR {name} not found")
            self._rv += 1
            return _with_rv(cnr, self._rv)

    def compact(self) -> None:
        """Forget the event history, as etcd compaction and the watch cache's window
        do: a watch from any resourceVersion older than the current one now gets 410.
        """
        with self._lock:
            self._history.clear()
            self._compacted_rv = self._rv
        self._wake_watchers()

    def fail_next(self, n: int, status: int = 500) -> None:
        """Answer the next ``n`` requests (any path, watches included) with a ``Status``
        error of code ``status`` instead of serving them."""
        with self._lock:
            self._failures.extend([status] * n)

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

    # --- store internals -----------------------------------------------------------

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

    def _create(self, obj: PodJSON) -> PodJSON:
        key = _pod_key(obj)
        with self._lock:
            if key in self._pods:
                raise ApiError(
                    409,
                    f'pods "{key[1]}" already exists',
                    reason="AlreadyExists",
                    details={"name": key[1], "kind": "pods"},
                )
            self._rv += 1
            stored = _with_rv(obj, self._rv)
            self._pods[key] = stored
            self._history.append(_Change(self._rv, "ADDED", stored, None))
        self._wake_watchers()
        return copy.deepcopy(stored)

    def _store_new(
        self, store: dict[str, PodJSON], obj: PodJSON, *, kind: str, group: str = ""
    ) -> PodJSON:
        """Store a new cluster-scoped object under its name (409 AlreadyExists)."""
        meta = obj["metadata"]
        name = str(meta["name"])
        with self._lock:
            if name in store:
                qualified = f"{kind}.{group}" if group else kind
                details: PodJSON = {"name": name}
                if group:
                    details["group"] = group
                details["kind"] = kind
                raise ApiError(
                    409,
                    f'{qualified} "{name}" already exists',
                    reason="AlreadyExists",
                    details=details,
                )
            self._rv += 1
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", _timestamp())
            meta["resourceVersion"] = str(self._rv)
            store[name] = copy.deepcopy(obj)
            return copy.deepcopy(obj)

    def _store_update(
        self, store: dict[str, PodJSON], name: str, obj: PodJSON, current: PodJSON
    ) -> PodJSON:
        """Store ``obj`` over ``current`` (the caller holds the lock); a write that
        changes nothing keeps the resourceVersion, as the apiserver's no-op updates do."""
        obj.setdefault("metadata", {})["resourceVersion"] = current["metadata"]["resourceVersion"]
        if obj == current:
            return copy.deepcopy(current)
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        store[name] = copy.deepcopy(obj)
        return copy.deepcopy(obj)

    def _delete(self, namespace: str, name: str) -> PodJSON:
        with self._lock:
            prev = self._pods.pop((namespace, name), None)
            if prev is None:
                raise _not_found(name)
            self._rv += 1
            gone = _with_rv(prev, self._rv)
            self._history.append(_Change(self._rv, "DELETED", gone, prev))
        self._wake_watchers()
        return copy.deepcopy(gone)

    # --- HTTP ----------------------------------------------------------------------

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        # The client's VersionApi asks for "/version/"; the apiserver serves both.
        router.add_get("/version", self._version)
        router.add_get("/version/", self._version)
        for probe in ("/healthz", "/livez", "/readyz"):
            router.add_get(probe, self._health)
        router.add_get("/api/v1/pods", self._list_or_watch)
        ns_pods = "/api/v1/namespaces/{namespace}/pods"
        router.add_get(ns_pods, self._list_or_watch)
        router.add_post(ns_pods, self._create_http)
        router.add_get(ns_pods + "/{name}", self._get_http)
        router.add_delete(ns_pods + "/{name}", self._delete_http)
        router.add_post(ns_pods + "/{name}/eviction", self._evict_http)
        router.add_post("/api/v1/namespaces/{namespace}/events", self._create_event_http)
        router.add_get("/api/v1/nodes/{name}", self._get_node_http)
        router.add_get("/api/v1/nodes/{name}/status", self._get_node_http)
        router.add_patch("/api/v1/nodes/{name}", self._patch_node_http)
        router.add_patch("/api/v1/nodes/{name}/status", self._patch_node_http)
        router.add_post(CNR_PATH, self._create_cnr_http)
        router.add_get(CNR_PATH + "/{name}", self._get_cnr_http)
        router.add_get(CNR_PATH + "/{name}/status", self._get_cnr_http)
        router.add_patch(CNR_PATH + "/{name}", self._patch_cnr_http)
        router.add_patch(CNR_PATH + "/{name}/status", self._patch_cnr_http)

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        self.requests.append(RecordedRequest(request.method, request.path, dict(request.query)))
        with self._lock:
            failure = self._failures.pop(0) if self._failures else None
        try:
            if failure is not None:
                raise ApiError(failure, f"fake apiserver: injected failure ({failure})")
            self._authenticate(request)
            return await handler(request)
        except ApiError as e:
            return _json_response(e.status(), e.code)
        except web.HTTPNotFound:
            status = ApiError(404, "the server could not find the requested resource", details={})
            return _json_response(status.status(), 404)
        except web.HTTPMethodNotAllowed:
            status = ApiError(
                405, "the server does not allow this method on the requested resource", details={}
            )
            return _json_response(status.status(), 405)

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

    def _selector(self, request: web.Request) -> _Selector:
        query = request.query
        return _Selector(
            namespace=request.match_info.get("namespace"),
            fields=parse_field_selector(query.get("fieldSelector", "")),
            labels=parse_label_selector(query.get("labelSelector", "")),
        )

    async def _list_or_watch(self, request: web.Request) -> web.StreamResponse:
        selector = self._selector(request)
        if _parse_bool(request.query, "watch"):
            return await self._watch(request, selector)
        with self._lock:
            items = [
                _as_list_item(self._pods[k])
                for k in sorted(self._pods)
                if selector.matches(self._pods[k])
            ]
            rv = str(self._rv)
        return _json_response(
            {
                "kind": "PodList",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": rv},
                "items": items,
            }
        )

    async def _get_http(self, request: web.Request) -> web.StreamResponse:
        pod = self.get_pod(request.match_info["namespace"], request.match_info["name"])
        if pod is None:
            raise _not_found(request.match_info["name"])
        return _json_response(pod)

    async def _delete_http(self, request: web.Request) -> web.StreamResponse:
        return _json_response(
            self._delete(request.match_info["namespace"], request.match_info["name"])
        )

    async def _read_json(self, request: web.Request) -> PodJSON:
        try:
            body = json.loads(await request.read())
        except ValueError as e:
            raise ApiError(
                400, f"the body of the request could not be decoded as JSON: {e}"
            ) from None
        if not isinstance(body, dict):
            raise ApiError(400, "the body of the request is not a JSON object")
        return body

    async def _read_namespaced(self, request: web.Request) -> tuple[str, PodJSON, PodJSON]:
        """The body of a namespaced create: (namespace, object, its metadata), the
        metadata's namespace checked against the URL's as the API server does."""
        namespace = request.match_info["namespace"]
        obj = await self._read_json(request)
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            meta = obj["metadata"] = {}
        if meta.get("namespace", namespace) != namespace:
            raise ApiError(
                400,
                "the namespace of the provided object does not match the namespace sent on "
                "the request",
            )
        return namespace, obj, meta

    async def _create_http(self, request: web.Request) -> web.StreamResponse:
        namespace, obj, meta = await self._read_namespaced(request)
        name = meta.get("name") or ""
        if not name and meta.get("generateName"):
            alphabet = "bcdfghjklmnpqrstvwxz2456789"  # apiserver's SimpleNameGenerator
            name = meta["generateName"] + "".join(secrets.choice(alphabet) for _ in range(5))
        if not name:
            raise ApiError(
                422,
                'Pod "" is invalid: metadata.name: Required value: name or generateName is '
                "required",
                details={"kind": "Pod"},
            )
        containers = _get(obj, "spec", "containers")
        if not isinstance(containers, list) or not containers:
            raise ApiError(
                422,
                f'Pod "{name}" is invalid: spec.containers: Required value',
                details={"name": name, "kind": "Pod"},
            )
        # What the apiserver sets on create: system metadata (a client's uid and
        # timestamps are overwritten), and a fresh status (pod strategy PrepareForCreate).
        meta.update(
            name=name, namespace=namespace, uid=str(uuid.uuid4()), creationTimestamp=_timestamp()
        )
        obj.update(kind="Pod", apiVersion="v1", status={"phase": "Pending"})
        return _json_response(self._create(obj), 201)

    async def _evict_http(self, request: web.Request) -> web.StreamResponse:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        body = await self._read_json(request)
        if body.get("kind", "Eviction") != "Eviction":
            raise ApiError(400, f"expected an Eviction, got kind {body.get('kind')!r}")
        body_name = _get(body, "metadata", "name")
        if body_name is not None and body_name != name:
            raise ApiError(400, "name in URL does not match name in Eviction object")
        want_uid = _get(body, "deleteOptions", "preconditions", "uid")
        with self._lock:
            current = self._pods.get((namespace, name))
            if current is None:
                raise _not_found(name)
            uid = current["metadata"].get("uid")
            if want_uid is not None and want_uid != uid:
                # The registry's Preconditions check (apimachinery storage errors).
                raise ApiError(
                    409,
                    f"Precondition failed: UID in precondition: {want_uid}, "
                    f"UID in object meta: {uid}",
                    reason="Conflict",
                    details={"name": name, "kind": "pods"},
                )
            self._delete(namespace, name)
            self.evictions.append(body)
        return _json_response(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "code": 201,
            },
            201,
        )

    async def _create_event_http(self, request: web.Request) -> web.StreamResponse:
        namespace, obj, meta = await self._read_namespaced(request)
        name = meta.get("name") or ""
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
        return _json_response(obj, 201)

    # --- nodes and CNRs over HTTP ----------------------------------------------------

    async def _read_patch(self, request: web.Request, *, strategic: bool) -> PodJSON:
        """The decoded body of a PATCH of a supported type (recorded either way)."""
        content_type = request.content_type
        raw = await request.read()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        self.patches.append(RecordedPatch(request.path, content_type, body))
        accepted = [JSON_PATCH, MERGE_PATCH, APPLY_PATCH]
        if strategic:
            # Built-in kinds only: custom resources have no Go struct to carry patch tags.
            accepted.append(STRATEGIC_MERGE_PATCH)
        if content_type not in accepted:
            raise ApiError(
                415,
                "the body of the request was in an unknown format - accepted media types "
                "include: " + ", ".join(accepted),
            )
        if content_type in (JSON_PATCH, APPLY_PATCH):
            raise ApiError(415, f"this fake apiserver does not implement {content_type} patches")
        if isinstance(body, str):
            raise ApiError(
                400, f"the body of the request could not be decoded as JSON: {body[:80]!r}"
            )
        if not isinstance(body, dict):
            raise ApiError(400, "the body of the request is not a JSON object")
        return body

    async def _get_node_http(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        node = self.get_node(name)
        if node is None:
            raise _kind_not_found("nodes", name)
        return _json_response(node)

    async def _patch_node_http(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        status_only = request.path.endswith("/status")
        patch = await self._read_patch(request, strategic=True)
        with self._lock:
            current = self._nodes.get(name)
            if current is None:
                raise _kind_not_found("nodes", name)
            if request.content_type == STRATEGIC_MERGE_PATCH:
                merged = _strategic_merge(current, patch, _NODE_MERGE_KEYS)
            else:
                merged = json_merge_patch(current, patch)
            _check_preconditions(merged, current, kind="nodes", name=name)
            # The node strategies: /status keeps the spec (and takes metadata), the main
            # resource keeps the status (pkg/registry/core/node/strategy.go).
            kept = "spec" if status_only else "status"
            if kept in current:
                merged[kept] = copy.deepcopy(current[kept])
            else:
                merged.pop(kept, None)
            _restore_system_meta(merged, current)
            _canonical_node(merged)
            stored = self._store_update(self._nodes, name, merged, current)
        return _json_response(stored)

    async def _get_cnr_http(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        cnr = self.get_cnr(name)
        if cnr is None:
            raise _kind_not_found(CNR_PLURAL, name, CNR_GROUP)
        return _json_response(cnr)

    async def _create_cnr_http(self, request: web.Request) -> web.StreamResponse:
        obj = await self._read_json(request)
        expected = f"{CNR_GROUP}/{CNR_VERSION}"
        version = obj.get("apiVersion")
        if version is not None and version != expected:
            raise ApiError(
                400,
                f"the API version in the data ({version}) does not match the expected API "
                f"version ({expected})",
            )
        kind = obj.get("kind")
        if kind is not None and kind != CNR_KIND:
            raise ApiError(
                400, f"the kind in the data ({kind}) does not match the expected kind ({CNR_KIND})"
            )
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            meta = obj["metadata"] = {}
        if not meta.get("name"):
            raise _cnr_invalid(
                "", "metadata.name: Required value: name or generateName is required"
            )
        if meta.get("resourceVersion"):
            # The etcd3 store's check (an internal error, not a validation one).
            raise ApiError(500, "resourceVersion should not be set on objects to be created")
        # Cluster-scoped: the namespace is cleared; the status subresource is enabled, so
        # a create resets the status (apiextensions-apiserver's strategy); the server
        # owns uid, creationTimestamp and generation.
        meta.pop("namespace", None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_timestamp(), generation=1)
        obj.update(apiVersion=expected, kind=CNR_KIND)
        obj.pop("status", None)
        stored = self._store_new(self._cnrs, obj, kind=CNR_PLURAL, group=CNR_GROUP)
        return _json_response(stored, 201)

    async def _patch_cnr_http(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        status_only = request.path.endswith("/status")
        patch = await self._read_patch(request, strategic=False)
        with self._lock:
            current = self._cnrs.get(name)
            if current is None:
                raise _kind_not_found(CNR_PLURAL, name, CNR_GROUP)
            merged = json_merge_patch(current, patch)
            _check_preconditions(merged, current, kind=CNR_PLURAL, name=name, group=CNR_GROUP)
            if status_only:
                # The status strategy keeps nothing of the request but its status.
                result = copy.deepcopy(current)
                if "status" in merged:
                    result["status"] = merged["status"]
                else:
                    result.pop("status", None)
            else:
                # The main resource ignores status; a spec change is a new generation.
                result = merged
                if "status" in current:
                    result["status"] = copy.deepcopy(current["status"])
                else:
                    result.pop("status", None)
            _restore_system_meta(result, current)
            if result.get("spec") != current.get("spec"):
                result["metadata"]["generation"] = int(current["metadata"].get("generation", 1)) + 1
            _validate_cnr_status(result)
            stored = self._store_update(self._cnrs, name, result, current)
        return _json_response(stored)

    # --- watch -----------------------------------------------------------------------

    async def _watch(self, request: web.Request, selector: _Selector) -> web.StreamResponse:
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
        initial: list[PodJSON] = []
        expired: str | None = None
        with self._lock:
            if since is None:
                # RV unset or "0": the current state as synthetic ADDED events, then
                # everything after it.
                initial = [self._pods[k] for k in sorted(self._pods)]
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
            for pod in initial:
                if selector.matches(pod):
                    await response.write(_dumps({"type": "ADDED", "object": pod}))
            await self._follow(
                response, watcher, selector, cursor=cursor, bookmarks=bookmarks, timeout=timeout
            )
        finally:
            with self._lock:
                self._watchers.discard(watcher)
        return response

    async def _follow(
        self,
        response: web.StreamResponse,
        watcher: _Watcher,
        selector: _Selector,
        *,
        cursor: int,
        bookmarks: bool,
        timeout: int | None,
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        next_bookmark = loop.time() + self.bookmark_interval if bookmarks else None
        while True:
            # Clear before reading the history, so that a write after the read wakes us.
            watcher.wake.clear()
            with self._lock:
                if watcher.dropped:
                    break
                if cursor < self._compacted_rv:
                    log.debug("watch fell behind a compaction at %d; closing", cursor)
                    break
                start = bisect.bisect_right(self._history, cursor, key=lambda c: c.rv)
                changes = self._history[start:]
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
                    "kind": "Pod",
                    "apiVersion": "v1",
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


def _watch_event(change: _Change, selector: _Selector) -> PodJSON | None:
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
) -> PodJSON:
    """A minimal valid Pod (wire JSON) for :meth:`FakeApiServer.create_pod` or a POST."""
    meta: PodJSON = {"name": name, "namespace": namespace}
    if uid is not None:
        meta["uid"] = uid
    if labels:
        meta["labels"] = dict(labels)
    if annotations:
        meta["annotations"] = dict(annotations)
    spec: PodJSON = {
        "containers": [{"name": c, "image": "registry.k8s.io/pause:3.10"} for c in containers]
    }
    if node_name is not None:
        spec["nodeName"] = node_name
    pod: PodJSON = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}
    if phase is not None:
        pod["status"] = {"phase": phase}
    return pod
