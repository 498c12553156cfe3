"""``katalyst-scheduler-extender``: the composition root of this process.

The kube-scheduler HTTP extender: reclaimed-resource fit, GPU sharing and
topology-aware placement.

Each process has exactly one composition root: it builds every dependency and
runs the loops and servers as children of one task group.

With ``--leader-elect`` the replicas behind the Service compete for a
``coordination.k8s.io/v1`` Lease (:mod:`katalyst.leader`); only the holder answers
kube-scheduler, and it publishes its own address (``$POD_IP`` and the port of
``--listen``) as the one endpoint of the EndpointSlice ``<--service>-leader``, which
routes the selector-less Service to it (:mod:`scheduler_plugins.replica`). Every
replica keeps its CNR and pod watches running and is ready once they have listed, so
a standby serves at once when it takes over. SIGTERM or SIGINT stops answering,
releases the Lease (a standby takes over at its next try), withdraws the address
and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from prometheus_client import CollectorRegistry

from katalyst.clock import Clock, MonotonicClock, first_of
from katalyst.entrypoint import base_parser
from katalyst.httpserve import serve as serve_http
from katalyst.leader import (
    LeaderElector,
    LeaseFlagError,
    LeaseSettings,
    check_lease_flags,
    default_identity,
)
from katalyst.logsetup import configure_logging
from scheduler_plugins import apiserver
from scheduler_plugins.extender import Extender, Strategies
from scheduler_plugins.metrics import ExtenderCollector
from scheduler_plugins.replica import (
    DEFAULT_SERVICE,
    LeaderEndpoint,
    LeaderSlice,
    Replica,
    check_service_name,
    leader_endpoint,
)
from scheduler_plugins.server import DEFAULT_MAX_BODY_BYTES, make_app
from scheduler_plugins.state import ClusterState, _uid

PROG = "katalyst-scheduler-extender"
DEFAULT_NAMESPACE: Final = "katalyst-system"
DEFAULT_LEASE_NAME: Final = "katalyst-scheduler-extender"
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


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds") from None


def _service(text: str) -> str:
    try:
        return check_service_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


@dataclass(frozen=True, slots=True)
class LeaseOptions:
    """The leader-election flags, defaults resolved and checked."""

    namespace: str
    """``--namespace``: where the Lease lives (default ``$POD_NAMESPACE``, else
    ``katalyst-system``)."""
    name: str
    """``--lease-name``: the Lease (default ``katalyst-scheduler-extender``)."""
    identity: str
    """``--identity``: this replica in the Lease (default ``$POD_NAME``, else
    ``<hostname>_<random>``)."""
    settings: LeaseSettings
    """``--lease-duration-s`` (15), ``--renew-deadline-s`` (10), ``--retry-period-s`` (2)."""
    endpoint: LeaderEndpoint | None = None
    """What the leader publishes in the EndpointSlice of ``--service`` (default
    ``katalyst-scheduler-extender``): ``$POD_IP`` and the port of ``--listen``, in
    ``$POD_NAMESPACE`` (else the Lease's namespace), with ``$POD_NAME`` as its
    ``targetRef`` and ``$NODE_NAME`` as its ``nodeName`` when set (the downward API);
    None without ``--leader-elect`` or without ``$POD_IP`` (not in a pod: nothing to
    publish)."""


def lease_options(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> LeaseOptions:
    """The leader-election flags of ``args`` with their defaults from ``env`` (the
    downward API's ``POD_NAMESPACE``, ``POD_NAME``, ``POD_IP`` and ``NODE_NAME``);
    :class:`LeaseFlagError` naming the flag or variable whose rule a value breaks."""
    env = os.environ if env is None else env
    namespace = args.namespace
    if namespace is None:
        namespace = env.get("POD_NAMESPACE", "").strip() or DEFAULT_NAMESPACE
    identity = args.identity if args.identity is not None else default_identity(env)
    settings = check_lease_flags(
        namespace=namespace,
        lease_name=args.lease_name,
        identity=identity,
        lease_duration_s=args.lease_duration_s,
        renew_deadline_s=args.renew_deadline_s,
        retry_period_s=args.retry_period_s,
    )
    endpoint = None
    ip = env.get("POD_IP", "").strip()
    if ip and args.leader_elect:
        try:
            endpoint = leader_endpoint(
                service=args.service,
                namespace=env.get("POD_NAMESPACE", "").strip() or namespace,
                ip=ip,
                port=args.listen[1],
                pod=env.get("POD_NAME", "").strip(),
                node=env.get("NODE_NAME", "").strip(),
            )
        except ValueError as exc:
            raise LeaseFlagError(str(exc)) from None
    return LeaseOptions(namespace, args.lease_name, identity, settings, endpoint)


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
    lease = LeaseSettings()
    parser.add_argument(
        "--leader-elect",
        action="store_true",
        help="campaign for a Lease and answer kube-scheduler only while holding it, "
        "for several replicas behind one Service (default: off, one replica)",
    )
    parser.add_argument(
        "--namespace",
        metavar="NS",
        help=f"namespace of the Lease (default $POD_NAMESPACE, else {DEFAULT_NAMESPACE})",
    )
    parser.add_argument(
        "--lease-name",
        metavar="NAME",
        default=DEFAULT_LEASE_NAME,
        help="name of the Lease (default %(default)s)",
    )
    parser.add_argument(
        "--identity",
        metavar="ID",
        help="this replica's holder identity in the Lease (default $POD_NAME, else "
        "<hostname>_<random>)",
    )
    parser.add_argument(
        "--service",
        type=_service,
        metavar="NAME",
        default=DEFAULT_SERVICE,
        help="the selector-less Service in $POD_NAMESPACE that kube-scheduler calls; the "
        "leader routes it to itself with the EndpointSlice NAME-leader (default "
        "%(default)s)",
    )
    parser.add_argument(
        "--lease-duration-s",
        type=_whole,
        default=lease.duration_s,
        metavar="S",
        help="whole seconds a standby waits after the last renewal it saw (default %(default)s)",
    )
    parser.add_argument(
        "--renew-deadline-s",
        type=_number,
        default=lease.renew_deadline_s,
        metavar="S",
        help="seconds a leader keeps trying to renew before it stops answering "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--retry-period-s",
        type=_number,
        default=lease.retry_period_s,
        metavar="S",
        help="seconds between renewals and between a standby's tries (default %(default)s)",
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="log lines as text or JSON (default %(default)s)",
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The flags, checked: ``SystemExit(2)`` with a message naming the flag."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        lease_options(args)
    except LeaseFlagError as exc:
        parser.error(str(exc))
    return args


async def run(
    args: argparse.Namespace,
    stop: asyncio.Event,
    *,
    clock: Clock | None = None,
    env: Mapping[str, str] | None = None,
) -> None:
    """Serve until ``stop`` is set; then stop answering, release the Lease if leading,
    and return. Cancelled (the process killed), it stops without a release."""
    clock = clock or MonotonicClock()
    lease = lease_options(args, env)
    state = ClusterState(clock=clock, assume_ttl_s=args.assume_ttl_s)
    api = await apiserver.connect(
        args.kubeconfig, replica=lease.identity if args.leader_elect else ""
    )
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
    elector: LeaderElector | None = None
    publisher: LeaderSlice | None = None
    if args.leader_elect:
        if lease.endpoint is not None:
            endpoint = lease.endpoint
            publisher = LeaderSlice(
                apiserver.ApiServerEndpointSlice(
                    api,
                    namespace=endpoint.namespace,
                    name=endpoint.slice_name,
                    request_timeout_s=min(10.0, lease.settings.renew_deadline_s),
                ),
                endpoint,
                clock=clock,
            )
        else:
            log.warning(
                "leader election: no $POD_IP, so the leader publishes no EndpointSlice; "
                "the Service %s does not route to this replica",
                args.service,
            )

        def leadership(leading: bool) -> None:
            if leading:
                log.info("leader election: %s answers kube-scheduler now", lease.identity)
            else:
                log.info("leader election: %s is a standby (answers 503)", lease.identity)
            if publisher is None:
                return
            if leading or not stop.is_set():
                publisher.lead(leading)
            else:
                # A graceful stop: the address goes after the release of the Lease,
                # once the elector has returned (_lead); nothing is published meanwhile.
                publisher.hold()

        elector = LeaderElector(
            apiserver.ApiServerLeaseClient(
                api,
                namespace=lease.namespace,
                name=lease.name,
                # No answer is of use after the renew deadline: the leader has stepped
                # down by then.
                request_timeout_s=lease.settings.renew_deadline_s,
            ),
            identity=lease.identity,
            settings=lease.settings,
            clock=clock,
            on_change=leadership,
        )
    gate = Replica(elector, watches)
    registry = CollectorRegistry()
    registry.register(
        ExtenderCollector(
            leading=lambda: gate.serving() is None,
            ready=lambda: gate.ready() is None,
            nodes=lambda: state.counts()[0],
            pods=lambda: state.counts()[1],
            assumed=lambda: state.counts()[2],
            endpoint=lambda: (
                (0, 0) if publisher is None else (publisher.writes, publisher.failures)
            ),
        )
    )
    app = make_app(extender, max_body_bytes=args.max_body_bytes, gate=gate, registry=registry)
    host, port = args.listen
    runner, _ = await serve_http(app, f"{host}:{port}")
    if elector is None:
        log.info("serving the scheduler extender on %s:%d", host, port)
    else:
        log.info(
            "serving the scheduler extender on %s:%d; identity %s, lease %s/%s",
            host,
            port,
            lease.identity,
            lease.namespace,
            lease.name,
        )
    try:
        async with asyncio.TaskGroup() as group:
            for watch in watches:
                group.create_task(watch.run(stop))
            if elector is not None:
                group.create_task(_lead(elector, publisher, stop))
    finally:
        await runner.cleanup()
        await api.close()  # type: ignore[no-untyped-call]


async def _lead(elector: LeaderElector, publisher: LeaderSlice | None, stop: asyncio.Event) -> None:
    """Campaign, with the EndpointSlice following leadership. The publisher's first
    request removes this replica's address if a previous container of this pod left it
    there (it crashed while leading), before this one campaigns; however that ends,
    the campaign starts. The publisher is stopped only after the elector (and so after
    the release of the Lease)."""
    if publisher is None:
        await elector.run(stop)
        return
    elected = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        group.create_task(publisher.run(elected))
        try:
            await first_of(publisher.first_try, stop)
            await elector.run(stop)
        finally:
            elected.set()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``katalyst-scheduler-extender`` console script."""
    args = parse_args(argv)
    configure_logging(args.log_format)

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
