"""The extender's HTTP surface (aiohttp): ``POST /filter``, ``/prioritize``, ``/bind``
and ``GET /healthz``. Thin: decode, call :class:`Extender`, encode.

A body that is not JSON (or not a JSON object) is a 400; a body over
``max_body_bytes`` a 413 (aiohttp refuses it before reading it whole); everything
else is a 200 whose ``Error`` says what was wrong.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import orjson
from aiohttp import web

from scheduler_plugins.extender import Extender

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


def make_app(
    extender: Extender, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
) -> web.Application:
    app = web.Application(client_max_size=max_body_bytes)

    def sync(
        verb: Callable[[dict[str, Any]], Any],
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            return _reply(verb(await _body(request)))

        return handler

    async def bind(request: web.Request) -> web.Response:
        return _reply(await extender.bind(await _body(request)))

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_post("/filter", sync(extender.filter))
    app.router.add_post("/prioritize", sync(extender.prioritize))
    app.router.add_post("/bind", bind)
    app.router.add_get("/healthz", healthz)
    return app
