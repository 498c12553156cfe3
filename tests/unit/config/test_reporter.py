"""ReporterConfig: defaults, loading, and messages that name the field."""

from __future__ import annotations

import pytest

from agent.errors import ConfigError
from agent.reporter import ReporterConfig, ReporterConfigError


def test_defaults() -> None:
    config = ReporterConfig()
    assert (config.node_resources, config.cnr) == (True, True)
    assert config.window_s == 60.0
    assert (config.min_step_millicpu, config.min_step_memory_bytes) == (100, 64 * 1024 * 1024)
    assert config.min_step_ratio == 0.05
    assert (config.min_interval_s, config.resync_s) == (10.0, 600.0)
    assert (config.backoff_initial_s, config.backoff_max_s) == (1.0, 120.0)


def test_from_mapping_keeps_defaults_for_missing_keys_and_takes_integers_for_seconds() -> None:
    config = ReporterConfig.from_mapping({"window_s": 30, "cnr": False})
    assert config == ReporterConfig(window_s=30.0, cnr=False)
    assert isinstance(config.window_s, float)
    assert ReporterConfig.from_mapping({}) == ReporterConfig()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"window": 3}, "reporter: unknown key 'window' (known: backoff_initial_s, "),
        ({"window_s": -1}, "reporter.window_s: must be a finite number >= 0, got -1 (int)"),
        ({"window_s": "60"}, "reporter.window_s: must be a finite number >= 0, got '60' (str)"),
        ({"cnr": "yes"}, "reporter.cnr: must be true or false, got 'yes' (str)"),
        ({"min_step_millicpu": 1.5}, "reporter.min_step_millicpu: must be an integer >= 0"),
        ({"min_step_memory_bytes": True}, "reporter.min_step_memory_bytes: must be an integer"),
        ({"min_step_ratio": 2}, "reporter.min_step_ratio: must be a finite number >= 0 and <= 1"),
        ({"resync_s": 0}, "reporter.resync_s: must be a finite number > 0"),
        ({"backoff_initial_s": float("inf")}, "reporter.backoff_initial_s: must be a finite"),
        (
            {"backoff_initial_s": 10, "backoff_max_s": 5},
            "reporter.backoff_max_s: must be >= backoff_initial_s (10), got 5",
        ),
    ],
)
def test_a_bad_value_names_the_field_and_the_rule(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ReporterConfigError) as err:
        ReporterConfig.from_mapping(raw)
    assert str(err.value).startswith(message)
    assert isinstance(err.value, ConfigError)


def test_a_section_that_is_not_a_mapping() -> None:
    with pytest.raises(
        ReporterConfigError, match=r"reporter: must be a mapping, got \[\] \(list\)"
    ):
        ReporterConfig.from_mapping([])  # type: ignore[arg-type]


def test_a_config_built_in_code_is_checked_too() -> None:
    with pytest.raises(ReporterConfigError, match=r"ReporterConfig\.window_s: must be"):
        ReporterConfig(window_s=-5.0)
