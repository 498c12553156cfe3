"""The agent's API-server traffic: list-watches, a GET of a custom object, and writes.

This is the only module of the agent that imports the ``kubernetes`` client; an
import-linter contract keeps it that way, so that the agent's API-server traffic
has one place to be read, rate-limited and tested.

:class:`ListWatch` keeps a local view of one collection in step with the API
server: one list, then a watch from the list's ``resourceVersion``; a watch that
ends (server timeout, dropped connection) resumes from the last version seen, and
one the server answers with 410 Gone (that version left its watch cache) lists
again. Failures back off exponentially with jitter, capped, so that thousands of
agents do not hammer a recovering API server in step. Two views are built on it:

* :class:`PodWatcher` (ORM mode's pod source): ``pods`` (UID -> the pod's wire
  JSON) for the pods bound to this node (field selector ``spec.nodeName=<node>``);
* :class:`ObjectWatcher`: one cluster-scoped custom object by name (field selector
  ``metadata.name=<name>``), e.g. this node's ``CustomNodeConfig``.

The loop is written here on the client's raw calls rather than with
``kubernetes.aio.watch.Watch`` or ``kubernetes.informer.SharedInformer``: the
former turns every event into a pydantic model we would throw away (the QoS
model reads the wire JSON), and resumes once after a 410 and then raises; the
latter runs in a thread, reconnects a failing watch without back-off and keeps
models, not JSON. The client still does all HTTP, TLS and authentication.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from kubernetes.aio import client as k8s_client
from kubernetes.aio import config as k8s_config

from katalyst import __version__
from katalyst.clock import Clock, first_of
from katalyst.dynconfig import GroupVersionResource
from katalyst.kuberaw import raw_call

log = logging.getLogger(__name__)

USER_AGENT = f"katalyst-agent/{__version__}"
"""The agent's User-Agent (``katalyst-agent/<version> (<node>)`` with its node)."""

ApiClient = k8s_client.ApiClient
"""The official client's connection (``connect`` makes one); other modules name its
type through this alias, so that only this module imports ``kubernetes``."""

RawObject = Mapping[str, Any]
"""An object as the API server sends it (decoded JSON, camelCase keys)."""
RawPod = RawObject
"""A pod as the API server sends it."""

#: A watch line longer than this is a broken stream, not an object (etcd's own limit is 1.5 MiB).
MAX_EVENT_BYTES = 16 * 1024 * 1024
HTTP_GONE = 410


class ApiServerError(Exception):
    """The API server cannot be reached or configured; the message says why."""


class _Expired(Exception):
    """The watch's resourceVersion left the server's watch cache (410 Gone): list again."""


@dataclass(frozen=True, slots=True)
class WatchSettings:
    """How a list-watch behaves."""

    watch_timeout_s: int = 300
    """Server-side timeout of one watch request, seconds (the client-go default range)."""
    backoff_initial_s: float = 0.5
    """First retry delay after a failure, seconds; doubled on each failure in a row."""
    backoff_max_s: float = 30.0
    """Cap of the retry delay, seconds."""
    request_timeout_s: float = 30.0
    """Connect and read timeout of a list request, seconds."""


async def connect(kubeconfig: Path | None, *, node_name: str = "") -> k8s_client.ApiClient:
    """An API client from ``kubeconfig``, or from the pod's service account when None.
    Its User-Agent names the agent and, when given, its node (the API server's audit
    log and its per-client metrics tell the agents apart by it).

    A fresh ``Configuration`` is built, never the client's global default, so that
    nothing else in the process is affected.
    """
    configuration = k8s_client.Configuration()
    try:
        if kubeconfig is not None:
            await k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=str(kubeconfig), client_configuration=configuration
            )
        else:
            k8s_config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration
            )
    except (
        k8s_config.ConfigException,
        OSError,
        ValueError,
        TypeError,
        KeyError,
        yaml.YAMLError,
    ) as exc:
        where = f"kubeconfig {kubeconfig}" if kubeconfig else "in-cluster service account"
        raise ApiServerError(f"{where}: {exc}") from exc
    api = k8s_client.ApiClient(configuration)
    api.user_agent = f"{USER_AGENT} ({node_name})" if node_name else USER_AGENT
    return api


def _uid(pod: RawObject) -> str | None:
    meta = pod.get("metadata")
    uid = meta.get("uid") if isinstance(meta, Mapping) else None
    return uid if isinstance(uid, str) and uid else None


