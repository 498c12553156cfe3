"""The controller's one door to the API server.

This is the only module of ``controllers`` that imports the ``kubernetes`` client
(an import-linter contract keeps it that way): every request the controller makes
is here, so that its traffic has one place to be read, rate-limited and tested.

* :func:`connect` builds a client from a kubeconfig or the in-cluster service
  account; :class:`Kube` makes requests on the client's raw calls
  (``param_serialize`` then ``call_api``, as its generated
  ``*_without_preload_content`` methods do): the JSON goes out and comes back as
  plain data, every resource, custom or built in, goes through the same few
  methods, and a failure is one :class:`ApiError` with the HTTP status and the
  server's message. Authentication, TLS and the connection pool stay the client's.
* :class:`Informer` keeps a local copy of one resource in step with the API server:
  a list, then a watch from the list's ``resourceVersion`` (with bookmarks); a watch
  that ends resumes from the last version seen; one answered 410 Gone lists again;
  a relist reports the difference against the copy (what changed while the watch
  was down, deletions included). Failures back off exponentially with full jitter,
  capped, so that a fleet of clients does not hammer a recovering API server in
  step. The copy also takes the answers of the controller's own writes
  (:meth:`Informer.observe`), so that a pass that runs before the watch event
  arrives does not write the same thing twice.
* :class:`ApiLeaseClient` is :class:`katalyst.leader.LeaseClient` on a Lease.
* :class:`ApiWebhookClient` makes the webhook's requests: its TLS Secret (get,
  create, update; secret mode) and the webhook configurations' ``caBundle`` and
  ``failurePolicy`` (get, update; both modes).

The client's ``kubernetes.aio.leaderelection`` and ``watch.Watch`` are not used:
the former's LeaseLock passes ``pretty=True``, which the client's own validation
refuses; the latter turns events into models and gives up after one 410.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes.aio import client as k8s_client
from kubernetes.aio import config as k8s_config

from controllers.resources import LEASES, Resource
from katalyst.clock import Clock, first_of
from katalyst.kuberaw import KubeconfigError, configure
from katalyst.leader import LeaseConflict, LeaseError, LeaseRecord, lease_object, record_from_lease

__all__ = [
    "MUTATING_WEBHOOK_CONFIGURATIONS",
    "SECRETS",
    "VALIDATING_WEBHOOK_CONFIGURATIONS",
    "ApiError",
    "ApiLeaseClient",
    "ApiWebhookClient",
    "Informer",
    "Kube",
    "Obj",
    "WatchSettings",
    "connect",
    "metadata_only",
    "object_key",
    "resource_version",
]

log = logging.getLogger(__name__)

Obj = dict[str, Any]
"""An object as the API server sends it (decoded JSON, camelCase keys)."""

SECRETS = Resource("", "v1", "secrets", "Secret", namespaced=True)
MUTATING_WEBHOOK_CONFIGURATIONS = Resource(
    "admissionregistration.k8s.io",
    "v1",
    "mutatingwebhookconfigurations",
    "MutatingWebhookConfiguration",
    namespaced=False,
)
VALIDATING_WEBHOOK_CONFIGURATIONS = Resource(
    "admissionregistration.k8s.io",
    "v1",
    "validatingwebhookconfigurations",
    "ValidatingWebhookConfiguration",
    namespaced=False,
)

HTTP_GONE = 410
#: A watch line longer than this is a broken stream, not an object (etcd's limit is 1.5 MiB).
MAX_EVENT_BYTES = 16 * 1024 * 1024


class ApiError(Exception):
    """A request failed: ``status`` is the HTTP status (0: no answer), ``reason`` the
    ``Status`` reason (``Conflict``, ``NotFound``...), the message the server's."""

    def __init__(self, status: int, message: str, *, reason: str = "") -> None:
        super().__init__(f"HTTP {status} {reason}: {message}" if status else message)
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def transient(self) -> bool:
        """No answer, throttled, or a server-side failure: the API server is not
        serving; try again later."""
        return self.status in {0, 429} or self.status >= 500

    @property
    def conflict(self) -> bool:
        """409: a conditional write lost a race, or a create found the name taken."""
        return self.status == 409

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def forbidden(self) -> bool:
        """403: RBAC does not let this process make the request."""
        return self.status == 403


