"""The safety layer (Heracles) and degraded mode, period by period."""

from __future__ import annotations

import pytest

from agent.sysadvisor import Advisor, AdvisorInput, RegionInput
from tests.unit.sysadvisor.support import config, dedicated, lends, node, run, share

SAFETY = {"limits": {"reclaim_floor_cpus": 1.0, "safety_cooldown_periods": 3}}


def calm(t: int) -> AdvisorInput:
    return node(share(3.0, requests=5.0), at=float(t))


def hot(t: int) -> AdvisorInput:
    return node(share(5.0, requests=5.0), at=float(t))  # c = 1.0 > 0.6 * 1.5


def waiting(t: int) -> AdvisorInput:
    return node(share(3.0, requests=5.0, wait=2500.0), at=float(t))  # > 400 * (1 + 4)


def test_a_breach_drops_to_the_floor_at_once_and_stays_for_exactly_the_cooldown() -> None:
    advisor = Advisor(config(SAFETY))
    plans = run(advisor, [hot(t) if t == 10 else calm(t) for t in range(18)])
    out = lends(plans)
    assert out[:10] == [1.0 + 0.5 * (t + 1) for t in range(10)]  # 1.5 ... 6.0
    assert out[10:14] == [1.0] * 4  # the breach, then 3 periods of cool-down
    assert out[14:18] == [1.5, 2.0, 2.5, 3.0]  # the normal ramp, from the floor
    assert [p.mode for p in plans[9:15]] == ["normal"] + ["safety"] * 4 + ["normal"]
    assert [p.cooldown_left for p in plans[10:15]] == [3, 2, 1, 0, 0]
    assert plans[10].breaches == ("share/cpu_usage_ratio",)
    assert plans[11].breaches == ()


def test_the_cooldown_counts_from_the_last_breach() -> None:
    advisor = Advisor(config(SAFETY))
    out = lends(run(advisor, [waiting(t) if t in (10, 12) else calm(t) for t in range(18)]))
    assert out[10:16] == [1.0] * 6  # breach 10, 11, breach 12, 13, 14, 15
    assert out[16] == 1.5


def test_zero_cooldown_holds_the_floor_for_the_breach_period_only() -> None:
    advisor = Advisor(config({"limits": {"safety_cooldown_periods": 0}}))
    out = lends(run(advisor, [hot(t) if t == 4 else calm(t) for t in range(7)]))
    assert out == [0.5, 1.0, 1.5, 2.0, 0.0, 0.5, 1.0]


@pytest.mark.parametrize(
    ("region", "breach"),
    [
        (share(3.0, requests=5.0, wait=2000.0), False),  # at the limit (400 * 5) is not over
        (share(3.0, requests=5.0, wait=2001.0), True),
        (share(3.0, requests=5.0, psi=30.5), True),  # 10 * (1 + 2)
        (share(4.45, requests=5.0), False),  # c = 0.89 < 0.6 * (1 + 0.5)
        (share(4.55, requests=5.0), True),  # c = 0.91
    ],
)
def test_the_hard_limit_is_target_times_one_plus_margin(region: RegionInput, breach: bool) -> None:
    advisor = Advisor(config(SAFETY))
    advisor.advise(calm(0))
    plan = advisor.advise(node(region))
    assert (plan.mode == "safety") is breach
    assert bool(plan.breaches) is breach


def test_a_dedicated_pod_busy_on_its_own_cpus_is_no_breach_but_its_wait_is() -> None:
    advisor = Advisor(config())
    busy = advisor.advise(node(share(3.0, requests=5.0), dedicated("a", 3.9, cpus=4.0)))
    assert busy.mode == "normal"
    assert busy.trace[1].current > 0.9
    waiting = advisor.advise(node(share(3.0, requests=5.0), dedicated("a", 2.0, wait=2500.0)))
    assert waiting.mode == "safety"
    assert waiting.breaches == ("dedicated/a/cpu_sched_wait",)
    assert waiting.reclaim_cpus == 0.0


# Degraded mode. kp=1 downwards makes the share requirement exact: R = 3 / 0.6 = 5
# in the first period, while the requests say 8.
EXACT = {"indicators": {"cpu_usage_ratio": {"gains_down": {"kp": 1.0}}}}


