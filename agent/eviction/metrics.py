"""Prometheus series of the eviction manager, read from its counters at scrape time.

Register on the registry the agent passes down (never the global one)::

    registry.register(EvictionCollector(manager))

* ``katalyst_evictions_total{plugin,resource,outcome}``: evictions recorded, by
  what the evictor made of them (``evicted``, ``gone``, ``blocked``, ``failed``);
* ``katalyst_eviction_candidates{plugin}``: pods the plugin named in the latest
  period, before the dedupe and the rate limit (non-zero while pressure lasts);
* ``katalyst_eviction_rate_limited_total{plugin}``: candidates the rate limit held back.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.eviction.manager import EvictionManager

__all__ = ["EvictionCollector"]


class EvictionCollector(Collector):
    """The eviction manager's counters as Prometheus series."""

    def __init__(self, manager: EvictionManager) -> None:
        self._manager = manager

    def collect(self) -> Iterable[Metric]:
        counters = self._manager.counters()
        evictions = CounterMetricFamily(
            "katalyst_evictions",
            "Evictions the eviction manager decided, by plugin, resource and outcome",
            labels=["plugin", "resource", "outcome"],
        )
        for (plugin, resource, outcome), count in sorted(counters.evictions.items()):
            evictions.add_metric([plugin, resource.value, outcome.value], float(count))
        yield evictions
        candidates = GaugeMetricFamily(
            "katalyst_eviction_candidates",
            "Pods each eviction plugin named as victims in the latest period",
            labels=["plugin"],
        )
        for plugin, count in sorted(counters.candidates.items()):
            candidates.add_metric([plugin], float(count))
        yield candidates
        limited = CounterMetricFamily(
            "katalyst_eviction_rate_limited",
            "Victims the eviction rate limit held back, by plugin",
            labels=["plugin"],
        )
        for plugin, count in sorted(counters.rate_limited.items()):
            limited.add_metric([plugin], float(count))
        yield limited
