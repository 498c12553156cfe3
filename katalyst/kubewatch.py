"""A collection kept in step with the API server (list, then watch from the list's
``resourceVersion``), for the agent's and the extender's API-server modules.

This library does not import ``kubernetes`` (the import-linter contract): a
:class:`ListWatch` is given the request as a callable, which sends it through the
official client's generated ``*_without_preload_content`` methods and returns the
raw ``aiohttp`` response.

The protocol, as client-go's reflector runs it: one list, then a watch from the
list's ``resourceVersion``; a watch that ends (the server's ``timeoutSeconds``) is
resumed from the last version seen (BOOKMARK events carry it); a 410 Gone, as an
answer or an ERROR event, means that version left the server's watch cache, and the
collection is listed again. Any other failure is retried with capped exponential
backoff and full jitter, so that a fleet of agents does not hammer a recovering API
server in step. A line longer than :data:`MAX_EVENT_BYTES` is a broken stream.

Hand-written rather than ``kubernetes.aio.watch.Watch`` or ``SharedInformer``: the
former turns every event into a pydantic model we would throw away (the QoS model and
the extender read the wire JSON), and resumes once after a 410 and then raises; the
latter runs in a thread, reconnects a failing watch without backoff and keeps models,
not JSON.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import aiohttp

from katalyst.clock import Clock, first_of

__all__ = [
    "HTTP_GONE",
    "MAX_EVENT_BYTES",
    "ApiServerError",
    "ApiServerStatus",
    "ListWatch",
    "RawObject",
    "WatchSettings",
    "json_answer",
]

log = logging.getLogger(__name__)

RawObject = Mapping[str, Any]
"""An object as the API server sends it (decoded JSON, camelCase keys)."""

MAX_EVENT_BYTES: Final = 16 * 1024 * 1024
"""A watch line longer than this is a broken stream, not an object (etcd's own limit is
1.5 MiB)."""
HTTP_GONE: Final = 410


class ApiServerError(Exception):
    """The API server cannot be reached or configured, or answered nonsense; the
    message says why."""


class ApiServerStatus(ApiServerError):
    """The API server answered a request with an error ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


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
    """Connect and read timeout of a list request (and of other single requests), s."""


def json_answer(status: int, text: str) -> Mapping[str, Any]:
    """The JSON object of a 2xx answer; :class:`ApiServerStatus` (with the server's
    ``Status`` message) for any other status, :class:`ApiServerError` for a 2xx that
    is not a JSON object."""
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if not 200 <= status < 300:
        message = body.get("message") if isinstance(body, Mapping) else text[:200]
        raise ApiServerStatus(status, str(message))
    if not isinstance(body, Mapping):
        raise ApiServerError(f"expected a JSON object from the API server, got {text[:80]!r}")
    return body


async def _json_body(resp: aiohttp.ClientResponse) -> Mapping[str, Any]:
    return json_answer(resp.status, await resp.text())


Request = Callable[..., Awaitable[Any]]
"""The list (or, with ``watch=True``, watch) request of a collection, given the
list-watch parameters (``resource_version``, ``timeout_seconds``, ...); returns the
raw response."""


class ListWatch:
    """One collection kept in step with the API server (see the module docstring).

    A subclass keeps what it hears: :meth:`_listed` gets a whole list, :meth:`_observed`
    one ADDED, MODIFIED or DELETED object (or an unknown type). ``what`` names the
    collection in logs; ``errors`` adds the client's own exception types to those
    retried (``kubernetes``' ``ApiException``)."""

    what = "object"

    def __init__(
        self,
        request: Request,
        *,
        clock: Clock,
        settings: WatchSettings | None = None,
        rng: random.Random | None = None,
        errors: tuple[type[BaseException], ...] = (),
    ) -> None:
        self._send = request
        self._clock = clock
        self._settings = settings or WatchSettings()
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._errors: tuple[type[BaseException], ...] = (
            TimeoutError,
            ValueError,
            aiohttp.ClientError,
            ApiServerError,
            OSError,
            *errors,
        )
        self._version: str | None = None
        self.synced = asyncio.Event()
        """Set once the first list has arrived; the view is meaningful from then on."""
        self.failures = 0
        """Failed requests in a row (0 while the watch is healthy)."""
        self.lists = 0
        """Lists done so far (the first one, then one after every 410 Gone)."""

    # ---- what a subclass says ------------------------------------------------------

    def _listed(self, items: list[RawObject]) -> None:
        """A whole list arrived: replace the view."""
        raise NotImplementedError

    def _observed(self, kind: str, obj: RawObject) -> None:
        """One watch event (``ADDED``, ``MODIFIED``, ``DELETED``, or an unknown type)."""
        raise NotImplementedError

    # ---- the machinery -------------------------------------------------------------

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
            except self._errors as exc:
                self.failures += 1
                delay = self._backoff()
                log.warning(
                    "API server: %s %s failed (%s); retrying in %.1f s",
                    self.what,
                    "list" if self._version is None else "watch",
                    str(exc) or type(exc).__name__,
                    delay,
                )
                await first_of(self._clock.sleep(delay), stop)

    def _backoff(self) -> float:
        s = self._settings
        cap = min(s.backoff_max_s, s.backoff_initial_s * 2.0 ** min(self.failures - 1, 30))
        # "Full jitter" halves the expected delay but spreads a fleet's retries.
        return cap / 2 + self._rng.uniform(0, cap / 2)

    async def _list(self) -> None:
        resp = await self._send(_request_timeout=self._settings.request_timeout_s)
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
        resp = await self._send(
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
        if kind != "BOOKMARK":
            self._observed(str(kind), obj)
        if isinstance(version, str):
            self._version = version
