"""ReportLoop in virtual time: paced by its samples, woken by the planner's deadlines."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from agent.reporter import ReclaimSample, Reporter, ReportLoop, Target
from katalyst.clock import FakeClock
from tests.unit.reporter.support import ScriptedClient, make_planner, sample


@dataclass
class Beats:
    times: list[float] = field(default_factory=list)

    def beat(self, now: float) -> None:
        self.times.append(now)


@dataclass
class Harness:
    clock: FakeClock
    client: ScriptedClient
    samples: asyncio.Queue[ReclaimSample | None]
    loop: ReportLoop
    beats: Beats
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def send(self, s: ReclaimSample | None) -> None:
        await self.samples.put(s)
        await self.clock.advance(0)

    def node_writes(self) -> int:
        return self.client.names().count("patch_node_status")


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    clock = FakeClock()
    client = ScriptedClient()
    samples: asyncio.Queue[ReclaimSample | None] = asyncio.Queue()
    beats = Beats()
    planner = make_planner(clock, cnr=False, backoff_initial_s=4.0, resync_s=600.0)
    loop = ReportLoop(
        planner,
        Reporter(client, node_name="n1"),
        next_sample=samples.get,
        clock=clock,
        heartbeat=beats,
        idle_s=30.0,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    h = Harness(clock, client, samples, loop, beats, stop, task)
    yield h
    stop.set()
    async with asyncio.timeout(5):
        await task


async def test_a_sample_is_written_and_the_loop_beats(harness: Harness) -> None:
    await harness.send(sample(2.0))
    assert harness.node_writes() == 1
    assert harness.loop.last_report is not None
    assert harness.loop.last_report.targets == {Target.NODE: "initial"}
    assert harness.beats.times == [0.0]


async def test_a_failed_write_is_retried_after_the_back_off_without_a_new_sample(
    harness: Harness,
) -> None:
    harness.client.answer("patch_node_status", 500)
    await harness.send(sample(2.0))
    assert harness.node_writes() == 1

    await harness.clock.advance(3.9)
    assert harness.node_writes() == 1
    await harness.clock.advance(0.1)  # full jitter: the whole 4 s
    assert harness.node_writes() == 2
    assert harness.loop.planner.targets[Target.NODE].failures == 0


async def test_the_resync_needs_no_new_sample(harness: Harness) -> None:
    await harness.send(sample(2.0))
    await harness.clock.advance(599)
    assert harness.node_writes() == 1
    await harness.clock.advance(1)
    assert harness.node_writes() == 2
    assert harness.loop.last_report is not None
    assert harness.loop.last_report.targets == {Target.NODE: "resync"}


async def test_the_loop_beats_while_idle(harness: Harness) -> None:
    await harness.clock.advance(95)
    assert harness.beats.times == [30.0, 60.0, 90.0]


async def test_a_pending_sample_request_survives_a_timer_wake_up(harness: Harness) -> None:
    await harness.clock.advance(45)  # one idle wake-up while next_sample was pending
    await harness.send(sample(1.0))
    assert harness.node_writes() == 1
    assert harness.loop.planner.latest == sample(1.0)


async def test_a_period_without_a_reading_observes_nothing(harness: Harness) -> None:
    await harness.send(None)
    assert harness.node_writes() == 0
    assert harness.loop.planner.latest is None
    assert harness.beats.times == [0.0]


async def test_stop_ends_the_loop_and_cancels_the_pending_request() -> None:
    clock = FakeClock()
    cancelled = asyncio.Event()

    async def never() -> ReclaimSample | None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return None

    loop = ReportLoop(
        make_planner(clock),
        Reporter(ScriptedClient(), node_name="n1"),
        next_sample=never,
        clock=clock,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    await clock.advance(0)
    stop.set()
    async with asyncio.timeout(5):
        await task
    assert cancelled.is_set()


async def test_a_failing_sample_source_surfaces() -> None:
    clock = FakeClock()

    async def broken() -> ReclaimSample | None:
        raise RuntimeError("metrics loop stopped")

    loop = ReportLoop(
        make_planner(clock),
        Reporter(ScriptedClient(), node_name="n1"),
        next_sample=broken,
        clock=clock,
    )
    with pytest.raises(RuntimeError, match="metrics loop stopped"):
        async with asyncio.timeout(5):
            await loop.run(asyncio.Event())


def test_idle_must_be_positive() -> None:
    clock = FakeClock()
    with pytest.raises(ValueError, match="idle_s: must be > 0"):
        ReportLoop(
            make_planner(clock),
            Reporter(ScriptedClient(), node_name="n1"),
            next_sample=asyncio.Queue[ReclaimSample | None]().get,
            clock=clock,
            idle_s=0,
        )
