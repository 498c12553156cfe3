"""The eviction plugins, driven by scripted sample sequences."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from agent.eviction import (
    Candidate,
    CPUSuppressionConfig,
    CPUSuppressionPlugin,
    EvictionConfig,
    MemoryPressureConfig,
    MemoryPressurePlugin,
    NodeSample,
    PodSample,
    ReclaimedOvercommitConfig,
    ReclaimedOvercommitPlugin,
    Resource,
    build_plugins,
    rank_victims,
)
from katalyst.qos import QoSLevel
from tests.unit.eviction.samples import GIB, MIB, node, pod, sample

SHARED = QoSLevel.SHARED_CORES
DEDICATED = QoSLevel.DEDICATED_CORES
SYSTEM = QoSLevel.SYSTEM_CORES


def _names(candidates: list[Candidate]) -> list[str]:
    return [c.pod.name for c in candidates]


# --- memory pressure -----------------------------------------------------------------

# 16 GiB node, watermark 2 GiB: 1 GiB available is a deficit of 1 GiB.
LOW = node(memory_available_bytes=1 * GIB)
OK = node(memory_available_bytes=8 * GIB)
# Pods use most of the used memory, so the pressure is theirs.
BIG_SHARED = pod("web", SHARED, memory_usage_bytes=10 * GIB)


def _memory(**changes: object) -> MemoryPressurePlugin:
    settings: dict[str, object] = {
        "consecutive_samples": 3,
        "watermark_bytes": 2 * GIB,
        "watermark_ratio": 0.0,
    }
    settings.update(changes)
    return MemoryPressurePlugin(MemoryPressureConfig.from_mapping(settings))


def test_memory_pressure_asks_on_exactly_the_nth_bad_sample_and_then_counts_again() -> None:
    plugin = _memory()
    victim = pod("batch", memory_usage_bytes=2 * GIB)
    results = [plugin.observe(sample(5.0 * i, LOW, victim, BIG_SHARED)) for i in range(6)]
    assert [len(r) for r in results] == [0, 0, 1, 0, 0, 1]
    assert plugin.bad_samples == 0


def test_memory_pressure_a_good_sample_resets_the_count() -> None:
    plugin = _memory()
    victim = pod("batch", memory_usage_bytes=2 * GIB)
    script = [LOW, LOW, OK, LOW, LOW, LOW]
    results = [plugin.observe(sample(5.0 * i, n, victim, BIG_SHARED)) for i, n in enumerate(script)]
    assert [len(r) for r in results] == [0, 0, 0, 0, 0, 1]


def test_memory_pressure_victims_lowest_priority_then_highest_usage_until_covered() -> None:
    pods = (
        pod("a-high-prio", priority=10, memory_usage_bytes=3 * GIB),
        pod("b-small", priority=-5, memory_usage_bytes=512 * MIB),
        pod("c-large", priority=-5, memory_usage_bytes=1 * GIB),
        BIG_SHARED,
    )
    # Deficit 1 GiB: the largest of the lowest priority covers it alone.
    plugin = _memory(consecutive_samples=1)
    assert _names(plugin.observe(sample(0, LOW, *pods))) == ["c-large"]
    # Deficit 3 GiB (watermark 4 GiB): then the smaller one, then the next priority.
    plugin = _memory(consecutive_samples=1, watermark_bytes=4 * GIB)
    assert _names(plugin.observe(sample(0, LOW, *pods))) == ["c-large", "b-small", "a-high-prio"]


def test_memory_pressure_never_names_system_or_critical_pods_nor_other_levels_by_default() -> None:
    pods = (
        pod("sys", SYSTEM, priority=-1000, memory_usage_bytes=8 * GIB),
        pod("critical", priority=-1000, is_critical=True, memory_usage_bytes=8 * GIB),
        pod("shared", SHARED, priority=-1000, memory_usage_bytes=8 * GIB),
        pod("dedicated", DEDICATED, priority=-1000, memory_usage_bytes=8 * GIB),
        pod("batch", priority=1000, memory_usage_bytes=1 * MIB),
    )
    plugin = _memory(consecutive_samples=1)
    assert _names(plugin.observe(sample(0, LOW, *pods))) == ["batch"]


def test_memory_pressure_other_levels_only_when_allowed_and_after_reclaimed() -> None:
    pods = (
        pod("sys", SYSTEM, memory_usage_bytes=8 * GIB),
        pod("critical-shared", SHARED, is_critical=True, memory_usage_bytes=8 * GIB),
        pod("dedicated", DEDICATED, priority=-1000, memory_usage_bytes=8 * GIB),
        pod("shared", SHARED, priority=-1000, memory_usage_bytes=512 * MIB),
        pod("batch", priority=1000, memory_usage_bytes=256 * MIB),
    )
    shared_only = _memory(consecutive_samples=1, evict_shared_cores=True)
    assert _names(shared_only.observe(sample(0, LOW, *pods))) == ["batch", "shared"]
    both = _memory(consecutive_samples=1, evict_shared_cores=True, evict_dedicated_cores=True)
    assert _names(both.observe(sample(0, LOW, *pods))) == ["batch", "shared", "dedicated"]


def test_memory_pressure_with_nothing_evictable_asks_for_nothing() -> None:
    plugin = _memory(consecutive_samples=1)
    pods = (pod("sys", SYSTEM, memory_usage_bytes=12 * GIB), pod("idle", memory_usage_bytes=0))
    assert plugin.observe(sample(0, LOW, *pods)) == []


def test_memory_pressure_not_caused_by_pods_evicts_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # 15 GiB in use, pods 7 GiB of it: below half, the pressure is not theirs.
    pods = (
        pod("batch", memory_usage_bytes=1 * GIB),
        pod("web", SHARED, memory_usage_bytes=6 * GIB),
    )
    plugin = _memory(consecutive_samples=1)
    with caplog.at_level(logging.DEBUG, logger="agent.eviction.plugins"):
        assert plugin.observe(sample(0, LOW, *pods)) == []
        assert plugin.observe(sample(5, LOW, *pods)) == []
    lines = [r for r in caplog.records if "pressure not caused by pods" in r.getMessage()]
    assert [r.levelno for r in lines] == [logging.WARNING, logging.DEBUG]  # once per episode
    assert "pods use 7168 MiB of the 15360 MiB in use (below 50%)" in lines[0].getMessage()
    # A pod grows to 8 GiB of the 15: now they are the cause.
    pods = (pod("batch", memory_usage_bytes=2 * GIB), pods[1])
    assert _names(plugin.observe(sample(10, LOW, *pods))) == ["batch"]
    # The rule can be turned off.
    off = _memory(consecutive_samples=1, min_pod_usage_ratio=0.0)
    assert _names(off.observe(sample(0, LOW, pod("tiny", memory_usage_bytes=MIB)))) == ["tiny"]


def test_memory_pressure_reason_names_the_measure_threshold_and_goal() -> None:
    plugin = _memory()
    victim = pod("batch", memory_usage_bytes=3 * GIB)
    for i in range(2):
        plugin.observe(sample(i, LOW, victim, BIG_SHARED))
    [candidate] = plugin.observe(sample(2, LOW, victim, BIG_SHARED))
    assert candidate.plugin == "memory_pressure"
    assert candidate.resource is Resource.MEMORY
    assert candidate.reason == (
        "memory_pressure: MemAvailable 1024 MiB below the watermark 2048 MiB for 3 samples "
        "in a row; evicting to free 1024 MiB (this pod uses 3072 MiB)"
    )


def test_memory_pressure_psi_alone_asks_for_one_victim() -> None:
    plugin = _memory(consecutive_samples=2, psi_some_avg10=10.0)
    stalled = node(memory_psi_some_avg10=25.5)
    calm = node(memory_psi_some_avg10=10.0)  # at the threshold is not above it
    pods = (pod("a", memory_usage_bytes=GIB), pod("b", memory_usage_bytes=2 * GIB), BIG_SHARED)
    assert plugin.observe(sample(0, stalled, *pods)) == []
    assert plugin.observe(sample(5, calm, *pods)) == []
    assert plugin.observe(sample(10, stalled, *pods)) == []
    [candidate] = plugin.observe(sample(15, stalled, *pods))
    assert candidate.pod.name == "b"
    assert candidate.reason == (
        "memory_pressure: memory PSI some avg10 25.5% above 10% for 2 samples in a row; "
        "evicting one pod (this pod uses 2048 MiB)"
    )


def test_memory_pressure_psi_full_and_both_measures_in_the_reason() -> None:
    plugin = _memory(consecutive_samples=1, psi_some_avg10=None, psi_full_avg10=5.0)
    both = node(memory_available_bytes=GIB, memory_psi_some_avg10=99.0, memory_psi_full_avg10=6.0)
    [candidate] = plugin.observe(sample(0, both, pod("a", memory_usage_bytes=2 * GIB), BIG_SHARED))
    assert candidate.reason.startswith(
        "memory_pressure: MemAvailable 1024 MiB below the watermark 2048 MiB and memory PSI "
        "full avg10 6.0% above 5% for 1 sample; "
    )
    # No PSI on the node: only the watermark counts.
    assert _memory(consecutive_samples=1).observe(sample(0, OK, BIG_SHARED)) == []


def test_memory_watermark_is_the_larger_of_bytes_and_ratio() -> None:
    victim = pod("batch", memory_usage_bytes=4 * GIB)
    plugin = _memory(consecutive_samples=1, watermark_bytes=GIB, watermark_ratio=0.25)
    three = node(memory_available_bytes=3 * GIB)  # below 25 % of 16 GiB = 4 GiB
    [candidate] = plugin.observe(sample(0, three, victim, BIG_SHARED))
    assert "below the watermark 4096 MiB" in candidate.reason
    assert "evicting to free 1024 MiB" in candidate.reason


# --- reclaimed over-commit -----------------------------------------------------------


def _overcommit(**changes: object) -> ReclaimedOvercommitPlugin:
    settings: dict[str, object] = {"consecutive_samples": 2}
    settings.update(changes)
    return ReclaimedOvercommitPlugin(ReclaimedOvercommitConfig.from_mapping(settings))


def _lent(cpu: int | None = None, memory: int | None = None) -> NodeSample:
    return node(reclaimed_allocatable_millicpu=cpu, reclaimed_allocatable_memory_bytes=memory)


CPU_PODS = (
    pod("p1", reclaimed_millicpu=2000, cpu_usage_cores=0.5),
    pod("p2", reclaimed_millicpu=1500, cpu_usage_cores=1.5),
    pod("p3", reclaimed_millicpu=1500, cpu_usage_cores=0.1, priority=-1),
    pod("web", SHARED, cpu_usage_cores=8.0),
)


def test_overcommit_cpu_asks_on_the_nth_sample_for_victims_until_under() -> None:
    plugin = _overcommit()
    over = _lent(cpu=4000)  # 5000m requested
    assert plugin.observe(sample(0, over, *CPU_PODS)) == []
    assert plugin.bad_samples(Resource.CPU) == 1
    [candidate] = plugin.observe(sample(5, over, *CPU_PODS))
    # Lowest priority first: p3 releases 1500m >= the 1000m excess.
    assert candidate.pod.name == "p3"
    assert candidate.resource is Resource.CPU
    assert candidate.reason == (
        "reclaimed_overcommit: reclaimed cpu requests 5000m exceed 1 x the reported reclaimed "
        "allocatable 4000m for 2 samples in a row; evicting to release 1000m "
        "(this pod requests 1500m)"
    )
    # Counting starts again.
    assert plugin.observe(sample(10, over, *CPU_PODS)) == []


def test_overcommit_within_a_priority_highest_usage_first_and_as_many_as_needed() -> None:
    plugin = _overcommit(consecutive_samples=1)
    # 2600m excess: p3 (priority -1), then p2 (1.5 cores used) before p1 (0.5).
    candidates = plugin.observe(sample(0, _lent(cpu=2400), *CPU_PODS))
    assert _names(candidates) == ["p3", "p2"]
    # Releasing exactly the excess is enough: 5000m requested, 3500m lent.
    assert _names(plugin.observe(sample(1, _lent(cpu=3500), *CPU_PODS))) == ["p3"]


def test_overcommit_reset_on_a_good_sample_and_rate_scales_the_allocatable() -> None:
    plugin = _overcommit(cpu_rate=1.25)
    over, fits = _lent(cpu=3900), _lent(cpu=4000)  # 1.25 x 4000 = 5000 >= 5000
    script = [over, fits, over, over]
    results = [plugin.observe(sample(i, n, *CPU_PODS)) for i, n in enumerate(script)]
    assert [len(r) for r in results] == [0, 0, 0, 1]
    assert "exceed 1.25 x the reported reclaimed allocatable 3900m" in results[3][0].reason


def test_overcommit_waits_for_a_reported_allocatable() -> None:
    plugin = _overcommit(consecutive_samples=1)
    assert plugin.observe(sample(0, _lent(), *CPU_PODS)) == []
    # Zero lent is a real report: every reclaimed request is too much.
    assert len(plugin.observe(sample(1, _lent(cpu=0), *CPU_PODS))) == 3


def test_overcommit_memory_counts_pods_already_chosen_for_cpu() -> None:
    pods = (
        pod("a", reclaimed_millicpu=3000, reclaimed_memory_bytes=3 * GIB, priority=-1),
        pod("b", reclaimed_millicpu=1000, reclaimed_memory_bytes=4 * GIB, memory_usage_bytes=GIB),
        pod("c", reclaimed_millicpu=1000, reclaimed_memory_bytes=1 * GIB),
    )
    plugin = _overcommit(consecutive_samples=1)
    candidates = plugin.observe(sample(0, _lent(cpu=3000, memory=6 * GIB), *pods))
    # cpu: 5000m over 3000m, "a" releases 3000m. memory: 8 GiB over 6 GiB, "a" already
    # releases 3 GiB: nobody else.
    assert [(c.pod.name, c.resource) for c in candidates] == [("a", Resource.CPU)]
    candidates = plugin.observe(sample(1, _lent(cpu=4500, memory=3 * GIB), *pods))
    assert [(c.pod.name, c.resource) for c in candidates] == [
        ("a", Resource.CPU),
        ("b", Resource.MEMORY),
    ]
    assert candidates[1].reason == (
        "reclaimed_overcommit: reclaimed memory requests 8192 MiB exceed 1 x the reported "
        "reclaimed allocatable 3072 MiB for 1 sample; evicting to release 5120 MiB "
        "(this pod requests 4096 MiB)"
    )


def test_overcommit_never_names_critical_pods_and_a_null_rate_turns_a_resource_off() -> None:
    pods = (
        pod("critical", reclaimed_millicpu=5000, is_critical=True),
        pod("batch", reclaimed_millicpu=100),
    )
    plugin = _overcommit(consecutive_samples=1)
    assert _names(plugin.observe(sample(0, _lent(cpu=1000), *pods))) == ["batch"]
    off = _overcommit(consecutive_samples=1, cpu_rate=None)
    assert off.observe(sample(0, _lent(cpu=1000), *pods)) == []


# --- CPU suppression -----------------------------------------------------------------


def _suppression(duration: float = 60.0) -> CPUSuppressionPlugin:
    return CPUSuppressionPlugin(CPUSuppressionConfig(min_duration_s=duration))


def _starved(
    name: str, supply: float | None, tolerance: float | None = 2.0, **kw: Any
) -> PodSample:
    return pod(name, cpu_supply_ratio=supply, suppression_tolerance_rate=tolerance, **kw)


def test_suppression_evicts_once_it_lasted_longer_than_the_duration() -> None:
    plugin = _suppression(60.0)
    starved = _starved("batch", 0.25)  # suppression 4 > tolerance 2
    for t in range(0, 61, 10):
        assert plugin.observe(sample(float(t), OK, starved)) == [], t
    assert plugin.suppressed_since(starved.uid) == 0.0
    [candidate] = plugin.observe(sample(70.0, OK, starved))
    assert candidate.pod.name == "batch"
    assert candidate.resource is Resource.CPU
    assert candidate.reason == (
        "cpu_suppression: the pod gets 0.25 of the CPU it requests (suppression rate 4.00, "
        "above its suppression_tolerance_rate 2) for 70 s, longer than 60 s"
    )


def test_suppression_a_recovery_restarts_the_duration() -> None:
    plugin = _suppression(60.0)
    script = {0: 0.25, 10: 0.25, 20: 0.25, 30: 0.5, 40: 0.25}  # 0.5 is exactly tolerated
    for t, supply in script.items():
        assert plugin.observe(sample(float(t), OK, _starved("batch", supply))) == []
    for t in range(50, 101, 10):
        assert plugin.observe(sample(float(t), OK, _starved("batch", 0.25))) == [], t
    assert len(plugin.observe(sample(110.0, OK, _starved("batch", 0.25)))) == 1


def test_suppression_only_reclaimed_pods_with_a_tolerance_and_a_reading() -> None:
    plugin = _suppression(0.0)
    pods = (
        _starved("no-tolerance", 0.0, tolerance=None),
        _starved("no-reading", None),
        _starved("nan-reading", float("nan")),
        _starved("shared", 0.0, level=SHARED),
        _starved("critical", 0.0, is_critical=True),
        _starved("fine", 0.9),
    )
    assert plugin.observe(sample(0.0, OK, *pods)) == []
    assert plugin.observe(sample(10.0, OK, *pods)) == []


def test_suppression_no_supply_is_infinite_suppression() -> None:
    plugin = _suppression(0.0)
    plugin.observe(sample(0.0, OK, _starved("batch", 0.0)))
    [candidate] = plugin.observe(sample(1.0, OK, _starved("batch", 0.0)))
    assert "gets 0.00 of the CPU it requests (suppression rate inf" in candidate.reason


def test_suppression_one_pod_per_sample_best_victim_first_and_timers_of_gone_pods_dropped() -> None:
    plugin = _suppression(10.0)
    pods = [
        _starved("hi", 0.1, priority=5, cpu_usage_cores=3.0),
        _starved("lo-busy", 0.1, priority=1, cpu_usage_cores=2.0),
        _starved("lo-idle", 0.1, priority=1, cpu_usage_cores=0.5),
    ]
    plugin.observe(sample(0.0, OK, *pods))
    assert _names(plugin.observe(sample(20.0, OK, *pods))) == ["lo-busy"]
    # While it is still listed (being evicted) it stays the one named.
    assert _names(plugin.observe(sample(25.0, OK, *pods))) == ["lo-busy"]
    del pods[1]
    assert plugin.suppressed_since(pods[0].uid) == 0.0
    assert _names(plugin.observe(sample(30.0, OK, *pods))) == ["lo-idle"]
    assert plugin.suppressed_since(_starved("lo-busy", 0.1).uid) is None


# --- ordering and the table ----------------------------------------------------------


def test_rank_victims_orders_levels_priority_usage_then_name() -> None:
    pods = [
        pod("z", priority=None, memory_usage_bytes=1),
        pod("y", priority=0, memory_usage_bytes=1),
        pod("x", priority=-1, memory_usage_bytes=1),
        pod("w", SHARED, priority=-100, memory_usage_bytes=100),
        pod("v", priority=0, memory_usage_bytes=5),
        pod("s", SYSTEM, priority=-100),
    ]
    ranked = rank_victims(
        pods,
        levels=(QoSLevel.RECLAIMED_CORES, SHARED, SYSTEM),
        usage=lambda p: p.memory_usage_bytes,
    )
    # None ranks as priority 0; system_cores is never ranked, whatever the caller asks.
    assert [p.name for p in ranked] == ["x", "v", "y", "z", "w"]


def test_build_plugins_is_the_explicit_table_of_enabled_plugins() -> None:
    assert [p.name for p in build_plugins(EvictionConfig())] == [
        "memory_pressure",
        "reclaimed_overcommit",
        "cpu_suppression",
    ]
    config = EvictionConfig.from_mapping(
        {"memory_pressure": {"enabled": False}, "cpu_suppression": {"enabled": False}}
    )
    assert [p.name for p in build_plugins(config)] == ["reclaimed_overcommit"]
