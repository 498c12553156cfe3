"""The controller's settings: one frozen dataclass, from the environment and the flags.

There is no configuration file: a Deployment passes flags, and the downward API
gives the pod's name and namespace in ``POD_NAME`` and ``POD_NAMESPACE``, the
defaults of ``--identity`` and ``--namespace``. Every value is checked at start-up;
a bad one is refused with a message naming the flag and the rule, and the
process exits with status 2.

The lease timings follow client-go's leader election and its checks:
``lease-duration > renew-deadline > 1.2 * retry-period > 0``. A leader renews every
retry period and stops writing once it has failed to renew for the renew
deadline, which is shorter than the lease, so it has stopped before any standby
may take over.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import re
import socket
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from katalyst.entrypoint import base_parser

__all__ = [
    "DEFAULT_METRICS_ADDR",
    "JITTER_FACTOR",
    "ControllerConfig",
    "FlagError",
    "build_parser",
    "default_identity",
    "load_config",
]

DEFAULT_METRICS_ADDR: Final = "127.0.0.1:9317"
JITTER_FACTOR: Final = 1.2
"""client-go's: a standby retries every ``retry-period * (1 + rand * 1.2)``, and the
renew deadline must leave room for one such retry."""

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


class FlagError(ValueError):
    """A flag's value broke its rule; the message names the flag."""


def default_identity(env: Mapping[str, str] | None = None) -> str:
    """``$POD_NAME``, else ``<hostname>_<random>`` (client-go's habit), so that two
    replicas on one host never share an identity."""
    env = os.environ if env is None else env
    name = env.get("POD_NAME", "").strip()
    if name:
        return name
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class ControllerConfig:
    """Everything ``katalyst-controller`` is started with."""

    kubeconfig: Path | None = None
    """``--kubeconfig``: a kubeconfig file; None: the in-cluster service account."""
    namespace: str = "katalyst-system"
    """``--namespace``: where the leader-election Lease lives (default ``$POD_NAMESPACE``,
    else ``katalyst-system``)."""
    lease_name: str = "katalyst-controller"
    """``--lease-name``: the ``coordination.k8s.io/v1`` Lease the replicas compete for."""
    identity: str = field(default_factory=default_identity)
    """``--identity``: this replica's name in the Lease (default ``$POD_NAME``, else the
    host name and a random suffix). Two replicas must never share one."""
    metrics_addr: str = DEFAULT_METRICS_ADDR
    """``--metrics-addr``: ``host:port`` of /metrics and /healthz (port 0: any free port)."""
    resync_s: float = 300.0
    """``--resync-s``: seconds between full relists of every watched resource (a pass that
    finds nothing changed writes nothing). Default 300."""
    lease_duration_s: int = 15
    """``--lease-duration-s``: how long a standby waits, in whole seconds, after the last
    renewal it saw before it takes the lease over. Default 15."""
    renew_deadline_s: float = 10.0
    """``--renew-deadline-s``: seconds a leader keeps trying to renew before it steps down
    (stops writing). Default 10."""
    retry_period_s: float = 2.0
    """``--retry-period-s``: seconds between renewals, and between a standby's tries.
    Default 2."""
    log_format: Literal["text", "json"] = "text"
    """``--log-format``: ``text`` or ``json``."""
    request_timeout_s: float = 30.0
    """Timeout of one API request other than a watch, seconds (not a flag)."""
    watch_timeout_s: int = 300
    """Server-side timeout of one watch request, seconds (not a flag)."""
    backoff_initial_s: float = 0.5
    """First retry delay after a failed request or pass, seconds; doubled per failure in
    a row (not a flag)."""
    backoff_max_s: float = 30.0
    """Cap of the retry delay, seconds (not a flag)."""

    def __post_init__(self) -> None:
        check(self)


_FLAGS: Final[Mapping[str, str]] = {
    "kubeconfig": "--kubeconfig",
    "namespace": "--namespace",
    "lease_name": "--lease-name",
    "identity": "--identity",
    "metrics_addr": "--metrics-addr",
    "resync_s": "--resync-s",
    "lease_duration_s": "--lease-duration-s",
    "renew_deadline_s": "--renew-deadline-s",
    "retry_period_s": "--retry-period-s",
    "log_format": "--log-format",
}


def _flag(name: str) -> str:
    return _FLAGS.get(name, name)


