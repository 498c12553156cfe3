"""The controller's settings: one frozen dataclass, from the environment and the flags.

There is no configuration file for the controller itself (the webhook's admission
settings are one, ``--webhook-config``): a Deployment passes flags, and the downward API
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from controllers.webhook.admission import AdmissionConfig
from controllers.webhook.configurations import FAILURE_POLICIES, FailurePolicy
from controllers.webhook.server import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_CONCURRENCY
from controllers.webhook.settings import AdmissionConfigError, load_admission_config
from katalyst.entrypoint import base_parser
from katalyst.leader import JITTER_FACTOR, LeaseFlagError, check_lease_flags, default_identity

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
_DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
MIN_BODY_BYTES: Final = 64 * 1024
"""The least ``--webhook-max-body-bytes``: below it, ordinary pods would be refused."""
MAX_SLOTS: Final = 1024
"""The most ``--webhook-max-concurrency``: past it the limit protects nothing."""
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


class FlagError(ValueError):
    """A flag's value broke its rule; the message names the flag."""


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
    webhook_addr: str = ""
    """``--webhook-addr``: ``host:port`` of the admission webhook's HTTPS server (port 0:
    any free port); empty (the default): the webhook is off. Manifests pass
    ``0.0.0.0:9443``."""
    webhook_cert_dir: Path | None = None
    """``--webhook-cert-dir``: a directory with ``tls.crt`` and ``tls.key`` (a mounted
    Secret that cert-manager or Helm fills), reloaded when they change. Exactly one of
    this and ``webhook_cert_secret`` when the webhook is on."""
    webhook_cert_secret: str = ""
    """``--webhook-cert-secret``: the ``kubernetes.io/tls`` Secret in ``namespace`` that
    the controller issues, renews (30 days before expiry) and serves; the leader puts
    its CA in the webhook configurations' ``caBundle``."""
    webhook_service: str = "katalyst-webhook"
    """``--webhook-service``: the Service in ``namespace`` the API server calls the
    webhook through; the names the issued certificate covers (secret mode)."""
    webhook_configurations: str = "katalyst-webhook"
    """``--webhook-configurations``: the Mutating- and ValidatingWebhookConfiguration
    the leader keeps: their ``caBundle`` (secret mode) and ``failurePolicy`` (both
    modes)."""
    webhook_failure_policy: FailurePolicy = "Fail"
    """``--webhook-failure-policy``: ``Fail`` or ``Ignore``, set by the leader on every
    webhook of the configurations once its ``caBundle`` verifies the certificate
    served (they are installed with ``Ignore``). Default ``Fail``."""
    webhook_config: Path | None = None
    """``--webhook-config``: the YAML file ``admission`` was read from (None: defaults)."""
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)
    """Excluded namespaces and default QoS levels, from ``--webhook-config``."""
    webhook_max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    """``--webhook-max-body-bytes``: larger request bodies are answered 413. Default 4 MiB."""
    webhook_max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    """``--webhook-max-concurrency``: reviews read and decided at once; one that waits
    more than 2 s for a slot is answered 429. Default 32."""

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
    "webhook_addr": "--webhook-addr",
    "webhook_cert_dir": "--webhook-cert-dir",
    "webhook_cert_secret": "--webhook-cert-secret",
    "webhook_service": "--webhook-service",
    "webhook_configurations": "--webhook-configurations",
    "webhook_failure_policy": "--webhook-failure-policy",
    "webhook_max_concurrency": "--webhook-max-concurrency",
    "webhook_config": "--webhook-config",
    "webhook_max_body_bytes": "--webhook-max-body-bytes",
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
    try:
        check_lease_flags(
            namespace=config.namespace,
            lease_name=config.lease_name,
            identity=config.identity,
            lease_duration_s=config.lease_duration_s,
            renew_deadline_s=config.renew_deadline_s,
            retry_period_s=config.retry_period_s,
        )
    except LeaseFlagError as exc:
        raise FlagError(str(exc)) from None
    _check_addr("--metrics-addr", config.metrics_addr)
    for name in (
        "resync_s",
        "request_timeout_s",
        "backoff_initial_s",
        "backoff_max_s",
    ):
        _positive(config, name)
    if config.log_format not in ("text", "json"):
        raise FlagError(f"--log-format: must be text or json, got {config.log_format!r}")
    watch = config.watch_timeout_s
    if isinstance(watch, bool) or not isinstance(watch, int) or watch < 1:
        raise FlagError(f"watch_timeout_s: must be a whole number >= 1, got {watch!r}")
    _check_webhook(config)


