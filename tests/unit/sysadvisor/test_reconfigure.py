"""New settings while the advisor runs: the next period uses them, and what the
controllers hold stays where it still means the same thing.

Every scenario is a script of periods in virtual time; the assertions name the
period at which the plan changes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Callable

import pytest

from agent.qrm.cpu import CPUPolicy
from agent.qrm.server import PluginServer
from agent.sysadvisor import Advisor, AdvisorConfig, AdvisorInput
from katalyst.cgroup import open_driver
from katalyst.cgroup.fake import FakeCgroupFS
from katalyst.clock import FakeClock
from katalyst.settings import ConfigError
from tests.unit.sysadvisor.support import GIB, config, lends, node, run, share
from tests.unit.sysadvisor.test_loop import advisor_loop, cpu_server, sample, snapshot

__all__ = ["cpu_server"]  # the fixture, imported for the loop tests below


def usage_config(**usage: object) -> AdvisorConfig:
    """Only the usage ratio, with ``usage`` put into its settings."""
    off = {"enabled": False}
    return config(
        {"indicators": {"cpu_sched_wait": off, "cpu_psi_some_avg10": off, "cpu_usage_ratio": usage}}
    )


def test_a_new_target_is_used_from_the_next_period() -> None:
    advisor = Advisor(usage_config())
    steady = node(share(3.0, requests=5.0))  # 3 / 5 = 0.6: at the target
    plans = run(advisor, [steady] * 3)
    assert [p.requirements["share"] for p in plans] == pytest.approx([5.0] * 3)
    advisor.configure(usage_config(target=0.5))
    plan = advisor.advise(steady)
    # kp = 1 on a positive error: the requirement lands on usage / target at once.
    assert plan.requirements["share"] == pytest.approx(3.0 / 0.5)
    (step,) = plan.trace
    assert step.target == 0.5


def test_the_lend_is_kept_and_the_new_ramp_applies_from_it() -> None:
    advisor = Advisor(config())
    idle = node(share(3.0, requests=5.0))  # L* = 11, +0.5 a period
    assert lends(run(advisor, [idle] * 4)) == [0.5, 1.0, 1.5, 2.0]
    advisor.configure(config({"limits": {"ramp_up_cpus_per_period": 2.0}}))
    assert lends(run(advisor, [idle] * 3)) == [4.0, 6.0, 8.0]  # not from the floor again
    # A floor above the lend lifts it at once; the ramp goes on from there.
    advisor.configure(config({"limits": {"reclaim_floor_cpus": 9.0}}))
    assert lends(run(advisor, [idle] * 3)) == [9.5, 10.0, 10.5]


def integral_config(target: float = 400.0, *, ki: float = 0.1, band: float = 0.0) -> AdvisorConfig:
    """Only the run-queue wait (a reading that does not depend on the requirement),
    an integral controller."""
    wait = {
        "target": target,
        "dead_band_up": band,
        "dead_band_down": band,
        "gains_up": {"kp": 0.0, "ki": ki},
        "gains_down": {"kp": 0.0, "ki": ki},
        "hard_margin": 10.0,
    }
    return config(
        {
            "indicators": {
                "cpu_usage_ratio": {"enabled": False},
                "cpu_psi_some_avg10": {"enabled": False},
                "cpu_sched_wait": wait,
            }
        }
    )


def hot() -> AdvisorInput:
    return node(share(3.0, requests=5.0, wait=800.0))  # ln(800 / 400) over the target


def test_the_integral_is_kept_when_only_a_dead_band_changes() -> None:
    advisor = Advisor(integral_config())
    first = advisor.advise(hot())
    assert first.trace[0].i == pytest.approx(0.1 * first.trace[0].error * 1.0)
    advisor.configure(integral_config(band=0.01))
    second = advisor.advise(hot())
    # Accumulated on top of the first period's: the controller was kept.
    assert second.trace[0].i == pytest.approx(first.trace[0].i + 0.1 * second.trace[0].error)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda: integral_config(target=500.0), id="target"),
        pytest.param(lambda: integral_config(ki=0.2), id="gains"),
    ],
)
def test_a_new_target_or_new_gains_start_the_controller_afresh(
    change: Callable[[], AdvisorConfig],
) -> None:
    advisor = Advisor(integral_config())
    advisor.advise(hot())
    advisor.advise(hot())
    assert advisor.configure(change()) == ("cpu_sched_wait",)
    plan = advisor.advise(hot())
    (step,) = plan.trace
    ki = advisor.config.indicators.cpu_sched_wait.gains_up.ki
    assert step.i == pytest.approx(ki * step.error * 1.0)  # one period's worth only


def test_a_new_period_keeps_the_integral_and_steps_with_the_new_dt() -> None:
    advisor = Advisor(integral_config())
    first = advisor.advise(hot())
    assert advisor.configure(dataclasses.replace(integral_config(), period_s=2.0)) == ()
    second = advisor.advise(hot())
    assert second.trace[0].i == pytest.approx(first.trace[0].i + 0.1 * second.trace[0].error * 2)


def test_a_smaller_max_log_step_clamps_the_kept_integral() -> None:
    advisor = Advisor(integral_config(ki=5.0))
    for _ in range(5):
        plan = advisor.advise(hot())
    assert plan.trace[0].i == pytest.approx(1.0)  # wound up to the default bound of 1
    small = integral_config(ki=5.0)
    advisor.configure(
        dataclasses.replace(small, limits=dataclasses.replace(small.limits, max_log_step=0.2))
    )
    plan = advisor.advise(hot())
    assert plan.trace[0].i == pytest.approx(0.2)
    assert plan.trace[0].output == pytest.approx(0.2)


def test_an_indicator_switched_off_loses_its_controllers_and_one_switched_on_gets_new_ones() -> (
    None
):
    both = config({"indicators": {"cpu_psi_some_avg10": {"enabled": False}}})
    advisor = Advisor(both)
    busy = node(share(3.0, requests=5.0, wait=500.0))
    plan = advisor.advise(busy)
    assert {t.indicator for t in plan.trace} == {"cpu_usage_ratio", "cpu_sched_wait"}
    off = config(
        {
            "indicators": {
                "cpu_psi_some_avg10": {"enabled": False},
                "cpu_sched_wait": {"enabled": False},
            }
        }
    )
    assert advisor.configure(off) == ("cpu_sched_wait",)
    assert {t.indicator for t in advisor.advise(busy).trace} == {"cpu_usage_ratio"}
    advisor.configure(both)
    assert {t.indicator for t in advisor.advise(busy).trace} == {
        "cpu_usage_ratio",
        "cpu_sched_wait",
    }


def test_a_shorter_cool_down_cuts_the_one_running() -> None:
    advisor = Advisor(config())
    idle = node(share(3.0, requests=5.0))
    run(advisor, [idle] * 4)
    surge = advisor.advise(node(share(6.0, requests=5.0)))  # safety: cool-down of 10
    assert (surge.mode, surge.cooldown_left) == ("safety", 10)
    advisor.configure(config({"limits": {"safety_cooldown_periods": 2}}))
    plans = run(advisor, [idle] * 4)
    assert [p.mode for p in plans] == ["safety", "safety", "normal", "normal"]


def test_an_invalid_config_changes_nothing() -> None:
    advisor = Advisor(config())
    bad = dataclasses.replace(config(), period_s=-1.0)
    with pytest.raises(ConfigError, match=r"sysadvisor\.period_s"):
        advisor.configure(bad)
    assert advisor.config == config()


def test_reclaim_off_lends_nothing_and_on_again_ramps_from_the_floor() -> None:
    advisor = Advisor(config({"memory": {"reclaim_floor_bytes": GIB}}))
    idle = node(share(3.0, requests=5.0, ws=2 * GIB))
    before = run(advisor, [idle] * 6)
    assert before[-1].reclaim_cpus == 3.0
    assert before[-1].reclaim_memory_limit > GIB
    advisor.reclaim_enabled = False
    off = run(advisor, [idle, node(share(4.2, requests=5.0, ws=2 * GIB))])
    for plan in off:
        assert plan.mode == "disabled"
        assert (plan.reclaim_cpus, plan.target_reclaim_cpus, plan.reclaim_pool_size) == (0, 0, 0)
        assert plan.reclaim_memory_limit == GIB  # the floor
        assert plan.quota_us() == 1000  # the kernel's minimum: nothing to speak of
    # The controllers went on following the share pool meanwhile.
    assert off[1].requirements["share"] == pytest.approx(4.2 / 0.6)
    advisor.reclaim_enabled = True
    after = run(advisor, [idle] * 3)
    assert [p.mode for p in after] == ["normal"] * 3
    assert lends(after)[:2] == [0.5, 1.0]


def test_reclaim_off_keeps_the_heuristics_of_a_breach() -> None:
    advisor = Advisor(config())
    advisor.reclaim_enabled = False
    plan = advisor.advise(node(share(6.0, requests=5.0)))
    assert plan.mode == "disabled"
    assert plan.breaches == ("share/cpu_usage_ratio",)
    assert plan.cooldown_left == 10
    advisor.reclaim_enabled = True
    # Still in the cool-down that the breach started: the floor.
    assert advisor.advise(node(share(3.0, requests=5.0))).mode == "safety"


# ---- the loop --------------------------------------------------------------------------


async def test_the_loop_takes_new_settings_at_its_next_period(
    cpu_server: tuple[CPUPolicy, PluginServer],
) -> None:
    cpu, server = cpu_server
    driver = open_driver(FakeCgroupFS.hybrid(cpus="0-7"))
    driver.create("reclaimed")
    loop = advisor_loop(cpu, server, driver, FakeClock())
    idle = snapshot(sample("web", "shared_cores", request=1.0, cores=0.3))
    for _ in range(4):
        await loop.step(idle)
    assert loop.latest is not None
    lent = loop.latest.plan.reclaim_cpus
    assert lent == 2.0
    new = config({"indicators": {"cpu_usage_ratio": {"target": 0.5}}})
    loop.configure(new, reclaim_enabled=False)
    assert loop.config == new  # visible at once ...
    assert not loop.reclaim_enabled
    assert loop.latest.plan.reclaim_cpus == lent  # ... and used from the next period
    plan = await loop.step(idle)
    assert plan.mode == "disabled"
    assert driver.cpu_quota("reclaimed")[0] == 1000
    assert cpu.reclaim_size == 0
    assert {t.target for t in plan.trace if t.indicator == "cpu_usage_ratio"} == {0.5}
    loop.configure(new, reclaim_enabled=True)
    plan = await loop.step(idle)
    assert (plan.mode, plan.reclaim_cpus) == ("normal", 0.5)


async def test_a_new_period_takes_effect_from_the_next_sleep(
    cpu_server: tuple[CPUPolicy, PluginServer],
) -> None:
    cpu, server = cpu_server
    driver = open_driver(FakeCgroupFS.hybrid(cpus="0-7"))
    clock = FakeClock()
    loop = advisor_loop(cpu, server, driver, clock)  # no snapshots: a decision per 2 periods
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))

    async def decisions() -> int:
        for _ in range(20):
            await asyncio.sleep(0)
        return 0 if loop.latest is None else loop.latest.plan.stale_periods

    try:
        assert await decisions() == 0
        loop.configure(dataclasses.replace(AdvisorConfig(), period_s=3.0))
        await clock.advance(2.0)  # the sleep that was running keeps its 2 s
        assert await decisions() == 1
        await clock.advance(2.0)
        assert await decisions() == 1  # now 2 x 3 s
        await clock.advance(4.0)
        assert await decisions() == 2
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=5)


async def test_the_loop_refuses_an_invalid_config_and_keeps_its_own(
    cpu_server: tuple[CPUPolicy, PluginServer],
) -> None:
    cpu, server = cpu_server
    driver = open_driver(FakeCgroupFS.hybrid(cpus="0-7"))
    loop = advisor_loop(cpu, server, driver, FakeClock())
    with pytest.raises(ConfigError, match=r"sysadvisor\.period_s: must be finite"):
        loop.configure(dataclasses.replace(AdvisorConfig(), period_s=math.inf))
    assert loop.config == AdvisorConfig()
    assert loop.reclaim_enabled
