"""What the dynamic configuration did, for ``/status`` and ``/metrics`` (any source:
the standalone folder or the node's CustomNodeConfig)."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.dynconfig.settings import DynamicSettings, Layer

__all__ = ["DynamicConfigCollector", "DynamicConfigRecord"]


class DynamicConfigRecord:
    """The layers in force, when they were applied, what was refused last.

    Written by the source's loop, read by ``/status`` and scrapes from other
    threads: a lock keeps a reader from seeing half an update."""

    def __init__(self, source: str, settings: DynamicSettings) -> None:
        self._lock = threading.Lock()
        self.source = source
        """Where the configs come from (``folder /etc/katalyst/dynamic``)."""
        self.origin = "base"
        """What the settings in force came from: ``base`` (the agent's own file),
        ``checkpoint`` (restored at start), or the source."""
        self.layers: tuple[Layer, ...] = ()
        self.settings = settings
        self.applied_total = 0
        self.refusals_total = 0
        self.last_applied_at: float | None = None
        self.last_changes: tuple[str, ...] = ()
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.expired: tuple[str, ...] = ()
        self.fetches_total = 0
        self.pending: str | None = None

    def applied(
        self,
        layers: Sequence[Layer],
        settings: DynamicSettings,
        changes: Sequence[str],
        *,
        at: float,
        origin: str,
    ) -> None:
        """A new set of layers is in force (``changes``: what it changed)."""
        with self._lock:
            self.layers = tuple(layers)
            self.settings = settings
            self.origin = origin
            self.applied_total += 1
            self.last_applied_at = at
            self.last_changes = tuple(changes)

    def refused(self, problems: Sequence[str], *, at: float, counted: int | None = None) -> None:
        """Configs were refused; the layers in force stay. ``problems`` become the last
        error; ``counted`` of them are new refusals (all when None)."""
        with self._lock:
            self.refusals_total += len(problems) if counted is None else counted
            self.last_error = "; ".join(problems)
            self.last_error_at = at

    def fetched(self) -> None:
        """A target config was read from the API server."""
        with self._lock:
            self.fetches_total += 1

    def note_pending(self, why: str | None) -> None:
        """Why the source's latest content is not applied yet (None: nothing waits)."""
        with self._lock:
            self.pending = why

    def clear_error(self) -> None:
        """The source's content is accepted as a whole again: no refusal stands."""
        with self._lock:
            self.last_error = None
            self.last_error_at = None

    def note_expired(self, keys: Sequence[str]) -> None:
        """The named configs naming this node whose ``lastDuration`` has passed."""
        with self._lock:
            self.expired = tuple(keys)

    def status(self) -> Mapping[str, object]:
        """The ``dynamic_config`` part of ``/status`` (JSON-ready)."""
        with self._lock:
            return {
                "dynamic_config": {
                    "source": self.source,
                    "origin": self.origin,
                    "hash": self.settings.hash,
                    "reclaim_enabled": self.settings.reclaim_enabled,
                    "layers": [
                        {"name": x.name, "level": x.level, "hash": x.hash, "source": x.source}
                        for x in self.layers
                    ],
                    "expired": list(self.expired),
                    "applied_total": self.applied_total,
                    "refusals_total": self.refusals_total,
                    "last_applied_at": self.last_applied_at,
                    "last_changes": list(self.last_changes),
                    "last_error": self.last_error,
                    "last_error_at": self.last_error_at,
                    "pending": self.pending,
                    "fetches_total": self.fetches_total,
                }
            }


class DynamicConfigCollector(Collector):
    """``katalyst_dynamic_config_*``, read from a :class:`DynamicConfigRecord` at scrape time."""

    def __init__(self, record: DynamicConfigRecord) -> None:
        self._record = record

    def collect(self) -> Iterable[Metric]:
        status = self._record.status()["dynamic_config"]
        assert isinstance(status, dict)
        applied = CounterMetricFamily(
            "katalyst_dynamic_config_applied",
            "New sets of dynamic config layers applied to the running loops",
        )
        applied.add_metric([], float(status["applied_total"]))
        refused = CounterMetricFamily(
            "katalyst_dynamic_config_refusals",
            "Dynamic configs refused (invalid, conflicting, or not applicable); the last "
            "good settings stayed",
        )
        refused.add_metric([], float(status["refusals_total"]))
        info = GaugeMetricFamily(
            "katalyst_dynamic_config_info",
            "1 for the settings in force: their hash, what they came from, the layers",
            labels=["hash", "origin", "layers"],
        )
        info.add_metric(
            [
                str(status["hash"]),
                str(status["origin"]),
                ",".join(f"{x['name']}@{x['hash']}" for x in status["layers"]),
            ],
            1.0,
        )
        reclaim = GaugeMetricFamily(
            "katalyst_dynamic_config_reclaim_enabled",
            "1 while reclaimed pods may be lent capacity (reclaim.enabled)",
        )
        reclaim.add_metric([], 1.0 if status["reclaim_enabled"] else 0.0)
        fetches = CounterMetricFamily(
            "katalyst_dynamic_config_fetches",
            "Target configs read from the API server (only those whose hash changed)",
        )
        fetches.add_metric([], float(status["fetches_total"]))
        yield from (applied, refused, info, reclaim, fetches)
        if status["last_applied_at"] is not None:
            yield GaugeMetricFamily(
                "katalyst_dynamic_config_last_applied_timestamp_seconds",
                "When the layers in force were applied (Unix time)",
                value=float(status["last_applied_at"]),
            )
