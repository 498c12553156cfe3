"""The eviction loop: each sample through the manager, each decision to the evictor.

The loop owns no timer: ``next_sample`` paces it (typically it waits for the
metaserver's next metrics snapshot and builds a :class:`Sample` from it), so the
manager sees every period once and in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from agent.eviction.evictor import Evictor
from agent.eviction.manager import EvictionManager
from agent.eviction.model import EvictionOutcome, Sample
from katalyst.clock import Clock, first_of

__all__ = ["EvictionLoop", "HeartbeatSink"]

log = logging.getLogger(__name__)


class HeartbeatSink(Protocol):
    """Told after every pass (``/healthz`` reports a loop that stopped beating)."""

    def beat(self, now: float) -> None: ...


class EvictionLoop:
    """``await loop.run(stop)``: until ``stop`` is set, take the next sample, step
    the manager, evict what it decided (one at a time, in order) and record each
    outcome. A ``next_sample`` that returns ``None`` skips the period (no reading)."""

    def __init__(
        self,
        manager: EvictionManager,
        evictor: Evictor,
        *,
        next_sample: Callable[[], Awaitable[Sample | None]],
        clock: Clock,
        heartbeat: HeartbeatSink | None = None,
    ) -> None:
        self._manager = manager
        self._evictor = evictor
        self._next_sample = next_sample
        self._clock = clock
        self._heartbeat = heartbeat
        self.outcomes: list[EvictionOutcome] = []
        """The latest pass's outcomes (for tests and debugging)."""

    @property
    def manager(self) -> EvictionManager:
        """The manager this loop steps (the dynamic configuration reconfigures it)."""
        return self._manager

    async def run(self, stop: asyncio.Event) -> None:
        """Loop until ``stop`` is set."""
        while not stop.is_set():
            waiting = asyncio.ensure_future(self._next_sample())
            await first_of(waiting, stop)
            if stop.is_set() or waiting.cancelled():
                return
            sample = waiting.result()
            if sample is not None:
                await self.run_once(sample)
            if self._heartbeat is not None:
                self._heartbeat.beat(self._clock.monotonic())

    async def run_once(self, sample: Sample) -> list[EvictionOutcome]:
        """One pass over ``sample``; the outcomes of its evictions."""
        outcomes = []
        for decision in self._manager.step(sample):
            outcome = await self._evictor.evict(decision)
            self._manager.record(outcome)
            outcomes.append(outcome)
        self.outcomes = outcomes
        return outcomes
