"""What the advisor reads each period and what it decides: plain frozen values.

The I/O side builds an :class:`AdvisorInput` from the metrics snapshot and the
CPU plugin's pools, calls :meth:`agent.sysadvisor.Advisor.advise`, and applies
the :class:`Plan` (the reclaimed cgroup's CFS quota and cpuset, its memory limit).
Nothing here reads a file or a clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from katalyst.config.sysadvisor import IndicatorName

RegionKind = Literal["share", "dedicated"]
"""``share``: the shared pool (one region); ``dedicated``: one dedicated_cores pod."""

Mode = Literal["normal", "degraded", "safety", "disabled"]
"""How the plan was made: the PID controllers, the requests fallback, the safety
layer, or none of them (reclaim switched off by the dynamic configuration)."""

Decision = Literal["controlled", "hold", "requests"]
"""How a region's requirement was made this period (see :class:`RegionPlan`)."""

SHARE_REGION = "share"
"""The name of the shared pool's region."""

KERNEL_MIN_QUOTA_US = 1000
"""``cpu.cfs_quota_us`` below 1 ms is EINVAL (kernel/sched/core.c, ``min_cfs_quota_period``)."""
KERNEL_MAX_QUOTA_US = (1 << 44) - 1
"""The largest ``cpu.cfs_quota_us`` the kernel takes (``max_cfs_runtime``: 2**44 - 1 µs)."""
KERNEL_MIN_PERIOD_US = 1000
"""``cpu.cfs_period_us`` is at least 1 ms ..."""
KERNEL_MAX_PERIOD_US = 1_000_000
"""... and at most 1 s (``max_cfs_quota_period``)."""


_MAX_BYTES = (1 << 63) - 1
"""No memory counter of the kernel exceeds a signed 64-bit value; a larger one is garbage."""


def dedicated_region(pod_uid: str) -> str:
    """The region name of a dedicated_cores pod: ``dedicated/<pod uid>``."""
    return f"dedicated/{pod_uid}"


def _check_amount(where: str, value: float) -> None:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{where}: must be finite and >= 0, got {value!r}")


@dataclass(frozen=True, slots=True)
class RegionInput:
    """One region's size and readings for one period.

    Readings are ``None`` when unknown. A reading that is negative or not finite
    (a counter that went backwards, a division by zero upstream) is treated as
    unknown by the advisor, never as a value.
    """

    name: str
    """``share`` or ``dedicated/<pod uid>``; unique within an input."""
    kind: RegionKind
    """``share`` or ``dedicated``."""
    cpus: float
    """CPUs the region's cpuset holds now (cores)."""
    requests_cpu: float
    """Sum of the CPU requests of its containers (cores): the conservative fallback."""
    usage_cores: float | None = None
    """CPU usage over the last period (cores)."""
    sched_wait_us: float | None = None
    """Average run-queue wait per scheduling event (timeslice) over the period (µs)."""
    psi_some_avg10: float | None = None
    """CPU PSI ``some avg10`` of the region's cgroups or of the node (percent, 0-100)."""
    memory_working_set: int | None = None
    """Memory working set: usage less inactive file pages (bytes)."""
    targets: Mapping[str, float] = field(default_factory=dict)
    """Indicator -> the target that service-level overrides set for this region (the
    lowest, i.e. the most conservative, of the overrides matching its pods); the
    configured targets apply to indicators not named here."""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("RegionInput.name: must not be empty")
        for indicator, target in self.targets.items():
            if not (math.isfinite(target) and target > 0):
                raise ValueError(
                    f"RegionInput({self.name}).targets[{indicator}]: must be a positive "
                    f"number, got {target!r}"
                )
        if self.kind not in ("share", "dedicated"):
            raise ValueError(f"RegionInput.kind: must be share or dedicated, got {self.kind!r}")
        _check_amount(f"RegionInput({self.name}).cpus", self.cpus)
        _check_amount(f"RegionInput({self.name}).requests_cpu", self.requests_cpu)

    def reading(self, indicator: IndicatorName) -> float | None:
        """The raw reading behind an indicator (usage in cores for the usage ratio),
        or ``None`` when it is unknown or unusable."""
        value: float | int | None
        if indicator == "cpu_usage_ratio":
            value = self.usage_cores
        elif indicator == "cpu_sched_wait":
            value = self.sched_wait_us
        else:
            value = self.psi_some_avg10
        if value is None or not math.isfinite(value) or value < 0:
            return None
        return float(value)

    def working_set(self) -> int | None:
        """The memory working set when it is usable (known, >= 0, fits 64 bits)."""
        ws = self.memory_working_set
        if ws is None or not 0 <= ws <= _MAX_BYTES:
            return None
        return ws


@dataclass(frozen=True, slots=True)
class AdvisorInput:
    """Everything the advisor reads in one period."""

    at: float
    """When the readings were taken (monotonic seconds); recorded in the plan."""
    fresh: bool
    """Whether this period's metrics are fresh; False: stale or missing (readings ignored)."""
    allocatable_cpus: float
    """CPUs neither reserved nor dedicated: what share and reclaim may use (cores)."""
    memory_allocatable: int
    """Memory pods may use (bytes)."""
    regions: tuple[RegionInput, ...]
    """The share region (one) and a region per dedicated pod."""
    reclaimed_idle: bool = False
    """Whether the reclaimed pods run SCHED_IDLE (their parent's ``cpu.idle`` is 1):
    indicators then use their ``target_reclaimed_idle``."""

    def __post_init__(self) -> None:
        _check_amount("AdvisorInput.allocatable_cpus", self.allocatable_cpus)
        if self.memory_allocatable < 0:
            raise ValueError(
                f"AdvisorInput.memory_allocatable: must be >= 0, got {self.memory_allocatable}"
            )
        names = [r.name for r in self.regions]
        if len(set(names)) != len(names):
            raise ValueError(f"AdvisorInput.regions: duplicate region names in {names}")
        shares = [r.name for r in self.regions if r.kind == "share"]
        if len(shares) > 1:
            raise ValueError(f"AdvisorInput.regions: more than one share region: {shares}")

    @property
    def share(self) -> RegionInput | None:
        """The share region, if the input has one."""
        for region in self.regions:
            if region.kind == "share":
                return region
        return None


