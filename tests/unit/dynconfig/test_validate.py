"""Semantic validation of a target config: placement under the KCC, the agent's own
section rules with the full path from ``spec.config``, and service overrides."""

from __future__ import annotations

from typing import Any

import pytest

from katalyst.config.eviction import EvictionConfig
from katalyst.config.io import IOConfig, MiB
from katalyst.config.network import NetworkConfig
from katalyst.config.sysadvisor import AdvisorConfig
from katalyst.dynconfig import (
    DYNAMIC_SECTIONS,
    DynamicConfigError,
    ReclaimConfig,
    Selector,
    ServiceOverride,
    build_sections,
    validate_config,
    validate_service_overrides,
    validate_target,
)
from katalyst.dynconfig.validate import Memo
from tests.unit.dynconfig.support import cluster, kcc, named, pool, target


def problems(spec: dict[str, Any]) -> tuple[str, ...]:
    return validate_target(kcc(), target("t", spec))


def test_a_good_config_of_each_level_has_no_problem() -> None:
    k = kcc()
    assert validate_target(k, cluster(config={"reclaim": {"enabled": False}})) == ()
    assert validate_target(k, pool("p", "node-pool=a")) == ()
    assert validate_target(k, pool("p", "node-pool=a,zone in (x,y)", priority=1)) == ()
    assert validate_target(k, pool("p", "!gpu", priority=2)) == ()
    assert validate_target(k, named("n", ["n1"])) == ()


# ---- placement -------------------------------------------------------------------------


def test_selector_keys_must_be_allowed_at_the_configs_priority() -> None:
    (problem,) = problems({"nodeLabelSelector": "node-pool=a,zone=x"})
    assert problem == (
        "spec.nodeLabelSelector: key 'zone' is not allowed at priority 0 by "
        "KatalystCustomConfig katalyst-system/admin-qos (allowed: node-pool)"
    )


def test_a_key_allowed_at_no_priority_says_so() -> None:
    (problem,) = problems({"nodeLabelSelector": "rack=r1"})
    assert problem.startswith("spec.nodeLabelSelector: key 'rack' is not allowed at priority 0")
    assert problem.endswith("; it is allowed at no priority")


def test_a_priority_the_kcc_does_not_list_is_refused() -> None:
    (problem,) = problems({"nodeLabelSelector": "node-pool=a", "priority": 7})
    assert problem == (
        "spec.priority: 7 is not listed in the nodeLabelSelectorAllowedKeyList of "
        "KatalystCustomConfig katalyst-system/admin-qos (listed: 0, 1, 2)"
    )


def test_node_names_need_a_last_duration() -> None:
    assert problems({"ephemeralSelector": {"nodeNames": ["n1"]}}) == (
        "spec.ephemeralSelector.lastDuration: required with nodeNames "
        "(a named-nodes config expires)",
    )


def test_a_last_duration_needs_node_names() -> None:
    # else `nodeNames: []` would turn an incident config into a cluster-wide one
    assert problems({"ephemeralSelector": {"nodeNames": [], "lastDuration": "1h"}}) == (
        "spec.ephemeralSelector.nodeNames: required with lastDuration",
    )


def test_a_selector_and_node_names_together_are_refused() -> None:
    found = problems(
        {
            "nodeLabelSelector": "node-pool=a",
            "ephemeralSelector": {"nodeNames": ["n1"], "lastDuration": "1h"},
        }
    )
    assert found == (
        "spec: nodeLabelSelector and ephemeralSelector.nodeNames cannot both be set "
        "(a config applies to a node pool or to named nodes)",
    )


def test_a_priority_without_a_selector_is_refused() -> None:
    assert problems({"priority": 1}) == (
        "spec.priority: only with nodeLabelSelector (got 1 without one)",
    )
    assert problems({"priority": 0}) == ()


def test_every_problem_is_reported() -> None:
    found = problems(
        {
            "priority": 3,
            "config": {"sysadvisor": {"period_s": 0}, "io": {"period_s": 0}},
        }
    )
    assert len(found) == 3


