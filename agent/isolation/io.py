r"""The decision core of block IO isolation: the services' IO pressure in, the
reclaimed pods' throttle out.

:class:`ThrottleController` reads no file and no clock and is deterministic: the
same sequence of :class:`IOSignal`\ s gives the same sequence of
:class:`ThrottleDecision`\ s. One call of :meth:`ThrottleController.step` is one
control period. :mod:`agent.isolation.io_loop` measures, decides and writes.

The state is a *level* ``L`` in [0, 1]; each throttled direction ``d`` (read or
write, bytes or operations per second) gets the limit
``min_d + L * (max_d - min_d)`` on every data device, or none where ``max_d`` is
null and ``L`` is 1 (see :class:`katalyst.config.io.IOConfig`). Each period,
with ``p`` the services' pressure (PSI ``some avg10``, percent), ``T`` the target,
``e = ln(max(p, eps) / T)`` the log error:

1. **Safety** (Heracles): ``p > T * safety_margin`` sets ``L = 0`` at once and
   holds it ``cooldown_periods`` more periods after the last breach; then the
   level ramps up again from the floor.
2. **Tighten** at once when ``e > dead_band``: ``L = B * exp(-cut_gain * e)``, a cut
   proportional to the log error, where ``B`` is the smaller of ``L`` and the
   level the reclaimed pods actually use (:attr:`IOSignal.usage_level`, when
   known): a ceiling far above what they do would otherwise take several periods
   of cuts before the limit bit at all.
3. **Relax** slowly when ``e < -dead_band``: ``L = min(1, L + step_up_ratio)``.
4. **Hold** inside the dead band.
5. **Degraded**: a period without a pressure reading holds ``L`` (it never
   relaxes on no information); ``stale_periods`` of them in a row set ``L = 0``
   until a reading comes back. The throttle is never lifted for want of data.

The level starts at 0, as the sysadvisor's lend starts at its floor: a
restarted agent ramps the batch back up in ``1 / step_up_ratio`` quiet periods.
PSI ``avg10`` is a 10 s moving average: it lags a change of load by seconds, which
is why cuts act at once and in proportion while relaxing is slow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from katalyst.cgroup import IOLimit
from katalyst.config.io import DIRECTIONS, IOConfig

__all__ = [
    "EPS",
    "IOSignal",
    "Mode",
    "ThrottleController",
    "ThrottleDecision",
    "limit_at",
]

EPS = 1e-3
"""The smallest pressure (percent) taken into the logarithm: an idle node reads 0."""
_SNAP = 1e-9
"""Levels this close to 0 or 1 are 0 or 1 (ten steps of 0.1 add up to 0.9999999999999999)."""

Mode = Literal["normal", "safety", "degraded", "disabled"]
"""``normal``: under control; ``safety``: at the floor after a breach (and its
cool-down); ``degraded``: at the floor for want of pressure readings; ``disabled``:
the loop is switched off and writes nothing."""

Action = Literal["tighten", "relax", "hold", "safety", "cooldown", "stale", "degraded"]
"""What the period did: the reason the status and the metrics show."""


@dataclass(frozen=True, slots=True)
class IOSignal:
    """One period's input."""

    pressure: float | None
    """The services' IO pressure: PSI ``some avg10``, percent (0-100); None when it
    could not be read this period."""
    usage_level: float | None = None
    """Where the reclaimed pods' measured rate over the last period sits between
    floor (0) and ceiling (1), the highest of any device and direction that has a
    ceiling; None when unknown (the first period, no ceiling configured)."""


@dataclass(frozen=True, slots=True)
class ThrottleDecision:
    """One period's decision and why."""

    level: float
    """The throttle level in [0, 1] (0: every direction at its floor)."""
    limit: IOLimit
    """The reclaimed tier's limit per data device."""
    mode: Mode
    action: Action
    pressure: float | None
    """The reading decided on (percent), None when there was none."""
    target: float
    """:attr:`IOConfig.pressure_target` (percent)."""
    safety_threshold: float
    """The pressure above which the safety drop acts (percent)."""
    error: float | None
    """``ln(pressure / target)``, None without a reading."""
    cooldown_left: int
    """Periods the floor is still held after a safety breach."""
    stale_periods: int
    """Consecutive periods without a pressure reading."""


