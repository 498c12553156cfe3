"""A loop of the agent that fails is started again after a back-off, in virtual time."""

from __future__ import annotations

import asyncio

import pytest

from agent.app import _supervised
from katalyst.clock import FakeClock


class Flaky:
    """Fails ``failures`` times, then runs until stop."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.starts = 0

    async def run(self, stop: asyncio.Event) -> None:
        self.starts += 1
        if self.starts <= self.failures:
            raise RuntimeError(f"bug #{self.starts}")
        await stop.wait()


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_a_failing_loop_is_restarted_with_a_growing_back_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, stop, loop = FakeClock(), asyncio.Event(), Flaky(failures=2)
    task = asyncio.create_task(_supervised("flaky", loop, stop, clock))
    await settle()
    assert loop.starts == 1
    await clock.advance(1.0)  # the first back-off: 1 s
    await settle()
    assert loop.starts == 2
    await clock.advance(1.0)  # the second is 2 s: not yet
    await settle()
    assert loop.starts == 2
    await clock.advance(1.0)
    await settle()
    assert loop.starts == 3  # runs now, until stop
    assert "loop flaky failed" in caplog.text
    assert "bug #2" in caplog.text
    stop.set()
    await asyncio.wait_for(task, timeout=5)


async def test_stop_during_the_back_off_ends_the_supervisor() -> None:
    clock, stop = FakeClock(), asyncio.Event()
    task = asyncio.create_task(_supervised("flaky", Flaky(failures=5), stop, clock))
    await settle()
    stop.set()
    await asyncio.wait_for(task, timeout=5)
