"""``katalyst-scheduler-extender``: the composition root of this process.

The kube-scheduler HTTP extender: reclaimed-resource fit, GPU sharing and
topology-aware placement.

Each process has exactly one composition root: it builds every dependency and
runs the loops and servers as children of one task group.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from katalyst.clock import MonotonicClock
from katalyst.entrypoint import base_parser
from katalyst.logsetup import configure_logging
from scheduler_plugins import apiserver
from scheduler_plugins.extender import Extender, Strategies
from scheduler_plugins.server import DEFAULT_MAX_BODY_BYTES, make_app
from scheduler_plugins.state import ClusterState, _uid

PROG = "katalyst-scheduler-extender"
log = logging.getLogger(__name__)


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 - a service listens


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``katalyst-scheduler-extender``."""
    parser = base_parser(PROG, __doc__.split("\n\n")[1] if __doc__ else None)
    default_listen = ("0.0.0.0", 8888)  # noqa: S104 - a service listens on all addresses
    parser.add_argument(
        "--listen",
        type=_listen,
        default=default_listen,
        metavar="HOST:PORT",
        help="address to serve on (default 0.0.0.0:8888)",
    )
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        default=None,
        help="kubeconfig file; default: the pod's service account",
    )
    parser.add_argument(
        "--score-strategy",
        choices=["least-allocated", "most-allocated"],
        default="least-allocated",
        help="reclaimed-fit scoring",
    )
    parser.add_argument(
        "--gpu-strategy",
        choices=["binpack", "spread"],
        default="binpack",
        help="gpu-share scoring and GPU choice",
    )
    parser.add_argument(
        "--assume-ttl-s",
        type=_positive,
        default=30.0,
        help="seconds a bound pod is assumed before its watch event",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=lambda t: int(_positive(t)),
        default=DEFAULT_MAX_BODY_BYTES,
        help="larger requests get 413",
    )
    return parser


async def run(args: argparse.Namespace, stop: asyncio.Event) -> None:
    clock = MonotonicClock()
    state = ClusterState(clock=clock, assume_ttl_s=args.assume_ttl_s)
    api = await apiserver.connect(args.kubeconfig)
    binder = apiserver.ApiServerBinder(api)
    extender = Extender(
        state=state,
        binder=binder,
        strategies=Strategies(reclaimed=args.score_strategy, gpu=args.gpu_strategy),
    )

    def cnr_event(kind: str, obj: Mapping[str, Any]) -> None:
        if kind == "DELETED":
            state.delete_cnr(str((obj.get("metadata") or {}).get("name", "")))
        else:
            state.set_cnr(obj)

    def pod_event(kind: str, obj: Mapping[str, Any]) -> None:
        if kind == "DELETED":
            state.delete_pod(_uid(obj))
        else:
            state.set_pod(obj)

    watches = [
        apiserver.ListWatch(
            "cnr",
            apiserver.cnr_request(api),
            on_list=state.replace_cnrs,
            on_event=cnr_event,
            clock=clock,
        ),
        apiserver.ListWatch(
            "pod",
            apiserver.pod_request(api),
            on_list=state.replace_pods,
            on_event=pod_event,
            clock=clock,
        ),
    ]
    runner = web.AppRunner(make_app(extender, max_body_bytes=args.max_body_bytes))
    await runner.setup()
    host, port = args.listen
    await web.TCPSite(runner, host, port).start()
    log.info("serving the scheduler extender on %s:%d", host, port)
    try:
        async with asyncio.TaskGroup() as group:
            for watch in watches:
                group.create_task(watch.run(stop))
    finally:
        await runner.cleanup()
        await api.close()  # type: ignore[no-untyped-call]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``katalyst-scheduler-extender`` console script."""
    args = build_parser().parse_args(argv)
    configure_logging("text")

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await run(args, stop)

    try:
        asyncio.run(serve())
    except apiserver.ApiServerError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