# ---- spec.config -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"sysadvisor": {"indicators": {"cpu_usage_ratio": {"target": -1}}}},
            "spec.config.sysadvisor.indicators.cpu_usage_ratio.target: must be > 0",
        ),
        (
            {"sysadvisor": {"indicators": {"cpu_usage_ratio": {"gains_up": {"kp": -0.5}}}}},
            "spec.config.sysadvisor.indicators.cpu_usage_ratio.gains_up.kp: must be in [0, 1000]",
        ),
        (
            {"sysadvisor": {"limits": {"max_log_step": 20}}},
            "spec.config.sysadvisor.limits.max_log_step: must be <= 10",
        ),
        (
            {"sysadvisor": {"indicators": {"cpu_load": {"target": 1}}}},
            "spec.config.sysadvisor.indicators.cpu_load: unknown setting",
        ),
        (
            {"sysadvisor": {"period_s": "1"}},
            "spec.config.sysadvisor.period_s: expected a number, got str",
        ),
        (
            {
                "sysadvisor": {
                    "indicators": {
                        name: {"enabled": False}
                        for name in ("cpu_usage_ratio", "cpu_sched_wait", "cpu_psi_some_avg10")
                    }
                }
            },
            "spec.config.sysadvisor.indicators: at least one indicator must be enabled",
        ),
        (
            {"eviction": {"memory_pressure": {"consecutive_samples": 0}}},
            "spec.config.eviction.memory_pressure.consecutive_samples: must be an integer >= 1, "
            "got 0 (int)",
        ),
        (
            {"eviction": {"rate_limit": {"per_minute": -1}}},
            "spec.config.eviction.rate_limit.per_minute: must be a finite number > 0, got -1 (int)",
        ),
        (
            {"network": {"reserved_ratio": 0.95}},
            "spec.config.network.reserved_ratio: must be a finite number >= 0 and <= 0.9, "
            "got 0.95 (float)",
        ),
        (
            {"network": {"classify": "iptables"}},
            "spec.config.network.classify: must be one of auto, net_cls, cgroupv2, "
            "got 'iptables' (str)",
        ),
        (
            {"io": {"min_read_bps": 2 * MiB, "max_read_bps": MiB}},
            f"spec.config.io.min_read_bps: must be <= spec.config.io.max_read_bps ({MiB}), "
            f"got {2 * MiB}",
        ),
        (
            {"io": {"devices": ["sda"]}},
            'spec.config.io.devices[0]: must be a block device as "MAJ:MIN"',
        ),
        (
            {"io": {"weights": {"reclaimed_cores": 0}}},
            "spec.config.io.weights.reclaimed_cores: must be an integer >= 1 and <= 10000",
        ),
        ({"reclaim": {"enabled": "no"}}, "spec.config.reclaim.enabled: must be true or false"),
        ({"reclaim": {"enable": True}}, "spec.config.reclaim: unknown key 'enable'"),
        ({"reclaim": True}, "spec.config.reclaim: must be a mapping"),
        (
            {"reporter": {"period_s": 5}},
            "spec.config.reporter: unknown section (known: eviction, io, network, reclaim, "
            "sysadvisor)",
        ),
        (
            {"network": {"interfaces": [{"name": "eth0"}]}},
            "spec.config.network.interfaces: not allowed in a dynamic config (static and "
            "node-local: set it in the agent's file)",
        ),
        (
            {"sysadvisor": {"period_s": 10**400}},
            "spec.config.sysadvisor.period_s: must fit in 64 bits",
        ),
        (
            {"eviction": {"evicting_grace_s": float("nan")}},
            "spec.config.eviction.evicting_grace_s: must be a finite number > 0",
        ),
    ],
)
def test_config_errors_name_the_full_path(config: dict[str, Any], message: str) -> None:
    found = validate_config(config)
    assert len(found) == 1, found
    assert found[0].startswith(message), found[0]


def test_each_broken_section_is_reported() -> None:
    found = validate_config(
        {"sysadvisor": {"period_s": 0}, "eviction": {"retry_after_s": 0}, "io": {"period_s": 0}}
    )
    assert [p.split(":")[0] for p in found] == [
        "spec.config.sysadvisor.period_s",
        "spec.config.eviction.retry_after_s",
        "spec.config.io.period_s",
    ]


def test_nulls_are_removals_not_values() -> None:
    # null would be "off" for psi_some_avg10 in the agent's file; dynamically it removes
    # the key, so the layer below (or the default) shows
    assert validate_config({"eviction": {"memory_pressure": {"psi_some_avg10": None}}}) == ()
    assert validate_config({"sysadvisor": None, "io": {"period_s": None}}) == ()


def test_a_memo_remembers_each_section() -> None:
    memo: Memo = {}
    config = {"io": {"period_s": 0}, "reclaim": {"enabled": True}}
    first = validate_config(config, memo=memo)
    assert len(memo) == 2
    assert validate_config(config, memo=memo) == first
    # 1 and 1.0 are different: an integer setting refuses the second
    assert validate_config({"io": {"cooldown_periods": 1}}, memo=memo) == ()
    assert validate_config({"io": {"cooldown_periods": 1.0}}, memo=memo) != ()


def test_only_the_named_sections_are_built() -> None:
    config = {"io": {"period_s": 0}, "reclaim": {"enabled": True}}
    assert validate_config(config, sections=["reclaim"]) == ()
    assert len(validate_config(config, sections=["io"])) == 1


