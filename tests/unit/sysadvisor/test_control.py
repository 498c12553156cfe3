"""The controllers: error, dead band, gains, the most conservative indicator, the ramp.

Every scenario is a script of periods in virtual time; the assertions name the
exact period at which the plan reacts.
"""

from __future__ import annotations

import dataclasses
import math

import pytest

from agent.sysadvisor import Advisor
from tests.unit.sysadvisor.support import config, dedicated, lends, node, run, share

ONLY_USAGE = {
    "indicators": {"cpu_sched_wait": {"enabled": False}, "cpu_psi_some_avg10": {"enabled": False}}
}


def test_kp_one_lands_on_usage_over_target_in_one_period() -> None:
    advisor = Advisor(config())  # cpu_usage_ratio: kp=1 for a positive error
    # The cpuset spans the whole allocatable pool (an empty reclaim pool): the ratio
    # is taken against the requirement, so this changes nothing.
    plan = advisor.advise(node(share(3.0, requests=4.0, cpus=16.0), alloc=16.0))
    assert plan.requirements["share"] == pytest.approx(3.0 / 0.6)
    (step,) = plan.trace
    assert step.previous_requirement == 4.0
    assert step.p == pytest.approx(math.log(0.75 / 0.6))
    # At the target the next period changes nothing.
    plan = advisor.advise(node(share(3.0, requests=4.0, cpus=16.0), alloc=16.0))
    assert plan.requirements["share"] == pytest.approx(5.0)
    assert plan.trace[0].error == 0.0


def test_kp_one_downwards_too() -> None:
    advisor = Advisor(config({"indicators": {"cpu_usage_ratio": {"gains_down": {"kp": 1.0}}}}))
    plan = advisor.advise(node(share(1.2, requests=4.0)))
    assert plan.requirements["share"] == pytest.approx(1.2 / 0.6)


def steady(k: int, usage_after: float) -> list[float]:
    """Lends of a share pool at its target (requests 5, usage 3 -> R = 5, L* = 11) whose
    usage becomes ``usage_after`` at period ``k``."""
    advisor = Advisor(config())
    inputs = [
        node(share(3.0 if t < k else usage_after, requests=5.0), at=float(t)) for t in range(k + 2)
    ]
    return lends(run(advisor, inputs))


def test_ramp_up_is_exactly_the_configured_step_per_period() -> None:
    out = steady(30, 3.0)
    # L_0 = floor = 0; +0.5 each period until L* = 16 - 5 = 11 at period 21.
    assert out[:22] == [0.5 * (t + 1) for t in range(22)]
    assert out[22:] == [11.0] * (len(out) - 22)


def test_ramp_up_step_is_configurable() -> None:
    advisor = Advisor(config({"limits": {"ramp_up_cpus_per_period": 2.0}}))
    out = lends(run(advisor, [node(share(3.0, requests=5.0)) for _ in range(8)]))
    assert out == [2.0, 4.0, 6.0, 8.0, 10.0, 11.0, 11.0, 11.0]


def test_a_load_step_cuts_the_lend_in_the_same_period_by_the_full_amount() -> None:
    # Usage up 30 % at period 30: R = 5 * 1.3 = 6.5 -> L = 9.5, a cut of 1.5 cores
    # (three ramp steps) in the period of the step itself.
    out = steady(30, 3.9)
    assert out[29] == 11.0
    assert out[30] == pytest.approx(9.5)
    assert out[31] == pytest.approx(9.5)


def test_a_doubling_of_load_drops_the_lend_to_the_floor_in_the_same_period() -> None:
    advisor = Advisor(config())
    plans = run(advisor, [node(share(3.0 if t < 30 else 6.0, requests=5.0)) for t in range(31)])
    assert plans[29].reclaim_cpus == 11.0
    assert plans[30].mode == "safety"
    assert plans[30].reclaim_cpus == 0.0
    assert plans[30].breaches == ("share/cpu_usage_ratio",)


