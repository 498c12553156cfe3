"""``katalyst-controller``: the composition root of this process.

KatalystCustomConfig resolution into per-node CustomNodeConfig, the CNR
lifecycle and config validation, leader-elected over a coordination.k8s.io Lease.

Each process has exactly one composition root: it builds every dependency and
runs the loops and servers as children of one task group (the first failure
cancels the siblings). Here: the API client (:mod:`controllers.apiserver`), the
reconciler with its watches (:mod:`controllers.reconcile`), the leader elector
(:mod:`katalyst.leader`), /metrics and /healthz
(:mod:`controllers.metrics`), and, with ``--webhook-addr``, the admission
webhook over HTTPS (:mod:`controllers.webhook.server`) with its certificate source
(a mounted directory, :mod:`controllers.webhook.tls`, or a Secret the controller
manages, :mod:`controllers.webhook.secret`). Every replica serves the webhook; only
the leader writes the webhook configurations (their ``caBundle`` in secret mode, and
in both modes their ``failurePolicy``, once the caBundle verifies the certificate
served: :mod:`controllers.webhook.configurations`). SIGTERM or SIGINT stops
the writes, releases the Lease (a standby takes over at its next try) and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import sys
from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry

from controllers.apiserver import (
    ApiLeaseClient,
    ApiWebhookClient,
    ConnectError,
    WatchSettings,
    connect,
)
from controllers.config import ControllerConfig, FlagError, build_parser, load_config
from controllers.metrics import (
    ControllerCollector,
    ControllerMetrics,
    Health,
    build_app,
    start_http,
)
from controllers.reconcile import Controller
from controllers.webhook.certs import CertError, ServingPair
from controllers.webhook.configurations import ConfigurationKeeper
from controllers.webhook.secret import SecretCertSource
from controllers.webhook.server import (
    CertCollector,
    WebhookMetrics,
    build_webhook_app,
    start_https,
)
from controllers.webhook.tls import CertDirSource, ServingCert
from katalyst import __version__
from katalyst.clock import Clock, MonotonicClock
from katalyst.leader import LeaderElector, LeaseSettings
from katalyst.logsetup import configure_logging

__all__ = ["PROG", "StartupError", "main", "run"]

PROG = "katalyst-controller"

log = logging.getLogger(__name__)


class StartupError(Exception):
    """The controller cannot start; the message says why (exit status 2)."""


async def run(
    config: ControllerConfig,
    *,
    stop: asyncio.Event,
    clock: Clock | None = None,
    registry: CollectorRegistry | None = None,
    http_ready: asyncio.Future[str] | None = None,
    webhook_ready: asyncio.Future[str] | None = None,
    rng: random.Random | None = None,
) -> None:
    """Run until ``stop`` is set (then release the Lease if leading). ``http_ready``
    receives the address /metrics and /healthz are bound to, ``webhook_ready`` the
    webhook's. Cancelled, it stops without releasing (as a killed process would)."""
    clock = clock or MonotonicClock()
    registry = registry or CollectorRegistry()
    try:
        kube = await connect(
            config.kubeconfig,
            user_agent=f"{PROG}/{__version__} ({config.identity})",
            request_timeout_s=config.request_timeout_s,
        )
    except ConnectError as exc:
        raise StartupError(
            f"{exc} (give --kubeconfig, or run in a pod with a service account)"
        ) from exc
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(kube.close)
        metrics = ControllerMetrics(registry)
        controller = Controller(
            kube,
            clock=clock,
            metrics=metrics,
            identity=config.identity,
            resync_s=config.resync_s,
            watch=WatchSettings(
                watch_timeout_s=config.watch_timeout_s,
                backoff_initial_s=config.backoff_initial_s,
                backoff_max_s=config.backoff_max_s,
            ),
            rng=rng,
        )
        secret_source: SecretCertSource | None = None
        keeper: ConfigurationKeeper | None = None

        def on_leading(leading: bool) -> None:
            controller.set_leading(leading)
            if secret_source is not None:
                secret_source.set_leading(leading)
            elif keeper is not None:
                keeper.set_leading(leading)

        elector = LeaderElector(
            ApiLeaseClient(kube, namespace=config.namespace, name=config.lease_name),
            identity=config.identity,
            settings=LeaseSettings(
                duration_s=config.lease_duration_s,
                renew_deadline_s=config.renew_deadline_s,
                retry_period_s=config.retry_period_s,
            ),
            clock=clock,
            on_change=on_leading,
            rng=rng,
        )

        registry.register(
            ControllerCollector(
                lambda: controller.state(leading=elector.leading, terms=elector.terms)
            )
        )

        def health() -> Health:
            renewed = elector.renewed_at
            return Health(
                leading=elector.leading,
                since_renewal_s=None if renewed is None else clock.monotonic() - renewed,
                lease_duration_s=float(config.lease_duration_s),
            )

        try:
            runner, bound = await start_http(
                build_app(registry=registry, health=health), config.metrics_addr
            )
        except OSError as exc:
            raise StartupError(f"--metrics-addr {config.metrics_addr}: {exc.strerror}") from exc
        stack.push_async_callback(runner.cleanup)
        if http_ready is not None and not http_ready.done():
            http_ready.set_result(bound)
        dir_source: CertDirSource | None = None
        if config.webhook_addr:
            serving = ServingCert()
            stack.callback(serving.close)
            retry = WatchSettings(
                backoff_initial_s=config.backoff_initial_s, backoff_max_s=config.backoff_max_s
            )
            client = ApiWebhookClient(kube, namespace=config.namespace)
            keeper = ConfigurationKeeper(
                client,
                serving,
                name=config.webhook_configurations,
                failure_policy=config.webhook_failure_policy,
                clock=clock,
                retry=retry,
                rng=rng,
            )
            if config.webhook_cert_dir is not None:
                # cert-manager injects the caBundle; the leader still switches the
                # failurePolicy, and looks again whenever the certificate changes.
                serving.on_change(_poke(keeper))
                dir_source = CertDirSource(serving, config.webhook_cert_dir, clock=clock)
                try:
                    dir_source.load()
                except CertError as exc:
                    raise StartupError(f"--webhook-cert-dir: {exc}") from exc
            else:
                secret_source = SecretCertSource(
                    client,
                    serving,
                    keeper=keeper,
                    secret=config.webhook_cert_secret,
                    service=config.webhook_service,
                    clock=clock,
                    retry=retry,
                    rng=rng,
                )
            registry.register(CertCollector(serving))
            app = build_webhook_app(
                config=config.admission,
                metrics=WebhookMetrics(registry),
                serving=serving,
                max_body_bytes=config.webhook_max_body_bytes,
                max_concurrency=config.webhook_max_concurrency,
                clock=clock,
            )
            try:
                webhook_runner, webhook_bound = await start_https(
                    app, config.webhook_addr, serving.context
                )
            except OSError as exc:
                raise StartupError(f"--webhook-addr {config.webhook_addr}: {exc.strerror}") from exc
            stack.push_async_callback(webhook_runner.cleanup)
            if webhook_ready is not None and not webhook_ready.done():
                webhook_ready.set_result(webhook_bound)
        log.info(
            "%s %s: identity %s, lease %s/%s",
            PROG,
            __version__,
            config.identity,
            config.namespace,
            config.lease_name,
        )
        async with asyncio.TaskGroup() as group:
            group.create_task(controller.run(stop))
            group.create_task(elector.run(stop))
            if dir_source is not None:
                group.create_task(dir_source.run(stop))
                if keeper is not None:
                    group.create_task(keeper.run(stop))
            if secret_source is not None:
                group.create_task(secret_source.run(stop))
    log.info("stopped")


def _poke(keeper: ConfigurationKeeper) -> Callable[[ServingPair], None]:
    def changed(_pair: ServingPair) -> None:
        keeper.poke()

    return changed


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``katalyst-controller`` console script."""
    parser = build_parser(PROG, __doc__.split("\n\n")[1] if __doc__ else None)
    try:
        config = load_config(parser, sys.argv[1:] if argv is None else argv)
    except FlagError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log_format)
    try:
        asyncio.run(_main(config))
    except StartupError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    return 0


async def _main(config: ControllerConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run(config, stop=stop)


if __name__ == "__main__":
    sys.exit(main())
