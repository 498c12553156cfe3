"""``/metrics`` and ``/healthz`` on ``--metrics-addr``.

Metrics come from custom collectors registered on a registry passed in, never
the global one. Pools and plugin servers are read from the live objects at
scrape time; per-container and node series are served from the latest snapshot
of the :class:`agent.metaserver.metrics.MetricsLoop` (collected once per period
and shared with the control loops, so a scrape never reads cgroup files), with
``katalyst_metrics_snapshot_age_seconds`` to alert on a loop that stopped
producing. ``/healthz`` answers 200 while every plugin server serves and every
loop has beaten recently, 503 with the reasons otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.enforcement.applier import Applier
from agent.metaserver.metrics import (
    PRESSURE_RESOURCES,
    ContainerRef,
    MetricsLoop,
    MetricsSnapshot,
    NodeMetrics,
)
from agent.qrm.cpu import CPUPolicy
from agent.qrm.server import PluginServer
from katalyst.clock import Clock
from katalyst.httpserve import serve

__all__ = [
    "AgentCollector",
    "ContainerCollector",
    "ContainerRef",  # moved to agent.metaserver.metrics; kept importable from here
    "Heartbeat",
    "build_app",
    "start_http",
]

log = logging.getLogger(__name__)


@dataclass
class Heartbeat:
    """A loop's last beat; stale after ``max_age`` seconds."""

    name: str
    max_age: float
    last: float | None = None

    def beat(self, now: float) -> None:
        """Record that the loop completed a pass."""
        self.last = now


class ContainerCollector(Collector):
    """Per-container counters and node gauges, from the metrics loop's latest snapshot.

    Counters are cumulative (Prometheus takes the rates). A container is in a
    scrape when it was in the latest pass: one whose cgroup vanished drops out
    with the next pass, at most one period later. Before the first pass only the
    snapshot's age is served.
    """

    def __init__(self, *, loop: MetricsLoop) -> None:
        self._loop = loop

    def collect(self) -> Iterable[Metric]:
        age = GaugeMetricFamily(
            "katalyst_metrics_snapshot_age_seconds",
            "Seconds since the metrics loop's latest pass started "
            "(since the loop was made while there is none)",
        )
        age.add_metric([], self._loop.age())
        yield age
        if self._loop.last_pass_s is not None:
            yield GaugeMetricFamily(
                "katalyst_metrics_pass_duration_seconds",
                "How long the metrics loop's last pass took",
                value=self._loop.last_pass_s,
            )
        yield CounterMetricFamily(
            "katalyst_metrics_failed_passes",
            "Metrics passes that failed (the previous snapshot was kept)",
            value=float(self._loop.failed_passes),
        )
        snapshot = self._loop.snapshot
        if snapshot is None:
            return
        yield from _container_families(snapshot)
        yield from _node_families(snapshot.node)


_CONTAINER_LABELS = ["namespace", "pod", "container", "qos_level"]


def _container_families(snapshot: MetricsSnapshot) -> Iterable[Metric]:
    cpu = CounterMetricFamily(
        "katalyst_container_cpu_usage_seconds",
        "CPU time used by the container",
        labels=_CONTAINER_LABELS,
    )
    throttled = CounterMetricFamily(
        "katalyst_container_cpu_throttled_periods",
        "CFS periods in which the container was throttled",
        labels=_CONTAINER_LABELS,
    )
    delay = CounterMetricFamily(
        "katalyst_container_run_delay_seconds",
        "Time the container's tasks waited for a CPU (schedstat)",
        labels=_CONTAINER_LABELS,
    )
    memory = GaugeMetricFamily(
        "katalyst_container_memory_usage_bytes",
        "Memory charged to the container",
        labels=_CONTAINER_LABELS,
    )
    for _key, (ref, reading) in sorted(snapshot.containers.items()):
        values = [ref.namespace, ref.pod, ref.container, ref.qos_level]
        counters = reading.counters
        cpu.add_metric(values, counters.cpu_usage_ns / 1e9)
        throttled.add_metric(values, counters.nr_throttled)
        delay.add_metric(values, counters.run_delay_ns / 1e9)
        memory.add_metric(values, counters.memory_usage)
    return (cpu, throttled, delay, memory)


