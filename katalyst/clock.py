"""The clock seam: every loop and timer takes a :class:`Clock`.

Production code uses :class:`MonotonicClock`; tests use :class:`FakeClock` and
advance virtual time explicitly, so that control loops can be run for hours of
virtual time in milliseconds and reaction times asserted exactly (in the manner
of trio's ``MockClock``).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections.abc import Awaitable
from typing import Protocol


class Clock(Protocol):
    """Monotonic time and sleeping."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin; never goes backwards."""
        ...

    def wall(self) -> float:
        """Seconds since the Unix epoch (for timestamps shown to people)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Suspend the calling task for ``seconds`` of this clock's time."""
        ...


class MonotonicClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """Virtual time: sleepers wake only when a test calls :meth:`advance`.

    ``advance`` wakes sleepers in deadline order and lets each woken task run
    until it blocks again before moving time further, so a loop that sleeps one
    period per iteration runs exactly ``advance(total) / period`` iterations.

    "Until it blocks again" is a bounded number of event-loop passes: code run
    under a fake clock must not wait on threads, executors or real sockets
    between its sleeps (fake those too), and must use ``clock.sleep`` rather than
    ``asyncio.wait_for``/``asyncio.timeout``, which read the loop's real clock.
    """

    def __init__(self, *, start: float = 0.0, wall_offset: float = 1_700_000_000.0) -> None:
        self._now = start
        self._wall_offset = wall_offset
        self._seq = itertools.count()
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []

    def monotonic(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._wall_offset + self._now

    async def sleep(self, seconds: float) -> None:
        if math.isnan(seconds):
            raise ValueError("cannot sleep for NaN seconds")
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), fut))
        await fut

    @property
    def sleepers(self) -> int:
        """How many tasks are waiting on this clock."""
        return sum(1 for _, _, f in self._sleepers if not f.done())

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking every sleeper due on the way."""
        if not seconds >= 0:  # also refuses NaN
            raise ValueError(f"cannot advance a clock by a negative amount ({seconds})")
        target = self._now + seconds
        await _settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, fut = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            if not fut.done():
                fut.set_result(None)
            await _settle()
        self._now = target


async def _settle() -> None:
    # Let every task that is ready run until it blocks again. A few passes of the
    # event loop suffice for chains of wake-ups; this is the same approach as
    # asyncio's own tests (several sleep(0) rounds), bounded to stay cheap.
    for _ in range(20):
        await asyncio.sleep(0)


async def first_of(*waits: Awaitable[object] | asyncio.Event) -> None:
    """Return when the first of ``waits`` completes (an awaitable finishes, or an
    event is set); the others are cancelled. Loops use it to sleep on their clock
    until a period passes, their input changes, or they are told to stop."""
    tasks = {asyncio.ensure_future(w.wait() if isinstance(w, asyncio.Event) else w) for w in waits}
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