def _name(obj: RawObject) -> str | None:
    meta = obj.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    return name if isinstance(name, str) else None


def _node_of(pod: RawObject) -> str | None:
    spec = pod.get("spec")
    node = spec.get("nodeName") if isinstance(spec, Mapping) else None
    return node if isinstance(node, str) else None


class ListWatch:
    """One collection kept in step with the API server; see the module docstring.

    A subclass says what to request (:meth:`_request`, given the list or watch
    parameters) and keeps what it hears: :meth:`_listed` gets a whole list,
    :meth:`_observed` one ADDED, MODIFIED or DELETED object; both set
    :attr:`changed` when the view changed. ``what`` names the collection in logs.
    """

    what = "object"

    def __init__(
        self,
        api: k8s_client.ApiClient,
        *,
        clock: Clock,
        settings: WatchSettings | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._api = api
        self._clock = clock
        self._settings = settings or WatchSettings()
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._version: str | None = None
        self.synced = asyncio.Event()
        """Set once the first list has arrived; the view is meaningful from then on."""
        self.changed = asyncio.Event()
        """Set whenever the view changes; the consumer clears it before it reads."""
        self.failures = 0
        """Failed requests in a row (0 while the watch is healthy)."""
        self.lists = 0
        """Lists done so far (the first one, then one after every 410 Gone)."""

    @property
    def api(self) -> k8s_client.ApiClient:
        """The client this watch uses (other API-server calls of the agent share it)."""
        return self._api

    async def run(self, stop: asyncio.Event) -> None:
        """List and watch until ``stop`` is set."""
        while not stop.is_set():
            try:
                if self._version is None:
                    await self._list()
                await self._watch(stop)
            except _Expired as exc:
                log.info("%s watch expired (%s); listing again", self.what, exc)
                self._version = None
            except (
                TimeoutError,
                ValueError,
                aiohttp.ClientError,
                k8s_client.ApiException,
                ApiServerError,
                OSError,
            ) as exc:
                self.failures += 1
                delay = self._backoff()
                log.warning(
                    "API server: %s %s failed (%s); retrying in %.1f s",
                    self.what,
                    "list" if self._version is None else "watch",
                    _describe(exc),
                    delay,
                )
                await first_of(self._clock.sleep(delay), stop)

    def _backoff(self) -> float:
        s = self._settings
        cap = min(s.backoff_max_s, s.backoff_initial_s * 2.0 ** min(self.failures - 1, 30))
        # "Full jitter" halves the expected delay but spreads a fleet's retries.
        return cap / 2 + self._rng.uniform(0, cap / 2)

    # ---- what a subclass says ------------------------------------------------------

    async def _request(self, **params: Any) -> aiohttp.ClientResponse:
        """The list (or, with ``watch=True``, watch) request of the collection, sent
        with ``params`` through a generated ``*_without_preload_content`` method."""
        raise NotImplementedError

    def _listed(self, items: list[RawObject]) -> None:
        """A whole list arrived: replace the view."""
        raise NotImplementedError

    def _observed(self, kind: str, obj: RawObject) -> None:
        """One watch event (``ADDED``, ``MODIFIED``, ``DELETED``, or an unknown type)."""
        raise NotImplementedError

    # ---- the machinery -------------------------------------------------------------

    async def _list(self) -> None:
        resp = await self._request(_request_timeout=self._settings.request_timeout_s)
        try:
            body = await _json_body(resp)
        finally:
            resp.release()
        items = body.get("items")
        meta = body.get("metadata")
        version = meta.get("resourceVersion") if isinstance(meta, Mapping) else None
        if not isinstance(items, list) or not isinstance(version, str):
            raise ApiServerError(f"{self.what} list without items or metadata.resourceVersion")
        self._listed([item for item in items if isinstance(item, Mapping)])
        self._version = version
        self.lists += 1
        self.failures = 0
        self.synced.set()

    async def _watch(self, stop: asyncio.Event) -> None:
        s = self._settings
        # The client takes one total timeout (aiohttp's ClientTimeout(total=...)):
        # the server ends the watch after timeoutSeconds, so a watch still open well
        # past it is a dead connection.
        resp = await self._request(
            watch=True,
            allow_watch_bookmarks=True,
            resource_version=self._version,
            timeout_seconds=s.watch_timeout_s,
            _request_timeout=float(s.watch_timeout_s + 30),
        )
        stopper = asyncio.ensure_future(stop.wait())
        try:
            if resp.status == HTTP_GONE:
                raise _Expired(f"HTTP {resp.status}")
            if resp.status != 200:
                await _json_body(resp)  # raises with the server's Status message
            self.failures = 0
            buffer = b""
            while True:
                reader = asyncio.ensure_future(resp.content.readany())
                await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if not reader.done():
                    reader.cancel()
                    return
                chunk = reader.result()
                if not chunk:
                    return  # the server ended the watch (timeoutSeconds): resume
                buffer += chunk
                # One event per line; a line is split across chunks at will.
                *lines, buffer = buffer.split(b"\n")
                if len(buffer) > MAX_EVENT_BYTES:
                    raise ApiServerError(f"watch event larger than {MAX_EVENT_BYTES} bytes")
                for line in lines:
                    if line.strip():
                        self._event(line)
        finally:
            stopper.cancel()
            resp.release()

    def _event(self, line: bytes) -> None:
        try:
            event = json.loads(line)
            kind = event["type"]
            obj = event["object"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ApiServerError(f"malformed watch event: {exc}") from exc
        if not isinstance(obj, Mapping):
            raise ApiServerError(f"watch event {kind!r} without an object")
        if kind == "ERROR":
            code = obj.get("code")
            message = f"{obj.get('reason')}: {obj.get('message')}"
            if code == HTTP_GONE:
                raise _Expired(message)
            raise ApiServerError(f"watch error {code} {message}")
        meta = obj.get("metadata")
        version = meta.get("resourceVersion") if isinstance(meta, Mapping) else None
        if kind == "BOOKMARK":
            if isinstance(version, str):
                self._version = version
            return
        self._observed(str(kind), obj)
        if isinstance(version, str):
            self._version = version


class PodWatcher(ListWatch):
    """This node's pods, kept in step with the API server; see the module docstring."""

    what = "pod"

    def __init__(
        self,
        api: k8s_client.ApiClient,
        *,
        node_name: str,
        clock: Clock,
        settings: WatchSettings | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(api, clock=clock, settings=settings, rng=rng)
        self._core = k8s_client.CoreV1Api(api)
        self._node = node_name
        self._pods: dict[str, RawPod] = {}

    @property
    def field_selector(self) -> str:
        """The selector of this node's pods."""
        return f"spec.nodeName={self._node}"

    @property
    def pods(self) -> Mapping[str, RawPod]:
        """UID -> the pod's JSON, for the pods bound to this node."""
        return self._pods

    async def _request(self, **params: Any) -> aiohttp.ClientResponse:
        return await self._core.list_pod_for_all_namespaces_without_preload_content(
            field_selector=self.field_selector, **params
        )

    def _listed(self, items: list[RawObject]) -> None:
        pods: dict[str, RawPod] = {}
        for item in items:
            if (uid := _uid(item)) and _node_of(item) == self._node:
                pods[uid] = item
        if pods != self._pods:
            self._pods = pods
            self.changed.set()
        log.info("API server: %d pods on node %s", len(pods), self._node)

    def _observed(self, kind: str, obj: RawObject) -> None:
        uid = _uid(obj)
        if uid is None:
            log.warning("watch event %s for a pod without metadata.uid, ignored", kind)
            return
        # The field selector is the API server's; the check here keeps a stray
        # pod of another node (a proxy that dropped the selector) off this node.
        if kind == "DELETED" or _node_of(obj) != self._node:
            if self._pods.pop(uid, None) is not None:
                self.changed.set()
        elif kind in ("ADDED", "MODIFIED"):
            self._pods[uid] = obj
            self.changed.set()
        else:
            log.warning("watch event of unknown type %r, ignored", kind)


class ObjectWatcher(ListWatch):
    """One cluster-scoped custom object, by name, kept in step with the API server
    (list and watch with the field selector ``metadata.name=<name>``, which
    apiextensions serves for every custom resource). :attr:`object` is None while
    the object does not exist."""

    def __init__(
        self,
        api: k8s_client.ApiClient,
        *,
        resource: GroupVersionResource,
        name: str,
        clock: Clock,
        settings: WatchSettings | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(api, clock=clock, settings=settings, rng=rng)
        self._custom = k8s_client.CustomObjectsApi(api)
        self._resource = resource
        self._name = name
        self.what = f"{resource.resource} {name}"
        self.object: RawObject | None = None
        """The object as last seen; None before the first list or while it is absent."""

    @property
    def field_selector(self) -> str:
        return f"metadata.name={self._name}"

    async def _request(self, **params: Any) -> aiohttp.ClientResponse:
        r = self._resource
        return await self._custom.list_cluster_custom_object_without_preload_content(
            r.group, r.version, r.resource, field_selector=self.field_selector, **params
        )

    def _set(self, obj: RawObject | None) -> None:
        if obj != self.object:
            self.object = obj
            self.changed.set()

    def _listed(self, items: list[RawObject]) -> None:
        self._set(next((item for item in items if _name(item) == self._name), None))

    def _observed(self, kind: str, obj: RawObject) -> None:
        if _name(obj) != self._name:
            return  # a proxy that dropped the selector: not ours
        if kind == "DELETED":
            self._set(None)
        elif kind in ("ADDED", "MODIFIED"):
            self._set(obj)
        else:
            log.warning("watch event of unknown type %r, ignored", kind)


async def _json_body(resp: aiohttp.ClientResponse) -> Mapping[str, Any]:
    """The response's JSON object; ApiException with the server's message unless 2xx."""
    text = await resp.text()
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if not 200 <= resp.status < 300:
        message = body.get("message") if isinstance(body, Mapping) else text[:200]
        raise k8s_client.ApiException(status=resp.status, reason=f"{resp.reason}: {message}")
    if not isinstance(body, Mapping):
        raise ApiServerError(f"expected a JSON object from the API server, got {text[:80]!r}")
    return body


def _describe(exc: BaseException) -> str:
    if isinstance(exc, k8s_client.ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    return str(exc) or type(exc).__name__


async def _raw_request(
    api: k8s_client.ApiClient,
    method: str,
    path: str,
    path_params: Mapping[str, str],
    body: Mapping[str, Any] | None,
    *,
    content_type: str | None,
    timeout: float,
) -> tuple[int, str]:
    """(HTTP status, body text) of one raw request (:func:`katalyst.kuberaw.raw_call`),
    never an ``ApiException``; ``ConnectionError`` when no answer came."""
    status, raw = await raw_call(
        api, method, path, path_params, body, content_type=content_type, timeout=timeout
    )
    return status, raw.decode("utf-8", "replace")


class ApiServerEvictionClient:
    """``agent.eviction.EvictionClient`` over the official client: POST a policy/v1
    Eviction and a core/v1 Event.

    Written on the client's raw calls (``param_serialize`` then ``call_api``, as the
    generated ``*_without_preload_content`` methods are) rather than on
    ``CoreV1Api.create_namespaced_pod_eviction``: the bodies go out as the JSON the
    evictor built, with no pydantic model on the way, and every answer, a 429 from
    a PodDisruptionBudget included, comes back as a status code instead of an
    ``ApiException``. Authentication, TLS and the connection pool stay the client's.
    """

    def __init__(self, api: k8s_client.ApiClient, *, request_timeout_s: float = 30.0) -> None:
        self._api = api
        self._timeout = request_timeout_s

    async def post_eviction(self, namespace: str, name: str, body: Mapping[str, Any]) -> int:
        """POST ``/api/v1/namespaces/{namespace}/pods/{name}/eviction``; the status."""
        status, _ = await self._post(
            "/api/v1/namespaces/{namespace}/pods/{name}/eviction",
            {"namespace": namespace, "name": name},
            body,
        )
        return status

    async def post_event(self, namespace: str, body: Mapping[str, Any]) -> None:
        """POST ``/api/v1/namespaces/{namespace}/events``; ``ConnectionError`` unless 2xx."""
        status, text = await self._post(
            "/api/v1/namespaces/{namespace}/events", {"namespace": namespace}, body
        )
        if not 200 <= status < 300:
            raise ConnectionError(f"event not created: HTTP {status}: {text[:200]}")

    async def _post(
        self, path: str, path_params: Mapping[str, str], body: Mapping[str, Any]
    ) -> tuple[int, str]:
        return await _raw_request(
            self._api,
            "POST",
            path,
            path_params,
            body,
            content_type="application/json",
            timeout=self._timeout,
        )


_CNR_PATH = "/apis/node.katalyst.kubewharf.io/v1alpha1/customnoderesources"
_MERGE_PATCH = "application/merge-patch+json"


class ApiServerReportClient:
    """``agent.reporter.ReportClient`` over the official client: the Node's status and
    the node's CustomNodeResource (``node.katalyst.kubewharf.io/v1alpha1``,
    cluster-scoped, with the status subresource).

    Written on the client's raw calls (``param_serialize`` then ``call_api``), as
    :class:`ApiServerEvictionClient` is: the bodies go out as the JSON the reporter
    built (``CoreV1Api.patch_node_status`` would pick a strategic merge patch, and a
    CNR has no generated model at all), every answer comes back as a status code
    rather than an ``ApiException``, and authentication, TLS and the connection pool
    stay the client's. Both patches are JSON merge patches: custom resources take no
    strategic merge patch (415).
    """

    def __init__(self, api: k8s_client.ApiClient, *, request_timeout_s: float = 30.0) -> None:
        self._api = api
        self._timeout = request_timeout_s

    async def patch_node_status(self, name: str, body: Mapping[str, Any]) -> int:
        """PATCH ``/api/v1/nodes/{name}/status`` (merge patch); the HTTP status."""
        status, _ = await self._call(
            "PATCH", "/api/v1/nodes/{name}/status", {"name": name}, body, _MERGE_PATCH
        )
        return status

    async def get_cnr(self, name: str) -> dict[str, Any] | None:
        """GET the CNR ``name``: the object, None on 404, ``ConnectionError`` otherwise."""
        return await _get_object(
            self._api,
            _CNR_PATH + "/{name}",
            {"name": name},
            what=f"CNR {name}",
            timeout=self._timeout,
        )

    async def create_cnr(self, body: Mapping[str, Any]) -> int:
        """POST a CNR; the HTTP status."""
        status, _ = await self._call("POST", _CNR_PATH, {}, body, "application/json")
        return status

    async def patch_cnr_status(self, name: str, body: Mapping[str, Any]) -> int:
        """PATCH the CNR's ``/status`` (merge patch); the HTTP status."""
        status, _ = await self._call(
            "PATCH", _CNR_PATH + "/{name}/status", {"name": name}, body, _MERGE_PATCH
        )
        return status

    async def _call(
        self,
        method: str,
        path: str,
        path_params: Mapping[str, str],
        body: Mapping[str, Any] | None = None,
        content_type: str | None = None,
    ) -> tuple[int, str]:
        return await _raw_request(
            self._api,
            method,
            path,
            path_params,
            body,
            content_type=content_type,
            timeout=self._timeout,
        )


async def _get_object(
    api: k8s_client.ApiClient,
    path: str,
    path_params: Mapping[str, str],
    *,
    what: str,
    timeout: float,
) -> dict[str, Any] | None:
    """GET one object: its JSON, None on 404, ``ConnectionError`` for any other
    answer (or none)."""
    status, text = await _raw_request(
        api, "GET", path, path_params, None, content_type=None, timeout=timeout
    )
    if status == 404:
        return None
    if not 200 <= status < 300:
        raise ConnectionError(f"{what}: HTTP {status}: {text[:200]}")
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise ConnectionError(f"{what}: the API server sent no JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ConnectionError(f"{what}: expected a JSON object, got {text[:80]!r}")
    return body


class ApiServerConfigClient:
    """The dynamic configuration's read: GET a target config object (any custom
    resource, by group, version, plural, namespace and name) as its wire JSON.

    On the client's raw calls, as :class:`ApiServerReportClient` is: a target kind
    has no generated model, and the agent hashes and parses the JSON itself."""

    def __init__(self, api: k8s_client.ApiClient, *, request_timeout_s: float = 30.0) -> None:
        self._api = api
        self._timeout = request_timeout_s

    async def get_object(
        self, resource: GroupVersionResource, namespace: str, name: str
    ) -> dict[str, Any] | None:
        """GET the object: its JSON, None on 404 (it does not exist, or its kind is not
        served), ``ConnectionError`` for any other answer or none."""
        r = resource
        root = "/apis/{group}/{version}" if r.group else "/api/{version}"
        scope = "/namespaces/{namespace}" if namespace else ""
        params = {"group": r.group, "version": r.version, "namespace": namespace}
        params.update(plural=r.resource, name=name)
        what = f"{r.resource}.{r.group} {namespace}/{name}" if namespace else f"{r.resource} {name}"
        return await _get_object(
            self._api,
            root + scope + "/{plural}/{name}",
            {k: v for k, v in params.items() if v},
            what=what,
            timeout=self._timeout,
        )
