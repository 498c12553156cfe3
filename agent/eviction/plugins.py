"""Eviction plugins: each watches one kind of pressure and names the pods to evict.

A plugin is a small class with a ``name`` and ``observe(sample) -> list[Candidate]``;
it is pure but for its own counters (how many bad samples in a row, since when a pod
is suppressed). It is shown every sample, whether or not the manager can act on its
candidates; the manager does the rate limit and the dedupe. Plugins are listed in
:func:`build_plugins`, an explicit table, which also reconfigures the running ones
(each plugin's ``configure`` keeps its counters where their meaning stays).

Victim order, in every plugin: ``reclaimed_cores`` first, then (memory pressure only,
and only where the configuration allows) ``shared_cores``, then ``dedicated_cores``;
within a level the lowest priority first, then the highest usage of the resource
under pressure, then ``namespace/name`` so that the order is stable. ``system_cores``
and critical pods are never candidates.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

from agent.eviction.model import (
    Candidate,
    PodSample,
    Resource,
    Sample,
    finite_non_negative,
    never_evicted,
)
from katalyst.config.eviction import (
    CPUSuppressionConfig,
    EvictionConfig,
    MemoryPressureConfig,
    ReclaimedOvercommitConfig,
)
from katalyst.qos import PodUID, QoSLevel

__all__ = [
    "CPUSuppressionPlugin",
    "EvictionPlugin",
    "MemoryPressurePlugin",
    "ReclaimedOvercommitPlugin",
    "build_plugins",
    "rank_victims",
]

log = logging.getLogger(__name__)

_MIB = 1024 * 1024


class EvictionPlugin(Protocol):
    """One kind of pressure."""

    @property
    def name(self) -> str:
        """The plugin's name, in reasons, logs and the ``plugin`` metric label."""
        ...

    def observe(self, sample: Sample) -> list[Candidate]:
        """Take this period's sample; the pods to evict for it, best victim first
        (empty while there is no pressure, or not for long enough)."""
        ...


def rank_victims(
    pods: Iterable[PodSample],
    *,
    levels: Sequence[QoSLevel],
    usage: Callable[[PodSample], float],
) -> list[PodSample]:
    """The pods of ``levels`` that may be evicted, best victim first: by the order of
    ``levels``, then lowest priority, then highest ``usage``, then namespace/name.
    ``system_cores`` and critical pods are left out whatever ``levels`` says."""
    order = {level: i for i, level in enumerate(levels)}
    eligible = [p for p in pods if p.level in order and never_evicted(p) is None]
    return sorted(
        eligible,
        key=lambda p: (order[p.level], p.rank_priority, -usage(p), p.namespace, p.name, p.uid),
    )


def _mib(value: float) -> str:
    return f"{value / _MIB:.0f} MiB"


def _samples(n: int) -> str:
    return "1 sample" if n == 1 else f"{n} samples in a row"