@dataclass(frozen=True, slots=True)
class IndicatorTrace:
    """Every term of one controller step: how one indicator of one region voted.

    ``candidate = previous_requirement * exp(output)`` and ``output = clamp(p + i + d)``.
    """

    region: str
    indicator: IndicatorName
    reading: float
    """The raw reading (usage in cores for the usage ratio; µs; percent)."""
    current: float
    """The indicator's value (for the usage ratio: ``usage / previous_requirement``)."""
    target: float
    raw_error: float
    """``ln(max(current, eps)) - ln(target)``."""
    error: float
    """``raw_error`` after the dead band (0 inside it): what the controller saw."""
    p: float
    i: float
    d: float
    output: float
    """``u``: ``p + i + d`` clamped to ``±max_log_step``."""
    previous_requirement: float
    """The region's requirement of the period before (cores)."""
    candidate: float
    """This indicator's requirement: ``previous_requirement * exp(output)`` (cores)."""
    breach: bool
    """Whether the reading crossed the safety limit (and counts for safety)."""


@dataclass(frozen=True, slots=True)
class RegionPlan:
    """What the advisor decided for one region."""

    name: str
    kind: RegionKind
    requirement: float
    """CPUs the region needs (cores), within ``[lower, upper]``."""
    previous: float
    """The requirement of the period before (for a new region: its clamped requests)."""
    lower: float
    """``region_min_cpus``."""
    upper: float
    """Share: allocatable less the reclaim floor; dedicated: its cpus (never below ``lower``)."""
    decision: Decision
    """``controlled``: the PID controllers; ``hold``: no reading this period, kept;
    ``requests``: degraded, the requests fallback."""
    decided_by: IndicatorName | None
    """The indicator whose candidate won (the most conservative), when controlled."""
    degraded: bool
    """Whether this region is in the requests fallback."""
    first_seen: bool
    """Whether this is the region's first period."""


@dataclass(frozen=True, slots=True)
class Plan:
    """The decision of one period: how much CPU and memory to lend to reclaimed pods."""

    at: float
    """The input's ``at``."""
    mode: Mode
    """``disabled`` (reclaim switched off: nothing lent), else ``safety`` (breach or
    cool-down), else ``degraded`` (share on requests), else ``normal``."""
    requirements: Mapping[str, float]
    """Requirement per region name (cores)."""
    regions: tuple[RegionPlan, ...]
    """The details behind ``requirements``, in input order."""
    share_requirement: float
    """``R(share)`` (cores); ``region_min_cpus`` when the input has no share region."""
    headroom_cpus: float
    """``H = allocatable_cpus - R(share)`` before the floor and the ramps (may be < 0)."""
    target_reclaim_cpus: float
    """``L* = max(floor, H)``: where the lend is heading (cores)."""
    reclaim_cpus: float
    """``L``: the lend after ramps, safety and degraded rules; the reclaimed cgroup's
    CFS quota in cores."""
    reclaim_pool_size: int
    """Whole CPUs for the reclaim cpuset. 0: the reclaimed cgroup shares the share
    pool's CPUs and only the quota separates them."""
    reclaim_floor_cpus: float
    """The floor in effect: ``min(reclaim_floor_cpus, allocatable_cpus)``."""
    reclaim_memory_limit: int
    """The reclaimed cgroup's memory limit (bytes)."""
    memory_estimate: int
    """Working sets of the non-reclaimed regions times ``1 + margin`` (bytes); the whole
    allocatable memory when a region's working set has never been seen."""
    breaches: tuple[str, ...]
    """``region/indicator`` of every safety breach this period."""
    cooldown_left: int
    """Periods the lend stays at the floor after this one (safety cool-down)."""
    stale_periods: int
    """Consecutive periods without fresh metrics, this one included."""
    trace: tuple[IndicatorTrace, ...]
    """Every controller step of this period, per region then per indicator."""

    def quota_us(self, period_us: int = 100_000) -> int:
        """``cpu.cfs_quota_us`` for ``reclaim_cpus`` at ``cpu.cfs_period_us = period_us``.

        At least 1000 µs, the kernel's minimum (a lend of 0 still lets reclaimed pods
        run 1 % of one CPU at the default period: the kernel has no "0"; -1 means
        unlimited). Raises ``ValueError`` for a period the kernel refuses (1 ms to 1 s).
        """
        if not KERNEL_MIN_PERIOD_US <= period_us <= KERNEL_MAX_PERIOD_US:
            raise ValueError(
                f"period_us: must be in [{KERNEL_MIN_PERIOD_US}, {KERNEL_MAX_PERIOD_US}],"
                f" got {period_us}"
            )
        quota = self.reclaim_cpus * period_us
        if quota >= KERNEL_MAX_QUOTA_US:
            return KERNEL_MAX_QUOTA_US
        return max(KERNEL_MIN_QUOTA_US, round(quota))
