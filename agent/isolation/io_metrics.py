"""Block IO isolation on ``/metrics``: every term of the last period, read at scrape time.

The reclaimed tier's limit per device and direction, what each QoS level read and
wrote (cumulative counters summed over its containers, that never go back when a
container leaves), the services' pressure against its target, the mode, whether
the host offers the throttle and the weights, the writes and the loop's duration.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.isolation.io_loop import IOLoop

__all__ = ["MODES", "IOCollector"]

MODES = ("normal", "safety", "degraded", "disabled")


class IOCollector(Collector):
    """Reads :class:`IOLoop`'s last period at scrape time.

    ``supported=False`` leaves out ``katalyst_isolation_supported`` for a process
    that serves that family from one collector for every resource (a registry
    refuses two collectors of the same name).
    """

    def __init__(self, loop: IOLoop, *, supported: bool = True) -> None:
        self._loop = loop
        self._supported = supported

    def collect(self) -> Iterable[Metric]:
        if self._supported:
            yield from self.supported_family()
        writes = CounterMetricFamily(
            "katalyst_io_cgroup_writes",
            "IO cgroup writes (changed, unchanged or failed), by setting (throttle, weight)",
            labels=["setting", "outcome"],
        )
        for (setting, outcome), count in sorted(self._loop.write_counts().items()):
            writes.add_metric([setting, outcome], float(count))
        yield writes
        labels = ["qos_level", "device", "direction"]
        nbytes = CounterMetricFamily(
            "katalyst_io_bytes", "Bytes each QoS level's containers transferred", labels=labels
        )
        nops = CounterMetricFamily(
            "katalyst_io_operations",
            "IO operations each QoS level's containers completed",
            labels=labels,
        )
        for (level, device), (rb, wb, rio, wio) in sorted(self._loop.usage().items()):
            nbytes.add_metric([level, device, "read"], float(rb))
            nbytes.add_metric([level, device, "write"], float(wb))
            nops.add_metric([level, device, "read"], float(rio))
            nops.add_metric([level, device, "write"], float(wio))
        yield nbytes
        yield nops
        period = self._loop.latest
        if period is None:
            return
        decision = period.decision
        bps = GaugeMetricFamily(
            "katalyst_io_reclaimed_limit_bytes_per_second",
            "The reclaimed pods' throttle per device (absent: not throttled)",
            labels=["device", "direction"],
        )
        iops = GaugeMetricFamily(
            "katalyst_io_reclaimed_limit_iops",
            "The reclaimed pods' operations-per-second throttle per device (absent: none)",
            labels=["device", "direction"],
        )
        for device, limit in sorted(period.limits.items()):
            for direction, value in (("read", limit.read_bps), ("write", limit.write_bps)):
                if value is not None:
                    bps.add_metric([device, direction], float(value))
            for direction, value in (("read", limit.read_iops), ("write", limit.write_iops)):
                if value is not None:
                    iops.add_metric([device, direction], float(value))
        yield bps
        yield iops
        yield GaugeMetricFamily(
            "katalyst_io_throttle_level",
            "The reclaimed throttle's level: 0 at the floors, 1 at the ceilings",
            value=decision.level,
        )
        if decision.pressure is not None:
            pressure = GaugeMetricFamily(
                "katalyst_io_pressure",
                "The services' IO pressure, PSI some avg10 (percent)",
                labels=["scope"],
            )
            pressure.add_metric([period.pressure_scope or "node"], decision.pressure)
            yield pressure
        yield GaugeMetricFamily(
            "katalyst_io_pressure_target",
            "The IO pressure the throttle steers to (percent)",
            value=decision.target,
        )
        yield GaugeMetricFamily(
            "katalyst_io_pressure_safety_threshold",
            "The IO pressure above which the throttle drops to the floor (percent)",
            value=decision.safety_threshold,
        )
        mode = GaugeMetricFamily(
            "katalyst_io_mode", "1 for the mode of the last period", labels=["mode"]
        )
        for name in MODES:
            mode.add_metric([name], 1.0 if decision.mode == name else 0.0)
        yield mode
        yield GaugeMetricFamily(
            "katalyst_io_stale_periods",
            "Consecutive periods without a pressure reading",
            value=float(decision.stale_periods),
        )
        yield GaugeMetricFamily(
            "katalyst_io_loop_duration_seconds",
            "How long the last period's reads, decision and writes took",
            value=period.duration_s,
        )

    def supported_family(self) -> Iterable[Metric]:
        """``katalyst_isolation_supported{resource="io", feature=...}``: 1 where the host
        offers the feature, 0 where it does not; absent until the loop has tried."""
        family = GaugeMetricFamily(
            "katalyst_isolation_supported",
            "Whether the host offers an isolation feature (1) or not (0)",
            labels=["resource", "feature"],
        )
        for feature, value in sorted(self._loop.supported.items()):
            if value is not None:
                family.add_metric(["io", feature], 1.0 if value else 0.0)
        yield family