class MemoryPressurePlugin:
    """The node is short of memory: MemAvailable below the watermark, or memory PSI
    above its threshold, for ``consecutive_samples`` samples in a row.

    With a watermark breach it asks for victims until their memory covers the
    deficit (the watermark minus MemAvailable); with PSI alone, which names no
    amount, for one victim. Either way it then counts again from zero, giving the
    evictions time to take effect before it asks again (PSI avg10 lags by ten
    seconds; a terminating pod frees its memory only when it exits).

    No pod is evicted when pods' summed memory usage is below ``min_pod_usage_ratio``
    of the node's used memory: the pressure then comes from outside the pods (host
    daemons, the kernel) and evicting pods would not relieve it.
    """

    name = "memory_pressure"

    def __init__(self, config: MemoryPressureConfig) -> None:
        self._config = config
        self._bad = 0
        self._outside_pods = False
        self._levels = _memory_levels(config)

    def configure(self, config: MemoryPressureConfig) -> None:
        """New settings from the next sample on. The count of bad samples stays
        unless what makes a sample bad changed (a watermark or a PSI threshold):
        it then counts from zero, as the samples counted so far were judged by
        another rule. A shorter ``consecutive_samples`` than the count so far asks
        for victims at the next bad sample."""
        if _memory_rule(config) != _memory_rule(self._config):
            self._bad = 0
            self._outside_pods = False
        self._config = config
        self._levels = _memory_levels(config)

    @property
    def bad_samples(self) -> int:
        """Bad samples in a row so far (0 after a good one, and after asking)."""
        return self._bad

    def observe(self, sample: Sample) -> list[Candidate]:
        c = self._config
        node = sample.node
        watermark = max(c.watermark_bytes, int(c.watermark_ratio * node.memory_total_bytes))
        low = node.memory_available_bytes < watermark
        measures: list[str] = []
        if low:
            measures.append(
                f"MemAvailable {_mib(node.memory_available_bytes)} below the watermark "
                f"{_mib(watermark)}"
            )
        for kind, value, threshold in (
            ("some", node.memory_psi_some_avg10, c.psi_some_avg10),
            ("full", node.memory_psi_full_avg10, c.psi_full_avg10),
        ):
            if value is not None and threshold is not None and value > threshold:
                measures.append(f"memory PSI {kind} avg10 {value:.1f}% above {threshold:g}%")
        if not measures:
            self._bad = 0
            self._outside_pods = False
            return []
        self._bad += 1
        if self._bad < c.consecutive_samples:
            return []
        self._bad = 0
        pressure = f"{self.name}: {' and '.join(measures)} for {_samples(c.consecutive_samples)}"

        pods_usage = sum(max(0, p.memory_usage_bytes) for p in sample.pods)
        used = node.memory_used_bytes
        if pods_usage < c.min_pod_usage_ratio * used:
            # Logged once per episode: the condition persists and so would the line.
            level = logging.DEBUG if self._outside_pods else logging.WARNING
            log.log(
                level,
                "%s, but pressure not caused by pods: pods use %s of the %s in use "
                "(below %g%%); no pod evicted",
                pressure,
                _mib(pods_usage),
                _mib(used),
                c.min_pod_usage_ratio * 100,
            )
            self._outside_pods = True
            return []
        self._outside_pods = False

        deficit = watermark - node.memory_available_bytes if low else None
        ranked = rank_victims(
            (p for p in sample.pods if p.memory_usage_bytes > 0),
            levels=self._levels,
            usage=lambda p: p.memory_usage_bytes,
        )
        victims: list[PodSample] = []
        freed = 0
        for pod in ranked:
            victims.append(pod)
            freed += pod.memory_usage_bytes
            if deficit is None or freed >= deficit:
                break
        if not victims:
            log.warning("%s, but no pod may be evicted for it", pressure)
            return []
        if deficit is not None and freed < deficit:
            log.warning(
                "%s: every evictable pod together frees %s of the %s needed",
                pressure,
                _mib(freed),
                _mib(deficit),
            )
        goal = f"evicting to free {_mib(deficit)}" if deficit is not None else "evicting one pod"
        return [
            Candidate(
                pod=pod,
                plugin=self.name,
                resource=Resource.MEMORY,
                reason=f"{pressure}; {goal} (this pod uses {_mib(pod.memory_usage_bytes)})",
            )
            for pod in victims
        ]


def _memory_levels(config: MemoryPressureConfig) -> tuple[QoSLevel, ...]:
    levels = [QoSLevel.RECLAIMED_CORES]
    if config.evict_shared_cores:
        levels.append(QoSLevel.SHARED_CORES)
    if config.evict_dedicated_cores:
        levels.append(QoSLevel.DEDICATED_CORES)
    return tuple(levels)


def _memory_rule(config: MemoryPressureConfig) -> tuple[object, ...]:
    """What makes a sample bad for :class:`MemoryPressurePlugin`."""
    return (
        config.watermark_bytes,
        config.watermark_ratio,
        config.psi_some_avg10,
        config.psi_full_avg10,
    )


def _reclaimed_request(pod: PodSample, resource: Resource) -> int:
    if resource is Resource.CPU:
        return max(0, pod.reclaimed_millicpu)
    return max(0, pod.reclaimed_memory_bytes)


