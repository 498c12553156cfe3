"""The agent's API-server traffic: list-watches, a GET of a custom object, and writes.

This is the only module of the agent that imports the ``kubernetes`` client; an
import-linter contract keeps it that way, so that the agent's API-server traffic
has one place to be read, rate-limited and tested.

:class:`ListWatch` keeps a local view of one collection in step with the API
server (the list-watch loop is :class:`katalyst.kubewatch.ListWatch`, shared with
the scheduler extender; this one sends its requests through the official client).
Two views are built on it:

* :class:`PodWatcher` (ORM mode's pod source): ``pods`` (UID -> the pod's wire
  JSON) for the pods bound to this node (field selector ``spec.nodeName=<node>``);
* :class:`ObjectWatcher`: one cluster-scoped custom object by name (field selector
  ``metadata.name=<name>``), e.g. this node's ``CustomNodeConfig``.

The client still does all HTTP, TLS and authentication.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes.aio import client as k8s_client
from kubernetes.aio import config as k8s_config

from katalyst import __version__, kubewatch
from katalyst.clock import Clock
from katalyst.dynconfig import GroupVersionResource
from katalyst.kuberaw import configure, raw_call
from katalyst.kubewatch import ApiServerError, RawObject, WatchSettings

__all__ = [
    "USER_AGENT",
    "ApiClient",
    "ApiServerConfigClient",
    "ApiServerError",
    "ApiServerEvictionClient",
    "ApiServerReportClient",
    "ListWatch",
    "ObjectWatcher",
    "PodWatcher",
    "RawObject",
    "RawPod",
    "WatchSettings",
    "connect",
]

log = logging.getLogger(__name__)

USER_AGENT = f"katalyst-agent/{__version__}"
"""The agent's User-Agent (``katalyst-agent/<version> (<node>)`` with its node)."""

ApiClient = k8s_client.ApiClient
"""The official client's connection (``connect`` makes one); other modules name its
type through this alias, so that only this module imports ``kubernetes``."""

RawPod = RawObject
"""A pod as the API server sends it."""


async def connect(kubeconfig: Path | None, *, node_name: str = "") -> k8s_client.ApiClient:
    """An API client from ``kubeconfig``, or from the pod's service account when None
    (:func:`katalyst.kuberaw.configure`; :class:`ApiServerError` when neither works).
    Its User-Agent names the agent and, when given, its node (the API server's audit
    log and its per-client metrics tell the agents apart by it)."""
    agent = f"{USER_AGENT} ({node_name})" if node_name else USER_AGENT
    api: k8s_client.ApiClient = await configure(
        kubeconfig, client=k8s_client, config=k8s_config, user_agent=agent
    )
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


class ListWatch(kubewatch.ListWatch):
    """:class:`katalyst.kubewatch.ListWatch` on the official client: a subclass says
    what to request (:meth:`_request`, given the list or watch parameters) and keeps
    what it hears (:meth:`_listed`, :meth:`_observed`); both set :attr:`changed`
    when the view changed."""

    def __init__(
        self,
        api: k8s_client.ApiClient,
        *,
        clock: Clock,
        settings: WatchSettings | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(
            self._request,
            clock=clock,
            settings=settings,
            rng=rng,
            errors=(k8s_client.ApiException,),
        )
        self._api = api
        self.changed = asyncio.Event()
        """Set whenever the view changes; the consumer clears it before it reads."""

    @property
    def api(self) -> k8s_client.ApiClient:
        """The client this watch uses (other API-server calls of the agent share it)."""
        return self._api

    async def _request(self, **params: Any) -> aiohttp.ClientResponse:
        """The list (or, with ``watch=True``, watch) request of the collection, sent
        with ``params`` through a generated ``*_without_preload_content`` method."""
        raise NotImplementedError


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
