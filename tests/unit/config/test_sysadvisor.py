"""The advisor's settings: defaults, overrides, and messages that name the field."""

from __future__ import annotations

import math

import pytest

from agent.errors import ConfigError
from agent.sysadvisor import Advisor, AdvisorConfig, Gains, IndicatorConfig, LimitsConfig


def test_the_defaults_are_valid_and_documented() -> None:
    config = AdvisorConfig.from_mapping({})
    assert config == AdvisorConfig()
    assert config.period_s == 1.0
    usage = config.indicators.cpu_usage_ratio
    assert usage.target == 0.6
    assert usage.hard_limit == pytest.approx(0.9)
    assert usage.gains_up == Gains(kp=1.0, ki=0.0, kd=0.0)
    assert usage.gains_down == Gains(kp=0.5, ki=0.0, kd=0.0)
    assert config.indicators.cpu_sched_wait.target == 400.0
    assert config.indicators.cpu_psi_some_avg10.target == 10.0
    assert config.limits == LimitsConfig(
        ramp_up_cpus_per_period=0.5,
        reclaim_floor_cpus=0.0,
        region_min_cpus=0.25,
        max_log_step=1.0,
        degraded_after_periods=3,
        safety_cooldown_periods=10,
    )
    assert config.memory.working_set_margin == 0.1


def test_overrides_keep_the_other_defaults() -> None:
    config = AdvisorConfig.from_mapping(
        {
            "period_s": 2,
            "indicators": {"cpu_sched_wait": {"target": 250, "gains_up": {"ki": 0.1}}},
            "limits": {"safety_cooldown_periods": 0},
        }
    )
    assert config.period_s == 2.0
    assert isinstance(config.period_s, float)
    wait = config.indicators.cpu_sched_wait
    assert wait.target == 250.0
    assert wait.gains_up == Gains(kp=0.5, ki=0.1, kd=0.0)
    assert wait.hard_margin == 4.0
    assert config.limits.safety_cooldown_periods == 0
    assert config.limits.ramp_up_cpus_per_period == 0.5
    assert config.indicators.cpu_usage_ratio == AdvisorConfig().indicators.cpu_usage_ratio


P = "sysadvisor."
OFF = {"enabled": False}


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        (
            {"indicators": {"cpu_usage_ratio": {"target": 0}}},
            "sysadvisor.indicators.cpu_usage_ratio.target: must be > 0",
        ),
        (
            {"indicators": {"cpu_sched_wait": {"gains_down": {"kp": -1}}}},
            "sysadvisor.indicators.cpu_sched_wait.gains_down.kp: must be in [0, 1000]",
        ),
        (
            {"indicators": {"cpu_psi_some_avg10": {"dead_band_up": -0.1}}},
            "sysadvisor.indicators.cpu_psi_some_avg10.dead_band_up: must be >= 0",
        ),
        (
            {"indicators": {"cpu_usage_ratio": {"hard_margin": 0}}},
            "sysadvisor.indicators.cpu_usage_ratio.hard_margin: must be > 0",
        ),
        (
            {"indicators": {"cpu_psi_some_avg10": {"enabled": "yes"}}},
            "sysadvisor.indicators.cpu_psi_some_avg10.enabled: expected true or false, got str",
        ),
        (
            {
                "indicators": {
                    "cpu_usage_ratio": OFF,
                    "cpu_sched_wait": OFF,
                    "cpu_psi_some_avg10": OFF,
                }
            },
            "sysadvisor.indicators: at least one indicator must be enabled",
        ),
        ({"indicators": {"cpu_load": {}}}, "sysadvisor.indicators.cpu_load: unknown setting"),
        ({"limits": {"degraded_after_periods": 0}}, "limits.degraded_after_periods: must be >= 1"),
        (
            {"limits": {"degraded_after_periods": 1.5}},
            "sysadvisor.limits.degraded_after_periods: expected an integer, got float",
        ),
        (
            {"limits": {"safety_cooldown_periods": True}},
            "sysadvisor.limits.safety_cooldown_periods: expected an integer, got bool",
        ),
        ({"limits": {"safety_cooldown_periods": -1}}, "safety_cooldown_periods: must be >= 0"),
        ({"limits": {"region_min_cpus": 0}}, "sysadvisor.limits.region_min_cpus: must be > 0"),
        ({"limits": {"reclaim_floor_cpus": -1}}, "limits.reclaim_floor_cpus: must be >= 0"),
        ({"limits": {"ramp_up_cpus_per_period": 0}}, "ramp_up_cpus_per_period: must be > 0"),
        ({"limits": {"max_log_step": 11}}, "sysadvisor.limits.max_log_step: must be <= 10"),
        ({"limits": {"rampup": 1}}, "sysadvisor.limits.rampup: unknown setting"),
        ({"period_s": "1s"}, "sysadvisor.period_s: expected a number, got str"),
        ({"period_s": math.nan}, "sysadvisor.period_s: must be finite"),
        ({"period_s": 10**400}, "sysadvisor.period_s: must be finite"),
        ({"period_s": 0}, "sysadvisor.period_s: must be in [0.01, 3600]"),
        ({"memory": []}, "sysadvisor.memory: expected a mapping, got list"),
        ({"memory": {"reserve_bytes": -1}}, "sysadvisor.memory.reserve_bytes: must be >= 0"),
        (
            {"memory": {"reserve_bytes": 1.5}},
            "memory.reserve_bytes: expected an integer, got float",
        ),
        ({"memory": {"working_set_margin": -0.1}}, "working_set_margin: must be in [0, 10]"),
        ({"memory": {"reclaim_floor_bytes": -1}}, "memory.reclaim_floor_bytes: must be >= 0"),
        ({"colour": "blue"}, "sysadvisor.colour: unknown setting"),
    ],
)
def test_a_bad_value_names_the_field_and_the_rule(mapping: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        AdvisorConfig.from_mapping(mapping)
    assert message in str(caught.value)
    assert str(caught.value).startswith(P)
    assert isinstance(caught.value, ValueError)


def test_a_config_built_in_code_is_checked_by_the_advisor() -> None:
    bad = AdvisorConfig(limits=LimitsConfig(region_min_cpus=0.0))
    with pytest.raises(ValueError, match=r"^sysadvisor\.limits\.region_min_cpus: must be > 0$"):
        Advisor(bad)


def test_the_section_name_is_the_callers() -> None:
    with pytest.raises(ValueError, match=r"^agent\.sysadvisor\.period_s: must be finite$"):
        AdvisorConfig.from_mapping({"period_s": math.inf}, where="agent.sysadvisor")


def test_indicator_config_requires_a_target() -> None:
    assert IndicatorConfig(target=1.0).hard_limit == 1.5
