"""The extender's Prometheus series, served at ``GET /metrics`` on ``--listen``.

Counters and the latency histogram are client objects on the registry passed in;
the gauges of the current state (leadership, readiness, what the watches hold, the
assume cache) come from :class:`ExtenderCollector`, read at scrape time.

* ``katalyst_extender_requests_total{verb,outcome}``: verb ``filter``,
  ``prioritize`` or ``bind``; outcome ``ok``, ``error`` (answered with an
  ``Error``), ``bad_request`` (400), ``too_large`` (413) or ``standby`` (503);
* ``katalyst_extender_request_duration_seconds{verb}``: time to answer, decoding
  and encoding included;
* ``katalyst_extender_filter_nodes_total{result}``: nodes judged by ``filter``:
  ``passed``, ``failed`` (preemption could help) or ``unresolvable``;
* ``katalyst_extender_leader``: 1 while this replica answers (always without
  ``--leader-elect``); ``katalyst_extender_ready``: 1 while ``/readyz`` is 200;
* ``katalyst_extender_nodes``, ``katalyst_extender_pods``,
  ``katalyst_extender_assumed_pods``: nodes with a CNR, pods the watch shows bound,
  pods bound by this replica that the watch has not shown bound yet;
* ``katalyst_extender_endpoint_writes_total``, ``katalyst_extender_endpoint_failures``:
  writes of the leader's EndpointSlice, and its failed requests in a row (with
  ``--leader-elect``; 0 otherwise).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["ExtenderCollector", "ExtenderMetrics", "outcome_of"]

LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Seconds: kube-scheduler's extender timeout is a few seconds; a healthy filter over
5,000 nodes takes milliseconds (bench/extender.py)."""


class ExtenderMetrics:
    """The counters and the histogram."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "katalyst_extender_requests",
            "Extender calls answered, by verb and outcome",
            ["verb", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "katalyst_extender_request_duration_seconds",
            "Time to answer one extender call",
            ["verb"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.filter_nodes = Counter(
            "katalyst_extender_filter_nodes",
            "Nodes judged by filter, by result",
            ["result"],
            registry=registry,
        )

    def filtered(self, result: Mapping[str, Any]) -> None:
        """Count the nodes of one ``ExtenderFilterResult``."""
        passed = result.get("NodeNames")
        if passed is None and isinstance(result.get("Nodes"), Mapping):
            passed = result["Nodes"].get("items")
        for label, count in (
            ("passed", len(passed or ())),
            ("failed", len(result.get("FailedNodes") or {})),
            ("unresolvable", len(result.get("FailedAndUnresolvableNodes") or {})),
        ):
            if count:
                self.filter_nodes.labels(label).inc(count)


def outcome_of(payload: object) -> str:
    """``error`` for an answer whose ``Error`` is set, else ``ok``."""
    if isinstance(payload, Mapping) and payload.get("Error"):
        return "error"
    return "ok"


class ExtenderCollector(Collector):
    """The gauges, from callables read at scrape time."""

    def __init__(
        self,
        *,
        leading: Callable[[], bool],
        ready: Callable[[], bool],
        nodes: Callable[[], int],
        pods: Callable[[], int],
        assumed: Callable[[], int],
        endpoint: Callable[[], tuple[int, int]] = lambda: (0, 0),
    ) -> None:
        """``endpoint``: (writes, failures in a row) of the leader's EndpointSlice."""
        self._endpoint = endpoint
        self._leading = leading
        self._ready = ready
        self._nodes = nodes
        self._pods = pods
        self._assumed = assumed

    def collect(self) -> Iterable[Metric]:
        for name, text, read in (
            (
                "katalyst_extender_leader",
                "1 while this replica answers kube-scheduler",
                self._leading,
            ),
            ("katalyst_extender_ready", "1 while /readyz answers 200", self._ready),
            (
                "katalyst_extender_nodes",
                "Nodes with a CustomNodeResource in the watch",
                self._nodes,
            ),
            ("katalyst_extender_pods", "Pods the watch shows bound to a node", self._pods),
            (
                "katalyst_extender_assumed_pods",
                "Pods bound by this replica and not yet seen bound by the watch",
                self._assumed,
            ),
        ):
            yield GaugeMetricFamily(name, text, value=float(read()))
        writes, failures = self._endpoint()
        yield CounterMetricFamily(
            "katalyst_extender_endpoint_writes",
            "Writes of the leader's EndpointSlice (creates and updates)",
            value=float(writes),
        )
        yield GaugeMetricFamily(
            "katalyst_extender_endpoint_failures",
            "Failed requests in a row on the leader's EndpointSlice",
            value=float(failures),
        )
