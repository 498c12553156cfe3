"""The IO throttle's control law in virtual time: scripted pressure traces, one
:meth:`ThrottleController.step` per period, exact reaction periods asserted."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.isolation.io import IOSignal, ThrottleController, ThrottleDecision, limit_at
from katalyst.cgroup import IOLimit
from katalyst.config.io import IOConfig, MiB

TARGET = 10.0


def config(**overrides: object) -> IOConfig:
    """Writes throttled between 1 and 11 MiB/s (level L gives 1 + 10 L MiB/s); reads not."""
    settings: dict[str, object] = {
        "min_read_bps": None,
        "min_write_bps": 1 * MiB,
        "max_write_bps": 11 * MiB,
        "pressure_target": TARGET,
        "dead_band": 0.1,
        "safety_margin": 2.0,
        "cooldown_periods": 3,
        "step_up_ratio": 0.25,
        "stale_periods": 3,
    }
    settings.update(overrides)
    return IOConfig(**settings)  # type: ignore[arg-type]


def run(
    controller: ThrottleController,
    trace: Sequence[float | None],
    usage: float | None = None,
) -> list[ThrottleDecision]:
    return [controller.step(IOSignal(pressure=p, usage_level=usage)) for p in trace]


def levels(decisions: Sequence[ThrottleDecision]) -> list[float]:
    return [round(d.level, 9) for d in decisions]


def relaxed(controller: ThrottleController) -> None:
    run(controller, [0.0] * 4)
    assert controller.level == 1.0


def test_the_level_maps_linearly_between_floor_and_ceiling() -> None:
    c = config()
    assert limit_at(c, 0.0) == IOLimit(write_bps=1 * MiB)
    assert limit_at(c, 0.5) == IOLimit(write_bps=6 * MiB)
    assert limit_at(c, 1.0) == IOLimit(write_bps=11 * MiB)


def test_a_direction_without_a_ceiling_is_at_its_floor_until_fully_relaxed() -> None:
    c = config(max_write_bps=None, min_read_iops=50)
    assert limit_at(c, 0.0) == IOLimit(write_bps=1 * MiB, read_iops=50)
    assert limit_at(c, 0.99) == IOLimit(write_bps=1 * MiB, read_iops=50)
    assert limit_at(c, 1.0) == IOLimit()


def test_it_starts_at_the_floor_and_relaxes_one_step_per_quiet_period() -> None:
    controller = ThrottleController(config())
    decisions = run(controller, [0.0] * 6)
    assert levels(decisions) == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert [d.limit.write_bps for d in decisions[:4]] == [
        round(3.5 * MiB),
        6 * MiB,
        round(8.5 * MiB),
        11 * MiB,
    ]
    assert all(d.action == "relax" and d.mode == "normal" for d in decisions)


def test_ten_steps_of_a_tenth_reach_exactly_the_ceiling() -> None:
    # 0.1 added ten times is 0.9999999999999999: the ceiling must still be reached
    # on the tenth period, and a null ceiling lifted then, not one period later.
    controller = ThrottleController(config(step_up_ratio=0.1, max_write_bps=None))
    decisions = run(controller, [0.0] * 10)
    assert [d.limit.write_bps for d in decisions] == [1 * MiB] * 9 + [None]


def test_pressure_over_target_tightens_in_the_same_period_in_proportion_to_the_log_error() -> None:
    controller = ThrottleController(config())
    relaxed(controller)
    over = TARGET * math.exp(0.5)
    (cut,) = run(controller, [over])
    assert cut.action == "tighten"
    assert cut.level == pytest.approx(math.exp(-0.5))
    assert cut.error == pytest.approx(0.5)
    assert cut.limit.write_bps == round(1 * MiB + math.exp(-0.5) * 10 * MiB)
    (again,) = run(controller, [over])
    assert again.level == pytest.approx(math.exp(-1.0))


def test_the_cut_gain_scales_the_cut() -> None:
    controller = ThrottleController(config(cut_gain=2.0))
    relaxed(controller)
    (cut,) = run(controller, [TARGET * math.exp(0.25)])
    assert cut.level == pytest.approx(math.exp(-0.5))


def test_a_cut_starts_from_what_the_reclaimed_pods_use_when_that_is_lower() -> None:
    controller = ThrottleController(config())
    relaxed(controller)
    (cut,) = run(controller, [TARGET * math.exp(0.5)], usage=0.2)
    assert cut.level == pytest.approx(0.2 * math.exp(-0.5))
    # Usage above the level does not raise it.
    (cut2,) = run(controller, [TARGET * math.exp(0.5)], usage=0.9)
    assert cut2.level == pytest.approx(0.2 * math.exp(-1.0))


def test_the_dead_band_holds_the_level() -> None:
    controller = ThrottleController(config())
    run(controller, [0.0, 0.0])
    decisions = run(controller, [TARGET, TARGET * math.exp(0.099), TARGET * math.exp(-0.099)])
    assert levels(decisions) == [0.5, 0.5, 0.5]
    assert {d.action for d in decisions} == {"hold"}
    (below,) = run(controller, [TARGET * math.exp(-0.11)])
    assert below.action == "relax" and below.level == 0.75
    (above,) = run(controller, [TARGET * math.exp(0.11)])
    assert above.action == "tighten" and above.level == pytest.approx(0.75 * math.exp(-0.11))


def test_a_safety_breach_drops_to_the_floor_at_once_and_holds_it_for_the_cooldown() -> None:
    controller = ThrottleController(config(cooldown_periods=3))
    relaxed(controller)
    decisions = run(controller, [20.01, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert levels(decisions) == [0.0, 0.0, 0.0, 0.0, 0.25, 0.5]
    assert [d.mode for d in decisions] == ["safety"] * 4 + ["normal"] * 2
    assert [d.action for d in decisions] == ["safety"] + ["cooldown"] * 3 + ["relax"] * 2
    assert [d.cooldown_left for d in decisions] == [3, 2, 1, 0, 0, 0]
    assert decisions[0].limit == IOLimit(write_bps=1 * MiB)
    assert decisions[0].safety_threshold == 20.0


def test_pressure_exactly_at_the_safety_threshold_is_an_ordinary_cut() -> None:
    controller = ThrottleController(config())
    relaxed(controller)
    (cut,) = run(controller, [20.0])
    assert cut.mode == "normal" and cut.action == "tighten"
    assert cut.level == pytest.approx(0.5)


def test_a_breach_during_the_cooldown_starts_it_again() -> None:
    controller = ThrottleController(config(cooldown_periods=2))
    decisions = run(controller, [30.0, 0.0, 30.0, 0.0, 0.0, 0.0])
    assert [d.action for d in decisions] == [
        "safety",
        "cooldown",
        "safety",
        "cooldown",
        "cooldown",
        "relax",
    ]
    assert levels(decisions)[-1] == 0.25


def test_missing_pressure_holds_then_degrades_to_the_floor_never_unlimited() -> None:
    controller = ThrottleController(config(max_write_bps=None, stale_periods=3))
    relaxed(controller)
    assert controller.step(IOSignal(pressure=0.0)).limit == IOLimit()
    decisions = run(controller, [None, None, None, None])
    assert [d.action for d in decisions] == ["stale", "stale", "degraded", "degraded"]
    assert [d.mode for d in decisions] == ["normal", "normal", "degraded", "degraded"]
    assert [d.limit for d in decisions] == [IOLimit()] * 2 + [IOLimit(write_bps=1 * MiB)] * 2
    assert [d.stale_periods for d in decisions] == [1, 2, 3, 4]
    # A reading brings control back: it ramps up from the floor.
    back = run(controller, [0.0, 0.0])
    assert [d.mode for d in back] == ["normal", "normal"]
    assert levels(back) == [0.25, 0.5]
    assert back[0].stale_periods == 0


def test_a_stale_period_never_relaxes_and_a_nan_reading_counts_as_none() -> None:
    controller = ThrottleController(config())
    run(controller, [0.0])
    decisions = run(controller, [None, float("nan")])
    assert levels(decisions) == [0.25, 0.25]
    assert decisions[1].pressure is None


def test_the_cooldown_keeps_counting_while_readings_are_missing() -> None:
    controller = ThrottleController(config(cooldown_periods=2, stale_periods=5))
    decisions = run(controller, [50.0, None, None, 0.0])
    assert [d.action for d in decisions] == ["safety", "cooldown", "cooldown", "relax"]


def test_reconfigure_keeps_the_level_and_reset_goes_back_to_the_floor() -> None:
    controller = ThrottleController(config())
    run(controller, [0.0, 0.0])
    controller.reconfigure(config(step_up_ratio=0.5))
    (d,) = run(controller, [0.0])
    assert d.level == 1.0
    controller.reset()
    assert controller.level == 0.0


@given(
    st.lists(
        st.one_of(st.none(), st.floats(min_value=0.0, max_value=100.0)), min_size=1, max_size=60
    ),
    st.one_of(st.none(), st.floats(min_value=0.0, max_value=1.0)),
)
def test_the_limit_stays_between_floor_and_ceiling_and_rises_at_most_one_step(
    trace: list[float | None], usage: float | None
) -> None:
    controller = ThrottleController(config())
    previous = 0.0
    for pressure in trace:
        d = controller.step(IOSignal(pressure=pressure, usage_level=usage))
        assert 0.0 <= d.level <= 1.0
        assert d.level <= previous + 0.25 + 1e-9
        assert d.limit.write_bps is not None
        assert 1 * MiB <= d.limit.write_bps <= 11 * MiB
        if pressure is not None and pressure > 2 * TARGET:
            assert d.level == 0.0
        previous = d.level