def _positive(config: ControllerConfig, name: str) -> float:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FlagError(f"{_flag(name)}: must be a number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise FlagError(f"{_flag(name)}: must be a finite number > 0, got {value!r}")
    return float(value)


def check(config: ControllerConfig) -> None:
    """Refuse a configuration that breaks a rule, naming the flag."""
    if config.kubeconfig is not None and not config.kubeconfig.is_file():
        raise FlagError(f"--kubeconfig: {str(config.kubeconfig)!r} is not a file")
    if len(config.namespace) > 63 or not _DNS_LABEL.fullmatch(config.namespace):
        raise FlagError(
            f"--namespace: {config.namespace!r} is not a namespace name (at most 63 of a-z 0-9 "
            "and -, starting and ending alphanumeric)"
        )
    if len(config.lease_name) > 253 or not _DNS_SUBDOMAIN.fullmatch(config.lease_name):
        raise FlagError(
            f"--lease-name: {config.lease_name!r} is not an object name (a DNS subdomain: "
            "a-z 0-9 - and ., at most 253)"
        )
    if not config.identity or len(config.identity) > 253 or not config.identity.isprintable():
        raise FlagError(
            f"--identity: {config.identity!r} must be 1 to 253 printable characters "
            "(the pod's name)"
        )
    _check_addr(config.metrics_addr)
    for name in (
        "resync_s",
        "renew_deadline_s",
        "retry_period_s",
        "request_timeout_s",
        "backoff_initial_s",
        "backoff_max_s",
    ):
        _positive(config, name)
    duration = config.lease_duration_s
    if isinstance(duration, bool) or not isinstance(duration, int) or duration < 1:
        raise FlagError(
            f"--lease-duration-s: must be a whole number of seconds >= 1 (the Lease's "
            f"leaseDurationSeconds), got {duration!r}"
        )
    if not config.renew_deadline_s < duration:
        raise FlagError(
            f"--renew-deadline-s: must be less than --lease-duration-s ({duration}), got "
            f"{config.renew_deadline_s!r}: a leader must stop writing before a standby may "
            "take over"
        )
    if not config.renew_deadline_s > JITTER_FACTOR * config.retry_period_s:
        raise FlagError(
            f"--renew-deadline-s: must be more than {JITTER_FACTOR} x --retry-period-s "
            f"({JITTER_FACTOR * config.retry_period_s:g}), got {config.renew_deadline_s!r}"
        )
    if config.log_format not in ("text", "json"):
        raise FlagError(f"--log-format: must be text or json, got {config.log_format!r}")
    watch = config.watch_timeout_s
    if isinstance(watch, bool) or not isinstance(watch, int) or watch < 1:
        raise FlagError(f"watch_timeout_s: must be a whole number >= 1, got {watch!r}")


def _check_addr(text: str) -> None:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise FlagError(f"--metrics-addr: {text!r} is not host:port with a port in 0-65535")
    bare = host.strip("[]")
    try:
        ipaddress.ip_address(bare)
    except ValueError:
        if not bare or not _DNS_SUBDOMAIN.fullmatch(bare.lower()):
            raise FlagError(f"--metrics-addr: {host!r} is not an IP address or host name") from None


def build_parser(prog: str, description: str | None) -> argparse.ArgumentParser:
    """The flags; ``--help`` lists every one with its default."""
    parser = base_parser(prog, description)
    add = parser.add_argument
    add("--kubeconfig", metavar="FILE", help="kubeconfig file; default: in-cluster service account")
    add(
        "--namespace",
        metavar="NS",
        help="namespace of the leader-election Lease (default $POD_NAMESPACE, else "
        "katalyst-system)",
    )
    add(
        "--lease-name",
        metavar="NAME",
        default=ControllerConfig.lease_name,
        help="name of the Lease (default %(default)s)",
    )
    add(
        "--identity",
        metavar="ID",
        help="this replica's holder identity in the Lease (default $POD_NAME, else "
        "<hostname>_<random>)",
    )
    add(
        "--metrics-addr",
        metavar="HOST:PORT",
        default=DEFAULT_METRICS_ADDR,
        help="/metrics and /healthz (default %(default)s; 0.0.0.0:9317 in a pod, for probes)",
    )
    add(
        "--resync-s",
        metavar="S",
        default=str(ControllerConfig.resync_s),
        help="seconds between full relists (default %(default)s)",
    )
    add(
        "--lease-duration-s",
        metavar="S",
        default=str(ControllerConfig.lease_duration_s),
        help="whole seconds a standby waits after the last renewal it saw (default %(default)s)",
    )
    add(
        "--renew-deadline-s",
        metavar="S",
        default=str(ControllerConfig.renew_deadline_s),
        help="seconds a leader keeps trying to renew before it stops writing (default %(default)s)",
    )
    add(
        "--retry-period-s",
        metavar="S",
        default=str(ControllerConfig.retry_period_s),
        help="seconds between renewals and between a standby's tries (default %(default)s)",
    )
    add(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="log lines as text or JSON (default %(default)s)",
    )
    return parser


def _number(flag: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise FlagError(f"{flag}: {text!r} is not a number") from None
    return value


def _whole(flag: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise FlagError(f"{flag}: {text!r} is not a whole number of seconds") from None


def load_config(
    parser: argparse.ArgumentParser, argv: Sequence[str], env: Mapping[str, str] | None = None
) -> ControllerConfig:
    """Parse ``argv`` (``SystemExit`` for ``--help``, ``--version`` and argparse's own
    errors) and check every value (:class:`FlagError` naming the flag)."""
    env = os.environ if env is None else env
    args = parser.parse_args(list(argv))
    namespace = args.namespace
    if namespace is None:
        namespace = env.get("POD_NAMESPACE", "").strip() or ControllerConfig.namespace
    identity = args.identity if args.identity is not None else default_identity(env)
    return ControllerConfig(
        kubeconfig=Path(args.kubeconfig) if args.kubeconfig is not None else None,
        namespace=namespace,
        lease_name=args.lease_name,
        identity=identity,
        metrics_addr=args.metrics_addr,
        resync_s=_number("--resync-s", args.resync_s),
        lease_duration_s=_whole("--lease-duration-s", args.lease_duration_s),
        renew_deadline_s=_number("--renew-deadline-s", args.renew_deadline_s),
        retry_period_s=_number("--retry-period-s", args.retry_period_s),
        log_format=args.log_format,
    )