def test_build_sections_merges_over_the_agents_file() -> None:
    base = {
        "network": {"interfaces": [{"name": "eth0"}], "period_s": 2.0},
        "io": {"max_read_bps": 100 * MiB, "min_read_bps": 50 * MiB},
        "sysadvisor": {"period_s": 0.5},
    }
    dynamic = {
        "reclaim": {"enabled": False},
        "network": {"headroom_ratio": 0.2},
        "io": {"min_read_bps": 60 * MiB},
        "sysadvisor": {"period_s": None},
    }
    sections = build_sections(dynamic, base=base)
    assert sections.reclaim == ReclaimConfig(enabled=False)
    assert sections.network.interfaces[0].name == "eth0"
    assert (sections.network.period_s, sections.network.headroom_ratio) == (2.0, 0.2)
    assert (sections.io.min_read_bps, sections.io.max_read_bps) == (60 * MiB, 100 * MiB)
    assert sections.sysadvisor.period_s == AdvisorConfig().period_s  # the null removed 0.5
    assert sections.eviction == EvictionConfig()
    assert build_sections({}).io == IOConfig()
    assert build_sections({}).network == NetworkConfig()


def test_build_sections_refuses_what_validation_refuses() -> None:
    with pytest.raises(DynamicConfigError, match=r"spec\.config\.io\.min_read_bps: must be <="):
        build_sections({"io": {"min_read_bps": 200 * MiB}}, base={"io": {"max_read_bps": MiB}})
    with pytest.raises(DynamicConfigError, match=r"spec\.config\.network\.interfaces: not allowed"):
        build_sections({"network": {"interfaces": []}})
    with pytest.raises(DynamicConfigError, match=r"^io: must be a mapping"):
        build_sections({}, base={"io": 3})
    with pytest.raises(DynamicConfigError, match=r"spec\.config\.io: must be a mapping"):
        build_sections({"io": 3})


def test_dynamic_sections() -> None:
    assert DYNAMIC_SECTIONS == ("reclaim", "sysadvisor", "eviction", "network", "io")


# ---- service overrides -----------------------------------------------------------------


def _override(indicators: dict[str, Any]) -> dict[str, Any]:
    return {
        "namespace": "default",
        "selector": {"matchLabels": {"app": "web"}},
        "indicators": indicators,
    }


@pytest.mark.parametrize(
    ("indicators", "message"),
    [
        (
            {"cpu_load": {"target": 1}},
            "spec.serviceOverrides[0].indicators.cpu_load: unknown indicator (known: "
            "cpu_usage_ratio, cpu_sched_wait, cpu_psi_some_avg10)",
        ),
        (
            {"cpu_usage_ratio": {"target": 0}},
            "spec.serviceOverrides[0].indicators.cpu_usage_ratio.target: must be > 0",
        ),
        (
            {"cpu_sched_wait": {"target": "fast"}},
            "spec.serviceOverrides[0].indicators.cpu_sched_wait.target: expected a number, got str",
        ),
        (
            {"cpu_sched_wait": {}},
            "spec.serviceOverrides[0].indicators.cpu_sched_wait.target: is required",
        ),
        (
            {"cpu_sched_wait": {"target": 300, "gains_up": {"kp": 2}}},
            "spec.serviceOverrides[0].indicators.cpu_sched_wait.gains_up: cannot be overridden "
            "per service (only target)",
        ),
        ({}, "spec.serviceOverrides[0].indicators: must override at least one indicator"),
    ],
)
def test_service_override_errors_name_the_field(indicators: dict[str, Any], message: str) -> None:
    t = target("t", {"serviceOverrides": [_override(indicators)]})
    assert validate_service_overrides(t.service_overrides) == (message,)
    assert validate_target(kcc(), t) == (message,)


def test_an_integer_too_large_for_a_float_is_refused_not_raised() -> None:
    # parse_target refuses it first; a caller building overrides itself is covered too
    override = ServiceOverride("default", Selector(), {"cpu_sched_wait": {"target": 10**400}})
    (problem,) = validate_service_overrides([override])
    assert problem.startswith(
        "spec.serviceOverrides[0].indicators.cpu_sched_wait.target: must fit in 64 bits"
    )


def test_good_service_overrides() -> None:
    t = target(
        "t",
        {
            "serviceOverrides": [
                _override({"cpu_usage_ratio": {"target": 0.4}}),
                _override({"cpu_sched_wait": {"target": 250}, "cpu_psi_some_avg10": {"target": 5}}),
            ]
        },
    )
    assert validate_target(kcc(), t) == ()
    assert t.service_overrides[1].targets == {"cpu_sched_wait": 250.0, "cpu_psi_some_avg10": 5.0}
