"""Every term of the sysadvisor's last decision, on ``/metrics`` and ``/status``.

Users of colocation systems complain most that the reclaimable amount is opaque:
each indicator's reading, target and error, each controller's P, I and D terms,
each region's requirement, the headroom, the lend and the cgroup writes are here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.sysadvisor.loop import CFS_PERIOD_US, AdvisorLoop

MODES = ("normal", "degraded", "safety", "disabled")


class AdvisorCollector(Collector):
    """Reads :attr:`AdvisorLoop.latest` at scrape time."""

    def __init__(self, loop: AdvisorLoop) -> None:
        self._loop = loop

    def collect(self) -> Iterable[Metric]:
        writes = CounterMetricFamily(
            "katalyst_sysadvisor_cgroup_writes",
            "Writes of the plan (changed, unchanged or failed), by setting",
            labels=["setting", "outcome"],
        )
        for (setting, outcome), count in sorted(self._loop.writes.items()):
            writes.add_metric([setting, outcome], float(count))
        yield writes
        decision = self._loop.latest
        if decision is None:
            return
        plan = decision.plan
        labels = ["region", "indicator"]
        current = GaugeMetricFamily(
            "katalyst_sysadvisor_indicator", "The indicator's current value", labels=labels
        )
        target = GaugeMetricFamily(
            "katalyst_sysadvisor_indicator_target", "The indicator's target", labels=labels
        )
        error = GaugeMetricFamily(
            "katalyst_sysadvisor_indicator_error",
            "ln(current) - ln(target) after the dead band",
            labels=labels,
        )
        terms = GaugeMetricFamily(
            "katalyst_sysadvisor_pid_term",
            "The controller's P, I and D terms (log-requirement units)",
            labels=[*labels, "term"],
        )
        candidate = GaugeMetricFamily(
            "katalyst_sysadvisor_candidate_cpus",
            "The requirement this indicator asks for",
            labels=labels,
        )
        for t in plan.trace:
            key = [t.region, t.indicator]
            current.add_metric(key, t.current)
            target.add_metric(key, t.target)
            error.add_metric(key, t.error)
            for name, value in (("p", t.p), ("i", t.i), ("d", t.d)):
                terms.add_metric([*key, name], value)
            candidate.add_metric(key, t.candidate)
        yield from (current, target, error, terms, candidate)
        requirement = GaugeMetricFamily(
            "katalyst_sysadvisor_requirement_cpus",
            "CPUs the region needs, the most conservative indicator's",
            labels=["region"],
        )
        for region in plan.regions:
            requirement.add_metric([region.name], region.requirement)
        yield requirement
        for name, help_text, value in (
            (
                "headroom_cpus",
                "Allocatable CPUs less the share region's requirement",
                plan.headroom_cpus,
            ),
            (
                "reclaim_target_cpus",
                "CPU the reclaimed pods should get before ramp limits",
                plan.target_reclaim_cpus,
            ),
            ("reclaim_cpus", "CPU lent to the reclaimed pods (their quota)", plan.reclaim_cpus),
            (
                "reclaim_pool_cpus",
                "CPUs of the reclaim pool's own cpuset (0: on share)",
                float(plan.reclaim_pool_size),
            ),
            (
                "reclaim_quota_us",
                "cpu.cfs_quota_us of the reclaimed cgroup",
                float(plan.quota_us(CFS_PERIOD_US)),
            ),
            (
                "reclaim_memory_limit_bytes",
                "Memory limit of the reclaimed cgroup",
                float(plan.reclaim_memory_limit),
            ),
            (
                "loop_duration_seconds",
                "How long the last decision and its writes took",
                decision.duration_s,
            ),
        ):
            yield GaugeMetricFamily(f"katalyst_sysadvisor_{name}", help_text, value=value)
        mode = GaugeMetricFamily(
            "katalyst_sysadvisor_mode", "1 for the mode the plan was made in", labels=["mode"]
        )
        for name in MODES:
            mode.add_metric([name], 1.0 if plan.mode == name else 0.0)
        yield mode


def status(loop: AdvisorLoop) -> Mapping[str, object]:
    """The last decision as JSON-ready data (``/status``, ``katalyst status``)."""
    decision = loop.latest
    if decision is None:
        return {"sysadvisor": None}
    plan = decision.plan
    return {
        "sysadvisor": {
            "mode": plan.mode,
            "breaches": list(plan.breaches),
            "cooldown_left": plan.cooldown_left,
            "stale_periods": plan.stale_periods,
            "allocatable_cpus": decision.input.allocatable_cpus,
            "headroom_cpus": plan.headroom_cpus,
            "reclaim_target_cpus": plan.target_reclaim_cpus,
            "reclaim_cpus": plan.reclaim_cpus,
            "reclaim_pool_cpus": plan.reclaim_pool_size,
            "reclaim_quota_us": plan.quota_us(CFS_PERIOD_US),
            "reclaim_memory_limit_bytes": plan.reclaim_memory_limit,
            "reclaimed_cgroup": decision.reclaimed_cgroup,
            "regions": [
                {
                    "name": r.name,
                    "kind": r.kind,
                    "requirement_cpus": r.requirement,
                    "decision": r.decision,
                    "decided_by": r.decided_by,
                }
                for r in plan.regions
            ],
            "indicators": [
                {
                    "region": t.region,
                    "indicator": t.indicator,
                    "current": t.current,
                    "target": t.target,
                    "error": t.error,
                    "p": t.p,
                    "i": t.i,
                    "d": t.d,
                    "candidate_cpus": t.candidate,
                    "breach": t.breach,
                }
                for t in plan.trace
            ],
        }
    }
