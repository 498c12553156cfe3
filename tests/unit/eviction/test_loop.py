"""EvictionLoop: paced by its sample source, stops when told."""

from __future__ import annotations

import asyncio

from agent.eviction import (
    Candidate,
    EvictionConfig,
    EvictionDecision,
    EvictionLoop,
    EvictionManager,
    EvictionOutcome,
    Outcome,
    Resource,
    Sample,
)
from katalyst.clock import FakeClock
from tests.unit.eviction.samples import node, pod, sample


class NamesPodsOfTheSample:
    name = "test"

    def observe(self, sample: Sample) -> list[Candidate]:
        return [
            Candidate(pod=p, plugin=self.name, resource=Resource.CPU, reason="why")
            for p in sample.pods
        ]


class RecordingEvictor:
    def __init__(self) -> None:
        self.evicted: list[str] = []

    async def evict(self, decision: EvictionDecision) -> EvictionOutcome:
        self.evicted.append(decision.pod.name)
        return EvictionOutcome(decision, Outcome.EVICTED)


class Beats:
    def __init__(self) -> None:
        self.at: list[float] = []
        self.changed = asyncio.Event()

    def beat(self, now: float) -> None:
        self.at.append(now)
        self.changed.set()

    async def wait_for(self, count: int) -> None:
        while len(self.at) < count:
            self.changed.clear()
            await self.changed.wait()


async def test_each_sample_is_stepped_evicted_and_recorded_until_stop() -> None:
    clock = FakeClock()
    manager = EvictionManager(EvictionConfig(), plugins=[NamesPodsOfTheSample()], clock=clock)
    evictor = RecordingEvictor()
    queue: asyncio.Queue[Sample | None] = asyncio.Queue()
    beats = Beats()
    loop = EvictionLoop(manager, evictor, next_sample=queue.get, clock=clock, heartbeat=beats)
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))

    await queue.put(sample(0, node(), pod("a")))
    await queue.put(None)  # a period without a reading
    await queue.put(sample(1, node(), pod("a"), pod("b")))  # "a" is being evicted
    await asyncio.wait_for(beats.wait_for(3), 1.0)
    assert evictor.evicted == ["a", "b"]
    assert len(beats.at) == 3
    assert manager.counters().evictions == {("test", Resource.CPU, Outcome.EVICTED): 2}

    stop.set()  # while it waits for the next sample
    await asyncio.wait_for(task, 1.0)
    assert task.done() and task.exception() is None
