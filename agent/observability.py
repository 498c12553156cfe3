"""``/metrics`` and ``/healthz`` on ``--metrics-addr``.

Metrics come from a custom collector that reads the policies and servers at
scrape time (nothing goes stale when pods come and go), registered on a registry
passed in, never the global one. ``/healthz`` answers 200 while every plugin
server serves and every loop has beaten recently, 503 with the reasons otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.metaserver.metrics import MetricsCollector
from agent.qrm.cpu import CPUPolicy
from agent.qrm.server import PluginServer
from katalyst.clock import Clock

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


@dataclass(frozen=True, slots=True)
class ContainerRef:
    """A container the node runs, for per-container series."""

    namespace: str
    pod: str
    container: str
    qos_level: str
    cgroup: str


class ContainerCollector(Collector):
    """Per-container counters, read from the cgroups at scrape time.

    Counters are cumulative (Prometheus takes the rates); a container whose
    cgroup vanished between the listing and the read is left out of that scrape.
    """

    def __init__(
        self, *, containers: Callable[[], Iterable[ContainerRef]], metrics: MetricsCollector
    ) -> None:
        self._containers = containers
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        labels = ["namespace", "pod", "container", "qos_level"]
        cpu = CounterMetricFamily(
            "katalyst_container_cpu_usage_seconds", "CPU time used by the container", labels=labels
        )
        throttled = CounterMetricFamily(
            "katalyst_container_cpu_throttled_periods",
            "CFS periods in which the container was throttled",
            labels=labels,
        )
        delay = CounterMetricFamily(
            "katalyst_container_run_delay_seconds",
            "Time the container's tasks waited for a CPU (schedstat)",
            labels=labels,
        )
        memory = GaugeMetricFamily(
            "katalyst_container_memory_usage_bytes",
            "Memory charged to the container",
            labels=labels,
        )
        refs = {f"{r.namespace}/{r.pod}/{r.container}": r for r in self._containers()}
        readings = self._metrics.collect({key: ref.cgroup for key, ref in refs.items()})
        for key, reading in sorted(readings.items()):
            ref = refs[key]
            values = [ref.namespace, ref.pod, ref.container, ref.qos_level]
            counters = reading.counters
            cpu.add_metric(values, counters.cpu_usage_ns / 1e9)
            throttled.add_metric(values, counters.nr_throttled)
            delay.add_metric(values, counters.run_delay_ns / 1e9)
            memory.add_metric(values, counters.memory_usage)
        yield from (cpu, throttled, delay, memory)


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


def build_app(
    *,
    registry: CollectorRegistry,
    servers: Sequence[PluginServer],
    heartbeats: Sequence[Heartbeat],
    clock: Clock,
) -> web.Application:
    """The HTTP application: ``/metrics`` and ``/healthz``."""

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

    app = web.Application(client_max_size=1024)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app


async def start_http(app: web.Application, addr: str) -> tuple[web.AppRunner, str]:
    """Serve ``app`` on ``host:port`` (port 0: any free one); return the runner (its
    ``cleanup`` stops it) and the address actually bound."""
    host, _, port = addr.rpartition(":")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host.strip("[]"), int(port))
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    bound = runner.addresses[0]
    host_part = f"[{bound[0]}]" if ":" in str(bound[0]) else str(bound[0])
    url_addr = f"{host_part}:{bound[1]}"
    log.info("metrics and health on http://%s/metrics and /healthz", url_addr)
    return runner, url_addr
