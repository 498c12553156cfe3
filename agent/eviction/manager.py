"""The eviction manager: plugins' candidates in, rate-limited, de-duplicated decisions out.

:meth:`EvictionManager.step` is synchronous and does no I/O: it shows the sample to
every plugin (each keeps its own counters), walks their candidates in plugin order,
and turns each into an :class:`EvictionDecision` unless

* the pod is already being evicted (an eviction accepted less than
  ``evicting_grace_s`` ago, or refused or failed less than ``retry_after_s`` ago),
  or another plugin named it earlier in this step;
* it is a ``system_cores`` or critical pod (the plugins never name one; this is the
  last line of defence, logged as an error);
* the rate limiter has no token left (counted per plugin; the plugin asks again
  after its next ``consecutive_samples``).

What the evictor made of a decision comes back through :meth:`EvictionManager.record`,
which keeps the per-plugin counters that :class:`agent.eviction.metrics.EvictionCollector`
exposes and decides how long the pod is left alone.

:meth:`EvictionManager.configure` takes new settings from any thread; the next step
uses them (see there for what each plugin keeps).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from agent.eviction.model import (
    EvictionDecision,
    EvictionOutcome,
    Outcome,
    Resource,
    Sample,
    never_evicted,
)
from agent.eviction.plugins import EvictionPlugin, build_plugins
from agent.eviction.ratelimit import RateLimiter
from katalyst.clock import Clock
from katalyst.config.eviction import EvictionConfig
from katalyst.qos import PodUID

__all__ = ["EvictionCounters", "EvictionManager"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EvictionCounters:
    """A consistent copy of the manager's counters, for ``/metrics``."""

    evictions: Mapping[tuple[str, Resource, Outcome], int]
    """(plugin, resource, outcome) -> evictions recorded since start."""
    candidates: Mapping[str, int]
    """plugin -> candidates it named in the latest step (before dedupe and rate limit)."""
    rate_limited: Mapping[str, int]
    """plugin -> candidates dropped for want of a rate-limit token since start."""


class EvictionManager:
    """Plugins in, decisions out; see the module docstring."""

    def __init__(
        self,
        config: EvictionConfig,
        *,
        plugins: Sequence[EvictionPlugin],
        clock: Clock,
    ) -> None:
        names = [p.name for p in plugins]
        if len(set(names)) != len(names):
            raise ValueError(f"plugin names must be unique, got {names}")
        self._config = config
        self._plugins = tuple(plugins)
        self._clock = clock
        self._limiter = RateLimiter(
            per_minute=config.rate_limit.per_minute, burst=config.rate_limit.burst, clock=clock
        )
        self._busy_until: dict[PodUID, float] = {}
        # Counters are read by /metrics from another thread: a lock keeps a scrape
        # from seeing a dict while a step changes it.
        self._lock = threading.Lock()
        self._evictions: dict[tuple[str, Resource, Outcome], int] = {}
        self._candidates = dict.fromkeys(names, 0)
        self._rate_limited = dict.fromkeys(names, 0)
        self._pending: EvictionConfig | None = None

    @property
    def plugins(self) -> tuple[EvictionPlugin, ...]:
        """The plugins, in the order they are consulted."""
        return self._plugins

    @property
    def config(self) -> EvictionConfig:
        """The settings in force (or those the next step takes up)."""
        with self._lock:
            return self._pending or self._config

    def configure(self, config: EvictionConfig) -> None:
        """Step with ``config`` from the next step on (safe from any thread).

        The plugins are rebuilt from the configuration's table
        (:func:`agent.eviction.plugins.build_plugins`): one that stays enabled keeps
        its counters where their meaning stays (a new threshold of what makes a
        sample bad restarts its count; a new ``consecutive_samples`` does not), one
        switched on starts afresh, one switched off is dropped with its counters
        (its totals on ``/metrics`` stay). The rate limiter keeps the tokens it
        holds, up to the new burst. Pods already being evicted keep the time they
        were given; new ones get the new ``evicting_grace_s`` and ``retry_after_s``.
        """
        with self._lock:
            self._pending = config

    def _take_pending(self) -> None:
        with self._lock:
            config, self._pending = self._pending, None
        if config is None:
            return
        plugins = tuple(build_plugins(config, current=self._plugins))
        names = [p.name for p in plugins]
        self._limiter.reconfigure(
            per_minute=config.rate_limit.per_minute, burst=config.rate_limit.burst
        )
        with self._lock:
            self._config = config
            self._plugins = plugins
            self._candidates = {name: self._candidates.get(name, 0) for name in names}
            for name in names:
                self._rate_limited.setdefault(name, 0)

    def evicting(self) -> Mapping[PodUID, float]:
        """Pods left alone now, each with the clock time until which it is."""
        self._expire(self._clock.monotonic())
        return MappingProxyType(dict(self._busy_until))

    def step(self, sample: Sample) -> list[EvictionDecision]:
        """Show ``sample`` to every plugin; the pods to evict now, in order."""
        self._take_pending()
        now = self._clock.monotonic()
        self._expire(now)
        decisions: list[EvictionDecision] = []
        picked: set[PodUID] = set()
        for plugin in self._plugins:
            candidates = plugin.observe(sample)
            limited = 0
            for candidate in candidates:
                pod = candidate.pod
                if pod.uid in picked or pod.uid in self._busy_until:
                    log.debug("%s: %s is already being evicted", plugin.name, pod.key)
                    continue
                why_not = never_evicted(pod)
                if why_not is not None:
                    log.error(
                        "%s named %s, a %s, as a victim; refused", plugin.name, pod.key, why_not
                    )
                    continue
                if not self._limiter.try_acquire():
                    limited += 1
                    log.info(
                        "%s: rate limit (%g a minute, burst %d) holds back evicting %s: %s",
                        plugin.name,
                        self._config.rate_limit.per_minute,
                        self._config.rate_limit.burst,
                        pod.key,
                        candidate.reason,
                    )
                    continue
                picked.add(pod.uid)
                self._busy_until[pod.uid] = now + self._config.evicting_grace_s
                log.warning("evicting %s: %s", pod.key, candidate.reason)
                decisions.append(
                    EvictionDecision(
                        pod=pod,
                        plugin=plugin.name,
                        reason=candidate.reason,
                        resource=candidate.resource,
                    )
                )
            with self._lock:
                self._candidates[plugin.name] = len(candidates)
                self._rate_limited[plugin.name] += limited
        return decisions

    def record(self, outcome: EvictionOutcome) -> None:
        """What the evictor made of a decision: counted, and the pod left alone for
        ``evicting_grace_s`` when it is leaving, ``retry_after_s`` when it is not."""
        decision = outcome.decision
        key = (decision.plugin, decision.resource, outcome.outcome)
        with self._lock:
            self._evictions[key] = self._evictions.get(key, 0) + 1
        wait = self._config.evicting_grace_s if outcome.done else self._config.retry_after_s
        self._busy_until[decision.pod.uid] = self._clock.monotonic() + wait

    def counters(self) -> EvictionCounters:
        """A copy of the counters (safe from any thread)."""
        with self._lock:
            return EvictionCounters(
                evictions=dict(self._evictions),
                candidates=dict(self._candidates),
                rate_limited=dict(self._rate_limited),
            )

    def _expire(self, now: float) -> None:
        for uid in [u for u, until in self._busy_until.items() if until <= now]:
            del self._busy_until[uid]