def _node_families(node: NodeMetrics) -> Iterable[Metric]:
    gauges = [
        ("katalyst_node_cpus", "Online CPUs (/proc/stat)", node.cpus),
        (
            "katalyst_node_cpu_usage_cores",
            "CPUs busy on average over the last metrics period (/proc/stat)",
            node.cpu_usage_cores,
        ),
        ("katalyst_node_memory_total_bytes", "MemTotal of /proc/meminfo", node.memory_total_bytes),
        (
            "katalyst_node_memory_available_bytes",
            "MemAvailable of /proc/meminfo",
            node.memory_available_bytes,
        ),
    ]
    for name, documentation, value in gauges:
        if value is not None:  # absent rather than a made-up 0 when the kernel has none
            yield GaugeMetricFamily(name, documentation, value=value)
    avg10 = GaugeMetricFamily(
        "katalyst_node_pressure_avg10_ratio",
        "Share of the last 10 s in which some (or all) non-idle tasks stalled on the "
        "resource (/proc/pressure)",
        labels=["resource", "kind"],
    )
    stalled = CounterMetricFamily(
        "katalyst_node_pressure_stalled_seconds",
        "Time in which some (or all) non-idle tasks stalled on the resource (/proc/pressure)",
        labels=["resource", "kind"],
    )
    for resource in PRESSURE_RESOURCES:
        pressure = node.pressure(resource)
        if pressure is None:
            continue
        lines = [("some", pressure.some), ("full", pressure.full)]
        for kind, line in lines:
            if line is not None:
                # PSI prints percentages and microseconds; Prometheus wants ratios and seconds.
                avg10.add_metric([resource, kind], line.avg10 / 100)
                stalled.add_metric([resource, kind], line.total_us / 1e6)
    yield avg10
    yield stalled


class AgentCollector(Collector):
    """Gauges read from the live objects at scrape time."""

    def __init__(self, *, cpu: CPUPolicy, servers: Sequence[PluginServer]) -> None:
        self._cpu = cpu
        self._servers = servers

    def collect(self) -> Iterable[Metric]:
        pools = GaugeMetricFamily(
            "katalyst_cpu_pool_cpus", "CPUs in each pool of the CPU plugin", labels=["pool"]
        )
        for name, cpus in sorted(self._cpu.pools().items()):
            pools.add_metric([name], len(cpus))
        yield pools
        serving = GaugeMetricFamily(
            "katalyst_qrm_plugin_serving", "1 while the plugin's socket serves", labels=["plugin"]
        )
        registered = GaugeMetricFamily(
            "katalyst_qrm_plugin_registered",
            "1 once the kubelet registered the plugin",
            labels=["plugin"],
        )
        pods = GaugeMetricFamily(
            "katalyst_qrm_pods", "Pods holding an allocation of the plugin", labels=["plugin"]
        )
        for server in self._servers:
            name = server.policy.plugin_name
            serving.add_metric([name], 1.0 if server.serving else 0.0)
            registered.add_metric([name], 1.0 if server.registered else 0.0)
            pods.add_metric([name], len(server.policy.allocations()))
        yield serving
        yield registered
        yield pods


class WritesCollector(Collector):
    """``katalyst_cgroup_writes_total{setting,outcome}``: every container cgroup write
    the node's applier made (changed), and the ones that failed or found the cgroup
    gone."""

    def __init__(self, applier: Applier) -> None:
        self._applier = applier

    def collect(self) -> Iterable[Metric]:
        writes = CounterMetricFamily(
            "katalyst_cgroup_writes",
            "Container cgroup writes by setting and outcome (changed, failed, gone)",
            labels=["setting", "outcome"],
        )
        for (setting, outcome), count in sorted(self._applier.writes.items()):
            writes.add_metric([setting, outcome], float(count))
        yield writes


def build_app(
    *,
    registry: CollectorRegistry,
    servers: Sequence[PluginServer],
    heartbeats: Sequence[Heartbeat],
    clock: Clock,
    status: Callable[[], Mapping[str, object]] | None = None,
) -> web.Application:
    """The HTTP application: ``/metrics``, ``/healthz`` and, with ``status``, ``/status``
    (the node's state as JSON, what ``katalyst status`` prints)."""

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(registry), content_type="text/plain", charset="utf-8"
        )

    async def healthz(_request: web.Request) -> web.Response:
        problems = [
            f"plugin {s.policy.plugin_name} is not serving" for s in servers if not s.serving
        ]
        now = clock.monotonic()
        for beat in heartbeats:
            if beat.last is None or now - beat.last > beat.max_age:
                problems.append(f"loop {beat.name} has not run for over {beat.max_age:.0f} s")
        if problems:
            return web.Response(status=503, text="\n".join(problems) + "\n")
        return web.Response(text="ok\n")

    async def status_json(_request: web.Request) -> web.Response:
        assert status is not None
        return web.json_response(status())

    app = web.Application(client_max_size=1024)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    if status is not None:
        app.router.add_get("/status", status_json)
    return app


async def start_http(app: web.Application, addr: str) -> tuple[web.AppRunner, str]:
    """Serve ``app`` on ``host:port`` (port 0: any free one); return the runner (its
    ``cleanup`` stops it) and the address actually bound."""
    runner, url_addr = await serve(app, addr)
    log.info("metrics and health on http://%s/metrics and /healthz", url_addr)
    return runner, url_addr