def _usage(resource: Resource) -> Callable[[PodSample], float]:
    if resource is Resource.CPU:
        return lambda p: p.cpu_usage_cores
    return lambda p: float(p.memory_usage_bytes)


def _amount(resource: Resource, value: float) -> str:
    return f"{value:.0f}m" if resource is Resource.CPU else _mib(value)


class ReclaimedOvercommitPlugin:
    """Reclaimed pods request more than the node lends: the sum of their
    ``reclaimed_millicpu`` (or ``reclaimed_memory``) requests above ``rate`` times
    the reclaimed allocatable the node reports, for ``consecutive_samples`` samples
    in a row. It asks for ``reclaimed_cores`` victims until the requests left fit,
    then counts again from zero. Nothing is checked until the node has reported an
    allocatable (it is ``None`` before the first report)."""

    name = "reclaimed_overcommit"

    def __init__(self, config: ReclaimedOvercommitConfig) -> None:
        self._config = config
        self._bad = dict.fromkeys(Resource, 0)

    def configure(self, config: ReclaimedOvercommitConfig) -> None:
        """New settings from the next sample on. A resource's count of
        over-committed samples starts from zero when its rate changed (the samples
        so far were over another line) and stays otherwise."""
        old = self._config
        for resource, before, after in (
            (Resource.CPU, old.cpu_rate, config.cpu_rate),
            (Resource.MEMORY, old.memory_rate, config.memory_rate),
        ):
            if before != after:
                self._bad[resource] = 0
        self._config = config

    def bad_samples(self, resource: Resource) -> int:
        """Over-committed samples of ``resource`` in a row so far."""
        return self._bad[resource]

    def observe(self, sample: Sample) -> list[Candidate]:
        c = self._config
        node = sample.node
        checks = (
            (Resource.CPU, c.cpu_rate, node.reclaimed_allocatable_millicpu),
            (Resource.MEMORY, c.memory_rate, node.reclaimed_allocatable_memory_bytes),
        )
        candidates: list[Candidate] = []
        chosen: set[PodUID] = set()
        for resource, rate, allocatable in checks:
            if rate is None or allocatable is None:
                self._bad[resource] = 0
                continue
            requested = sum(_reclaimed_request(p, resource) for p in sample.pods)
            allowed = rate * max(0, allocatable)
            if requested <= allowed:
                self._bad[resource] = 0
                continue
            self._bad[resource] += 1
            if self._bad[resource] < c.consecutive_samples:
                continue
            self._bad[resource] = 0
            excess = requested - allowed
            pressure = (
                f"{self.name}: reclaimed {resource} requests {_amount(resource, requested)} "
                f"exceed {rate:g} x the reported reclaimed allocatable "
                f"{_amount(resource, allocatable)} for {_samples(c.consecutive_samples)}; "
                f"evicting to release {_amount(resource, excess)}"
            )
            # Pods already chosen for the other resource release this one too.
            released = sum(_reclaimed_request(p, resource) for p in sample.pods if p.uid in chosen)
            ranked = rank_victims(
                (p for p in sample.pods if _reclaimed_request(p, resource) > 0),
                levels=(QoSLevel.RECLAIMED_CORES,),
                usage=_usage(resource),
            )
            for pod in ranked:
                if released >= excess:
                    break
                if pod.uid in chosen:
                    continue
                chosen.add(pod.uid)
                request = _reclaimed_request(pod, resource)
                released += request
                candidates.append(
                    Candidate(
                        pod=pod,
                        plugin=self.name,
                        resource=resource,
                        reason=f"{pressure} (this pod requests {_amount(resource, request)})",
                    )
                )
        return candidates