def fresh(t: int, requests: float = 8.0) -> AdvisorInput:
    return node(share(3.0, requests=requests), at=float(t))


def stale(t: int, requests: float = 8.0) -> AdvisorInput:
    # Stale inputs may still carry readings: they are ignored.
    return node(share(30.0, requests=requests), at=float(t), fresh=False)


def test_degraded_after_exactly_n_stale_periods_and_never_ramps_up() -> None:
    advisor = Advisor(config(EXACT))
    plans = run(advisor, [fresh(t) if t < 6 else stale(t) for t in range(12)])
    assert plans[0].requirements["share"] == pytest.approx(5.0)
    assert lends(plans[:6]) == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    # Periods 6 and 7: stale but not yet degraded: hold R, never raise the lend.
    assert [p.mode for p in plans[6:8]] == ["normal", "normal"]
    assert [p.regions[0].decision for p in plans[6:8]] == ["hold", "hold"]
    assert [p.requirements["share"] for p in plans[6:8]] == pytest.approx([5.0, 5.0])
    assert [p.stale_periods for p in plans[6:9]] == [1, 2, 3]
    # Period 8, the third stale one: the requests.
    assert [p.mode for p in plans[8:]] == ["degraded"] * 4
    assert [p.requirements["share"] for p in plans[8:]] == [8.0] * 4
    assert [p.target_reclaim_cpus for p in plans[8:]] == [8.0] * 4
    assert lends(plans[6:]) == [3.0] * 6  # L* = 8 is above 3.0: no ramp while degraded
    assert plans[8].trace == ()


def test_degraded_lends_less_at_once_when_the_requests_say_so() -> None:
    advisor = Advisor(config(EXACT))
    plans = run(advisor, [fresh(t, 14.0) if t < 6 else stale(t, 14.0) for t in range(10)])
    assert lends(plans) == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.0, 3.0, 2.0, 2.0]


def test_degraded_never_means_everything_is_free() -> None:
    advisor = Advisor(config({"limits": {"degraded_after_periods": 1}}))
    plan = advisor.advise(node(share(requests=0.0), fresh=False, alloc=4.0))
    assert plan.mode == "degraded"
    assert plan.requirements["share"] == 0.25
    assert plan.reclaim_cpus == 0.0  # the lend starts at the floor and may not rise


def test_leaving_degraded_mode_resumes_from_the_current_values() -> None:
    advisor = Advisor(config(EXACT))
    run(advisor, [fresh(t) if t < 6 else stale(t) for t in range(10)])
    plan = advisor.advise(fresh(10))
    assert plan.mode == "normal"
    assert plan.trace[0].previous_requirement == 8.0  # the fallback, not the old 5
    assert plan.requirements["share"] == pytest.approx(5.0)
    assert plan.reclaim_cpus == 3.5  # one ramp step from the held 3.0
    assert plan.stale_periods == 0


def test_a_region_without_readings_degrades_after_n_periods() -> None:
    advisor = Advisor(config(EXACT))
    run(advisor, [fresh(t) for t in range(4)])  # lend 2.0, R = 5
    blind = run(advisor, [node(share(None, requests=8.0), at=float(t)) for t in range(4, 8)])
    assert [p.regions[0].decision for p in blind] == ["hold", "hold", "requests", "requests"]
    assert [p.mode for p in blind] == ["normal", "normal", "degraded", "degraded"]
    assert [p.stale_periods for p in blind] == [0] * 4
    assert lends(blind) == [2.0] * 4


def test_a_blind_dedicated_region_degrades_alone() -> None:
    advisor = Advisor(config())
    inputs = [node(share(3.0, requests=5.0), dedicated("a", None, requests=3.0)) for _ in range(3)]
    plan = run(advisor, inputs)[-1]
    assert plan.mode == "normal"
    assert [r.degraded for r in plan.regions] == [False, True]
    assert plan.requirements["dedicated/a"] == 3.0
    assert plan.reclaim_cpus == 1.5


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0])
def test_unusable_readings_are_missing_readings(bad: float) -> None:
    advisor = Advisor(config())
    advisor.advise(fresh(0))
    for _ in range(2):
        plan = advisor.advise(node(share(bad, requests=8.0, wait=bad, psi=bad)))
        assert plan.regions[0].decision == "hold"
        assert plan.trace == ()
