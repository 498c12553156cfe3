"""Serve an aiohttp application on ``host:port``: the one way our processes bind their
HTTP endpoints (/metrics and /healthz, the webhook, the extender)."""

from __future__ import annotations

import ssl

from aiohttp import web

__all__ = ["serve"]


async def serve(
    app: web.Application, addr: str, *, ssl_context: ssl.SSLContext | None = None
) -> tuple[web.AppRunner, str]:
    """Serve ``app`` on ``host:port`` (port 0: any free one; ``[::1]:p`` for IPv6), over
    TLS with ``ssl_context``. Return the runner (its ``cleanup`` stops the server) and
    the address bound, as ``host:port``. ``OSError`` if it cannot bind (nothing is
    left running then)."""
    host, _, port = addr.rpartition(":")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host.strip("[]"), int(port), ssl_context=ssl_context)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    bound = runner.addresses[0]
    host_part = f"[{bound[0]}]" if ":" in str(bound[0]) else str(bound[0])
    return runner, f"{host_part}:{bound[1]}"