def limit_at(config: IOConfig, level: float) -> IOLimit:
    """The limit of every throttled direction at ``level`` (0: floors, 1: ceilings)."""
    values: dict[str, int | None] = {}
    for direction in DIRECTIONS:
        low = config.floor(direction)
        high = config.ceiling(direction)
        if low is None:
            values[direction] = None
        elif high is None:
            # No ceiling: unthrottled once fully relaxed, the floor until then.
            values[direction] = None if level >= 1.0 else low
        else:
            values[direction] = round(low + level * (high - low))
    return IOLimit(**values)


def _clamp_level(level: float) -> float:
    if level <= _SNAP:
        return 0.0
    if level >= 1.0 - _SNAP:
        return 1.0
    return level


class ThrottleController:
    """Turns the services' IO pressure into the reclaimed pods' throttle, period by period.

    Not thread-safe: one loop owns it and calls :meth:`step` once per period.
    """

    def __init__(self, config: IOConfig) -> None:
        self._config = config
        self._level = 0.0
        self._cooldown = 0
        self._stale = 0

    @property
    def config(self) -> IOConfig:
        """The settings in force."""
        return self._config

    @property
    def level(self) -> float:
        """The current level in [0, 1]."""
        return self._level

    def reconfigure(self, config: IOConfig) -> None:
        """New settings from the next period on; the level and counters are kept (the
        cool-down is cut to the new ``cooldown_periods`` if that is shorter)."""
        self._config = config
        self._cooldown = min(self._cooldown, config.cooldown_periods)

    def reset(self) -> None:
        """Back to the start: the floor, no cool-down, no stale periods."""
        self._level = 0.0
        self._cooldown = 0
        self._stale = 0

    def step(self, signal: IOSignal) -> ThrottleDecision:
        """One control period; see the module docstring for the rules."""
        config = self._config
        target = config.pressure_target
        threshold = target * config.safety_margin
        pressure = signal.pressure
        if pressure is not None and not math.isfinite(pressure):
            pressure = None
        error: float | None = None
        mode: Mode = "normal"
        action: Action
        if pressure is None:
            self._stale += 1
            if self._stale >= config.stale_periods:
                self._level, mode, action = 0.0, "degraded", "degraded"
                self._cooldown = max(0, self._cooldown - 1)
            elif self._cooldown > 0:
                self._cooldown -= 1
                self._level, mode, action = 0.0, "safety", "cooldown"
            else:
                action = "stale"  # hold: never relax without a reading
        else:
            self._stale = 0
            pressure = max(0.0, pressure)
            error = math.log(max(pressure, EPS) / target)
            if pressure > threshold:
                self._cooldown = config.cooldown_periods
                self._level, mode, action = 0.0, "safety", "safety"
            elif self._cooldown > 0:
                self._cooldown -= 1
                self._level, mode, action = 0.0, "safety", "cooldown"
            elif error > config.dead_band:
                base = self._level
                if signal.usage_level is not None and math.isfinite(signal.usage_level):
                    base = min(base, max(0.0, signal.usage_level))
                self._level = _clamp_level(base * math.exp(-config.cut_gain * error))
                action = "tighten"
            elif error < -config.dead_band:
                self._level = _clamp_level(self._level + config.step_up_ratio)
                action = "relax"
            else:
                action = "hold"
        return ThrottleDecision(
            level=self._level,
            limit=limit_at(config, self._level),
            mode=mode,
            action=action,
            pressure=pressure,
            target=target,
            safety_threshold=threshold,
            error=error,
            cooldown_left=self._cooldown,
            stale_periods=self._stale,
        )
