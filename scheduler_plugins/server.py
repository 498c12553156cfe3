"""The extender's HTTP surface (aiohttp): ``POST /filter``, ``/prioritize``, ``/bind``,
``GET /healthz`` and ``GET /readyz``. Thin: decode, call :class:`Extender`, encode.

A body that is not JSON (or not a JSON object) is a 400; a body over
``max_body_bytes`` a 413 (aiohttp refuses it before reading it whole); a replica
that may not answer (a standby: :mod:`scheduler_plugins.replica`) a 503 whose JSON
``Error`` says why, with ``Connection: close`` (the caller reconnects, and the Service
routes the new connection to the leader); everything else is a 200 whose ``Error``
says what was wrong.

``/healthz`` is liveness: 200 while the process serves. ``/readyz`` is readiness:
200 when the gate says ready, else 503 with the reason as text. ``/metrics``: the
Prometheus series of :mod:`scheduler_plugins.metrics`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from scheduler_plugins.extender import Extender
from scheduler_plugins.metrics import ExtenderMetrics, outcome_of

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES: Final = 64 * 1024 * 1024
"""Full-node mode sends every Node object: 5,000 nodes are tens of MiB."""


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()  # raises HTTPRequestEntityTooLarge (413) past the limit
    try:
        # orjson, not the json module: a filter over 5,000 nodes is mostly encoding
        # and decoding (docs/scheduling.md, bench/extender.py).
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise web.HTTPBadRequest(text=f"request body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="request body is not a JSON object")
    return body


def _reply(payload: Any) -> web.Response:
    return web.Response(body=orjson.dumps(payload), content_type="application/json")


class Gate(Protocol):
    """Whether this replica answers (:class:`scheduler_plugins.replica.Replica`)."""

    def serving(self) -> str | None:
        """None when the verbs may be answered; otherwise why not."""
        ...

    def ready(self) -> str | None:
        """None when ready for traffic; otherwise why not."""
        ...


class _Always:
    """One process and no gate: it always answers (the unit tests' server)."""

    def serving(self) -> str | None:
        return None

    def ready(self) -> str | None:
        return None


def _unavailable(reason: str) -> web.Response:
    response = web.Response(
        status=503, body=orjson.dumps({"Error": reason}), content_type="application/json"
    )
    # "Connection: close", and the connection is closed once answered: kube-scheduler
    # keeps its connections to an extender alive, and kube-proxy does not move an
    # established flow when the Service's endpoints change, so without this a
    # scheduler could stay pinned to a replica that no longer leads. Its next call
    # opens a new connection, which the Service routes to the current leader.
    response.force_close()
    return response


Handler = Callable[[web.Request], Awaitable[web.Response]]


def make_app(
    extender: Extender,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    gate: Gate | None = None,
    registry: CollectorRegistry | None = None,
) -> web.Application:
    """The app; with ``registry``, the calls are counted and timed on it
    (:mod:`scheduler_plugins.metrics`) and ``GET /metrics`` serves it."""
    app = web.Application(client_max_size=max_body_bytes)
    the_gate: Gate = gate or _Always()
    metrics = ExtenderMetrics(registry) if registry is not None else None

    def count(verb: str, outcome: str, start: float) -> None:
        if metrics is not None:
            metrics.requests.labels(verb, outcome).inc()
            metrics.duration.labels(verb).observe(time.perf_counter() - start)

    def handle(verb: str, answer: Callable[[dict[str, Any]], Awaitable[Any]]) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            start = time.perf_counter()
            # Asked on every call, before the body is read: a replica that has just
            # lost the Lease refuses the next call, whatever was in flight.
            reason = the_gate.serving()
            if reason is not None:
                count(verb, "standby", start)
                return _unavailable(reason)
            try:
                payload = await answer(await _body(request))
            except web.HTTPRequestEntityTooLarge:
                count(verb, "too_large", start)
                raise
            except web.HTTPBadRequest:
                count(verb, "bad_request", start)
                raise
            response = _reply(payload)
            count(verb, outcome_of(payload), start)
            if verb == "filter" and metrics is not None and isinstance(payload, dict):
                metrics.filtered(payload)
            return response

        return handler

    async def filter_(args: dict[str, Any]) -> Any:
        return extender.filter(args)

    async def prioritize(args: dict[str, Any]) -> Any:
        return extender.prioritize(args)

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        reason = the_gate.ready()
        if reason is not None:
            return web.Response(status=503, text=reason)
        return web.Response(text="ok")

    app.router.add_post("/filter", handle("filter", filter_))
    app.router.add_post("/prioritize", handle("prioritize", prioritize))
    app.router.add_post("/bind", handle("bind", extender.bind))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if registry is not None:
        scraped = registry

        async def metrics_(_: web.Request) -> web.Response:
            return web.Response(
                body=generate_latest(scraped), content_type="text/plain", charset="utf-8"
            )

        app.router.add_get("/metrics", metrics_)
    return app
