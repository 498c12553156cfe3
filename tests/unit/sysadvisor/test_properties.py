"""Properties over arbitrary input sequences: the plan is always within its bounds."""

from __future__ import annotations

import dataclasses
import math

from hypothesis import given
from hypothesis import strategies as st

from agent.sysadvisor import Advisor, AdvisorConfig, AdvisorInput, Plan, RegionInput

amount = st.floats(min_value=0.0, max_value=1e300, allow_nan=False, allow_infinity=False)
small_amount = st.floats(min_value=0.0, max_value=1024.0, allow_nan=False)
# Readings come from counters and divisions upstream: anything, NaN and inf included.
reading = st.one_of(st.none(), st.floats(), small_amount)
working_set = st.one_of(st.none(), st.integers(min_value=-1, max_value=1 << 64))


@st.composite
def configs(draw: st.DrawFn) -> AdvisorConfig:
    gains = st.fixed_dictionaries(
        {
            "kp": st.floats(0.0, 1000.0),
            "ki": st.floats(0.0, 1000.0),
            "kd": st.floats(0.0, 1000.0),
        }
    )
    indicator = st.fixed_dictionaries(
        {
            "target": st.floats(1e-6, 1e6),
            "dead_band_up": st.floats(0.0, 1.0),
            "dead_band_down": st.floats(0.0, 1.0),
            "gains_up": gains,
            "gains_down": gains,
            "hard_margin": st.floats(1e-3, 100.0),
        }
    )
    return AdvisorConfig.from_mapping(
        {
            "period_s": draw(st.floats(0.01, 3600.0)),
            "indicators": {
                "cpu_usage_ratio": draw(indicator),
                "cpu_sched_wait": draw(indicator),
                "cpu_psi_some_avg10": draw(indicator),
            },
            "limits": {
                "ramp_up_cpus_per_period": draw(st.floats(1e-3, 64.0)),
                "reclaim_floor_cpus": draw(st.floats(0.0, 64.0)),
                "region_min_cpus": draw(st.floats(1e-3, 8.0)),
                "max_log_step": draw(st.floats(1e-3, 10.0)),
                "degraded_after_periods": draw(st.integers(1, 4)),
                "safety_cooldown_periods": draw(st.integers(0, 4)),
            },
            "memory": {
                "reserve_bytes": draw(st.integers(0, 1 << 40)),
                "working_set_margin": draw(st.floats(0.0, 10.0)),
                "reclaim_floor_bytes": draw(st.integers(0, 1 << 40)),
            },
        }
    )


@st.composite
def regions(draw: st.DrawFn, name: str) -> RegionInput:
    return RegionInput(
        name=name,
        kind="share" if name == "share" else "dedicated",
        cpus=draw(st.one_of(small_amount, amount)),
        requests_cpu=draw(st.one_of(small_amount, amount)),
        usage_cores=draw(reading),
        sched_wait_us=draw(reading),
        psi_some_avg10=draw(reading),
        memory_working_set=draw(working_set),
    )


@st.composite
def inputs(draw: st.DrawFn, at: float) -> AdvisorInput:
    names = draw(st.sets(st.sampled_from(["share", "dedicated/a", "dedicated/b"])))
    return AdvisorInput(
        at=at,
        fresh=draw(st.booleans()),
        allocatable_cpus=draw(st.one_of(small_amount, amount)),
        memory_allocatable=draw(st.integers(0, (1 << 63) - 1)),
        regions=tuple(draw(regions(name)) for name in sorted(names)),
    )


@st.composite
def scripts(draw: st.DrawFn) -> list[AdvisorInput]:
    length = draw(st.integers(1, 12))
    return [draw(inputs(float(t))) for t in range(length)]


def floats_of(plan: Plan) -> list[float]:
    values = [
        plan.share_requirement,
        plan.headroom_cpus,
        plan.target_reclaim_cpus,
        plan.reclaim_cpus,
        plan.reclaim_floor_cpus,
        *plan.requirements.values(),
    ]
    for region in plan.regions:
        values += [region.requirement, region.previous, region.lower, region.upper]
    for step in plan.trace:
        values += [
            v for v in dataclasses.astuple(step) if isinstance(v, float) and not isinstance(v, bool)
        ]
    return values


@given(config=configs(), script=scripts())
def test_the_plan_is_always_within_bounds(
    config: AdvisorConfig, script: list[AdvisorInput]
) -> None:
    advisor = Advisor(config)
    previous: float | None = None
    for inp in script:
        plan = advisor.advise(inp)
        alloc = inp.allocatable_cpus
        floor = min(config.limits.reclaim_floor_cpus, alloc)
        assert all(math.isfinite(v) for v in floats_of(plan))
        assert plan.reclaim_floor_cpus == floor
        assert 0.0 <= floor <= plan.reclaim_cpus <= alloc
        assert plan.reclaim_cpus <= plan.target_reclaim_cpus
        assert 0 <= plan.reclaim_pool_size <= alloc
        assert plan.reclaim_pool_size <= plan.reclaim_cpus + 1e-6
        assert 1000 <= plan.quota_us() <= (1 << 44) - 1
        mem_floor = min(config.memory.reclaim_floor_bytes, inp.memory_allocatable)
        assert mem_floor <= plan.reclaim_memory_limit <= inp.memory_allocatable
        for region in plan.regions:
            assert region.lower <= region.requirement <= region.upper
        if plan.mode == "safety":
            assert plan.reclaim_cpus == floor
        if previous is not None:
            # Never more than one ramp step up (from the floor when the floor rose).
            step = config.limits.ramp_up_cpus_per_period
            assert plan.reclaim_cpus <= max(previous, floor) + step
        if not inp.fresh:
            assert previous is None or plan.reclaim_cpus <= max(previous, floor)
        previous = plan.reclaim_cpus


@given(script=scripts())
def test_the_same_script_gives_the_same_plans(script: list[AdvisorInput]) -> None:
    a, b = Advisor(AdvisorConfig()), Advisor(AdvisorConfig())
    plans = [a.advise(inp) for inp in script]
    assert plans == [b.advise(inp) for inp in script]
    a.reset()
    assert plans == [a.advise(inp) for inp in script]
