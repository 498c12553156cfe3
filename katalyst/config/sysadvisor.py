"""The sysadvisor's settings: targets, dead bands, gains, ramps and safety margins.

Frozen, nested dataclasses, one docstring per field with its unit and default.
:meth:`AdvisorConfig.from_mapping` builds one from the ``sysadvisor`` section of a
configuration (a YAML file, later the dynamic configuration) and validates it; a
bad value raises :class:`agent.errors.ConfigError` (a ``ValueError``) whose message
names the field and the rule, for example
``sysadvisor.indicators.cpu_usage_ratio.target: must be > 0``. Missing keys keep
their defaults; unknown keys are an error, so that a typo is never silently ignored.

Why the defaults are what they are is in ``docs/headroom.md``.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from katalyst.settings import ConfigError

IndicatorName = Literal["cpu_usage_ratio", "cpu_sched_wait", "cpu_psi_some_avg10"]
"""The CPU indicators the advisor controls on."""

INDICATORS: tuple[IndicatorName, ...] = ("cpu_usage_ratio", "cpu_sched_wait", "cpu_psi_some_avg10")
"""Every indicator, in the order the advisor evaluates (and traces) them."""

MAX_GAIN = 1000.0
"""The largest gain accepted: a larger one only turns every error into a full step."""
MAX_LOG_STEP = 10.0
"""The largest ``max_log_step`` accepted: e**10 is a 22026-fold change in one period."""

# The control period's range: below 10 ms the kernel's counters barely move between
# two readings; above an hour the loop no longer controls anything.
MIN_PERIOD_S = 0.01
MAX_PERIOD_S = 3600.0

ROOT = "sysadvisor"
"""The name of the section, the first part of every field path in an error message."""


@dataclass(frozen=True, slots=True)
class Gains:
    """The tunings of one PID controller (simple-pid's Kp, Ki, Kd)."""

    kp: float = 1.0
    """Proportional gain, per unit of log-error. Default 1.0."""
    ki: float = 0.0
    """Integral gain, per unit of log-error and second. Default 0.0 (see docs/headroom.md:
    the multiplicative update already integrates the controller's output)."""
    kd: float = 0.0
    """Derivative gain, log-error times seconds. Default 0.0."""

    def check(self, where: str) -> None:
        """Raise :class:`ConfigError` naming the first field that breaks a rule."""
        for name in ("kp", "ki", "kd"):
            _in_range(f"{where}.{name}", getattr(self, name), 0.0, MAX_GAIN)


@dataclass(frozen=True, slots=True)
class IndicatorConfig:
    """One indicator: its target, dead band, gains and hard (safety) limit.

    The error is ``ln(current) - ln(target)``; positive means the region is hotter
    than its target and needs more CPU (the lend shrinks).
    """

    target: float
    """The value the controller steers the indicator to (the indicator's unit). Must be > 0."""
    enabled: bool = True
    """Whether the indicator takes part in the decision. Default true."""
    dead_band_up: float = 0.05
    """Log-errors in ``[0, dead_band_up]`` count as 0 (about +5 %). Default 0.05."""
    dead_band_down: float = 0.05
    """Log-errors in ``[-dead_band_down, 0]`` count as 0 (about -5 %). Default 0.05."""
    gains_up: Gains = field(default_factory=Gains)
    """Gains used while the error is positive (indicator above target: grow the
    requirement). Default kp=1, ki=0, kd=0."""
    gains_down: Gains = field(default_factory=lambda: Gains(kp=0.5))
    """Gains used while the error is negative (indicator below target: shrink the
    requirement, lend more). Default kp=0.5, ki=0, kd=0: giving CPU away is slower
    than taking it back."""
    hard_margin: float = 0.5
    """Safety: a reading above ``target * (1 + hard_margin)`` drops the lend to the
    floor at once (ratio). Default 0.5."""
    target_reclaimed_idle: float = 0.0
    """The target while the reclaimed pods run SCHED_IDLE (``cpu.idle``: a waking
    task of the region preempts them at once, so less slack protects it); 0: the
    same as ``target``. Default 0, except 0.75 for ``cpu_usage_ratio``."""

    def check(self, where: str) -> None:
        """Raise :class:`ConfigError` naming the first field that breaks a rule."""
        _positive(f"{where}.target", self.target)
        _non_negative(f"{where}.target_reclaimed_idle", self.target_reclaimed_idle)
        _non_negative(f"{where}.dead_band_up", self.dead_band_up)
        _non_negative(f"{where}.dead_band_down", self.dead_band_down)
        self.gains_up.check(f"{where}.gains_up")
        self.gains_down.check(f"{where}.gains_down")
        _positive(f"{where}.hard_margin", self.hard_margin)

    @property
    def hard_limit(self) -> float:
        """The reading above which the safety layer acts: ``target * (1 + hard_margin)``."""
        return self.target * (1.0 + self.hard_margin)

    def target_for(self, *, reclaimed_idle: bool) -> float:
        """The target in force: ``target_reclaimed_idle`` (when set) while the
        reclaimed pods run SCHED_IDLE, else ``target``."""
        if reclaimed_idle and self.target_reclaimed_idle > 0:
            return self.target_reclaimed_idle
        return self.target


@dataclass(frozen=True, slots=True)
class IndicatorsConfig:
    """The three CPU indicators."""

    cpu_usage_ratio: IndicatorConfig = field(
        default_factory=lambda: IndicatorConfig(
            target=0.6, hard_margin=0.5, target_reclaimed_idle=0.75
        )
    )
    """CPU usage over the region's requirement (ratio). Default target 0.6, safety at 0.9;
    0.75 (safety at 1.125) while the reclaimed pods run SCHED_IDLE."""
    cpu_sched_wait: IndicatorConfig = field(
        default_factory=lambda: IndicatorConfig(
            target=400.0,
            dead_band_up=0.1,
            dead_band_down=0.1,
            gains_up=Gains(kp=0.5),
            gains_down=Gains(kp=0.1),
            hard_margin=4.0,
        )
    )
    """Average run-queue wait per scheduling event over the period (µs). Default
    target 400 µs, dead band ±0.1, kp 0.5 up and 0.1 down, safety at 2000 µs."""
    cpu_psi_some_avg10: IndicatorConfig = field(
        default_factory=lambda: IndicatorConfig(
            target=10.0,
            dead_band_up=0.1,
            dead_band_down=0.1,
            gains_up=Gains(kp=0.5),
            gains_down=Gains(kp=0.1),
            hard_margin=2.0,
        )
    )
    """CPU pressure, ``some avg10`` (percent, 0-100). Default target 10 %, dead band ±0.1,
    kp 0.5 up and 0.1 down, safety at 30 %."""

    def check(self, where: str) -> None:
        """Raise :class:`ConfigError` naming the first field that breaks a rule."""
        for name in INDICATORS:
            self.get(name).check(f"{where}.{name}")
        if not any(self.get(name).enabled for name in INDICATORS):
            raise ConfigError(f"{where}: at least one indicator must be enabled")

    def get(self, name: IndicatorName) -> IndicatorConfig:
        """The settings of one indicator by name."""
        value: IndicatorConfig = getattr(self, name)
        return value


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """Ramps, floors and the periods after which the advisor changes mode."""

    ramp_up_cpus_per_period: float = 0.5
    """The most the lend grows in one period (cores). Shrinking is never limited. Default 0.5."""
    reclaim_floor_cpus: float = 0.0
    """The lend never goes below this (cores); capped at the allocatable CPUs. Default 0.0."""
    region_min_cpus: float = 0.25
    """The smallest requirement of a region (cores); must be > 0, the update is
    multiplicative. Default 0.25."""
    max_log_step: float = 1.0
    """Bound on ``|u|``, the controller output: a requirement changes by at most a factor
    ``e**max_log_step`` per period. Default 1.0 (a factor of about 2.7)."""
    degraded_after_periods: int = 3
    """After this many consecutive periods without fresh readings, fall back to requests
    (periods). Default 3."""
    safety_cooldown_periods: int = 10
    """After the last safety breach the lend stays at the floor this many more periods
    (periods). Default 10."""

    def check(self, where: str) -> None:
        """Raise :class:`ConfigError` naming the first field that breaks a rule."""
        _positive(f"{where}.ramp_up_cpus_per_period", self.ramp_up_cpus_per_period)
        _non_negative(f"{where}.reclaim_floor_cpus", self.reclaim_floor_cpus)
        _positive(f"{where}.region_min_cpus", self.region_min_cpus)
        _positive(f"{where}.max_log_step", self.max_log_step)
        if self.max_log_step > MAX_LOG_STEP:
            raise ConfigError(f"{where}.max_log_step: must be <= {MAX_LOG_STEP:g}")
        if self.degraded_after_periods < 1:
            raise ConfigError(f"{where}.degraded_after_periods: must be >= 1")
        if self.safety_cooldown_periods < 0:
            raise ConfigError(f"{where}.safety_cooldown_periods: must be >= 0")


@dataclass(frozen=True, slots=True)
class MemoryConfig:
    """How the memory lent to reclaimed pods is sized."""

    reserve_bytes: int = 512 * 1024 * 1024
    """Kept free beyond the estimate, for page cache and bursts (bytes). Default 512 MiB."""
    working_set_margin: float = 0.1
    """Working sets are counted ``(1 + working_set_margin)`` times (ratio). Default 0.1."""
    reclaim_floor_bytes: int = 0
    """The memory limit of reclaimed pods never goes below this (bytes); capped at the
    allocatable memory. Default 0."""

    def check(self, where: str) -> None:
        """Raise :class:`ConfigError` naming the first field that breaks a rule."""
        if self.reserve_bytes < 0:
            raise ConfigError(f"{where}.reserve_bytes: must be >= 0")
        _in_range(f"{where}.working_set_margin", self.working_set_margin, 0.0, 10.0)
        if self.reclaim_floor_bytes < 0:
            raise ConfigError(f"{where}.reclaim_floor_bytes: must be >= 0")


@dataclass(frozen=True, slots=True)
class AdvisorConfig:
    """Everything the sysadvisor's decision core needs."""

    period_s: float = 1.0
    """The control period (seconds, 0.01 to 3600): the ``dt`` of every PID step. Default 1.0."""
    indicators: IndicatorsConfig = field(default_factory=IndicatorsConfig)
    """Per-indicator targets, dead bands, gains and safety margins."""
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    """Ramps, floors, degraded mode and safety cool-down."""
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    """The memory lent to reclaimed pods."""

    def check(self, where: str = ROOT) -> None:
        """Raise :class:`ConfigError` naming the first field that breaks a rule."""
        _in_range(f"{where}.period_s", self.period_s, MIN_PERIOD_S, MAX_PERIOD_S)
        self.indicators.check(f"{where}.indicators")
        self.limits.check(f"{where}.limits")
        self.memory.check(f"{where}.memory")

    @classmethod
    def from_mapping(cls, m: Mapping[str, object], *, where: str = ROOT) -> AdvisorConfig:
        """Build and validate a config from the ``sysadvisor`` section of a config file.

        Nested mappings mirror the dataclasses (``indicators.cpu_usage_ratio.gains_up.kp``);
        omitted keys keep their defaults. Raises :class:`ConfigError` (a ``ValueError``)
        naming the field and the rule it broke.
        """
        config = _build(cls, cls(), m, where)
        assert isinstance(config, AdvisorConfig)
        config.check(where)
        return config


_HINTS: dict[type[object], dict[str, object]] = {}


def _hints(cls: type[object]) -> dict[str, object]:
    """The fields' resolved types, once per class (``get_type_hints`` costs about
    1 ms a class, and a controller validates thousands of configs)."""
    found = _HINTS.get(cls)
    if found is None:
        hints = typing.get_type_hints(cls)
        found = {f.name: hints[f.name] for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        _HINTS[cls] = found
    return found


def _build(cls: type[object], default: object, raw: object, where: str) -> object:
    """``default`` with the values of ``raw`` (a mapping) put in, converted and type-checked."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    hints = _hints(cls)
    names = set(hints)
    unknown = sorted(str(k) for k in raw if k not in names)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown setting")
    changes: dict[str, object] = {}
    for key, value in raw.items():
        name = str(key)
        path = f"{where}.{name}"
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            assert isinstance(kind, type)
            changes[name] = _build(kind, getattr(default, name), value, path)
        else:
            changes[name] = _scalar(kind, value, path)
    return dataclasses.replace(default, **changes)  # type: ignore[type-var]


def _scalar(kind: object, value: object, where: str) -> object:
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {type(value).__name__}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {type(value).__name__}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {type(value).__name__}")
        try:
            number = float(value)
        except OverflowError:  # an integer too large for a float
            raise ConfigError(f"{where}: must be finite") from None
        if not math.isfinite(number):
            raise ConfigError(f"{where}: must be finite")
        return number
    raise ConfigError(f"{where}: unsupported setting type")  # pragma: no cover - fields are typed


def _finite(where: str, value: float) -> None:
    if not math.isfinite(value):
        raise ConfigError(f"{where}: must be finite")


def _positive(where: str, value: float) -> None:
    _finite(where, value)
    if value <= 0:
        raise ConfigError(f"{where}: must be > 0")


def _non_negative(where: str, value: float) -> None:
    _finite(where, value)
    if value < 0:
        raise ConfigError(f"{where}: must be >= 0")


def _in_range(where: str, value: float, low: float, high: float) -> None:
    _finite(where, value)
    if not low <= value <= high:
        raise ConfigError(f"{where}: must be in [{low:g}, {high:g}]")
