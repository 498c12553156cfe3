"""The fake clock runs loops in virtual time with exact wake-ups."""

from __future__ import annotations

import asyncio

import pytest

from katalyst.clock import Clock, FakeClock, MonotonicClock, first_of


async def _loop(clock: Clock, period: float, ticks: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        ticks.append(clock.monotonic())
        await clock.sleep(period)


async def test_a_periodic_loop_wakes_exactly_once_per_period() -> None:
    clock = FakeClock()
    ticks: list[float] = []
    stop = asyncio.Event()
    task = asyncio.create_task(_loop(clock, 5.0, ticks, stop))
    await clock.advance(0)
    assert ticks == [0.0]
    await clock.advance(12.0)
    assert ticks == [0.0, 5.0, 10.0]
    assert clock.monotonic() == 12.0
    await clock.advance(3.0)
    assert ticks == [0.0, 5.0, 10.0, 15.0]
    stop.set()
    await clock.advance(5.0)
    await task


async def test_sleepers_wake_in_deadline_order() -> None:
    clock = FakeClock(start=100.0)
    order: list[str] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        order.append(f"{name}@{clock.monotonic():g}")

    tasks = [asyncio.create_task(sleeper(n, s)) for n, s in (("b", 2), ("a", 1), ("c", 3))]
    await clock.advance(0)
    assert clock.sleepers == 3
    await clock.advance(10)
    await asyncio.gather(*tasks)
    assert order == ["a@101", "b@102", "c@103"]
    assert clock.wall() > 1e9


async def test_negative_advance_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        await FakeClock().advance(-1)


async def test_the_real_clock_sleeps() -> None:
    clock = MonotonicClock()
    before = clock.monotonic()
    await clock.sleep(0.01)
    assert clock.monotonic() > before


async def test_nan_is_refused() -> None:
    clock = FakeClock()
    with pytest.raises(ValueError, match="NaN"):
        await clock.sleep(float("nan"))
    with pytest.raises(ValueError, match="negative"):
        await clock.advance(float("nan"))


async def test_first_of_returns_on_the_first_and_cancels_the_rest() -> None:
    clock = FakeClock()
    stop = asyncio.Event()
    waiter = asyncio.create_task(first_of(clock.sleep(10), stop))
    for _ in range(10):  # until the sleep has registered
        await asyncio.sleep(0)
    assert clock.sleepers == 1
    stop.set()
    await asyncio.wait_for(waiter, timeout=5)
    assert clock.sleepers == 0  # the sleep was cancelled, not left behind

    waiter = asyncio.create_task(first_of(clock.sleep(1), asyncio.Event()))
    for _ in range(10):
        await asyncio.sleep(0)
    await clock.advance(1)
    await asyncio.wait_for(waiter, timeout=5)