def test_dead_band_produces_no_change() -> None:
    advisor = Advisor(config())
    # Against R = 5: ratios 0.62, 0.58, 0.628, 0.572 are within ln(c/0.6) in [-0.05, 0.05].
    plans = run(advisor, [node(share(u, requests=5.0)) for u in (3.1, 2.9, 3.14, 2.86, 3.0)])
    for plan in plans:
        assert plan.requirements["share"] == 5.0
        assert plan.headroom_cpus == 11.0
        (step,) = plan.trace
        assert step.error == 0.0
        assert step.output == 0.0
        assert step.candidate == 5.0
    assert [p.trace[0].raw_error != 0.0 for p in plans[:4]] == [True] * 4
    # Just outside the band the controller moves.
    plan = advisor.advise(node(share(3.2, requests=5.0)))
    assert plan.requirements["share"] == pytest.approx(3.2 / 0.6)


def test_negative_error_moves_slower_than_positive_error() -> None:
    up = Advisor(config()).advise(node(share(3.6, requests=5.0)))  # c = 0.72 = 0.6 * 1.2
    down = Advisor(config()).advise(node(share(2.5, requests=5.0)))  # c = 0.5 = 0.6 / 1.2
    assert up.trace[0].error == pytest.approx(math.log(1.2))
    assert down.trace[0].error == pytest.approx(-math.log(1.2))
    assert math.log(up.requirements["share"] / 5.0) == pytest.approx(math.log(1.2))
    assert math.log(down.requirements["share"] / 5.0) == pytest.approx(-0.5 * math.log(1.2))


def test_giving_back_takes_periods_taking_back_takes_one() -> None:
    advisor = Advisor(config())
    plans = run(advisor, [node(share(2.5, requests=5.0)) for _ in range(3)])
    # R_{t+1} = R_t * (2.5 / 0.6 / R_t) ** 0.5, until the error enters the dead band.
    r1 = math.sqrt(5.0 * 2.5 / 0.6)
    r2 = math.sqrt(r1 * 2.5 / 0.6)
    assert [p.requirements["share"] for p in plans] == pytest.approx([r1, r2, r2])
    # Back up: one period.
    plan = advisor.advise(node(share(3.0, requests=5.0)))
    assert plan.requirements["share"] == pytest.approx(5.0)


def test_the_most_conservative_indicator_wins() -> None:
    advisor = Advisor(config())
    # Usage at target (candidate 5); run-queue wait at twice its target (kp 0.5:
    # candidate 5 * 2**0.5); PSI at target.
    plan = advisor.advise(node(share(3.0, requests=5.0, wait=800.0, psi=10.0)))
    assert plan.requirements["share"] == pytest.approx(5.0 * math.sqrt(2.0))
    assert plan.regions[0].decided_by == "cpu_sched_wait"
    candidates = {t.indicator: t.candidate for t in plan.trace}
    assert candidates["cpu_usage_ratio"] == pytest.approx(5.0)
    assert candidates["cpu_psi_some_avg10"] == pytest.approx(5.0)


def test_a_lower_candidate_never_wins() -> None:
    advisor = Advisor(config())
    # Usage wants to shrink (c = 0.3), the run-queue wait is at target: keep 5.
    plan = advisor.advise(node(share(1.5, requests=5.0, wait=400.0)))
    assert plan.requirements["share"] == 5.0
    assert plan.regions[0].decided_by == "cpu_sched_wait"
    assert plan.trace[0].candidate < 5.0


def test_disabled_indicators_do_not_vote() -> None:
    advisor = Advisor(config(ONLY_USAGE))
    plan = advisor.advise(node(share(3.0, requests=5.0, wait=4000.0, psi=90.0)))
    assert [t.indicator for t in plan.trace] == ["cpu_usage_ratio"]
    assert plan.requirements["share"] == 5.0
    assert plan.mode == "normal"


