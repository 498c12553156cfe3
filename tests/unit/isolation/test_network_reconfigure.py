"""New network settings while the loop runs: the cap's settings from the next period,
the start-up ones refused. Time is a :class:`katalyst.clock.FakeClock`; the kernel's
side is the stand-ins of ``tests/support/isolation_fakes.py``."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from agent.isolation.network import (
    RECLAIMED,
    STATIC_FIELDS,
    CapController,
    CapDecision,
    InterfaceConfig,
    NetworkConfig,
    NetworkConfigError,
    static_changes,
)
from katalyst.clock import FakeClock
from tests.support.wait import eventually
from tests.unit.isolation.test_network import LINK, make_loop


def test_new_ratios_apply_at_the_next_decision_and_the_cap_ramps_from_where_it_is() -> None:
    c = CapController(NetworkConfig(), LINK)
    assert [c.decide(0.0).cap_mbit for _ in range(3)] == [110, 210, 310]
    c.configure(NetworkConfig(step_up_ratio=0.3, headroom_ratio=0.2))
    # From 310, by 300 a period, up to the new target 1000 - 200.
    assert [c.decide(0.0).cap_mbit for _ in range(3)] == [610, 800, 800]
    assert c.decide(0.0) == CapDecision(800.0, 800.0, 0.0, "normal")


def test_a_higher_floor_lifts_the_cap_at_once_a_lower_one_leaves_it() -> None:
    c = CapController(NetworkConfig(), LINK)
    c.decide(900.0)  # the services use nearly everything: the cap at the floor, 10
    assert c.cap_mbit == 10.0
    c.configure(NetworkConfig(reclaimed_floor_ratio=0.2))
    assert (c.floor_mbit, c.cap_mbit) == (200.0, 200.0)
    c.configure(NetworkConfig(reclaimed_floor_ratio=0.05))
    assert (c.floor_mbit, c.cap_mbit) == (50.0, 200.0)
    assert c.decide(900.0).cap_mbit == 50.0  # down at once, as ever


def test_a_shorter_stale_count_keeps_the_periods_already_missed() -> None:
    c = CapController(NetworkConfig(stale_periods=5), LINK)
    c.decide(0.0)
    assert [c.decide(None).mode for _ in range(2)] == ["normal", "normal"]
    c.configure(NetworkConfig(stale_periods=3))
    assert c.decide(None).mode == "degraded"


def test_only_the_start_up_settings_are_static() -> None:
    base = NetworkConfig(interfaces=(InterfaceConfig(name="eth0"),))
    assert static_changes(base, dataclasses.replace(base, headroom_ratio=0.3, period_s=5)) == []
    changed = dataclasses.replace(
        base,
        interfaces=(InterfaceConfig(name="eth0"), InterfaceConfig(name="eth1", speed_mbit=100)),
        classify="net_cls",
    )
    problems = static_changes(base, changed)
    assert [p.split(":")[0] for p in problems] == ["network.interfaces", "network.classify"]
    assert "['eth0', 'eth1 at 100 Mbit/s']" in problems[0]
    assert "a dynamic config cannot change it" in problems[0]
    assert set(STATIC_FIELDS) >= {"interfaces", "classify", "reserved_ratio"}


def test_the_loop_refuses_a_change_of_its_interfaces_and_keeps_its_settings() -> None:
    config = NetworkConfig(interfaces=(InterfaceConfig(name="eth0"),))
    loop, _, _ = make_loop(config)
    other = dataclasses.replace(config, interfaces=(InterfaceConfig(name="eth1"),))
    with pytest.raises(NetworkConfigError, match=r"network\.interfaces: fixed at start-up"):
        loop.configure(dataclasses.replace(other, headroom_ratio=0.3))
    assert loop.config == config


def test_the_loop_uses_new_cap_settings_from_its_next_period() -> None:
    clock = FakeClock()
    loop, (shaper,), _ = make_loop(clock=clock)
    for _ in range(3):
        loop.step()
        shaper.transmit(1.0)
    state = loop.interfaces[0]
    assert state.last is not None
    before = state.last.cap_mbit
    loop.configure(NetworkConfig(reclaimed_floor_ratio=0.5, min_class_ratio=0.2))
    assert loop.config.reclaimed_floor_ratio == 0.5  # visible at once
    assert state.controller.floor_mbit == 10.0  # taken up at the next period
    loop.step()
    assert state.controller.floor_mbit == 500.0
    assert state.last.cap_mbit >= 500.0 > before
    assert state.guaranteed_mbit[RECLAIMED] == 500.0
    classes = {spec.minor: spec for spec in shaper.tree.values()}
    assert min(spec.rate_mbit for spec in classes.values()) >= 200.0  # min_class_ratio


async def test_a_new_period_takes_effect_from_the_next_sleep() -> None:
    clock = FakeClock()
    loop, _, _ = make_loop(NetworkConfig(period_s=1.0), clock=clock)
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))

    async def asleep_after(passes: int) -> None:
        # The pass runs in a worker thread; the loop then sleeps on the clock.
        await eventually(lambda: loop.passes == passes and clock.sleepers == 1, "the sleep")

    try:
        await asleep_after(1)
        loop.configure(NetworkConfig(period_s=5.0))
        await clock.advance(1.0)  # the sleep already running keeps its length
        await asleep_after(2)
        await clock.advance(4.9)
        await asleep_after(2)  # now five seconds
        await clock.advance(0.1)
        await asleep_after(3)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=5)
