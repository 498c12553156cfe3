"""One request through the official Kubernetes client's raw calls, for the processes'
API-server modules (the only modules that import ``kubernetes``; this one takes the
client as an argument and imports nothing of it).

The generated ``*_without_preload_content`` methods do the same two steps,
``param_serialize`` then ``call_api``: the client's own authentication, TLS and
connection pool, with the body going out as the caller's JSON and coming back as
bytes, no pydantic model on either way (a model can drop fields or reformat
timestamps the API server then refuses).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import aiohttp

__all__ = ["RawClient", "raw_call"]


class RawClient(Protocol):
    """What of ``kubernetes.aio.client.ApiClient`` a raw call uses."""

    async def param_serialize(self, *args: Any, **kwargs: Any) -> Any: ...

    async def call_api(self, *args: Any, **kwargs: Any) -> Any: ...


async def raw_call(
    api: RawClient,
    method: str,
    path: str,
    path_params: Mapping[str, str],
    body: Mapping[str, Any] | None,
    *,
    content_type: str | None,
    timeout: float,
) -> tuple[int, bytes]:
    """(HTTP status, body) of one request; an error status is an answer, not an
    exception. ``ConnectionError`` when no answer came (refused, reset, truncated)."""
    header_params = {"Accept": "application/json"}
    if content_type is not None:
        header_params["Content-Type"] = content_type
    method, url, headers, data, post_params = await api.param_serialize(
        method=method,
        resource_path=path,
        path_params=dict(path_params),
        header_params=header_params,
        body=None if body is None else dict(body),
        auth_settings=["BearerToken"],
    )
    try:
        resp = await api.call_api(
            method,
            url,
            header_params=headers,
            body=data,
            post_params=post_params,
            _request_timeout=timeout,
        )
        try:
            raw: bytes = await resp.response.read()
        finally:
            resp.response.release()
    except aiohttp.ClientError as exc:
        # ClientConnectorError is an OSError already; a dropped connection or a
        # truncated body is not: callers treat both as "no answer".
        raise ConnectionError(f"API server: {exc}") from exc
    return int(resp.status), raw
