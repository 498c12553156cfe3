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
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp
import yaml
from kubernetes.aio import client as k8s_client
from kubernetes.aio import config as k8s_config

from katalyst.clock import Clock, first_of

log = logging.getLogger(__name__)

CNR_GROUP: Final = "node.katalyst.kubewharf.io"
CNR_VERSION: Final = "v1alpha1"
CNR_PLURAL: Final = "customnoderesources"
HTTP_GONE: Final = 410
MAX_EVENT_BYTES: Final = 16 * 1024 * 1024

ApiClient = k8s_client.ApiClient
RawObject = Mapping[str, Any]


class ApiServerError(Exception):
    """The API server (or its configuration) failed us."""


class _Expired(Exception):
    """410 Gone: list again."""


@dataclass(frozen=True)
class WatchSettings:
    watch_timeout_s: int = 300
    """Server-side timeout of one watch request, seconds."""
    backoff_initial_s: float = 0.5
    """First retry delay after a failure, seconds; doubled per failure in a row."""
    backoff_max_s: float = 30.0
    """Cap of the retry delay, seconds."""
    request_timeout_s: float = 30.0
    """Timeout of a list or a bind, seconds."""


async def connect(kubeconfig: Path | None) -> k8s_client.ApiClient:
    """A client from ``kubeconfig``, or the pod's service account when None (a fresh
    ``Configuration``, never the client's global default)."""
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
    return k8s_client.ApiClient(configuration)


async def _json_body(resp: aiohttp.ClientResponse) -> Mapping[str, Any]:
    text = await resp.text()
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if not 200 <= resp.status < 300:
        message = body.get("message") if isinstance(body, Mapping) else text[:200]
        raise ApiServerError(f"HTTP {resp.status}: {message}")
    if not isinstance(body, Mapping):
        raise ApiServerError(f"expected a JSON object, got {text[:80]!r}")
    return body


Request = Callable[..., Any]


class ListWatch:
    """One collection kept in step: ``on_list(items)`` replaces the view,
    ``on_event(type, obj)`` applies one change."""

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
        self.what = what
        self._request = request
        self._on_list = on_list
        self._on_event = on_event
        self._clock = clock
        self._settings = settings or WatchSettings()
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._version: str | None = None
        self.synced = asyncio.Event()
        self.failures = 0
        self.lists = 0

    async def run(self, stop: asyncio.Event) -> None:
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
                s = self._settings
                cap = min(s.backoff_max_s, s.backoff_initial_s * 2.0 ** min(self.failures - 1, 30))
                delay = cap / 2 + self._rng.uniform(0, cap / 2)
                log.warning("%s list-watch failed (%s); retrying in %.1f s", self.what, exc, delay)
                await first_of(self._clock.sleep(delay), stop)

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
            raise ApiServerError(f"{self.what} list without items or resourceVersion")
        self._on_list([i for i in items if isinstance(i, Mapping)])
        self._version = version
        self.lists += 1
        self.failures = 0
        self.synced.set()

    async def _watch(self, stop: asyncio.Event) -> None:
        s = self._settings
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
                await _json_body(resp)
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
                    return
                buffer += chunk
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
            kind, obj = event["type"], event["object"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ApiServerError(f"malformed watch event: {exc}") from exc
        if not isinstance(obj, Mapping):
            raise ApiServerError(f"watch event {kind!r} without an object")
        if kind == "ERROR":
            if obj.get("code") == HTTP_GONE:
                raise _Expired(str(obj.get("message")))
            raise ApiServerError(f"watch error {obj.get('code')} {obj.get('message')}")
        meta = obj.get("metadata")
        version = meta.get("resourceVersion") if isinstance(meta, Mapping) else None
        if kind != "BOOKMARK":
            self._on_event(str(kind), obj)
        if isinstance(version, str):
            self._version = version


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
        method, url, headers, data, post_params = await self._api.param_serialize(
            method="POST",
            resource_path="/api/v1/namespaces/{namespace}/pods/{name}/binding",
            path_params={"namespace": namespace, "name": name},
            header_params={"Accept": "application/json", "Content-Type": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            resp = await self._api.call_api(
                method,
                url,
                header_params=headers,
                body=data,
                post_params=post_params,
                _request_timeout=self._timeout,
            )
            try:
                await _json_body(resp.response)
            finally:
                resp.response.release()
        except aiohttp.ClientError as exc:
            raise ApiServerError(f"API server: {exc}") from exc
