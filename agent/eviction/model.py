"""The eviction manager's values: what it is shown each period and what it decides.

Everything here is a frozen dataclass built by the caller from the metaserver's
views (see ``docs/eviction.md``, "Wiring"); nothing here reads a file or a socket.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass

from katalyst.qos import PodUID, PodView, QoSLevel


class Resource(enum.StrEnum):
    """The resource a plugin finds short (the ``resource`` label of the metrics)."""

    CPU = "cpu"
    MEMORY = "memory"


@dataclass(frozen=True, slots=True)
class PodSample:
    """One pod of the node as the eviction manager sees it in one period."""

    uid: PodUID
    """``metadata.uid``."""
    namespace: str
    """``metadata.namespace``."""
    name: str
    """``metadata.name``."""
    level: QoSLevel
    """Katalyst QoS level (``katalyst.kubewharf.io/qos_level``)."""
    priority: int | None
    """``spec.priority``; ``None`` ranks as 0, the priority Kubernetes gives a pod
    without a priority class when no class is the global default."""
    is_critical: bool
    """The kubelet's ``IsCriticalPod``: static, mirror or system-critical; never a victim."""
    reclaimed_millicpu: int = 0
    """Requested ``resource.katalyst.kubewharf.io/reclaimed_millicpu``, milli-cores."""
    reclaimed_memory_bytes: int = 0
    """Requested ``resource.katalyst.kubewharf.io/reclaimed_memory``, bytes."""
    cpu_usage_cores: float = 0.0
    """CPUs used on average over the last period (1.0 = one CPU busy)."""
    memory_usage_bytes: int = 0
    """Memory charged to the pod's cgroups, bytes (the working set where known)."""
    suppression_tolerance_rate: float | None = None
    """``cpu_enhancement.suppression_tolerance_rate``: ``None`` exempts the pod from
    CPU-suppression eviction."""
    cpu_supply_ratio: float | None = None
    """CPU the reclaimed pod can get now (its share of the reclaim pool) over the
    CPU it requests, >= 0; ``None`` when unknown (not reclaimed, no request, no
    reading yet). See :func:`reclaim_pool_supply_ratio`."""

    @property
    def key(self) -> str:
        """``namespace/name``, as logs and reasons show a pod."""
        return f"{self.namespace}/{self.name}"

    @property
    def rank_priority(self) -> int:
        """:attr:`priority`, with ``None`` as 0."""
        return 0 if self.priority is None else self.priority

    @classmethod
    def from_view(
        cls,
        view: PodView,
        *,
        cpu_usage_cores: float,
        memory_usage_bytes: int,
        cpu_supply_ratio: float | None,
    ) -> PodSample:
        """The sample of a pod the metaserver knows, with this period's readings."""
        return cls(
            uid=view.uid,
            namespace=view.namespace,
            name=view.name,
            level=view.level,
            priority=view.priority,
            is_critical=view.is_critical,
            reclaimed_millicpu=view.reclaimed_millicpu,
            reclaimed_memory_bytes=view.reclaimed_memory,
            cpu_usage_cores=cpu_usage_cores,
            memory_usage_bytes=memory_usage_bytes,
            suppression_tolerance_rate=view.enhancements.cpu.suppression_tolerance_rate,
            cpu_supply_ratio=cpu_supply_ratio,
        )


def reclaim_pool_supply_ratio(pool_cores: float, pods: Iterable[PodView]) -> float | None:
    """The supply ratio Katalyst's suppression plugin computes for every reclaimed
    pod: the CPUs the reclaim pool has (its cpuset size, or the quota of the
    reclaimed cgroup) over the sum of the reclaimed pods' ``reclaimed_millicpu``
    requests. ``None`` when no reclaimed pod requests CPU."""
    requested = sum(p.reclaimed_millicpu for p in pods if p.level is QoSLevel.RECLAIMED_CORES)
    if requested <= 0:
        return None
    return max(0.0, pool_cores) * 1000.0 / requested


@dataclass(frozen=True, slots=True)
class NodeSample:
    """Node-wide readings of one period."""

    memory_total_bytes: int
    """``MemTotal`` of ``/proc/meminfo``."""
    memory_available_bytes: int
    """``MemAvailable`` of ``/proc/meminfo``: free plus reclaimable page cache and
    slab, the kernel's estimate of what can be allocated without swapping."""
    memory_psi_some_avg10: float | None = None
    """``/proc/pressure/memory`` ``some avg10``, percent; ``None`` without PSI."""
    memory_psi_full_avg10: float | None = None
    """``/proc/pressure/memory`` ``full avg10``, percent; ``None`` without PSI."""
    reclaimed_allocatable_millicpu: int | None = None
    """Reclaimed CPU the node reports to the scheduler (CNR), milli-cores; ``None``
    until the reporter has reported."""
    reclaimed_allocatable_memory_bytes: int | None = None
    """Reclaimed memory the node reports to the scheduler (CNR), bytes; ``None``
    until the reporter has reported."""

    @property
    def memory_used_bytes(self) -> int:
        """``MemTotal - MemAvailable``: memory that cannot be had back without freeing it."""
        return max(0, self.memory_total_bytes - self.memory_available_bytes)


@dataclass(frozen=True, slots=True)
class Sample:
    """Everything one period shows the eviction manager."""

    at: float
    """When it was read: monotonic seconds (the clock of the loops)."""
    node: NodeSample
    pods: tuple[PodSample, ...]
    """Every pod of the node, whatever its level (their usage counts towards the
    "is the pressure caused by pods" rule)."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """A pod a plugin asks to evict, with why."""

    pod: PodSample
    plugin: str
    resource: Resource
    reason: str
    """Human text naming the plugin, the measured value and the threshold."""


@dataclass(frozen=True, slots=True)
class EvictionDecision:
    """A pod the manager decided to evict (the rate limit and dedupe passed)."""

    pod: PodSample
    plugin: str
    reason: str
    """Human text naming the plugin, the measured value and the threshold; it is the
    message of the Kubernetes Event."""
    resource: Resource


class Outcome(enum.StrEnum):
    """What became of an eviction (the ``outcome`` label of the metrics)."""

    EVICTED = "evicted"
    """The API server accepted it (201), or the local pod was stopped."""
    GONE = "gone"
    """The pod was already gone (404, or 409 on its UID precondition): nothing to do."""
    BLOCKED = "blocked"
    """Refused for now (429: a PodDisruptionBudget); retried after ``retry_after_s``."""
    FAILED = "failed"
    """Any other answer, or no answer; retried after ``retry_after_s``."""


@dataclass(frozen=True, slots=True)
class EvictionOutcome:
    """What an :class:`~agent.eviction.evictor.Evictor` did with a decision."""

    decision: EvictionDecision
    outcome: Outcome
    detail: str = ""
    """The status code, the server's message or the error, for logs."""

    @property
    def done(self) -> bool:
        """The pod is leaving (or left): not to be evicted again."""
        return self.outcome in (Outcome.EVICTED, Outcome.GONE)


def never_evicted(pod: PodSample) -> str | None:
    """Why ``pod`` may never be a victim, or ``None``: ``system_cores`` are the node's
    own daemons and critical pods are what the kubelet itself never evicts."""
    if pod.level is QoSLevel.SYSTEM_CORES:
        return "system_cores"
    if pod.is_critical:
        return "critical pod"
    return None


def finite_non_negative(value: float) -> bool:
    """Whether ``value`` is a usable reading (not NaN, not infinite, not negative)."""
    return math.isfinite(value) and value >= 0
