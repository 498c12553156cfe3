"""The eviction manager: rate limit, dedupe, attribution, safety net, counters."""

from __future__ import annotations

import logging

import pytest

from agent.eviction import (
    Candidate,
    EvictionConfig,
    EvictionDecision,
    EvictionManager,
    EvictionOutcome,
    Outcome,
    PodSample,
    Resource,
    Sample,
    build_plugins,
)
from katalyst.clock import FakeClock
from katalyst.qos import QoSLevel
from tests.unit.eviction.samples import GIB, node, pod, sample


class ScriptedPlugin:
    """Names the same pods on every sample, and counts the samples it saw."""

    def __init__(self, name: str, *pods: PodSample, resource: Resource = Resource.MEMORY) -> None:
        self.name = name
        self.pods = list(pods)
        self.resource = resource
        self.seen: list[float] = []

    def observe(self, sample: Sample) -> list[Candidate]:
        self.seen.append(sample.at)
        return [
            Candidate(pod=p, plugin=self.name, resource=self.resource, reason=f"{self.name}: test")
            for p in self.pods
        ]


def _config(**changes: object) -> EvictionConfig:
    settings: dict[str, object] = {
        "rate_limit": {"per_minute": 6, "burst": 2},
        "evicting_grace_s": 120,
        "retry_after_s": 30,
    }
    settings.update(changes)
    return EvictionConfig.from_mapping(settings)


def _step(manager: EvictionManager, clock: FakeClock) -> list[str]:
    return [d.pod.name for d in manager.step(sample(clock.monotonic(), node()))]


A, B, C = pod("a"), pod("b"), pod("c")


async def test_rate_limit_burst_then_one_per_refill_period() -> None:
    clock = FakeClock()
    plugin = ScriptedPlugin("p", A, B, C)
    manager = EvictionManager(_config(), plugins=[plugin], clock=clock)
    assert _step(manager, clock) == ["a", "b"]  # the burst
    assert manager.counters().rate_limited == {"p": 1}
    await clock.advance(9.9)
    assert _step(manager, clock) == []  # 6 a minute: a token every 10 s
    await clock.advance(0.1)
    assert _step(manager, clock) == ["c"]
    assert manager.counters().rate_limited == {"p": 2}
    assert manager.counters().candidates == {"p": 3}


async def test_a_pod_being_evicted_is_not_picked_again_within_the_grace() -> None:
    clock = FakeClock()
    manager = EvictionManager(_config(), plugins=[ScriptedPlugin("p", A)], clock=clock)
    [decision] = manager.step(sample(0, node()))
    manager.record(EvictionOutcome(decision, Outcome.EVICTED))
    await clock.advance(119.0)
    assert _step(manager, clock) == []
    assert set(manager.evicting()) == {A.uid}
    await clock.advance(1.0)  # still listed 120 s later: its eviction did not happen
    assert _step(manager, clock) == ["a"]


@pytest.mark.parametrize("outcome", [Outcome.BLOCKED, Outcome.FAILED])
async def test_a_refused_or_failed_eviction_is_retried_after_retry_after(outcome: Outcome) -> None:
    clock = FakeClock()
    manager = EvictionManager(_config(), plugins=[ScriptedPlugin("p", A)], clock=clock)
    [decision] = manager.step(sample(0, node()))
    await clock.advance(1.0)
    manager.record(EvictionOutcome(decision, outcome, "HTTP 429"))
    await clock.advance(29.9)
    assert _step(manager, clock) == []
    await clock.advance(0.1)
    assert _step(manager, clock) == ["a"]


async def test_a_pod_two_plugins_name_is_decided_once_for_the_first() -> None:
    clock = FakeClock()
    first = ScriptedPlugin("first", A, resource=Resource.CPU)
    second = ScriptedPlugin("second", B, A)
    manager = EvictionManager(_config(), plugins=[first, second], clock=clock)
    decisions = manager.step(sample(0, node()))
    assert [(d.pod.name, d.plugin, d.resource) for d in decisions] == [
        ("a", "first", Resource.CPU),
        ("b", "second", Resource.MEMORY),
    ]
    assert decisions[0].reason == "first: test"


async def test_every_plugin_sees_every_sample_even_when_nothing_can_be_evicted() -> None:
    clock = FakeClock()
    plugins = [ScriptedPlugin("p", A, B), ScriptedPlugin("q", C)]
    manager = EvictionManager(_config(rate_limit={"burst": 1}), plugins=plugins, clock=clock)
    for t in range(3):
        manager.step(sample(float(t), node()))
    assert plugins[0].seen == plugins[1].seen == [0.0, 1.0, 2.0]


async def test_system_and_critical_pods_are_refused_whatever_a_plugin_says(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    rogue = ScriptedPlugin(
        "rogue", pod("sys", QoSLevel.SYSTEM_CORES), pod("crit", is_critical=True), A
    )
    manager = EvictionManager(_config(), plugins=[rogue], clock=clock)
    with caplog.at_level(logging.ERROR, logger="agent.eviction.manager"):
        assert _step(manager, clock) == ["a"]
    assert [r.getMessage() for r in caplog.records] == [
        "rogue named ns/sys, a system_cores, as a victim; refused",
        "rogue named ns/crit, a critical pod, as a victim; refused",
    ]


async def test_outcomes_are_counted_by_plugin_resource_and_outcome() -> None:
    clock = FakeClock()
    manager = EvictionManager(_config(), plugins=[ScriptedPlugin("p", A)], clock=clock)
    decision = EvictionDecision(pod=A, plugin="p", reason="r", resource=Resource.MEMORY)
    for outcome in (Outcome.EVICTED, Outcome.BLOCKED, Outcome.BLOCKED):
        manager.record(EvictionOutcome(decision, outcome))
    assert manager.counters().evictions == {
        ("p", Resource.MEMORY, Outcome.EVICTED): 1,
        ("p", Resource.MEMORY, Outcome.BLOCKED): 2,
    }


def test_plugin_names_must_be_unique() -> None:
    with pytest.raises(ValueError, match="unique"):
        EvictionManager(
            _config(), plugins=[ScriptedPlugin("p"), ScriptedPlugin("p")], clock=FakeClock()
        )


async def test_real_plugins_memory_pressure_evicts_on_the_third_sample_once() -> None:
    """The default table under sustained memory pressure: the N-th sample decides,
    the evicting pod is not decided again, the next victim waits for N more."""
    clock = FakeClock()
    config = _config(
        memory_pressure={"consecutive_samples": 3, "watermark_bytes": 4 * GIB, "watermark_ratio": 0}
    )
    manager = EvictionManager(config, plugins=build_plugins(config), clock=clock)
    low = node(memory_available_bytes=GIB)  # 3 GiB short
    pods = (
        pod("small", memory_usage_bytes=GIB, priority=-1),
        pod("big", memory_usage_bytes=4 * GIB),
        pod("sys", QoSLevel.SYSTEM_CORES, memory_usage_bytes=8 * GIB, priority=-100),
    )
    decided: list[tuple[float, list[str]]] = []
    for _ in range(6):
        names = [d.pod.name for d in manager.step(sample(clock.monotonic(), low, *pods))]
        decided.append((clock.monotonic(), names))
        await clock.advance(5.0)
    # 3rd sample: "small" (lowest priority) then "big" to cover 3 GiB; the 6th sample
    # names them again but both are being evicted.
    assert decided == [
        (0.0, []),
        (5.0, []),
        (10.0, ["small", "big"]),
        (15.0, []),
        (20.0, []),
        (25.0, []),
    ]
    assert manager.counters().candidates["memory_pressure"] == 2
