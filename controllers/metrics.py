"""``/metrics`` and ``/healthz`` of ``katalyst-controller`` on ``--metrics-addr``.

Counters and the resolution histogram are ordinary client objects on the registry
passed in (never the global one). Gauges that describe the current state (leader,
nodes, configs per condition reason, the last successful sync, the caches) come
from :class:`ControllerCollector`, which reads the live objects at scrape time, so
that a config that went away leaves no stale series.

=====================================================  ==========================================
series                                                 meaning
=====================================================  ==========================================
``katalyst_controller_leader``                         1 while this replica holds the Lease
``katalyst_controller_lease_terms_total``              times this replica started leading
``katalyst_controller_writes_total{kind,verb,outcome}``  writes (kind: cnc, cnc_status, cnr,
                                                       config_status, kcc_status, config, event;
                                                       outcome: ok, conflict, not_found,
                                                       error, unavailable)
``katalyst_controller_nodes``                          nodes known
``katalyst_controller_configs{kind,reason}``           target configs per ``Valid`` reason
``katalyst_controller_expired_configs_deleted_total``  named-node configs deleted on expiry
``katalyst_controller_resolution_duration_seconds``    time to resolve and plan one pass
``katalyst_controller_passes_total{outcome}``          passes (ok, failed, standby)
``katalyst_controller_last_sync_timestamp_seconds``    end of the last pass that completed
``katalyst_controller_caches_synced``                  1 once every watched resource has listed
=====================================================  ==========================================

``/healthz`` answers 200 unless this replica leads and has not renewed the Lease for
longer than the lease plus a tolerance (client-go's healthz adaptor): its
election loop is stuck, and a restart is the cure. An API-server outage is not a
reason to restart (a restarted controller could not reach it either), so it does
not fail the probe; it shows in the metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from katalyst.httpserve import serve

__all__ = [
    "ControllerCollector",
    "ControllerMetrics",
    "Health",
    "State",
    "build_app",
    "start_http",
]

log = logging.getLogger(__name__)

HEALTH_TOLERANCE_S = 20.0
"""client-go's ``maxTolerableExpiredLease``."""


class ControllerMetrics:
    """The counters and the histogram, on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.writes = Counter(
            "katalyst_controller_writes",
            "Write requests the controller made, by kind of object, verb and outcome",
            ["kind", "verb", "outcome"],
            registry=registry,
        )
        self.expired = Counter(
            "katalyst_controller_expired_configs_deleted",
            "Named-node configs deleted because their lastDuration had passed",
            registry=registry,
        )
        self.resolution = Histogram(
            "katalyst_controller_resolution_duration_seconds",
            "Time to bring the resolution up to date and plan the writes of one pass",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=registry,
        )
        self.passes = Counter(
            "katalyst_controller_passes",
            "Reconcile passes, by outcome (ok; failed: the API server did not answer; "
            "standby: resolved, nothing written)",
            ["outcome"],
            registry=registry,
        )


@dataclass(frozen=True, slots=True)
class State:
    """The controller's state as the gauges show it."""

    leading: bool = False
    terms: int = 0
    nodes: int = 0
    configs: Mapping[tuple[str, str], int] = field(default_factory=dict)
    """``(kind, reason)`` -> how many target configs have that ``Valid`` reason."""
    last_sync: float | None = None
    """Epoch seconds at the end of the last pass that completed."""
    synced: bool = False


class ControllerCollector(Collector):
    """The state gauges, read from ``state()`` at scrape time."""

    def __init__(self, state: Callable[[], State]) -> None:
        self._state = state

    def collect(self) -> Iterable[Metric]:
        state = self._state()
        yield GaugeMetricFamily(
            "katalyst_controller_leader",
            "1 while this replica holds the leader-election Lease (only the leader writes)",
            value=1.0 if state.leading else 0.0,
        )
        yield CounterMetricFamily(
            "katalyst_controller_lease_terms",
            "Times this replica started leading",
            value=float(state.terms),
        )
        yield GaugeMetricFamily(
            "katalyst_controller_nodes", "Nodes the controller knows", value=float(state.nodes)
        )
        configs = GaugeMetricFamily(
            "katalyst_controller_configs",
            "Target configs by the reason of their Valid condition",
            labels=["kind", "reason"],
        )
        for (kind, reason), count in sorted(state.configs.items()):
            configs.add_metric([kind, reason], float(count))
        yield configs
        if state.last_sync is not None:
            yield GaugeMetricFamily(
                "katalyst_controller_last_sync_timestamp_seconds",
                "When the last reconcile pass completed (epoch seconds)",
                value=state.last_sync,
            )
        yield GaugeMetricFamily(
            "katalyst_controller_caches_synced",
            "1 once every watched resource has been listed",
            value=1.0 if state.synced else 0.0,
        )


@dataclass(frozen=True, slots=True)
class Health:
    """What ``/healthz`` judges: whether we lead, and how long since our last renewal."""

    leading: bool
    since_renewal_s: float | None
    lease_duration_s: float

    def problems(self) -> list[str]:
        if not self.leading or self.since_renewal_s is None:
            return []
        limit = self.lease_duration_s + HEALTH_TOLERANCE_S
        if self.since_renewal_s > limit:
            return [
                f"leading without renewing the lease for {self.since_renewal_s:.0f} s "
                f"(more than {limit:.0f} s)"
            ]
        return []


def build_app(*, registry: CollectorRegistry, health: Callable[[], Health]) -> web.Application:
    """``/metrics`` and ``/healthz``."""

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(registry), content_type="text/plain", charset="utf-8"
        )

    async def healthz(_request: web.Request) -> web.Response:
        problems = health().problems()
        if problems:
            return web.Response(status=503, text="\n".join(problems) + "\n")
        return web.Response(text="ok\n")

    app = web.Application(client_max_size=1024)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app


async def start_http(app: web.Application, addr: str) -> tuple[web.AppRunner, str]:
    """Serve ``app`` on ``host:port`` (port 0: any free one); the runner (its ``cleanup``
    stops it) and the address bound."""
    runner, url_addr = await serve(app, addr)
    log.info("metrics and health on http://%s/metrics and /healthz", url_addr)
    return runner, url_addr