class ConnectError(Exception):
    """The client cannot be configured (no kubeconfig, no service account)."""


async def connect(
    kubeconfig: Path | None, *, user_agent: str, request_timeout_s: float = 30.0
) -> Kube:
    """A client from ``kubeconfig``, or from the pod's service account when None
    (:func:`katalyst.kuberaw.configure`)."""
    try:
        api = await configure(
            kubeconfig, client=k8s_client, config=k8s_config, user_agent=user_agent
        )
    except KubeconfigError as exc:
        raise ConnectError(str(exc)) from exc
    return Kube(api, request_timeout_s=request_timeout_s)


def object_key(obj: Mapping[str, Any]) -> tuple[str, str]:
    """``(namespace, name)`` of an object (namespace ``""`` when cluster-scoped)."""
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    namespace = meta.get("namespace")
    name = meta.get("name")
    return (
        namespace if isinstance(namespace, str) else "",
        name if isinstance(name, str) else "",
    )


def resource_version(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata")
    version = meta.get("resourceVersion") if isinstance(meta, Mapping) else None
    return version if isinstance(version, str) else ""


def _newer(a: str, b: str) -> bool:
    """Whether resourceVersion ``a`` is later than ``b``. They are opaque to clients in
    general, but etcd's are decimal revisions; anything else counts as newer."""
    if a.isdigit() and b.isdigit():
        return int(a) > int(b)
    return a != b


class Kube:
    """Requests to the API server as plain JSON; see the module's docstring."""

    def __init__(self, api: k8s_client.ApiClient, *, request_timeout_s: float = 30.0) -> None:
        self._api = api
        self._timeout = request_timeout_s

    async def close(self) -> None:
        await self._api.close()  # type: ignore[no-untyped-call]

    async def _send(
        self,
        method: str,
        path: str,
        *,
        query: Iterable[tuple[str, str]] = (),
        body: Mapping[str, Any] | None = None,
        content_type: str | None = None,
        timeout: float | None = None,
    ) -> k8s_client.rest.RESTResponse:
        headers = {"Accept": "application/json"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        method, url, headers, data, post = await self._api.param_serialize(
            method=method,
            resource_path=path,
            query_params=list(query),
            header_params=headers,
            body=None if body is None else dict(body),
            auth_settings=["BearerToken"],
        )
        try:
            return await self._api.call_api(
                method,
                url,
                header_params=headers,
                body=data,
                post_params=post,
                _request_timeout=timeout or self._timeout,
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ApiError(0, f"{method} {path}: no answer from the API server: {exc}") from exc

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Iterable[tuple[str, str]] = (),
        body: Mapping[str, Any] | None = None,
        content_type: str | None = None,
    ) -> Obj:
        """One request; the answer's JSON object. :class:`ApiError` unless 2xx."""
        resp = await self._send(method, path, query=query, body=body, content_type=content_type)
        try:
            raw = await resp.response.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ApiError(0, f"{method} {path}: the answer broke off: {exc}") from exc
        finally:
            resp.response.release()
        return _decode(resp.status, raw, f"{method} {path}")

    # ---- objects ----------------------------------------------------------------------

    async def get(self, resource: Resource, name: str, namespace: str = "") -> Obj | None:
        """One object, or None when there is none."""
        try:
            return await self.request("GET", resource.object_path(name, namespace))
        except ApiError as exc:
            if exc.not_found:
                return None
            raise

    async def create(self, resource: Resource, obj: Mapping[str, Any]) -> Obj:
        """POST ``obj``; the object as stored."""
        namespace, _ = object_key(obj)
        path = resource.collection_path(namespace or None)
        return await self.request("POST", path, body=obj, content_type="application/json")

    async def replace(self, resource: Resource, obj: Mapping[str, Any], *, status: bool) -> Obj:
        """PUT ``obj`` (the main resource, or its ``/status`` when ``status``), conditional
        on its ``metadata.resourceVersion``; the object as stored."""
        namespace, name = object_key(obj)
        path = resource.object_path(name, namespace, "status" if status else "")
        return await self.request("PUT", path, body=obj, content_type="application/json")

    async def rewrite(
        self,
        resource: Resource,
        obj: Obj,
        change: Callable[[Obj], Obj | None],
        *,
        status: bool,
        put: Callable[[Obj], Awaitable[Obj]] | None = None,
        on_read: Callable[[Obj], None] | None = None,
    ) -> Obj | None:
        """PUT ``change(obj)`` (the main resource, or ``/status`` when ``status``),
        conditional on ``obj``'s resourceVersion; on a conflict (409: the copy was
        stale) read the object again (``on_read`` gets it) and retry once with
        ``change(fresh)``. A second conflict raises. Returns the stored object, or None
        when ``change`` finds nothing to write or the object is gone. ``put`` sends one
        body (default: :meth:`replace`)."""
        send = put or (lambda body: self.replace(resource, body, status=status))
        namespace, name = object_key(obj)
        for attempt in (1, 2):
            body = change(obj)
            if body is None:
                return None
            body["apiVersion"] = resource.api_version
            kind = obj.get("kind")
            body["kind"] = kind if isinstance(kind, str) and kind else resource.kind
            try:
                return await send(body)
            except ApiError as exc:
                if exc.not_found:
                    return None  # gone since: the watch will say so
                if not exc.conflict or attempt == 2:
                    raise
            fresh = await self.get(resource, name, namespace)
            if fresh is None:
                return None
            if on_read is not None:
                on_read(fresh)
            obj = fresh
        return None

    async def update_status(
        self,
        resource: Resource,
        obj: Obj,
        rebuild: Callable[[Obj], dict[str, Any] | None],
        *,
        put: Callable[[Obj], Awaitable[Obj]] | None = None,
        on_read: Callable[[Obj], None] | None = None,
    ) -> Obj | None:
        """:meth:`rewrite` of ``/status`` with ``rebuild(obj)`` as the new status (None:
        nothing to write)."""

        def change(current: Obj) -> Obj | None:
            status = rebuild(current)
            return None if status is None else dict(current, status=status)

        return await self.rewrite(resource, obj, change, status=True, put=put, on_read=on_read)

    async def delete(
        self,
        resource: Resource,
        name: str,
        namespace: str = "",
        *,
        uid: str | None = None,
        version: str | None = None,
    ) -> None:
        """DELETE, only if the object still has ``uid`` and ``version`` (when given)."""
        preconditions: dict[str, str] = {}
        if uid:
            preconditions["uid"] = uid
        if version:
            preconditions["resourceVersion"] = version
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if preconditions:
            body["preconditions"] = preconditions
        await self.request(
            "DELETE",
            resource.object_path(name, namespace),
            body=body,
            content_type="application/json",
        )

    async def list(self, resource: Resource, *, page: int = 500) -> tuple[list[Obj], str]:
        """Every object of ``resource``, and the list's resourceVersion, in pages of
        ``page`` objects (``limit``/``continue``, as client-go's reflector lists: the
        API server serves every page from one snapshot; a continue token that
        expired is a 410, and the caller lists again)."""
        items: list[Obj] = []
        token = ""
        while True:
            query = [("limit", str(page))]
            if token:
                query.append(("continue", token))
            body = await self.request("GET", resource.collection_path(), query=query)
            found = body.get("items")
            version = resource_version(body)
            if not isinstance(found, list) or not version:
                raise ApiError(0, f"{resource.short}: a list without items or resourceVersion")
            items.extend(item for item in found if isinstance(item, dict))
            meta = body.get("metadata")
            more = meta.get("continue") if isinstance(meta, Mapping) else None
            if not isinstance(more, str) or not more:
                return items, version
            token = more

    async def watch(
        self, resource: Resource, version: str, *, timeout_s: int
    ) -> k8s_client.rest.RESTResponse:
        """Open a watch from ``version`` (the caller reads and releases the response).
        The client takes one total timeout: the server ends a watch after
        ``timeoutSeconds``, so one still open well past it is a dead connection."""
        query = [
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("resourceVersion", version),
            ("timeoutSeconds", str(timeout_s)),
        ]
        return await self._send(
            "GET", resource.collection_path(), query=query, timeout=float(timeout_s + 30)
        )


def _lean(obj: Obj) -> Obj:
    """An object as the copy keeps it: without ``metadata.managedFields`` (often the
    largest part, and of no use here; a PUT without it keeps the server's)."""
    meta = obj.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        obj = dict(obj, metadata={k: v for k, v in meta.items() if k != "managedFields"})
    return obj


def metadata_only(obj: Obj) -> Obj:
    """A transform for an :class:`Informer` that needs an object's metadata only (the
    nodes: their labels, not their status, which changes with every heartbeat)."""
    meta = _lean(obj).get("metadata")
    return {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": meta if isinstance(meta, dict) else {},
    }


def _retrieve(task: asyncio.Future[bytes]) -> None:
    if not task.cancelled():
        task.exception()


def _decode(status: int, raw: bytes, what: str) -> Obj:
    text = raw.decode("utf-8", "replace")
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if not 200 <= status < 300:
        if isinstance(body, Mapping):
            message = str(body.get("message", ""))
            reason = str(body.get("reason", ""))
        else:
            message, reason = text[:200].strip(), ""
        raise ApiError(status, f"{what}: {message}", reason=reason)
    if not isinstance(body, dict):
        raise ApiError(0, f"{what}: expected a JSON object, got {text[:80]!r}")
    return body


# ---- list and watch ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WatchSettings:
    """How an :class:`Informer` lists and watches."""

    watch_timeout_s: int = 300
    """Server-side timeout of one watch request, seconds."""
    backoff_initial_s: float = 0.5
    """First retry delay after a failure, seconds; doubled on each failure in a row."""
    backoff_max_s: float = 30.0
    """Cap of the retry delay, seconds."""


class _Expired(Exception):
    """The watch's resourceVersion left the server's watch cache (410 Gone): list again."""


Handler = Callable[["Informer", Obj | None, Obj | None], None]
"""``handler(informer, old, new)``: an object appeared (old None), changed, or went
away (new None)."""


def backoff(failures: int, settings: WatchSettings, rng: random.Random) -> float:
    """The delay before retry number ``failures`` (1, 2, ...): exponential, capped, with
    half of it jittered ("equal jitter"), so a fleet's retries spread out."""
    cap = min(settings.backoff_max_s, settings.backoff_initial_s * 2.0 ** min(failures - 1, 30))
    return cap / 2 + rng.uniform(0, cap / 2)


class Informer:
    """A local copy of one resource, kept in step with the API server.

    ``handler`` is called synchronously for every change to :attr:`store`, whether
    from the watch, a relist or :meth:`observe`; ``on_synced`` after each list.
    """

    def __init__(
        self,
        kube: Kube,
        resource: Resource,
        *,
        clock: Clock,
        handler: Handler,
        on_synced: Callable[[Informer], None] | None = None,
        settings: WatchSettings | None = None,
        rng: random.Random | None = None,
        transform: Callable[[Obj], Obj] | None = None,
    ) -> None:
        self.kube = kube
        self._kept = transform or _lean
        self.resource = resource
        self._clock = clock
        self._handler = handler
        self._on_synced = on_synced
        self._settings = settings or WatchSettings()
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self.store: dict[tuple[str, str], Obj] = {}
        """``(namespace, name)`` -> the object, as last seen."""
        self.synced = False
        """Whether a list has arrived (the store means something from then on)."""
        self.not_found = False
        """Whether the last list was answered 404: the resource is not served."""
        self.forbidden = False
        """Whether the last list was answered 403: RBAC does not let us read it."""
        self.lists = 0
        self.failures = 0
        """Failed requests in a row (0 while healthy)."""
        self._version: str | None = None
        self._relist = asyncio.Event()

    def __repr__(self) -> str:
        return f"Informer({self.resource.short})"

    def _transform(self, obj: Obj) -> Obj:
        # Items of a list of a built-in kind carry no kind or apiVersion; the copy's
        # objects always do.
        if "kind" not in obj or "apiVersion" not in obj:
            obj = {"apiVersion": self.resource.api_version, "kind": self.resource.kind, **obj}
        return self._kept(obj)

    def relist_soon(self) -> None:
        """End the current watch and list again (a resync)."""
        self._relist.set()

    def get(self, name: str, namespace: str = "") -> Obj | None:
        return self.store.get((namespace, name))

    def observe(self, obj: Obj) -> None:
        """Take an object the API server answered a write with, if it is newer than the
        copy (the watch event that follows then changes nothing)."""
        obj = self._transform(obj)
        key = object_key(obj)
        old = self.store.get(key)
        if old is not None and not _newer(resource_version(obj), resource_version(old)):
            return
        self.store[key] = obj
        self._handler(self, old, obj)

    def forget(self, name: str, namespace: str = "") -> None:
        """Drop an object the controller deleted (its DELETED event then changes nothing)."""
        old = self.store.pop((namespace, name), None)
        if old is not None:
            self._handler(self, old, None)

    async def run(self, stop: asyncio.Event) -> None:
        """List and watch until ``stop`` is set."""
        while not stop.is_set():
            try:
                if self._version is None or self._relist.is_set():
                    self._relist.clear()
                    await self._list()
                await self._watch(stop)
            except _Expired as exc:
                log.info("%s: watch expired (%s); listing again", self.resource.short, exc)
                self._version = None
            except ApiError as exc:
                if (exc.not_found or exc.forbidden) and self._version is None:
                    self._not_served(forbidden=exc.forbidden)
                self.failures += 1
                delay = backoff(self.failures, self._settings, self._rng)
                log.warning(
                    "API server: %s %s failed (%s); retrying in %.1f s",
                    self.resource.short,
                    "list" if self._version is None else "watch",
                    exc,
                    delay,
                )
                await first_of(self._clock.sleep(delay), stop, self._relist)

    def _not_served(self, *, forbidden: bool = False) -> None:
        # A 404 on the collection: the CRD is not installed (a 403: we may not read
        # it). Nothing of it can be seen; say so once, so that the controller can
        # report it on the KCC.
        self.forbidden = forbidden
        if not self.not_found:
            self.not_found = True
            self._replace({})
            if self._on_synced is not None:
                self._on_synced(self)

    def _replace(self, new: dict[tuple[str, str], Obj]) -> None:
        old = self.store
        self.store = new
        for key, obj in old.items():
            if key not in new:
                self._handler(self, obj, None)
        for key, obj in new.items():
            before = old.get(key)
            if before is None or resource_version(before) != resource_version(obj):
                self._handler(self, before, obj)

    async def _list(self) -> None:
        items, version = await self.kube.list(self.resource)
        self.not_found = self.forbidden = False
        kept = (self._transform(item) for item in items)
        self._replace({object_key(item): item for item in kept})
        self._version = version
        self.lists += 1
        self.failures = 0
        self.synced = True
        log.debug("%s: listed %d at resourceVersion %s", self.resource.short, len(items), version)
        if self._on_synced is not None:
            self._on_synced(self)

    async def _watch(self, stop: asyncio.Event) -> None:
        assert self._version is not None
        resp = await self.kube.watch(
            self.resource, self._version, timeout_s=self._settings.watch_timeout_s
        )
        stopper = asyncio.ensure_future(stop.wait())
        relist = asyncio.ensure_future(self._relist.wait())
        try:
            if resp.status == HTTP_GONE:
                raise _Expired(f"HTTP {resp.status}")
            if resp.status != 200:
                raw = await resp.response.read()
                _decode(resp.status, raw, f"watch {self.resource.short}")
            self.failures = 0
            content = resp.response.content
            buffer = b""
            while True:
                reader = asyncio.ensure_future(content.readany())
                # Abandoned when the watch stops; its end (a closed connection) is
                # then of no interest, but must be retrieved.
                reader.add_done_callback(_retrieve)
                await asyncio.wait({reader, stopper, relist}, return_when=asyncio.FIRST_COMPLETED)
                if not reader.done():
                    reader.cancel()
                    return
                try:
                    chunk = reader.result()
                except (aiohttp.ClientError, OSError) as exc:
                    raise ApiError(0, f"watch {self.resource.short} broke off: {exc}") from exc
                if not chunk:
                    return  # the server ended the watch (timeoutSeconds): resume
                buffer += chunk
                # One event per line; a line is split across chunks at will.
                *lines, buffer = buffer.split(b"\n")
                if len(buffer) > MAX_EVENT_BYTES:
                    raise ApiError(0, f"watch event larger than {MAX_EVENT_BYTES} bytes")
                for line in lines:
                    if line.strip():
                        self._event(line)
        finally:
            stopper.cancel()
            relist.cancel()
            resp.response.release()

    def _event(self, line: bytes) -> None:
        try:
            event = json.loads(line)
            kind = event["type"]
            obj = event["object"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ApiError(0, f"watch {self.resource.short}: malformed event: {exc}") from exc
        if not isinstance(obj, dict):
            raise ApiError(0, f"watch {self.resource.short}: event {kind!r} without an object")
        if kind == "ERROR":
            code = obj.get("code")
            message = f"{obj.get('reason')}: {obj.get('message')}"
            if code == HTTP_GONE:
                raise _Expired(message)
            raise ApiError(code if isinstance(code, int) else 0, f"watch error: {message}")
        version = resource_version(obj)
        if kind == "BOOKMARK":
            if version:
                self._version = version
            return
        obj = self._transform(obj)
        key = object_key(obj)
        old = self.store.get(key)
        if kind == "DELETED":
            # Unless the copy is newer already (the object was made again and observed).
            if old is not None and not _newer(resource_version(old), version):
                del self.store[key]
                self._handler(self, old, None)
        elif kind in ("ADDED", "MODIFIED"):
            if old is None or _newer(version, resource_version(old)):
                self.store[key] = obj
                self._handler(self, old, obj)
        else:
            log.warning("%s: watch event of unknown type %r, ignored", self.resource.short, kind)
        if version:
            self._version = version


# ---- the Lease ---------------------------------------------------------------------------


class ApiLeaseClient:
    """:class:`katalyst.leader.LeaseClient` on the Lease ``namespace/name``."""

    def __init__(self, kube: Kube, *, namespace: str, name: str) -> None:
        self._kube = kube
        self._namespace = namespace
        self._name = name

    async def get(self) -> LeaseRecord | None:
        try:
            obj = await self._kube.get(LEASES, self._name, self._namespace)
        except ApiError as exc:
            raise LeaseError(f"lease {self._namespace}/{self._name}: {exc}") from exc
        return None if obj is None else record_from_lease(obj)

    async def create(self, record: LeaseRecord) -> LeaseRecord:
        body = lease_object(record, namespace=self._namespace, name=self._name)
        return await self._write(self._kube.create(LEASES, body))

    async def update(self, record: LeaseRecord) -> LeaseRecord:
        body = lease_object(record, namespace=self._namespace, name=self._name)
        return await self._write(self._kube.replace(LEASES, body, status=False))

    async def _write(self, request: Any) -> LeaseRecord:
        try:
            stored = await request
        except ApiError as exc:
            where = f"lease {self._namespace}/{self._name}"
            if exc.conflict:
                raise LeaseConflict(f"{where}: {exc}") from exc
            raise LeaseError(f"{where}: {exc}") from exc
        return record_from_lease(stored)


# ---- the webhook's Secret and configurations -------------------------------------------


class ApiWebhookClient:
    """The webhook's requests: Secrets in ``namespace`` and the webhook
    configurations (cluster-scoped). Failures are :class:`ApiError`."""

    def __init__(self, kube: Kube, *, namespace: str) -> None:
        self._kube = kube
        self.namespace = namespace

    async def get_secret(self, name: str) -> Obj | None:
        """GET the Secret; None when there is none."""
        return await self._kube.get(SECRETS, name, self.namespace)

    async def create_secret(self, obj: Mapping[str, Any]) -> Obj:
        """POST the Secret (409 ``AlreadyExists`` when another replica was first)."""
        body = dict(obj, apiVersion=SECRETS.api_version, kind=SECRETS.kind)
        return await self._kube.create(SECRETS, body)

    async def replace_secret(self, obj: Mapping[str, Any]) -> Obj:
        """PUT the Secret, conditional on its ``metadata.resourceVersion`` (409 when
        another replica wrote it since it was read)."""
        body = dict(obj, apiVersion=SECRETS.api_version, kind=SECRETS.kind)
        return await self._kube.replace(SECRETS, body, status=False)

    async def update_configuration(
        self, resource: Resource, name: str, change: Callable[[Obj], Obj | None]
    ) -> bool | None:
        """GET the webhook configuration ``name``, then PUT ``change(obj)`` conditional on
        its resourceVersion; on a 409 read it again and retry once with ``change`` of
        the fresh object. True: written; False: ``change`` found nothing to write;
        None: there is no such configuration."""
        current = await self._kube.get(resource, name)
        if current is None:
            return None
        return await self._kube.rewrite(resource, current, change, status=False) is not None
