"""EvictionConfig: defaults, loading, and messages that name the field."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools

import pytest

from agent.eviction import (
    CPUSuppressionConfig,
    EvictionConfig,
    EvictionConfigError,
    MemoryPressureConfig,
    RateLimitConfig,
    ReclaimedOvercommitConfig,
)
from katalyst.config import eviction as module


def test_an_empty_mapping_is_the_defaults() -> None:
    config = EvictionConfig.from_mapping({})
    assert config == EvictionConfig()
    assert config.memory_pressure.consecutive_samples == 3
    assert config.memory_pressure.watermark_ratio == 0.05
    assert config.memory_pressure.evict_shared_cores is False
    assert config.cpu_suppression.min_duration_s == 300.0
    assert config.rate_limit == RateLimitConfig(per_minute=6.0, burst=2)
    assert config.pod_grace_period_s is None


def test_values_are_loaded_and_numbers_become_floats() -> None:
    config = EvictionConfig.from_mapping(
        {
            "memory_pressure": {"watermark_bytes": 1 << 30, "psi_some_avg10": None},
            "reclaimed_overcommit": {"cpu_rate": 2, "memory_rate": None},
            "cpu_suppression": {"min_duration_s": 60},
            "evicting_grace_s": 90,
            "pod_grace_period_s": 0,
        }
    )
    assert config.memory_pressure.watermark_bytes == 1 << 30
    assert config.memory_pressure.psi_some_avg10 is None
    assert config.reclaimed_overcommit.cpu_rate == 2.0
    assert isinstance(config.reclaimed_overcommit.cpu_rate, float)
    assert config.reclaimed_overcommit.memory_rate is None
    assert config.cpu_suppression == CPUSuppressionConfig(min_duration_s=60.0)
    assert config.evicting_grace_s == 90.0
    assert config.pod_grace_period_s == 0


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"memory_pressure": {"consecutive_samples": 0}},
            "eviction.memory_pressure.consecutive_samples: must be an integer >= 1, got 0 (int)",
        ),
        (
            {"memory_pressure": {"consecutive_samples": 2.5}},
            "eviction.memory_pressure.consecutive_samples: must be an integer >= 1, "
            "got 2.5 (float)",
        ),
        (
            {"memory_pressure": {"watermark_ratio": 1.5}},
            "eviction.memory_pressure.watermark_ratio: must be a finite number >= 0 and <= 1, "
            "got 1.5 (float)",
        ),
        (
            {"memory_pressure": {"psi_some_avg10": "high"}},
            "eviction.memory_pressure.psi_some_avg10: must be a finite number >= 0 and <= 100, "
            "got 'high' (str)",
        ),
        (
            {"memory_pressure": {"evict_shared_cores": "yes"}},
            "eviction.memory_pressure.evict_shared_cores: must be true or false, got 'yes' (str)",
        ),
        (
            {"reclaimed_overcommit": {"cpu_rate": 0}},
            "eviction.reclaimed_overcommit.cpu_rate: must be a finite number > 0, got 0 (int)",
        ),
        (
            {"cpu_suppression": {"min_duration_s": float("inf")}},
            "eviction.cpu_suppression.min_duration_s: must be a finite number >= 0, "
            "got inf (float)",
        ),
        (
            {"rate_limit": {"burst": True}},
            "eviction.rate_limit.burst: must be an integer >= 1, got True (bool)",
        ),
        (
            {"rate_limit": None},
            "eviction.rate_limit: must be a mapping, got None (NoneType)",
        ),
        (
            {"retry_after_s": -1},
            "eviction.retry_after_s: must be a finite number > 0, got -1 (int)",
        ),
        (
            {"memory_presure": {}},
            "eviction: unknown key 'memory_presure' (known: cpu_suppression, evicting_grace_s, "
            "memory_pressure, pod_grace_period_s, rate_limit, reclaimed_overcommit, "
            "retry_after_s)",
        ),
        (
            {"cpu_suppression": {"min_duration": 1}},
            "eviction.cpu_suppression: unknown key 'min_duration' (known: enabled, min_duration_s)",
        ),
    ],
)
def test_a_bad_value_is_refused_with_its_path(raw: dict[str, object], message: str) -> None:
    with pytest.raises(EvictionConfigError) as info:
        EvictionConfig.from_mapping(raw)
    assert str(info.value) == message


def test_a_section_alone_and_a_custom_prefix() -> None:
    with pytest.raises(EvictionConfigError, match=r"^agent\.eviction\.rate_limit\.per_minute: "):
        EvictionConfig.from_mapping({"rate_limit": {"per_minute": 0}}, where="agent.eviction")
    assert MemoryPressureConfig.from_mapping({"enabled": False}).enabled is False


def test_built_in_code_the_same_rules_hold() -> None:
    with pytest.raises(EvictionConfigError, match=r"^MemoryPressureConfig\.consecutive_samples"):
        MemoryPressureConfig(consecutive_samples=0)
    with pytest.raises(EvictionConfigError, match=r"^EvictionConfig\.evicting_grace_s"):
        EvictionConfig(evicting_grace_s=0)


def test_every_field_documents_its_default() -> None:
    """Each field's docstring names its default (the style rule for configuration)."""
    tree = ast.parse(inspect.getsource(module))
    classes = {
        node.name: node
        for node in tree.body
        if isinstance(node, ast.ClassDef) and node.name.endswith("Config")
    }
    for cls in (
        EvictionConfig,
        MemoryPressureConfig,
        ReclaimedOvercommitConfig,
        CPUSuppressionConfig,
        RateLimitConfig,
    ):
        body = classes[cls.__name__].body
        docs: dict[str, str] = {}
        for stmt, following in itertools.pairwise(body):
            if (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
            ):
                docs[stmt.target.id] = str(following.value.value)
        for f in dataclasses.fields(cls):
            assert f.name in docs, f"{cls.__name__}.{f.name} has no docstring"
            if "section" not in f.metadata:
                assert "default" in docs[f.name].lower(), f"{cls.__name__}.{f.name}"


def test_an_integer_too_large_for_a_float_is_refused_by_name() -> None:
    with pytest.raises(EvictionConfigError, match=r"^eviction\.evicting_grace_s: must be a finite"):
        EvictionConfig.from_mapping({"evicting_grace_s": 10**400})