def _check_webhook(config: ControllerConfig) -> None:
    if config.webhook_addr:
        _check_addr("--webhook-addr", config.webhook_addr)
        modes = [config.webhook_cert_dir is not None, bool(config.webhook_cert_secret)]
        if sum(modes) != 1:
            raise FlagError(
                "--webhook-addr: give exactly one of --webhook-cert-dir (a mounted tls.crt and "
                "tls.key) and --webhook-cert-secret (a Secret the controller manages), got "
                f"{'both' if all(modes) else 'neither'}"
            )
    else:
        for name in ("webhook_cert_dir", "webhook_cert_secret"):
            if getattr(config, name):
                raise FlagError(f"{_flag(name)}: needs --webhook-addr (the webhook is off)")
    if config.webhook_cert_dir is not None and not config.webhook_cert_dir.is_dir():
        raise FlagError(f"--webhook-cert-dir: {str(config.webhook_cert_dir)!r} is not a directory")
    for name in ("webhook_cert_secret", "webhook_configurations"):
        value = getattr(config, name)
        if name == "webhook_cert_secret" and not value:
            continue
        if not isinstance(value, str) or len(value) > 253 or not _DNS_SUBDOMAIN.fullmatch(value):
            raise FlagError(
                f"{_flag(name)}: {value!r} is not an object name (a DNS subdomain: a-z 0-9 - "
                "and ., at most 253)"
            )
    service = config.webhook_service
    if len(service) > 63 or not _DNS_1035.fullmatch(service):
        raise FlagError(
            f"--webhook-service: {service!r} is not a Service name (at most 63 of a-z 0-9 and "
            "-, starting with a letter, ending alphanumeric)"
        )
    size = config.webhook_max_body_bytes
    if isinstance(size, bool) or not isinstance(size, int) or size < MIN_BODY_BYTES:
        raise FlagError(
            f"--webhook-max-body-bytes: must be a whole number of bytes >= {MIN_BODY_BYTES}, "
            f"got {size!r}"
        )
    policy = config.webhook_failure_policy
    if policy not in FAILURE_POLICIES:
        raise FlagError(f"--webhook-failure-policy: must be Fail or Ignore, got {policy!r}")
    slots = config.webhook_max_concurrency
    if isinstance(slots, bool) or not isinstance(slots, int) or not 1 <= slots <= MAX_SLOTS:
        raise FlagError(
            f"--webhook-max-concurrency: must be a whole number from 1 to {MAX_SLOTS}, "
            f"got {slots!r}"
        )


def _check_addr(flag: str, text: str) -> None:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise FlagError(f"{flag}: {text!r} is not host:port with a port in 0-65535")
    bare = host.strip("[]")
    try:
        ipaddress.ip_address(bare)
    except ValueError:
        if not bare or not _DNS_SUBDOMAIN.fullmatch(bare.lower()):
            raise FlagError(f"{flag}: {host!r} is not an IP address or host name") from None


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
    add(
        "--webhook-addr",
        metavar="HOST:PORT",
        default="",
        help="serve the admission webhook over HTTPS here (default: off; 0.0.0.0:9443 in a pod)",
    )
    add(
        "--webhook-cert-dir",
        metavar="DIR",
        help="tls.crt and tls.key of the webhook, mounted from a Secret; reloaded on change",
    )
    add(
        "--webhook-cert-secret",
        metavar="NAME",
        default="",
        help="a kubernetes.io/tls Secret in --namespace that the controller issues and renews",
    )
    add(
        "--webhook-service",
        metavar="NAME",
        default=ControllerConfig.webhook_service,
        help="the webhook's Service in --namespace, named by the issued certificate "
        "(default %(default)s)",
    )
    add(
        "--webhook-configurations",
        metavar="NAME",
        default=ControllerConfig.webhook_configurations,
        help="the Mutating- and ValidatingWebhookConfiguration whose caBundle (secret mode) and "
        "failurePolicy the leader keeps (default %(default)s)",
    )
    add(
        "--webhook-failure-policy",
        metavar="Fail|Ignore",
        default=ControllerConfig.webhook_failure_policy,
        help="failurePolicy the leader sets on the webhooks once their caBundle verifies the "
        "certificate served (default %(default)s)",
    )
    add(
        "--webhook-config",
        metavar="FILE",
        help="YAML: excludedNamespaces and defaults (QoS levels for pods that set none)",
    )
    add(
        "--webhook-max-body-bytes",
        metavar="N",
        default=str(DEFAULT_MAX_BODY_BYTES),
        help="larger request bodies are answered 413 (default %(default)s)",
    )
    add(
        "--webhook-max-concurrency",
        metavar="N",
        default=str(DEFAULT_MAX_CONCURRENCY),
        help="reviews decided at once; one that waits over 2 s for a slot is answered 429 "
        "(default %(default)s)",
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
    admission = AdmissionConfig()
    webhook_config = Path(args.webhook_config) if args.webhook_config is not None else None
    if webhook_config is not None:
        try:
            admission = load_admission_config(webhook_config)
        except AdmissionConfigError as exc:
            raise FlagError(f"--webhook-config {webhook_config}: {exc}") from None
    try:
        max_body = int(args.webhook_max_body_bytes)
    except ValueError:
        raise FlagError(
            f"--webhook-max-body-bytes: {args.webhook_max_body_bytes!r} is not a whole number"
        ) from None
    try:
        max_concurrency = int(args.webhook_max_concurrency)
    except ValueError:
        raise FlagError(
            f"--webhook-max-concurrency: {args.webhook_max_concurrency!r} is not a whole number"
        ) from None
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
        webhook_addr=args.webhook_addr,
        webhook_cert_dir=Path(args.webhook_cert_dir) if args.webhook_cert_dir else None,
        webhook_cert_secret=args.webhook_cert_secret,
        webhook_service=args.webhook_service,
        webhook_configurations=args.webhook_configurations,
        webhook_config=webhook_config,
        admission=admission,
        webhook_max_body_bytes=max_body,
        webhook_failure_policy=args.webhook_failure_policy,
        webhook_max_concurrency=max_concurrency,
    )
