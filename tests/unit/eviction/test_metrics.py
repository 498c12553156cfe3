"""EvictionCollector on a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from agent.eviction import (
    Candidate,
    EvictionCollector,
    EvictionConfig,
    EvictionManager,
    EvictionOutcome,
    Outcome,
    Resource,
    Sample,
)
from katalyst.clock import FakeClock
from tests.unit.eviction.samples import node, pod, sample


class TwoVictims:
    name = "memory_pressure"

    def observe(self, sample: Sample) -> list[Candidate]:
        return [
            Candidate(pod=pod(n), plugin=self.name, resource=Resource.MEMORY, reason="r")
            for n in ("a", "b")
        ]


class Quiet:
    name = "cpu_suppression"

    def observe(self, sample: Sample) -> list[Candidate]:
        return []


def test_series_come_from_the_managers_counters_at_scrape_time() -> None:
    config = EvictionConfig.from_mapping({"rate_limit": {"burst": 1}})
    manager = EvictionManager(config, plugins=[TwoVictims(), Quiet()], clock=FakeClock())
    registry = CollectorRegistry()
    registry.register(EvictionCollector(manager))

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    # Before any step: the candidates series exist at 0, no evictions yet.
    assert value("katalyst_eviction_candidates", plugin="memory_pressure") == 0.0
    assert "katalyst_evictions_total{" not in generate_latest(registry).decode()

    [decision] = manager.step(sample(0, node()))
    manager.record(EvictionOutcome(decision, Outcome.BLOCKED))
    labels = {"plugin": "memory_pressure", "resource": "memory"}
    assert value("katalyst_evictions_total", outcome="blocked", **labels) == 1.0
    assert value("katalyst_evictions_total", outcome="evicted", **labels) is None
    assert value("katalyst_eviction_candidates", plugin="memory_pressure") == 2.0
    assert value("katalyst_eviction_candidates", plugin="cpu_suppression") == 0.0
    assert value("katalyst_eviction_rate_limited_total", plugin="memory_pressure") == 1.0
    assert value("katalyst_eviction_rate_limited_total", plugin="cpu_suppression") == 0.0
