"""Prometheus series of the reporter, read from the loop at scrape time.

Register on the registry the agent passes down (never the global one)::

    registry.register(ReporterCollector(loop))

* ``katalyst_reporter_input{resource}``: the latest sample (``reclaimed_millicpu`` in
  milli-cores, ``reclaimed_memory`` in bytes), before smoothing;
* ``katalyst_reporter_smoothed{resource}``: the window's minimum, what a write now
  would carry;
* ``katalyst_reporter_reported{resource}``: the values of the latest successful write;
* ``katalyst_reporter_writes_total{target,outcome}``: writes by target (``node``,
  ``cnr``) and outcome (``written``, ``created``, ``failed``);
* ``katalyst_reporter_consecutive_failures{target}``: failed writes in a row.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.reporter.loop import ReportLoop
from agent.reporter.model import Reclaimed, to_millicpu
from agent.reporter.reporter import WriteOutcome

__all__ = ["ReporterCollector", "status"]

RESOURCES = ("reclaimed_millicpu", "reclaimed_memory")


def _gauge(name: str, help_text: str, values: Reclaimed | None) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, help_text, labels=["resource"])
    if values is not None:
        family.add_metric([RESOURCES[0]], float(values.millicpu))
        family.add_metric([RESOURCES[1]], float(values.memory_bytes))
    return family


class ReporterCollector(Collector):
    """The reporter's state as Prometheus series."""

    def __init__(self, loop: ReportLoop) -> None:
        self._loop = loop

    def collect(self) -> Iterable[Metric]:
        planner = self._loop.planner
        latest = planner.latest
        yield _gauge(
            "katalyst_reporter_input",
            "The sysadvisor's latest lend to reclaimed pods, before smoothing",
            None
            if latest is None
            else Reclaimed(millicpu=to_millicpu(latest.cpus), memory_bytes=latest.memory_bytes),
        )
        yield _gauge(
            "katalyst_reporter_smoothed",
            "The smoothed lend (the window's minimum): what a write now would carry",
            planner.smoothed(),
        )
        yield _gauge(
            "katalyst_reporter_reported",
            "The reclaimed resources of the latest successful write",
            planner.reported,
        )
        writes = CounterMetricFamily(
            "katalyst_reporter_writes",
            "Writes of the reclaimed resources, by target and outcome",
            labels=["target", "outcome"],
        )
        counts = self._loop.reporter.writes
        for target in planner.targets:
            for outcome in WriteOutcome:
                writes.add_metric([target.value, outcome.value], float(counts[target, outcome]))
        yield writes
        failures = GaugeMetricFamily(
            "katalyst_reporter_consecutive_failures",
            "Failed writes in a row, by target",
            labels=["target"],
        )
        for target, state in planner.targets.items():
            failures.add_metric([target.value], float(state.failures))
        yield failures


def _values(values: Reclaimed | None) -> Mapping[str, object] | None:
    if values is None:
        return None
    return {
        "reclaimed_millicpu": values.millicpu,
        "reclaimed_memory": values.memory_bytes,
        "zones": [
            {
                "numa": z.numa,
                "socket": z.socket,
                "reclaimed_millicpu": z.millicpu,
                "reclaimed_memory": z.memory_bytes,
            }
            for z in values.zones
        ],
    }


def status(loop: ReportLoop) -> Mapping[str, object]:
    """The reporter's state as JSON-ready data (``/status``, ``katalyst status``)."""
    planner = loop.planner
    errors = loop.reporter.last_error
    targets: dict[str, object] = {}
    for target, state in planner.targets.items():
        targets[target.value] = {
            "written": _values(state.written),
            "written_at": state.written_at,
            "failures": state.failures,
            "retry_at": state.retry_at,
            "last_error": errors.get(target),
        }
    return {
        "reporter": {
            "node": loop.reporter.node_name,
            "smoothed": _values(planner.smoothed()),
            "targets": targets,
        }
    }
