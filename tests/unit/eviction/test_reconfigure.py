"""New eviction settings while the manager runs: the next step uses them, and each
plugin keeps its counters where their meaning stays."""

from __future__ import annotations

import pytest

from agent.eviction import (
    CPUSuppressionConfig,
    CPUSuppressionPlugin,
    EvictionConfig,
    EvictionManager,
    EvictionOutcome,
    MemoryPressureConfig,
    MemoryPressurePlugin,
    RateLimiter,
    ReclaimedOvercommitConfig,
    ReclaimedOvercommitPlugin,
    Resource,
    build_plugins,
)
from agent.eviction.model import Outcome
from katalyst.clock import FakeClock
from tests.unit.eviction.samples import GIB, node, pod, sample
from tests.unit.eviction.test_plugins import BIG_SHARED, LOW, OK

VICTIM = pod("batch", memory_usage_bytes=2 * GIB)


def memory(**changes: object) -> MemoryPressureConfig:
    settings: dict[str, object] = {
        "consecutive_samples": 3,
        "watermark_bytes": 2 * GIB,
        "watermark_ratio": 0.0,
    }
    settings.update(changes)
    return MemoryPressureConfig.from_mapping(settings)


def asked(plugin: MemoryPressurePlugin, at: float) -> int:
    """How many victims the plugin asks for on a low-memory sample at ``at``."""
    return len(plugin.observe(sample(at, LOW, VICTIM, BIG_SHARED)))


# ---- the plugins ----------------------------------------------------------------------


def test_a_new_sample_count_keeps_the_bad_samples_seen_so_far() -> None:
    plugin = MemoryPressurePlugin(memory())
    assert [asked(plugin, t) for t in (0, 1)] == [0, 0]
    plugin.configure(memory(consecutive_samples=4))
    assert plugin.bad_samples == 2
    assert [asked(plugin, t) for t in (2, 3)] == [0, 1]  # the 4th bad sample in a row


def test_a_count_already_past_a_shorter_one_asks_at_the_next_bad_sample() -> None:
    plugin = MemoryPressurePlugin(memory(consecutive_samples=5))
    assert [asked(plugin, t) for t in range(3)] == [0, 0, 0]
    plugin.configure(memory(consecutive_samples=2))
    assert asked(plugin, 3) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"watermark_bytes": 3 * GIB},
        {"watermark_ratio": 0.1},
        {"psi_some_avg10": 20.0},
        {"psi_full_avg10": 5.0},
    ],
)
def test_a_new_rule_of_what_is_bad_counts_from_zero(change: dict[str, object]) -> None:
    plugin = MemoryPressurePlugin(memory())
    assert [asked(plugin, t) for t in (0, 1)] == [0, 0]
    plugin.configure(memory(**change))
    assert plugin.bad_samples == 0
    assert [asked(plugin, t) for t in (2, 3, 4)] == [0, 0, 1]


def test_victim_levels_follow_the_new_settings() -> None:
    plugin = MemoryPressurePlugin(memory(consecutive_samples=1))
    only_shared = sample(0, LOW, BIG_SHARED)
    assert plugin.observe(only_shared) == []
    plugin.configure(memory(consecutive_samples=1, evict_shared_cores=True))
    assert [c.pod.name for c in plugin.observe(only_shared)] == ["web"]


def test_overcommit_restarts_the_count_of_the_resource_whose_rate_changed() -> None:
    config = ReclaimedOvercommitConfig(consecutive_samples=3)
    plugin = ReclaimedOvercommitPlugin(config)
    greedy = pod("batch", reclaimed_millicpu=4000, reclaimed_memory_bytes=4 * GIB)
    tight = node(reclaimed_allocatable_millicpu=2000, reclaimed_allocatable_memory_bytes=2 * GIB)
    for t in (0, 1):
        assert plugin.observe(sample(t, tight, greedy)) == []
    plugin.configure(ReclaimedOvercommitConfig(consecutive_samples=3, cpu_rate=1.5))
    assert plugin.bad_samples(Resource.CPU) == 0
    assert plugin.bad_samples(Resource.MEMORY) == 2
    third = plugin.observe(sample(2, tight, greedy))
    assert [c.resource for c in third] == [Resource.MEMORY]


