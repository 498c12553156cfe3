"""The ``io:`` section: defaults, and messages that name the key and the rule."""

from __future__ import annotations

import pytest

from agent.errors import ConfigError
from katalyst.config.io import IOConfig, IOConfigError, IOWeightsConfig, MiB


def test_defaults_weight_by_level_and_throttle_to_a_floor_only() -> None:
    config = IOConfig.from_mapping({})
    assert config == IOConfig()
    assert config.enabled is True
    assert config.devices == ()
    assert config.period_s == 1.0
    assert (config.min_read_bps, config.min_write_bps) == (10 * MiB, 10 * MiB)
    assert (config.max_read_bps, config.max_write_bps) == (None, None)
    assert config.floor("read_iops") is None
    assert config.throttles is True
    assert config.weights == IOWeightsConfig(
        system_cores=1000, dedicated_cores=500, shared_cores=100, reclaimed_cores=10
    )


def test_a_full_section_is_read() -> None:
    config = IOConfig.from_mapping(
        {
            "enabled": False,
            "devices": ["8:0", "/dev/nvme0n1"],
            "period_s": 0.5,
            "max_read_bps": 200 * MiB,
            "max_write_bps": 100 * MiB,
            "min_read_bps": 20 * MiB,
            "min_write_bps": 5 * MiB,
            "max_write_iops": 5000,
            "min_write_iops": 100,
            "pressure_target": 5,
            "dead_band": 0.2,
            "cut_gain": 0.5,
            "safety_margin": 3,
            "cooldown_periods": 0,
            "step_up_ratio": 0.05,
            "stale_periods": 5,
            "weights": {"reclaimed_cores": 1, "system_cores": None},
        }
    )
    assert config.devices == ("8:0", "/dev/nvme0n1")
    assert config.ceiling("write_bps") == 100 * MiB
    assert config.floor("write_iops") == 100
    assert config.pressure_target == 5.0 and isinstance(config.pressure_target, float)
    assert config.weights.reclaimed_cores == 1
    assert config.weights.for_level("system_cores") is None
    assert config.weights.for_level("shared_cores") == 100
    assert config.weights.for_level("no_such_level") is None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"period_s": 0}, "io.period_s: must be a finite number >= 0.01 and <= 3600, got 0 (int)"),
        ({"enabled": "yes"}, "io.enabled: must be true or false, got 'yes' (str)"),
        ({"min_write_bps": 0}, "io.min_write_bps: must be an integer >= 1"),
        ({"max_read_iops": 2**32}, "io.max_read_iops: must be an integer >= 1 and <= 4294967295"),
        (
            {"max_write_bps": 4 * MiB, "min_write_bps": 8 * MiB},
            f"io.min_write_bps: must be <= io.max_write_bps ({4 * MiB}), got {8 * MiB}",
        ),
        (
            {"max_read_bps": 4 * MiB},
            f"io.min_read_bps: must be <= io.max_read_bps ({4 * MiB}), got {10 * MiB}",
        ),
        (
            {"max_write_iops": 500},
            "io.min_write_iops: must be set when io.max_write_iops is (500)",
        ),
        ({"pressure_target": 0}, "io.pressure_target: must be a finite number > 0 and <= 100"),
        ({"pressure_target": 101}, "io.pressure_target: must be a finite number > 0 and <= 100"),
        ({"safety_margin": 1}, "io.safety_margin: must be a finite number > 1, got 1 (int)"),
        ({"step_up_ratio": 0}, "io.step_up_ratio: must be a finite number > 0 and <= 1"),
        ({"stale_periods": 0}, "io.stale_periods: must be an integer >= 1, got 0 (int)"),
        ({"cooldown_periods": -1}, "io.cooldown_periods: must be an integer >= 0"),
        ({"dead_band": float("nan")}, "io.dead_band: must be a finite number >= 0 and <= 1"),
        ({"devices": "8:0"}, "io.devices: must be a list of block devices, got '8:0' (str)"),
        (
            {"devices": ["8:0", "sda"]},
            'io.devices[1]: must be a block device as "MAJ:MIN" (e.g. "8:0") or "/dev/NAME", '
            "got 'sda' (str)",
        ),
        ({"devices": ["/dev/../etc"]}, "io.devices[0]: must not contain '..'"),
        ({"devices": ["8:0", "8:0"]}, "io.devices[1]: '8:0' is listed twice"),
        (
            {"weights": {"shared_cores": 10001}},
            "io.weights.shared_cores: must be an integer >= 1 and <= 10000, got 10001 (int)",
        ),
        ({"weights": {"besteffort": 1}}, "io.weights: unknown key 'besteffort'"),
        ({"max_bps": 1}, "io: unknown key 'max_bps'"),
    ],
)
def test_a_bad_value_is_refused_naming_the_key_and_the_rule(
    raw: dict[str, object], message: str
) -> None:
    with pytest.raises(IOConfigError) as caught:
        IOConfig.from_mapping(raw)
    assert str(caught.value).startswith(message), str(caught.value)
    assert isinstance(caught.value, ConfigError)  # the agent's loader reports it


def test_a_section_built_in_code_is_held_to_the_same_rules() -> None:
    with pytest.raises(IOConfigError, match=r"IOConfig\.step_up_ratio: must be"):
        IOConfig(step_up_ratio=2.0)
    with pytest.raises(IOConfigError, match=r"io\.min_write_bps: must be <= io\.max_write_bps"):
        IOConfig(min_write_bps=2, max_write_bps=1)


def test_a_floor_without_a_ceiling_and_no_throttle_at_all_are_both_valid() -> None:
    floor_only = IOConfig(min_read_bps=None, min_write_bps=MiB)
    assert floor_only.throttles
    nothing = IOConfig(min_read_bps=None, min_write_bps=None)
    assert not nothing.throttles
