"""The report loop: each sample to the planner, each due report to the reporter.

``next_sample`` paces it (typically: wait for the metaserver's next snapshot, then
read the sysadvisor's latest plan); between samples the loop also wakes when the
planner has something pending without one (a retry after the back-off, a change
held by ``min_interval_s``, a resync), and at least every ``idle_s`` to beat its
heartbeat. A ``next_sample`` still pending when the loop wakes for another reason is
kept, not cancelled, so that no sample is lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from agent.reporter.model import ReclaimSample, Report
from agent.reporter.planner import ReportPlanner
from agent.reporter.reporter import Reporter
from katalyst.clock import Clock

__all__ = ["HeartbeatSink", "ReportLoop"]

log = logging.getLogger(__name__)


class HeartbeatSink(Protocol):
    """Told after every pass (``/healthz`` reports a loop that stopped beating)."""

    def beat(self, now: float) -> None: ...


class ReportLoop:
    """``await loop.run(stop)``: until ``stop`` is set, observe each sample, write what
    is due and tell the planner how it went. A ``next_sample`` that returns ``None``
    is a period without a reading (nothing is observed)."""

    def __init__(
        self,
        planner: ReportPlanner,
        reporter: Reporter,
        *,
        next_sample: Callable[[], Awaitable[ReclaimSample | None]],
        clock: Clock,
        heartbeat: HeartbeatSink | None = None,
        idle_s: float = 30.0,
    ) -> None:
        if not idle_s > 0:
            raise ValueError(f"idle_s: must be > 0, got {idle_s!r}")
        self._planner = planner
        self._reporter = reporter
        self._next_sample = next_sample
        self._clock = clock
        self._heartbeat = heartbeat
        self._idle = idle_s
        self.last_report: Report | None = None
        """The latest report written (for /status and tests)."""

    @property
    def planner(self) -> ReportPlanner:
        """The decisions."""
        return self._planner

    @property
    def reporter(self) -> Reporter:
        """The writes."""
        return self._reporter

    async def run(self, stop: asyncio.Event) -> None:
        """Loop until ``stop`` is set."""
        waiter: asyncio.Future[ReclaimSample | None] | None = None
        try:
            while not stop.is_set():
                if waiter is None:
                    waiter = asyncio.ensure_future(self._next_sample())
                pending = self._planner.wake_in()
                delay = self._idle if pending is None else min(pending, self._idle)
                stopper = asyncio.ensure_future(stop.wait())
                sleeper = asyncio.ensure_future(self._clock.sleep(delay))
                futures: list[asyncio.Future[Any]] = [waiter, stopper, sleeper]
                try:
                    await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stopper.cancel()
                    sleeper.cancel()
                if stop.is_set():
                    return
                sample = None
                if waiter.done():
                    # A failing sample source is a bug of the caller: let it surface.
                    sample = waiter.result()
                    waiter = None
                await self.step(sample)
        finally:
            if waiter is not None:
                waiter.cancel()

    async def step(self, sample: ReclaimSample | None) -> Report | None:
        """One pass: observe ``sample`` (if any), write what is due; the report written."""
        if sample is not None:
            self._planner.observe(sample)
        report = self._planner.due()
        if report is not None:
            succeeded = await self._reporter.send(report)
            self._planner.record(report, succeeded)
            self.last_report = report
        if self._heartbeat is not None:
            self._heartbeat.beat(self._clock.monotonic())
        return report