def test_every_pid_term_is_in_the_trace_and_dt_is_the_period() -> None:
    gains = {"kp": 0.5, "ki": 0.1, "kd": 0.2}
    advisor = Advisor(
        config({"period_s": 2.0, "indicators": {"cpu_usage_ratio": {"gains_up": gains}}})
    )
    first = advisor.advise(node(share(3.6, requests=5.0))).trace[0]
    e1 = math.log(0.72 / 0.6)
    assert (first.p, first.i, first.d) == pytest.approx((0.5 * e1, 0.1 * e1 * 2.0, 0.0))
    assert first.output == pytest.approx(first.p + first.i + first.d)
    assert first.candidate == pytest.approx(5.0 * math.exp(first.output))
    r1 = first.candidate

    second = advisor.advise(node(share(6.0, requests=5.0))).trace[0]
    e2 = math.log(6.0 / r1 / 0.6)
    assert second.previous_requirement == pytest.approx(r1)
    assert second.error == pytest.approx(e2)
    assert second.p == pytest.approx(0.5 * e2)
    assert second.i == pytest.approx(0.1 * 2.0 * (e1 + e2))
    assert second.d == pytest.approx(0.2 * (e2 - e1) / 2.0)
    assert second.output == pytest.approx(second.p + second.i + second.d)


def test_the_output_is_bounded_by_max_log_step() -> None:
    # A sixfold surge (and not a breach: the hard margin is wide here).
    advisor = Advisor(
        config(
            {
                "limits": {"max_log_step": 0.5},
                "indicators": {
                    "cpu_usage_ratio": {"hard_margin": 100.0},
                    "cpu_sched_wait": {"enabled": False},
                    "cpu_psi_some_avg10": {"enabled": False},
                },
            }
        )
    )
    plan = advisor.advise(node(share(6.0, requests=1.0)))
    assert plan.trace[0].p > 0.5
    assert plan.trace[0].output == 0.5
    assert plan.requirements["share"] == pytest.approx(math.exp(0.5))


def test_a_region_seen_for_the_first_time_starts_at_its_requests() -> None:
    advisor = Advisor(config())
    plan = advisor.advise(node(share(1.8, requests=3.0)))  # 1.8 / 3 is the target
    (region,) = plan.regions
    assert region.first_seen
    assert region.previous == 3.0
    assert region.requirement == 3.0
    assert not advisor.advise(node(share(1.8, requests=3.0))).regions[0].first_seen


def test_the_first_requirement_is_clamped_to_the_region() -> None:
    advisor = Advisor(config())
    plan = advisor.advise(node(share(requests=0.0), dedicated("a", requests=6.0, cpus=4.0)))
    assert [r.previous for r in plan.regions] == [0.25, 4.0]
    assert [r.decision for r in plan.regions] == ["hold", "hold"]


def test_a_removed_region_is_forgotten_with_its_controllers() -> None:
    advisor = Advisor(config({"indicators": {"cpu_usage_ratio": {"gains_up": {"ki": 0.2}}}}))
    e = math.log(0.75 / 0.6)
    a = dedicated("a", 1.5, requests=2.0, cpus=4.0)
    first = advisor.advise(node(share(3.0, requests=5.0), a)).trace[1]
    assert first.region == "dedicated/a"
    assert first.i == pytest.approx(0.2 * e)
    advisor.advise(node(share(3.0, requests=5.0), a))  # integrates further
    plan = advisor.advise(node(share(3.0, requests=5.0)))
    assert set(plan.requirements) == {"share"}
    back = advisor.advise(node(share(3.0, requests=5.0), a))
    assert back.regions[1].first_seen
    assert back.trace[1].previous_requirement == 2.0
    assert back.trace[1].i == pytest.approx(0.2 * e)  # a fresh integral


