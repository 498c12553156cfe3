r"""The sysadvisor's decision core: indicator readings in, a lending :class:`Plan` out.

:class:`Advisor` is synchronous, reads no file and no clock, and is deterministic:
the same sequence of inputs gives the same sequence of plans (after :meth:`reset`
too). Each call to :meth:`Advisor.advise` is one control period.

The algorithm (``docs/headroom.md`` explains it at length, with the defaults):

1. **Error.** Per region ``r`` and enabled indicator ``i`` with a reading, the
   current value ``c`` is the reading itself, except for the usage ratio, which is
   ``c = usage_cores / R_prev(r)``: usage over the capacity the controller believes
   the region needs. The error is in the log domain,
   ``e = ln(max(c, eps)) - ln(target_i)``, and ``e = 0`` inside the dead band
   ``-band_down <= e <= band_up``.
2. **PID.** One simple-pid controller per (region, indicator), fed ``-e`` against a
   setpoint of 0 (so its error is ``e``), stepped with ``dt = period_s``, with the
   ``gains_up`` tunings while ``e > 0`` and ``gains_down`` while ``e < 0``; its output
   ``u = P + I + D`` is clamped to ``[-max_log_step, +max_log_step]``.
3. **Requirement.** ``R_i = R_prev(r) * exp(u_i)``; ``R(r) = clamp(max_i R_i, lower,
   upper)`` (the most conservative indicator wins), with ``lower = region_min_cpus``
   and ``upper = allocatable_cpus - floor`` (share) or the region's cpus (dedicated).
   A region seen for the first time starts from ``R_prev = clamp(requests_cpu)``; a
   region that disappears is forgotten with its controllers.
4. **Lend.** ``H = allocatable_cpus - R(share)``, ``L* = max(floor, H)``, and
   ``L_t = L*`` when ``L* <= L_{t-1}`` (give back at once), otherwise
   ``L_t = min(L*, L_{t-1} + ramp_up_cpus_per_period)``; ``L_0 = floor``.
5. **Safety** (Heracles). A reading above ``target * (1 + hard_margin)`` sets
   ``L_t = floor`` at once and keeps it there ``safety_cooldown_periods`` more periods
   after the last breach; then the lend ramps up again from the floor.
6. **Degraded.** After ``degraded_after_periods`` consecutive periods without fresh
   metrics (or without any reading of a region), ``R(r)`` falls back to
   ``clamp(max(requests_cpu, region_min_cpus))`` and the lend only goes down:
   ``L_t = min(L_{t-1}, L*)``. Fewer stale periods than that hold ``R(r)`` and
   likewise never raise the lend.
7. **Outputs.** ``reclaim_cpus = L_t`` (the reclaimed cgroup's quota, cores),
   ``reclaim_pool_size = max(0, min(floor(L_t), floor(allocatable - ceil(R(share)))))``,
   and ``reclaim_memory_limit = max(floor_bytes, memory_allocatable
   - sum(working sets) * (1 + margin) - reserve_bytes)``.

``floor`` is ``min(reclaim_floor_cpus, allocatable_cpus)`` throughout, so the lend
always lies in ``[floor, allocatable_cpus]``.

8. **Reclaim off** (the dynamic configuration's ``reclaim.enabled: false``). The
   controllers go on following the regions, but nothing is lent: ``L_t = 0``,
   ``L* = 0``, no reclaim pool, the memory limit at its floor, mode ``disabled``.
   Switched on again, the lend ramps up from the floor like after a start.

:meth:`Advisor.configure` swaps the settings between two periods; what the
controllers hold stays where it still means the same thing (see there).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from types import MappingProxyType

from agent.sysadvisor.pid import ErrorPid
from agent.sysadvisor.types import (
    AdvisorInput,
    Decision,
    IndicatorTrace,
    Mode,
    Plan,
    RegionInput,
    RegionPlan,
)
from katalyst.config.sysadvisor import (
    INDICATORS,
    AdvisorConfig,
    Gains,
    IndicatorConfig,
    IndicatorName,
)

EPS = 1e-6
"""The smallest indicator value taken into the logarithm (an idle region reads 0)."""
MAX_CURRENT = 1e12
"""The largest indicator value taken into the logarithm: keeps every term finite."""
_ROUNDING = 1e-9
"""Slack for floor/ceil, so that 2.9999999999 cores count as 3 whole CPUs."""


def _clamp(value: float, lower: float, upper: float) -> float:
    return min(max(value, lower), upper)


def _whole_floor(value: float) -> int:
    return math.floor(value + _ROUNDING)


def _whole_ceil(value: float) -> int:
    return math.ceil(value - _ROUNDING)


def _steers(indicator: IndicatorConfig) -> tuple[object, ...]:
    """What a controller's integral and derivative were accumulated against: with
    another target or other gains they no longer mean anything."""
    return (
        indicator.target,
        indicator.target_reclaimed_idle,
        indicator.gains_up,
        indicator.gains_down,
    )


@dataclass(slots=True)
class _Controller:
    pid: ErrorPid
    gains: Gains
    """The tunings of the last step: kept while the error sits in the dead band."""


@dataclass(slots=True)
class _RegionState:
    requirement: float
    controllers: dict[IndicatorName, _Controller] = field(default_factory=dict)
    blind_periods: int = 0
    """Consecutive periods without a usable reading of any enabled indicator."""
    working_set: int | None = None
    """The last working set seen (bytes)."""


class Advisor:
    """Turns one period's readings into a :class:`Plan`; keeps the controllers between periods.

    Not thread-safe: one loop owns it and calls :meth:`advise` once per period.
    """

    def __init__(self, config: AdvisorConfig) -> None:
        config.check()
        self._config = config
        self._regions: dict[str, _RegionState] = {}
        self._lend: float | None = None
        self._memory_limit: int | None = None
        self._stale_periods = 0
        self._cooldown = 0
        self._reclaim_enabled = True

    @property
    def config(self) -> AdvisorConfig:
        """The settings this advisor runs with."""
        return self._config

    @property
    def reclaim_enabled(self) -> bool:
        """Whether anything is lent at all (the dynamic configuration's
        ``reclaim.enabled``; default true). Takes effect at the next period."""
        return self._reclaim_enabled

    @reclaim_enabled.setter
    def reclaim_enabled(self, enabled: bool) -> None:
        self._reclaim_enabled = enabled

    def configure(self, config: AdvisorConfig) -> tuple[IndicatorName, ...]:
        """Run with ``config`` from the next period on; the indicators whose
        controllers were dropped (to start afresh at their next reading, or for good
        when disabled).

        What stays: each region's requirement, the lend (so that the ramp rules
        apply from where it is: a higher floor or a new ramp step starts from the
        current lend, not from nothing), the memory limit, the stale and blind
        counts, the safety cool-down (cut to the new ``safety_cooldown_periods``
        when that is shorter). A controller whose indicator keeps its target and
        gains keeps its integral and its last input (with a new ``period_s`` or
        ``max_log_step`` it steps with the new ``dt`` and bound). A controller whose
        indicator got another target (either of them) or other gains starts afresh:
        what it integrated was an error against the old target, or a sum of
        ``ki * e * dt`` under the old gains. A disabled indicator's controllers go;
        an enabled one's are made at its first reading. Dead bands and safety
        margins hold no state and simply apply. Raises :class:`ConfigError` naming
        the field for an invalid ``config``, changing nothing.
        """
        config.check()
        old = self._config
        stale = [
            name
            for name in INDICATORS
            if not config.indicators.get(name).enabled
            or _steers(old.indicators.get(name)) != _steers(config.indicators.get(name))
        ]
        retime = (old.period_s, old.limits.max_log_step) != (
            config.period_s,
            config.limits.max_log_step,
        )
        dropped: set[IndicatorName] = set()
        for state in self._regions.values():
            for name in stale:
                if state.controllers.pop(name, None) is not None:
                    dropped.add(name)
            if retime:
                for controller in state.controllers.values():
                    controller.pid.retime(dt=config.period_s, limit=config.limits.max_log_step)
        self._cooldown = min(self._cooldown, config.limits.safety_cooldown_periods)
        self._config = config
        return tuple(name for name in INDICATORS if name in dropped)

    def reset(self) -> None:
        """Forget every region, controller, ramp and counter: the next period is a first one."""
        self._regions.clear()
        self._lend = None
        self._memory_limit = None
        self._stale_periods = 0
        self._cooldown = 0

    def resume(self, lend: float) -> None:
        """Start the ramp from ``lend`` (cores) instead of the floor: what the reclaimed
        cgroup's quota already allows when the agent restarts, so that a restart does
        not throttle running reclaimed pods and ramp them up again from nothing.
        Ignored once a period has run, and for a value that is negative or not finite."""
        if self._lend is None and math.isfinite(lend) and lend >= 0:
            self._lend = lend

    def advise(self, inp: AdvisorInput) -> Plan:
        """One control period: update the controllers with ``inp`` and return the plan."""
        limits = self._config.limits
        self._stale_periods = 0 if inp.fresh else self._stale_periods + 1
        stale_degraded = self._stale_periods >= limits.degraded_after_periods
        alloc = inp.allocatable_cpus
        floor = min(limits.reclaim_floor_cpus, alloc) if self._reclaim_enabled else 0.0

        present = {region.name for region in inp.regions}
        for name in [name for name in self._regions if name not in present]:
            del self._regions[name]

        region_plans: list[RegionPlan] = []
        trace: list[IndicatorTrace] = []
        for region in inp.regions:
            plan, steps = self._advise_region(
                region,
                fresh=inp.fresh,
                alloc=alloc,
                floor=floor,
                stale_degraded=stale_degraded,
                idle=inp.reclaimed_idle,
            )
            region_plans.append(plan)
            trace.extend(steps)
        breaches = tuple(f"{t.region}/{t.indicator}" for t in trace if t.breach)

        share = next((p for p in region_plans if p.kind == "share"), None)
        if share is not None:
            share_requirement = share.requirement
            share_blind = share.decision != "controlled"
            share_degraded = share.degraded
        else:
            # No share region: an empty share pool, which still keeps its minimum.
            share_requirement = limits.region_min_cpus
            share_blind = not inp.fresh
            share_degraded = stale_degraded
        headroom = alloc - share_requirement
        target = max(floor, headroom)
        previous = floor if self._lend is None else max(self._lend, floor)

        mode: Mode
        if breaches:
            self._cooldown = limits.safety_cooldown_periods
            lend, mode = floor, "safety"
        elif self._cooldown > 0:
            self._cooldown -= 1
            lend, mode = floor, "safety"
        else:
            mode = "degraded" if share_degraded else "normal"
            if share_blind or target <= previous:
                # Without a fresh reading of the share pool the lend may only shrink.
                lend = min(previous, target)
            else:
                lend = min(target, previous + limits.ramp_up_cpus_per_period)
        if not self._reclaim_enabled:
            # Reclaim switched off: nothing is lent, whatever the headroom. The
            # controllers above go on following the regions, so that switching it
            # on again starts from an up-to-date requirement, the lend from the floor.
            target = lend = 0.0
            mode = "disabled"
        self._lend = lend

        pool = min(_whole_floor(lend), _whole_floor(alloc - _whole_ceil(share_requirement)))
        pool = max(0, min(pool, math.floor(alloc)))
        memory_limit, memory_estimate = self._memory(inp)
        return Plan(
            at=inp.at,
            mode=mode,
            requirements=MappingProxyType({p.name: p.requirement for p in region_plans}),
            regions=tuple(region_plans),
            share_requirement=share_requirement,
            headroom_cpus=headroom,
            target_reclaim_cpus=target,
            reclaim_cpus=lend,
            reclaim_pool_size=pool,
            reclaim_floor_cpus=floor,
            reclaim_memory_limit=memory_limit,
            memory_estimate=memory_estimate,
            breaches=breaches,
            cooldown_left=self._cooldown,
            stale_periods=self._stale_periods,
            trace=tuple(trace),
        )

    def _advise_region(
        self,
        region: RegionInput,
        *,
        fresh: bool,
        alloc: float,
        floor: float,
        stale_degraded: bool,
        idle: bool,
    ) -> tuple[RegionPlan, list[IndicatorTrace]]:
        limits = self._config.limits
        lower = limits.region_min_cpus
        upper = max(lower, alloc - floor if region.kind == "share" else region.cpus)
        state = self._regions.get(region.name)
        first_seen = state is None
        if state is None:
            # Conservative start: the region needs what its containers asked for.
            state = _RegionState(requirement=_clamp(region.requests_cpu, lower, upper))
            self._regions[region.name] = state
        previous = _clamp(state.requirement, lower, upper)

        readings: dict[IndicatorName, float] = {}
        if fresh:
            for name in INDICATORS:
                value = region.reading(name)
                if value is not None and self._config.indicators.get(name).enabled:
                    readings[name] = value
        state.blind_periods = 0 if readings else state.blind_periods + 1
        # A controller's integral and derivative mean something over consecutive
        # periods only: one that missed a period starts afresh.
        for name in [name for name in state.controllers if name not in readings]:
            del state.controllers[name]

        degraded = stale_degraded or state.blind_periods >= limits.degraded_after_periods
        steps: list[IndicatorTrace] = []
        decided_by: IndicatorName | None = None
        decision: Decision
        if degraded:
            requirement = _clamp(region.requests_cpu, lower, upper)
            decision = "requests"
        elif not readings:
            requirement = previous
            decision = "hold"
        else:
            steps = [
                self._step(region, state, name, value, previous, idle=idle)
                for name, value in readings.items()
            ]
            best = max(steps, key=lambda step: step.candidate)  # the first of equals wins
            requirement = _clamp(best.candidate, lower, upper)
            decided_by = best.indicator
            decision = "controlled"
        state.requirement = requirement
        plan = RegionPlan(
            name=region.name,
            kind=region.kind,
            requirement=requirement,
            previous=previous,
            lower=lower,
            upper=upper,
            decision=decision,
            decided_by=decided_by,
            degraded=degraded,
            first_seen=first_seen,
        )
        return plan, steps

    def _step(
        self,
        region: RegionInput,
        state: _RegionState,
        name: IndicatorName,
        reading: float,
        previous: float,
        *,
        idle: bool,
    ) -> IndicatorTrace:
        indicator = self._config.indicators.get(name)
        # A service-level override (dynamic config) wins over the node's target.
        target = region.targets.get(name) or indicator.target_for(reclaimed_idle=idle)
        # The usage ratio is taken against the requirement, not the cpuset: the
        # cpuset follows the requirement only through rounding and the lend's ramp,
        # and may span the whole allocatable pool when the reclaim pool is empty,
        # so a ratio over it would not move when the requirement does.
        current = reading / previous if name == "cpu_usage_ratio" else reading
        current = min(current, MAX_CURRENT)
        raw_error = math.log(max(current, EPS)) - math.log(target)
        in_band = -indicator.dead_band_down <= raw_error <= indicator.dead_band_up
        error = 0.0 if in_band else raw_error

        controller = state.controllers.get(name)
        if controller is None:
            controller = _Controller(
                pid=ErrorPid(
                    dt=self._config.period_s,
                    limit=self._config.limits.max_log_step,
                    gains=indicator.gains_up,
                ),
                gains=indicator.gains_up,
            )
            state.controllers[name] = controller
        if error > 0:
            controller.gains = indicator.gains_up
        elif error < 0:
            controller.gains = indicator.gains_down
        step = controller.pid.step(error, controller.gains)
        candidate = min(previous * math.exp(step.output), sys.float_info.max)
        # A dedicated pod busy on its own CPUs is no sign of interference (reclaimed
        # pods do not run there), so its usage ratio never trips the safety layer;
        # its run-queue wait and pressure do.
        counts = name != "cpu_usage_ratio" or region.kind == "share"
        return IndicatorTrace(
            region=region.name,
            indicator=name,
            reading=reading,
            current=current,
            target=target,
            raw_error=raw_error,
            error=error,
            p=step.p,
            i=step.i,
            d=step.d,
            output=step.output,
            previous_requirement=previous,
            candidate=candidate,
            breach=counts and current > target * (1.0 + indicator.hard_margin),
        )

    def _memory(self, inp: AdvisorInput) -> tuple[int, int]:
        """The reclaimed cgroup's memory limit and the estimate behind it (bytes)."""
        memory = self._config.memory
        complete = inp.fresh
        unknown = False
        total = 0
        for region in inp.regions:
            state = self._regions[region.name]
            working_set = region.working_set() if inp.fresh else None
            if working_set is None:
                complete = False
            else:
                state.working_set = working_set
            if state.working_set is None:
                unknown = True
            else:
                total += state.working_set
        alloc = inp.memory_allocatable
        floor = min(memory.reclaim_floor_bytes, alloc)
        # A region whose working set was never seen could use everything: lend the floor.
        estimate = alloc if unknown else total + math.ceil(total * memory.working_set_margin)
        if not self._reclaim_enabled:
            self._memory_limit = floor
            return floor, estimate
        target = max(floor, alloc - estimate - memory.reserve_bytes)
        limit = target
        if not complete and self._memory_limit is not None:
            # Working sets held from an earlier period may be out of date: never grow on them.
            limit = max(floor, min(self._memory_limit, target))
        self._memory_limit = limit
        return limit, estimate