class CPUSuppressionPlugin:
    """A reclaimed pod gets far less CPU than it requests, for too long.

    Its suppression rate is what it requests over what it can get: the inverse of
    :attr:`PodSample.cpu_supply_ratio` (infinite when it can get nothing). As in
    Katalyst's ``cpu-pressure-suppression`` plugin, a pod whose suppression rate stays
    above its ``suppression_tolerance_rate`` for longer than ``min_duration_s`` is
    evicted; a pod without a tolerance rate is never evicted by this plugin.

    One pod per sample, the best victim among those over their duration: evicting it
    gives the reclaim pool's CPU to the others, whose supply the next samples show.
    A pod being evicted stays the best victim while it is still listed (the manager
    skips it), so the next one is only asked for once it is gone.
    """

    name = "cpu_suppression"

    def __init__(self, config: CPUSuppressionConfig) -> None:
        self._config = config
        self._since: dict[PodUID, float] = {}

    def configure(self, config: CPUSuppressionConfig) -> None:
        """New settings from the next sample on. When each pod went above its own
        ``suppression_tolerance_rate`` (a pod annotation, not a setting) stays: a
        new ``min_duration_s`` is measured from there."""
        self._config = config

    def suppressed_since(self, uid: PodUID) -> float | None:
        """When ``uid``'s suppression rate went above its tolerance (sample time)."""
        return self._since.get(uid)

    def observe(self, sample: Sample) -> list[Candidate]:
        limit = self._config.min_duration_s
        seen: set[PodUID] = set()
        over: list[tuple[PodSample, float, float]] = []
        for pod in sample.pods:
            tolerance = pod.suppression_tolerance_rate
            supply = pod.cpu_supply_ratio
            if (
                pod.level is not QoSLevel.RECLAIMED_CORES
                or never_evicted(pod) is not None
                or tolerance is None
                or supply is None
                or not finite_non_negative(supply)
            ):
                continue
            seen.add(pod.uid)
            suppression = math.inf if supply == 0 else 1.0 / supply
            if suppression <= tolerance:
                self._since.pop(pod.uid, None)
                continue
            since = self._since.setdefault(pod.uid, sample.at)
            lasted = sample.at - since
            if lasted > limit:
                over.append((pod, suppression, lasted))
        # Forget pods that left, or stopped qualifying.
        for uid in self._since.keys() - seen:
            del self._since[uid]
        if not over:
            return []
        ranked = rank_victims(
            (pod for pod, _, _ in over),
            levels=(QoSLevel.RECLAIMED_CORES,),
            usage=lambda p: p.cpu_usage_cores,
        )
        best = ranked[0]
        _, suppression, lasted = next(o for o in over if o[0].uid == best.uid)
        supply = best.cpu_supply_ratio or 0.0
        return [
            Candidate(
                pod=best,
                plugin=self.name,
                resource=Resource.CPU,
                reason=(
                    f"{self.name}: the pod gets {supply:.2f} of the CPU it requests "
                    f"(suppression rate {suppression:.2f}, above its "
                    f"suppression_tolerance_rate {best.suppression_tolerance_rate:g}) for "
                    f"{lasted:.0f} s, longer than {limit:g} s"
                ),
            )
        ]


_Builtin = TypeVar(
    "_Builtin", MemoryPressurePlugin, ReclaimedOvercommitPlugin, CPUSuppressionPlugin
)


def _reuse(current: Sequence[EvictionPlugin], kind: type[_Builtin], config: Any) -> _Builtin:
    """The plugin of ``kind`` in ``current`` reconfigured with ``config``, else a new one."""
    for plugin in current:
        if isinstance(plugin, kind):
            plugin.configure(config)
            return plugin
    return kind(config)


def build_plugins(
    config: EvictionConfig, current: Sequence[EvictionPlugin] = ()
) -> list[EvictionPlugin]:
    """The enabled plugins, in the order the manager consults them (a pod two plugins
    name is attributed to the first). A plugin of ``current`` that stays enabled is
    kept and reconfigured (its counters stay where their meaning does); one that
    is switched on starts afresh, one switched off is left out."""
    table: list[tuple[bool, Callable[[], EvictionPlugin]]] = [
        (
            config.memory_pressure.enabled,
            lambda: _reuse(current, MemoryPressurePlugin, config.memory_pressure),
        ),
        (
            config.reclaimed_overcommit.enabled,
            lambda: _reuse(current, ReclaimedOvercommitPlugin, config.reclaimed_overcommit),
        ),
        (
            config.cpu_suppression.enabled,
            lambda: _reuse(current, CPUSuppressionPlugin, config.cpu_suppression),
        ),
    ]
    return [make() for enabled, make in table if enabled]