def test_a_missed_reading_restarts_that_controller() -> None:
    advisor = Advisor(config({"indicators": {"cpu_usage_ratio": {"gains_up": {"ki": 0.2}}}}))
    e = math.log(0.75 / 0.6)
    advisor.advise(node(share(3.0, requests=4.0)))
    hold = advisor.advise(node(share(None, requests=4.0)))
    assert hold.regions[0].decision == "hold"
    assert hold.requirements["share"] == pytest.approx(5.0 * math.exp(0.2 * e))
    again = advisor.advise(node(share(0.75 * hold.requirements["share"], requests=4.0)))
    assert again.trace[0].i == pytest.approx(0.2 * again.trace[0].error)


def test_dedicated_requirements_are_reported_but_not_lent() -> None:
    alone = Advisor(config()).advise(node(share(3.0, requests=5.0)))
    both = Advisor(config()).advise(
        node(share(3.0, requests=5.0), dedicated("a", 3.0, cpus=4.0, requests=4.0))
    )
    assert both.requirements["dedicated/a"] == pytest.approx(4.0)  # 5 clamped to its 4 cpus
    assert both.reclaim_cpus == alone.reclaim_cpus
    assert both.headroom_cpus == alone.headroom_cpus == 11.0


def test_same_inputs_same_plans_and_reset_starts_over() -> None:
    script = [
        node(share(u, requests=4.0, wait=w, psi=p, ws=1 << 30), at=float(t))
        for t, (u, w, p) in enumerate(
            [(3.0, 300.0, 5.0), (3.5, 900.0, 12.0), (None, None, None), (2.0, 100.0, 2.0)] * 5
        )
    ]
    a, b = Advisor(config()), Advisor(config())
    first = run(a, script)
    assert first == run(b, script)
    a.reset()
    assert run(a, script) == first


def test_the_usage_target_is_higher_while_the_reclaimed_pods_run_sched_idle() -> None:
    usage = 4.0  # 0.8 of the requests: above both targets, outside the dead bands
    normal = Advisor(config()).advise(node(share(usage, requests=5.0)))
    idle_input = dataclasses.replace(node(share(usage, requests=5.0)), reclaimed_idle=True)
    idle = Advisor(config()).advise(idle_input)
    # kp = 1 lands on usage / target in one period: 4 / 0.6 and 4 / 0.75.
    assert normal.requirements["share"] == pytest.approx(usage / 0.6)
    assert idle.requirements["share"] == pytest.approx(usage / 0.75)
    (step,) = [t for t in idle.trace if t.indicator == "cpu_usage_ratio"]
    assert step.target == 0.75
    # The safety limit moves with it: 0.75 * 1.5.
    surge = dataclasses.replace(node(share(5.5, requests=5.0)), reclaimed_idle=True)
    assert Advisor(config()).advise(surge).mode == "normal"  # 1.1 < 1.125
    unset = config({"indicators": {"cpu_usage_ratio": {"target_reclaimed_idle": 0}}})
    assert Advisor(unset).advise(idle_input).requirements["share"] == pytest.approx(usage / 0.6)


def test_a_service_level_target_wins_over_the_nodes_for_its_region() -> None:
    advisor = Advisor(config(ONLY_USAGE))
    overridden = dataclasses.replace(
        share(3.0, requests=4.0, cpus=16.0), targets={"cpu_usage_ratio": 0.5}
    )
    plan = advisor.advise(node(overridden, alloc=16.0))
    # kp 1 lands on usage / target in one period: 3.0 / 0.5 instead of 3.0 / 0.6.
    assert plan.requirements["share"] == pytest.approx(3.0 / 0.5)
    assert plan.trace[0].target == 0.5
    # Without the override the node's target is back from the next period.
    plan = advisor.advise(node(share(3.0, requests=6.0, cpus=16.0), alloc=16.0))
    assert plan.trace[0].target == 0.6


def test_a_service_target_must_be_positive() -> None:
    with pytest.raises(ValueError, match=r"targets\[cpu_usage_ratio\]: must be a positive"):
        dataclasses.replace(share(1.0), targets={"cpu_usage_ratio": 0.0})
