"""The reporter's decisions (pure: no I/O; time from the injected clock only).

Each sysadvisor period the loop shows the planner a :class:`ReclaimSample`
(:meth:`ReportPlanner.observe`) and asks whether anything is due
(:meth:`ReportPlanner.due`); after writing, it tells the planner how each target
fared (:meth:`ReportPlanner.record`). The rules, and why, are in ``docs/reporter.md``:

* **Smoothing: the minimum over a window.** The value written is the smallest lend
  of the last ``window_s`` seconds (CPU and memory each). A drop is therefore
  written at once (the new sample is the minimum), and a rise only after it has
  lasted the whole window. The reported allocatable decides where *new* reclaimed
  pods go: reporting more than the node lends over-commits it, and the excess is
  taken back by throttling and then by evicting the reclaimed pods; reporting less
  only leaves capacity idle for a minute. An average (Katalyst's capped
  moving average) lags a drop by half its window; the minimum does not.
* **Anti-churn.** Against what was last written to a target: a drop smaller than
  ``min_step_*`` is not written; a rise must also be at least ``min_step_ratio`` of
  the written value; a drop to 0 is always written. Per total and, for the CNR, per
  NUMA zone (a zone set that changes counts as a drop). A significant drop is
  written at once; a rise waits until ``min_interval_s`` after the last successful
  write (a rise that lasted the window may keep rising period after period as the
  window slides up a ramp: this caps those writes).
* **Resync.** ``resync_s`` after the last successful write, the current value is
  written even if nothing changed.
* **Back-off.** A failed write is retried after ``backoff_initial_s`` doubled per
  failure in a row (capped at ``backoff_max_s``, with "full jitter" over its upper
  half, so that a fleet does not retry in step); each target backs off on its own.

Targets are independent: the Node may be written while the CNR backs off.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from agent.reporter.model import (
    Reason,
    Reclaimed,
    ReclaimSample,
    Report,
    Target,
    ZoneAmount,
    split,
    to_millicpu,
)
from katalyst.clock import Clock
from katalyst.config.reporter import ReporterConfig

__all__ = ["ReportPlanner", "TargetState"]


@dataclass(slots=True)
class TargetState:
    """What the planner knows of one target."""

    written: Reclaimed | None = None
    """The values of the last successful write (None before the first)."""
    written_at: float | None = None
    """When it succeeded (clock seconds)."""
    failures: int = 0
    """Failed writes in a row since then."""
    retry_at: float | None = None
    """No write before this time (clock seconds) while failures > 0."""


class ReportPlanner:
    """Smoothing, thresholds, resync and back-off; see the module docstring."""

    def __init__(
        self,
        config: ReporterConfig,
        *,
        numa_sockets: Mapping[int, int],
        clock: Clock,
        rng: random.Random | None = None,
    ) -> None:
        """``numa_sockets``: NUMA node -> socket (:func:`agent.reporter.numa_sockets`);
        empty: no per-NUMA zones are reported. ``rng``: the back-off's jitter."""
        self._config = config
        self._numa_sockets = dict(sorted(numa_sockets.items()))
        self._zones = tuple(self._numa_sockets)
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._window: deque[tuple[float, int, int]] = deque()
        self._latest: ReclaimSample | None = None
        self._reported: Reclaimed | None = None
        self._targets: dict[Target, TargetState] = {
            target: TargetState()
            for target, enabled in ((Target.NODE, config.node_resources), (Target.CNR, config.cnr))
            if enabled
        }

    @property
    def config(self) -> ReporterConfig:
        """The settings in force."""
        return self._config

    @property
    def targets(self) -> Mapping[Target, TargetState]:
        """The enabled targets and what is known of each."""
        return self._targets

    @property
    def latest(self) -> ReclaimSample | None:
        """The last sample observed (None before the first)."""
        return self._latest

    @property
    def reported(self) -> Reclaimed | None:
        """The values of the most recent successful write, to any target."""
        return self._reported

    def observe(self, sample: ReclaimSample) -> None:
        """Add one period's lend to the window."""
        now = self._clock.monotonic()
        self._latest = sample
        self._window.append((now, to_millicpu(sample.cpus), sample.memory_bytes))
        self._prune(now)

    def smoothed(self) -> Reclaimed | None:
        """What would be written now: the window's minimums, split over the NUMA zones
        by the latest sample's weights; None before the first sample."""
        if self._latest is None:
            return None
        self._prune(self._clock.monotonic())
        millicpu = min(m for _, m, _ in self._window)
        memory = min(b for _, _, b in self._window)
        cpu = split(millicpu, self._latest.cpu_weights, self._zones)
        mem = split(memory, self._latest.memory_weights, self._zones)
        zones = tuple(
            ZoneAmount(numa=n, socket=self._numa_sockets[n], millicpu=cpu[n], memory_bytes=mem[n])
            for n in self._zones
        )
        return Reclaimed(
            millicpu=millicpu, memory_bytes=memory, zones=zones, devices=self._latest.devices
        )

    def due(self) -> Report | None:
        """The report to write now, or None when no target is due."""
        values = self.smoothed()
        if values is None:
            return None
        now = self._clock.monotonic()
        config = self._config
        targets: dict[Target, Reason] = {}
        for target, state in self._targets.items():
            if state.retry_at is not None and now < state.retry_at:
                continue  # backing off
            if state.written is None or state.written_at is None:
                targets[target] = "initial"
                continue
            drop, rise = self._compare(state.written, values, zones=target is Target.CNR)
            # A device allocation changed (a pod got or left a GPU share): the
            # extender counts bound pods itself meanwhile, so no hurry beyond the
            # rate limit.
            devices = target is Target.CNR and state.written.devices != values.devices
            if drop or ((rise or devices) and now - state.written_at >= config.min_interval_s):
                targets[target] = "change"
            elif now - state.written_at >= config.resync_s:
                targets[target] = "resync"
        return Report(values=values, targets=targets) if targets else None

    def record(self, report: Report, succeeded: Mapping[Target, bool]) -> None:
        """How the write of ``report`` went, per target (a target left out failed)."""
        now = self._clock.monotonic()
        for target in report.targets:
            state = self._targets.get(target)
            if state is None:
                continue
            if succeeded.get(target, False):
                state.written = report.values
                state.written_at = now
                state.failures = 0
                state.retry_at = None
                self._reported = report.values
            else:
                state.failures += 1
                state.retry_at = now + self._backoff(state.failures)

    def wake_in(self) -> float | None:
        """Seconds until a target may become due without a new sample (a retry, a held
        change, a resync, a sample leaving the window); None when nothing is pending."""
        now = self._clock.monotonic()
        times: list[float] = []
        for state in self._targets.values():
            if state.retry_at is not None:
                times.append(state.retry_at)
            if state.written_at is not None:
                times.append(state.written_at + self._config.min_interval_s)
                times.append(state.written_at + self._config.resync_s)
        if len(self._window) > 1:
            times.append(self._window[0][0] + self._config.window_s)
        later = [t - now for t in times if t > now]
        return min(later) if later else None

    # ---- rules ---------------------------------------------------------------------

    def _prune(self, now: float) -> None:
        # The newest sample stays whatever its age: it is what the node lends now
        # (the sysadvisor's last plan stays applied to the cgroups until the next).
        horizon = now - self._config.window_s
        while len(self._window) > 1 and self._window[0][0] < horizon:
            self._window.popleft()

    def _backoff(self, failures: int) -> float:
        c = self._config
        cap = min(c.backoff_max_s, c.backoff_initial_s * 2.0 ** min(failures - 1, 30))
        return cap / 2 + self._rng.uniform(0, cap / 2)

    def _compare(self, old: Reclaimed, new: Reclaimed, *, zones: bool) -> tuple[bool, bool]:
        """(a significant drop, a significant rise) from ``old`` to ``new``; with
        ``zones``, per NUMA zone too (a zone set that differs counts as a drop)."""
        c = self._config
        pairs = [
            (old.millicpu, new.millicpu, c.min_step_millicpu),
            (old.memory_bytes, new.memory_bytes, c.min_step_memory_bytes),
        ]
        if zones:
            if [(z.numa, z.socket) for z in old.zones] != [(z.numa, z.socket) for z in new.zones]:
                return True, False
            for o, n in zip(old.zones, new.zones, strict=True):
                pairs.append((o.millicpu, n.millicpu, c.min_step_millicpu))
                pairs.append((o.memory_bytes, n.memory_bytes, c.min_step_memory_bytes))
        drop = rise = False
        for before, after, step in pairs:
            if after < before and (after == 0 or before - after >= step):
                drop = True  # a drop to 0 (nothing lent any more) is always written
            elif after > before and after - before >= max(step, c.min_step_ratio * before):
                rise = True
        return drop, rise
