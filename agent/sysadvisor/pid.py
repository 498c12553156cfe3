"""A small typed adapter over simple-pid for controllers stepped in virtual time.

simple-pid reads a clock in every call (``time_fn``), even when it is given ``dt``;
here that clock is a constant, ``dt`` is always the control period, and
``sample_time`` is off, so a step depends on its inputs only: the same error
sequence gives the same outputs in a test and on a node, however late a period runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from simple_pid import PID

from katalyst.config.sysadvisor import Gains


def _no_clock() -> float:
    # simple-pid stores this as its "last time"; with an explicit dt it is never used.
    return 0.0


@dataclass(frozen=True, slots=True)
class PidStep:
    """One step's terms: ``output = clamp(p + i + d, -limit, +limit)``."""

    p: float
    i: float
    d: float
    output: float


class ErrorPid:
    """One PID controller fed an error ``e`` (setpoint 0, input ``-e``).

    The tunings are chosen per step (the advisor switches them on the sign of the
    error). simple-pid accumulates ``ki * e * dt`` into its integral, so a switch of
    gains does not rescale what was integrated before (bumpless), and the integral is
    clamped to the output limits (no wind-up beyond one full step). The derivative
    is on the measurement, so a changed setpoint or gain never kicks it.
    """

    __slots__ = ("_dt", "_pid")

    def __init__(self, *, dt: float, limit: float, gains: Gains) -> None:
        if dt <= 0 or limit <= 0:
            raise ValueError(f"dt and limit must be > 0, got dt={dt!r}, limit={limit!r}")
        self._dt = dt
        self._pid = PID(
            Kp=gains.kp,
            Ki=gains.ki,
            Kd=gains.kd,
            setpoint=0.0,
            sample_time=None,
            output_limits=(-limit, limit),
            time_fn=_no_clock,
        )

    def retime(self, *, dt: float, limit: float) -> None:
        """A new period and output bound from the next step on (a new configuration).

        The integral keeps its value (it is in log-error seconds, whatever the
        period) but is clamped to the new bound, as simple-pid clamps it on every
        step; the derivative's memory of the last input stays meaningful too.
        """
        if dt <= 0 or limit <= 0:
            raise ValueError(f"dt and limit must be > 0, got dt={dt!r}, limit={limit!r}")
        self._dt = dt
        self._pid.output_limits = (-limit, limit)

    def step(self, error: float, gains: Gains) -> PidStep:
        """Feed one period's error with these gains; the terms and the clamped output."""
        self._pid.tunings = (gains.kp, gains.ki, gains.kd)
        output = self._pid(-error, dt=self._dt)
        p, i, d = self._pid.components
        # With sample_time off every call computes a value; None is simple-pid's
        # "not yet computed" and cannot come back here.
        assert output is not None
        return PidStep(p=float(p), i=float(i), d=float(d), output=float(output))