def test_suppression_keeps_when_each_pod_went_over_its_tolerance() -> None:
    plugin = CPUSuppressionPlugin(CPUSuppressionConfig(min_duration_s=300))
    starved = pod("batch", suppression_tolerance_rate=2.0, cpu_supply_ratio=0.1)
    assert plugin.observe(sample(0, OK, starved)) == []
    assert plugin.observe(sample(100, OK, starved)) == []
    plugin.configure(CPUSuppressionConfig(min_duration_s=60))
    assert plugin.suppressed_since(starved.uid) == 0
    assert [c.pod.name for c in plugin.observe(sample(101, OK, starved))] == ["batch"]


def test_build_plugins_reuses_the_running_ones_that_stay_enabled() -> None:
    first = build_plugins(EvictionConfig())
    off = EvictionConfig.from_mapping({"reclaimed_overcommit": {"enabled": False}})
    second = build_plugins(off, current=first)
    assert [p.name for p in second] == ["memory_pressure", "cpu_suppression"]
    assert second[0] is first[0] and second[1] is first[2]
    third = build_plugins(EvictionConfig(), current=second)
    assert third[1] is not first[1]  # switched on again: a fresh one
    assert third[0] is first[0]


# ---- the rate limiter -----------------------------------------------------------------


async def test_the_rate_limiter_keeps_its_tokens_up_to_the_new_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_minute=6, burst=3, clock=clock)
    assert limiter.try_acquire()
    limiter.reconfigure(per_minute=60, burst=5)
    assert limiter.tokens == 2.0  # not a fresh burst
    await clock.advance(2.0)
    assert limiter.tokens == pytest.approx(4.0)  # the new rate: one a second
    limiter.reconfigure(per_minute=60, burst=1)
    assert limiter.tokens == 1.0
    with pytest.raises(ValueError, match="burst"):
        limiter.reconfigure(per_minute=60, burst=0)


# ---- the manager ----------------------------------------------------------------------


async def test_the_manager_takes_new_settings_at_its_next_step() -> None:
    clock = FakeClock()
    config = EvictionConfig.from_mapping({"memory_pressure": {"consecutive_samples": 3}})
    manager = EvictionManager(config, plugins=build_plugins(config), clock=clock)
    plugin = manager.plugins[0]
    low = node(memory_available_bytes=GIB // 2)  # below 5 % of 16 GiB
    assert manager.step(sample(0, low, VICTIM, BIG_SHARED)) == []
    new = EvictionConfig.from_mapping(
        {
            "memory_pressure": {"consecutive_samples": 2},
            "cpu_suppression": {"enabled": False},
            "evicting_grace_s": 10,
        }
    )
    manager.configure(new)
    assert manager.config == new
    assert [p.name for p in manager.plugins] == [
        "memory_pressure",
        "reclaimed_overcommit",
        "cpu_suppression",
    ]  # until the next step
    (decision,) = manager.step(sample(1, low, VICTIM, BIG_SHARED))
    assert manager.plugins[0] is plugin  # kept, with its count of 1: 2 in a row now
    assert [p.name for p in manager.plugins] == ["memory_pressure", "reclaimed_overcommit"]
    assert "cpu_suppression" not in manager.counters().candidates
    assert manager.counters().candidates["memory_pressure"] == 1
    # The new grace period for the new decision.
    assert manager.evicting() == {VICTIM.uid: 10.0}
    manager.record(EvictionOutcome(decision, Outcome.EVICTED))
    assert manager.evicting() == {VICTIM.uid: 10.0}


async def test_the_manager_rate_limit_is_reconfigured_without_a_fresh_burst() -> None:
    clock = FakeClock()
    config = EvictionConfig.from_mapping(
        {"rate_limit": {"per_minute": 1, "burst": 1}, "memory_pressure": {"consecutive_samples": 1}}
    )
    manager = EvictionManager(config, plugins=build_plugins(config), clock=clock)
    low = node(memory_available_bytes=GIB // 2)
    pods = [pod(f"b{i}", memory_usage_bytes=GIB // 8) for i in range(6)]

    def evicted(at: float) -> list[str]:
        return [d.pod.name for d in manager.step(sample(at, low, *pods, BIG_SHARED))]

    assert evicted(0) == ["b0"]  # the one token
    manager.configure(
        EvictionConfig.from_mapping(
            {
                "rate_limit": {"per_minute": 60, "burst": 3},
                "memory_pressure": {"consecutive_samples": 1},
            }
        )
    )
    assert evicted(0) == []  # no token left, and none handed out by the change
    await clock.advance(2.0)
    assert evicted(2) == ["b1", "b2"]  # two seconds at one a second
