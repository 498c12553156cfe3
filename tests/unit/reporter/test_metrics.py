"""ReporterCollector and status: what a scrape and /status show, read at that moment."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from agent.reporter import ReclaimSample, Reporter, ReporterCollector, ReportLoop, status
from katalyst.clock import FakeClock
from tests.unit.reporter.support import GIB, ScriptedClient, make_planner, sample


def _loop(clock: FakeClock, client: ScriptedClient) -> ReportLoop:
    return ReportLoop(
        make_planner(clock, backoff_initial_s=2.0),
        Reporter(client, node_name="n1"),
        next_sample=asyncio.Queue[ReclaimSample | None]().get,
        clock=clock,
    )


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


async def test_nothing_but_zero_counters_before_the_first_sample() -> None:
    registry = CollectorRegistry()
    registry.register(ReporterCollector(_loop(FakeClock(), ScriptedClient())))
    assert _value(registry, "katalyst_reporter_smoothed", resource="reclaimed_millicpu") is None
    assert _value(registry, "katalyst_reporter_writes_total", target="cnr", outcome="failed") == 0.0


async def test_input_smoothed_reported_writes_and_failures() -> None:
    clock = FakeClock()
    client = ScriptedClient()
    client.answer("create_cnr", 503)
    loop = _loop(clock, client)
    registry = CollectorRegistry()
    registry.register(ReporterCollector(loop))

    await loop.step(sample(3.0, 4 * GIB))
    await clock.advance(1)
    await loop.step(sample(5.0, 6 * GIB))  # a rise: smoothed stays at the minimum

    for resource, inp, smoothed in (
        ("reclaimed_millicpu", 5000.0, 3000.0),
        ("reclaimed_memory", 6.0 * GIB, 4.0 * GIB),
    ):
        assert _value(registry, "katalyst_reporter_input", resource=resource) == inp
        assert _value(registry, "katalyst_reporter_smoothed", resource=resource) == smoothed
        assert _value(registry, "katalyst_reporter_reported", resource=resource) == smoothed
    assert (
        _value(registry, "katalyst_reporter_writes_total", target="node", outcome="written") == 1.0
    )
    assert _value(registry, "katalyst_reporter_writes_total", target="cnr", outcome="failed") == 1.0
    assert _value(registry, "katalyst_reporter_consecutive_failures", target="cnr") == 1.0
    assert _value(registry, "katalyst_reporter_consecutive_failures", target="node") == 0.0

    shown = status(loop)["reporter"]
    assert isinstance(shown, dict)
    assert shown["node"] == "n1"
    targets = shown["targets"]
    assert targets["cnr"]["last_error"] == "CNR create: HTTP 503"
    assert targets["cnr"]["retry_at"] == 2.0
    assert targets["node"]["written"]["reclaimed_millicpu"] == 3000
    assert targets["node"]["written"]["zones"][0] == {
        "numa": 0,
        "socket": 0,
        "reclaimed_millicpu": 750,
        "reclaimed_memory": GIB,
    }
