"""The extender's API-server traffic: list-watches of CNRs and pods, and the bind.

The only module of the extender that imports the ``kubernetes`` client (an
import-linter contract keeps it so). Written, as the agent's and the controller's
API-server modules are, on the client's raw ``*_without_preload_content`` calls:
the extender reads wire JSON, not pydantic models, and handles 410 Gone itself.

:class:`ListWatch` lists, then watches from the list's ``resourceVersion``; a
watch that ends resumes from the last version seen (bookmarks included); a 410
Gone (the version left the server's watch cache) lists again. Failures back off
exponentially with full jitter, capped.

:class:`ApiServerBinder` binds with one ``POST pods/{name}/binding`` whose
``metadata.annotations`` carry the chosen GPUs and RDMA NICs: the pod registry
copies a Binding's annotations onto the pod in the same write that sets
``spec.nodeName`` (``setPodHostAndAnnotations``), so the node never sees the pod
bound without its devices.

:class:`ApiServerLeaseClient` is :class:`katalyst.leader.LeaseClient` on the Lease
the replicas compete for: ``GET``, ``POST`` and a conditional ``PUT`` (the record's
``metadata.resourceVersion``; a 409 is :class:`~katalyst.leader.LeaseConflict`) of
``coordination.k8s.io/v1`` ``leases`` in one namespace. The body and the reading of
an answer are the library's (:func:`~katalyst.leader.lease_object`,
:func:`~katalyst.leader.record_from_lease`), shared with the controller. The
client's typed lease calls are not used: they validate a dict body into a
``V1Lease`` and serialize its times back with ``isoformat()``, which drops the
fraction of a whole second, and the API server refuses a MicroTime without six
fractional digits.

:class:`ApiServerEndpointSlice` is :class:`scheduler_plugins.replica.SliceStore`: the
EndpointSlice by which the leader routes the selector-less Service to itself,
``GET``, ``POST`` and a conditional ``PUT`` (the object's
``metadata.resourceVersion``) of ``discovery.k8s.io/v1`` ``endpointslices`` in the
Service's namespace. The extender never writes pods other than through a binding:
``pods: patch`` in its namespace would reach the agent's privileged pods.

Every request carries the User-Agent ``katalyst-scheduler-extender/<version>`` (and
the replica's identity): the API server's audit log and per-client metrics tell the
extender apart by it.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from kubernetes.aio import client as k8s_client
from kubernetes.aio import config as k8s_config

from katalyst import __version__, kubewatch
from katalyst.clock import Clock
from katalyst.kuberaw import configure, raw_call
from katalyst.kubewatch import (
    ApiServerError,
    ApiServerStatus,
    RawObject,
    WatchSettings,
    json_answer,
)
from katalyst.leader import LeaseConflict, LeaseError, LeaseRecord, lease_object, record_from_lease
from scheduler_plugins.replica import SliceConflict, SliceError

log = logging.getLogger(__name__)

__all__ = [
    "USER_AGENT",
    "ApiClient",
    "ApiServerBinder",
    "ApiServerEndpointSlice",
    "ApiServerError",
    "ApiServerLeaseClient",
    "ApiServerStatus",
    "ListWatch",
    "RawObject",
    "WatchSettings",
    "cnr_request",
    "connect",
    "pod_request",
]

CNR_GROUP: Final = "node.katalyst.kubewharf.io"
CNR_VERSION: Final = "v1alpha1"
CNR_PLURAL: Final = "customnoderesources"
HTTP_NOT_FOUND: Final = 404
HTTP_CONFLICT: Final = 409
USER_AGENT: Final = f"katalyst-scheduler-extender/{__version__}"
JSON: Final = "application/json"

ApiClient = k8s_client.ApiClient


async def connect(kubeconfig: Path | None, *, replica: str = "") -> k8s_client.ApiClient:
    """A client from ``kubeconfig``, or the pod's service account when None
    (:func:`katalyst.kuberaw.configure`; :class:`ApiServerError` when neither works).
    Its User-Agent is :data:`USER_AGENT`, followed by `` (<replica>)`` when given."""
    agent = f"{USER_AGENT} ({replica})" if replica else USER_AGENT
    api: k8s_client.ApiClient = await configure(
        kubeconfig, client=k8s_client, config=k8s_config, user_agent=agent
    )
    return api


Request = Callable[..., Any]


class ListWatch(kubewatch.ListWatch):
    """:class:`katalyst.kubewatch.ListWatch` with callbacks: ``on_list(items)``
    replaces the view, ``on_event(type, obj)`` applies one change."""

    def __init__(
        self,
        what: str,
        request: Request,
        *,
        on_list: Callable[[list[RawObject]], None],
        on_event: Callable[[str, RawObject], None],
        clock: Clock,
        settings: WatchSettings | None = None,
        rng: random.Random | None = None,
    ) -> None:
        errors = (k8s_client.ApiException,)
        super().__init__(request, clock=clock, settings=settings, rng=rng, errors=errors)
        self.what = what
        self._on_list = on_list
        self._on_event = on_event

    def _listed(self, items: list[RawObject]) -> None:
        self._on_list(items)

    def _observed(self, kind: str, obj: RawObject) -> None:
        self._on_event(kind, obj)


def cnr_request(api: k8s_client.ApiClient) -> Request:
    custom = k8s_client.CustomObjectsApi(api)

    async def request(**params: Any) -> Any:
        return await custom.list_cluster_custom_object_without_preload_content(
            CNR_GROUP, CNR_VERSION, CNR_PLURAL, **params
        )

    return request


def pod_request(api: k8s_client.ApiClient) -> Request:
    """All pods: bound ones hold resources, pending ones are the ones bind asks about.
    Finished pods hold nothing (the caller drops them)."""
    core = k8s_client.CoreV1Api(api)

    async def request(**params: Any) -> Any:
        return await core.list_pod_for_all_namespaces_without_preload_content(**params)

    return request


async def _send(
    api: k8s_client.ApiClient,
    method: str,
    path: str,
    path_params: Mapping[str, str],
    *,
    body: Mapping[str, Any] | None,
    timeout_s: float,
    content_type: str = JSON,
) -> Mapping[str, Any]:
    """One raw request (:func:`katalyst.kuberaw.raw_call`): the body goes out and
    comes back as plain JSON. An error answer is :class:`ApiServerStatus`; no answer
    is :class:`ApiServerError`."""
    try:
        status, raw = await raw_call(
            api, method, path, path_params, body, content_type=content_type, timeout=timeout_s
        )
    except (ConnectionError, TimeoutError, OSError) as exc:
        raise ApiServerError(f"API server: {exc}") from exc
    return json_answer(status, raw.decode("utf-8", "replace"))


class ApiServerBinder:
    """``Binder`` over the official client: ``POST pods/{name}/binding``."""

    def __init__(self, api: k8s_client.ApiClient, *, request_timeout_s: float = 30.0) -> None:
        self._api = api
        self._timeout = request_timeout_s

    async def bind(
        self, namespace: str, name: str, uid: str, node: str, annotations: Mapping[str, str]
    ) -> None:
        meta: dict[str, Any] = {"name": name, "namespace": namespace}
        if uid:
            meta["uid"] = uid
        if annotations:
            meta["annotations"] = dict(annotations)
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": meta,
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        }
        await _send(
            self._api,
            "POST",
            "/api/v1/namespaces/{namespace}/pods/{name}/binding",
            {"namespace": namespace, "name": name},
            body=body,
            timeout_s=self._timeout,
        )


class _NamedObject:
    """GET, POST and a conditional PUT of one namespaced object ``namespace/name`` at
    ``path`` (the collection's), with every failure mapped to ``error`` and a lost race
    (the statuses of ``lost``) to ``conflict``: the Lease and EndpointSlice clients."""

    def __init__(
        self,
        api: k8s_client.ApiClient,
        *,
        path: str,
        kind: str,
        namespace: str,
        name: str,
        request_timeout_s: float,
        error: type[Exception],
        conflict: type[Exception],
    ) -> None:
        self._api = api
        self._path = path
        self._namespace = namespace
        self._name = name
        self._timeout = request_timeout_s
        self._error = error
        self._conflict = conflict
        self.where = f"{kind} {namespace}/{name}"

    async def _read(self) -> RawObject | None:
        """The object; None when there is none (404)."""
        try:
            return await self._send("GET", self._path + "/{name}", None)
        except ApiServerStatus as exc:
            if exc.status == HTTP_NOT_FOUND:
                return None
            raise self._error(f"{self.where}: {exc}") from exc
        except ApiServerError as exc:
            raise self._error(f"{self.where}: {exc}") from exc

    async def _write(self, method: str, body: RawObject, *, lost: tuple[int, ...]) -> RawObject:
        """POST (a create) or PUT (a replace, conditional on the body's
        ``resourceVersion``)."""
        path = self._path if method == "POST" else self._path + "/{name}"
        try:
            return await self._send(method, path, body)
        except ApiServerStatus as exc:
            if exc.status in lost:
                raise self._conflict(f"{self.where}: {exc}") from exc
            raise self._error(f"{self.where}: {exc}") from exc
        except ApiServerError as exc:
            raise self._error(f"{self.where}: {exc}") from exc

    async def _send(self, method: str, path: str, body: RawObject | None) -> RawObject:
        params = {"namespace": self._namespace, "name": self._name}
        return await _send(self._api, method, path, params, body=body, timeout_s=self._timeout)


LEASES_PATH: Final = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"


class ApiServerLeaseClient(_NamedObject):
    """:class:`katalyst.leader.LeaseClient` on the Lease ``namespace/name``: get, create
    and a conditional replace. Every failure is a :class:`~katalyst.leader.LeaseError`
    (a 409 a :class:`~katalyst.leader.LeaseConflict`): the elector retries, and a
    leader that cannot renew steps down on its renew deadline.

    ``request_timeout_s`` bounds each request: a leader abandons a renewal at its renew
    deadline anyway, and a standby must not hang on a dead connection."""

    def __init__(
        self,
        api: k8s_client.ApiClient,
        *,
        namespace: str,
        name: str,
        request_timeout_s: float = 10.0,
    ) -> None:
        super().__init__(
            api,
            path=LEASES_PATH,
            kind="lease",
            namespace=namespace,
            name=name,
            request_timeout_s=request_timeout_s,
            error=LeaseError,
            conflict=LeaseConflict,
        )

    async def get(self) -> LeaseRecord | None:
        obj = await self._read()
        return None if obj is None else record_from_lease(obj)

    async def create(self, record: LeaseRecord) -> LeaseRecord:
        body = lease_object(record, namespace=self._namespace, name=self._name)
        return record_from_lease(await self._write("POST", body, lost=(HTTP_CONFLICT,)))

    async def update(self, record: LeaseRecord) -> LeaseRecord:
        body = lease_object(record, namespace=self._namespace, name=self._name)
        return record_from_lease(await self._write("PUT", body, lost=(HTTP_CONFLICT,)))


SLICES_PATH: Final = "/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"


class ApiServerEndpointSlice(_NamedObject):
    """:class:`scheduler_plugins.replica.SliceStore` on the EndpointSlice
    ``namespace/name``: ``GET``, ``POST`` and a conditional ``PUT`` of
    ``discovery.k8s.io/v1`` ``endpointslices`` (what the extender's Role grants in its
    own namespace). Every failure is a :class:`~scheduler_plugins.replica.SliceError`,
    a lost race (409, or 404 on a replace) a
    :class:`~scheduler_plugins.replica.SliceConflict`: the caller reads again or
    retries."""

    def __init__(
        self,
        api: k8s_client.ApiClient,
        *,
        namespace: str,
        name: str,
        request_timeout_s: float = 10.0,
    ) -> None:
        super().__init__(
            api,
            path=SLICES_PATH,
            kind="endpointslice",
            namespace=namespace,
            name=name,
            request_timeout_s=request_timeout_s,
            error=SliceError,
            conflict=SliceConflict,
        )

    async def get(self) -> RawObject | None:
        return await self._read()

    async def create(self, obj: RawObject) -> RawObject:
        return await self._write("POST", obj, lost=(HTTP_CONFLICT,))

    async def update(self, obj: RawObject) -> RawObject:
        # A 404: deleted since it was read, a race like a 409 (the next read sees it).
        return await self._write("PUT", obj, lost=(HTTP_CONFLICT, HTTP_NOT_FOUND))
