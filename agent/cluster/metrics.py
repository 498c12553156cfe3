"""Metrics of the cluster node and its pod watch, read at scrape time."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.cluster.node import ClusterNode
from agent.metaserver.apiserver import PodWatcher


class ClusterCollector(Collector):
    """What an SRE needs to see that the node follows the API server."""

    def __init__(self, *, node: ClusterNode, watcher: PodWatcher) -> None:
        self._node = node
        self._watcher = watcher

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "katalyst_apiserver_synced",
            "1 once the first pod list from the API server arrived",
            value=1.0 if self._watcher.synced.is_set() else 0.0,
        )
        yield GaugeMetricFamily(
            "katalyst_apiserver_failures",
            "API server requests failed in a row (0 while the pod watch is healthy)",
            value=float(self._watcher.failures),
        )
        yield CounterMetricFamily(
            "katalyst_apiserver_pod_lists",
            "Pod lists done (the first, then one after each expired watch)",
            value=float(self._watcher.lists),
        )
        pods = GaugeMetricFamily(
            "katalyst_node_pods",
            "Pods of this node the agent follows, by state",
            labels=["state"],
        )
        states = {"enforced": 0, "pending": 0, "problem": 0}
        for pod in list(self._node.pods.values()):
            if pod.problem:
                states["problem"] += 1
            elif pod.allocations:
                states["enforced"] += 1
            else:
                states["pending"] += 1
        for state, count in states.items():
            pods.add_metric([state], float(count))
        yield pods
        yield CounterMetricFamily(
            "katalyst_admission_refusals",
            "Admissions the plugins refused for pods the kubelet runs anyway (ORM mode)",
            value=float(self._node.refusals),
        )
