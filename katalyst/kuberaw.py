"""The official Kubernetes client, configured, and one request through its raw calls,
for the processes' API-server modules (the only modules that import ``kubernetes``;
this one is given the client's modules and objects and imports nothing of it).

The generated ``*_without_preload_content`` methods do the same two steps,
``param_serialize`` then ``call_api``: the client's own authentication, TLS and
connection pool, with the body going out as the caller's JSON and coming back as
bytes, no pydantic model on either way (a model can drop fields or reformat
timestamps the API server then refuses).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import yaml

from katalyst.kubewatch import ApiServerError

__all__ = ["KubeconfigError", "RawClient", "configure", "raw_call"]


class KubeconfigError(ApiServerError):
    """No usable kubeconfig or in-cluster service account; the message says which and
    why."""


async def configure(kubeconfig: Path | None, *, client: Any, config: Any, user_agent: str) -> Any:
    """An ``ApiClient`` from ``kubeconfig``, or from the pod's service account when
    None, whose requests carry ``user_agent``. ``client`` and ``config`` are the
    modules ``kubernetes.aio.client`` and ``kubernetes.aio.config``. A fresh
    ``Configuration`` is built, never the client's global default, so that nothing
    else in the process is affected. :class:`KubeconfigError` when neither works."""
    configuration = client.Configuration()
    try:
        if kubeconfig is not None:
            await config.load_kube_config(
                config_file=str(kubeconfig), client_configuration=configuration
            )
        else:
            config.load_incluster_config(client_configuration=configuration)
    except (
        config.ConfigException,
        OSError,
        ValueError,
        TypeError,
        KeyError,
        yaml.YAMLError,
    ) as exc:
        where = f"kubeconfig {kubeconfig}" if kubeconfig else "in-cluster service account"
        raise KubeconfigError(f"{where}: {exc}") from exc
    api = client.ApiClient(configuration)
    api.user_agent = user_agent
    return api


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
