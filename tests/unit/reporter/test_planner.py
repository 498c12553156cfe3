"""ReportPlanner in virtual time: smoothing, thresholds, resync, back-off, zones."""

from __future__ import annotations

import random

import pytest

from agent.reporter import Reclaimed, ReporterConfig, ReportPlanner, Target, ZoneAmount
from katalyst.clock import FakeClock
from tests.unit.reporter.support import GIB, MIB, make_planner, sample, succeed

BOTH = {Target.NODE: "initial", Target.CNR: "initial"}


async def test_the_first_sample_is_due_at_once_to_both_targets() -> None:
    clock = FakeClock()
    planner = make_planner(clock)
    assert planner.due() is None  # nothing observed yet

    planner.observe(sample(1.5, 4 * GIB))
    report = planner.due()

    assert report is not None
    assert report.targets == BOTH
    assert (report.values.millicpu, report.values.memory_bytes) == (1500, 4 * GIB)


async def test_cpu_is_reported_in_whole_millicores_rounded_down() -> None:
    planner = make_planner(FakeClock())
    planner.observe(sample(2.0009))
    report = planner.due()
    assert report is not None
    assert report.values.millicpu == 2000


async def test_a_drop_is_written_at_once() -> None:
    clock = FakeClock()
    planner = make_planner(clock)
    planner.observe(sample(4.0))
    succeed(planner)

    await clock.advance(1)
    planner.observe(sample(3.0))
    report = planner.due()

    assert report is not None
    assert report.targets == {Target.NODE: "change", Target.CNR: "change"}
    assert report.values.millicpu == 3000


async def test_a_rise_is_written_only_once_it_lasted_the_whole_window() -> None:
    clock = FakeClock()
    planner = make_planner(clock, window_s=60.0)
    planner.observe(sample(2.0))
    succeed(planner)

    seen: list[tuple[float, int]] = []
    for _ in range(70):
        await clock.advance(1)
        planner.observe(sample(4.0))
        report = planner.due()
        if report is not None:
            seen.append((clock.monotonic(), report.values.millicpu))
            planner.record(report, dict.fromkeys(report.targets, True))

    # The 2-core sample of t=0 leaves the window at t=60 (it is older than 60 s at t>60).
    assert seen == [(61.0, 4000)]


async def test_a_dip_inside_the_window_keeps_the_report_down_for_a_window() -> None:
    clock = FakeClock()
    planner = make_planner(clock, window_s=30.0)
    planner.observe(sample(4.0))
    succeed(planner)
    await clock.advance(1)
    planner.observe(sample(1.0))  # a one-period dip
    succeed(planner)

    for _ in range(29):
        await clock.advance(1)
        planner.observe(sample(4.0))
        assert planner.due() is None
        smoothed = planner.smoothed()
        assert smoothed is not None and smoothed.millicpu == 1000
    await clock.advance(1)
    planner.observe(sample(4.0))
    smoothed = planner.smoothed()
    assert smoothed is not None and smoothed.millicpu == 1000  # the dip is exactly 30 s old
    await clock.advance(1)
    planner.observe(sample(4.0))
    report = planner.due()
    assert report is not None and report.values.millicpu == 4000


async def test_the_minimum_is_taken_per_resource() -> None:
    clock = FakeClock()
    planner = make_planner(clock)
    planner.observe(sample(1.0, 8 * GIB))
    await clock.advance(1)
    planner.observe(sample(3.0, 2 * GIB))
    smoothed = planner.smoothed()
    assert smoothed is not None
    assert (smoothed.millicpu, smoothed.memory_bytes) == (1000, 2 * GIB)


async def test_the_newest_sample_stays_whatever_its_age() -> None:
    clock = FakeClock()
    planner = make_planner(clock, window_s=10.0)
    planner.observe(sample(1.0))
    await clock.advance(3600)  # the sysadvisor went quiet: its last plan still applies
    smoothed = planner.smoothed()
    assert smoothed is not None and smoothed.millicpu == 1000


async def test_window_zero_reports_the_latest_sample() -> None:
    clock = FakeClock()
    planner = make_planner(clock, window_s=0.0, min_interval_s=0.0)
    planner.observe(sample(1.0))
    succeed(planner)
    await clock.advance(1)
    planner.observe(sample(3.0))
    report = planner.due()
    assert report is not None and report.values.millicpu == 3000


@pytest.mark.parametrize(
    ("before", "after", "written"),
    [
        (4.0, 3.95, False),  # 50m drop < 100m step
        (4.0, 3.9, True),  # exactly the step
        (0.05, 0.0, True),  # to zero: always
        (4.0, 4.15, False),  # 150m rise >= step but < 5 % of 4000m (200m)
        (4.0, 4.2, True),  # 200m rise: 5 %
        (0.5, 0.55, False),  # 50m rise < step (5 % would be 25m)
        (0.5, 0.6, True),
    ],
)
async def test_cpu_thresholds(before: float, after: float, written: bool) -> None:
    clock = FakeClock()
    planner = make_planner(clock, window_s=0.0, min_interval_s=0.0)
    planner.observe(sample(before))
    succeed(planner)
    await clock.advance(1)
    planner.observe(sample(after))
    assert (planner.due() is not None) is written


@pytest.mark.parametrize(
    ("before", "after", "written"),
    [
        (8 * GIB, 8 * GIB - 63 * MIB, False),
        (8 * GIB, 8 * GIB - 64 * MIB, True),
        (8 * GIB, 8 * GIB + 400 * MIB, False),  # 400 MiB < 5 % of 8 GiB (409.6 MiB)
        (8 * GIB, 8 * GIB + 410 * MIB, True),
        (32 * MIB, 0, True),
    ],
)
async def test_memory_thresholds(before: int, after: int, written: bool) -> None:
    clock = FakeClock()
    planner = make_planner(clock, window_s=0.0, min_interval_s=0.0)
    planner.observe(sample(1.0, before))
    succeed(planner)
    await clock.advance(1)
    planner.observe(sample(1.0, after))
    assert (planner.due() is not None) is written


async def test_a_rise_waits_for_the_minimum_interval_a_drop_does_not() -> None:
    clock = FakeClock()
    planner = make_planner(clock, window_s=0.0, min_interval_s=10.0)
    planner.observe(sample(2.0))
    succeed(planner)

    await clock.advance(3)
    planner.observe(sample(4.0))
    assert planner.due() is None  # a rise, 3 s after the last write
    assert planner.wake_in() == pytest.approx(7.0)
    await clock.advance(7)
    report = planner.due()
    assert report is not None and report.values.millicpu == 4000
    planner.record(report, dict.fromkeys(report.targets, True))

    await clock.advance(1)
    planner.observe(sample(1.0))
    report = planner.due()
    assert report is not None and report.values.millicpu == 1000  # a drop: at once


async def test_an_unchanged_value_is_rewritten_after_the_resync_period() -> None:
    clock = FakeClock()
    planner = make_planner(clock, resync_s=600.0)
    planner.observe(sample(2.0))
    succeed(planner)

    await clock.advance(599)
    planner.observe(sample(2.0))
    assert planner.due() is None
    assert planner.wake_in() == pytest.approx(1.0)
    await clock.advance(1)
    report = planner.due()
    assert report is not None
    assert report.targets == {Target.NODE: "resync", Target.CNR: "resync"}


async def test_a_change_below_the_threshold_goes_out_with_the_resync() -> None:
    clock = FakeClock()
    planner = make_planner(clock, window_s=0.0, resync_s=600.0)
    planner.observe(sample(2.0))
    succeed(planner)
    await clock.advance(10)
    planner.observe(sample(1.95))
    assert planner.due() is None
    await clock.advance(590)
    report = planner.due()
    assert report is not None and report.values.millicpu == 1950


async def test_failures_back_off_exponentially_up_to_the_cap() -> None:
    clock = FakeClock()
    planner = make_planner(clock, backoff_initial_s=1.0, backoff_max_s=8.0)
    planner.observe(sample(2.0))

    retries: list[float] = []
    for _ in range(6):
        report = planner.due()
        assert report is not None
        planner.record(report, {})  # every target failed
        retries.append(planner.targets[Target.NODE].retry_at or 0.0)
        delay = planner.wake_in()
        assert delay is not None
        await clock.advance(delay - 0.5)
        assert planner.due() is None  # still backing off
        await clock.advance(0.5)

    # Attempts at t=0, 1, 3, 7, 15, 23: delays 1, 2, 4, 8, 8, 8 (full jitter taken).
    assert retries == pytest.approx([1.0, 3.0, 7.0, 15.0, 23.0, 31.0])
    assert planner.targets[Target.NODE].failures == 6


async def test_a_success_resets_the_back_off() -> None:
    clock = FakeClock()
    planner = make_planner(clock, backoff_initial_s=1.0)
    planner.observe(sample(2.0))
    report = planner.due()
    assert report is not None
    planner.record(report, {})
    await clock.advance(1)
    succeed(planner)
    state = planner.targets[Target.NODE]
    assert (state.failures, state.retry_at, state.written_at) == (0, None, 1.0)
    assert planner.reported is not None and planner.reported.millicpu == 2000


async def test_jitter_spreads_retries_over_the_upper_half_of_the_delay() -> None:
    clock = FakeClock()
    planner = ReportPlanner(
        ReporterConfig(backoff_initial_s=4.0),
        numa_sockets={},
        clock=clock,
        rng=random.Random(7),  # noqa: S311 - jitter
    )
    planner.observe(sample(1.0))
    report = planner.due()
    assert report is not None
    planner.record(report, {})
    retry_at = planner.targets[Target.NODE].retry_at
    assert retry_at is not None and 2.0 <= retry_at <= 4.0


async def test_targets_back_off_independently() -> None:
    clock = FakeClock()
    planner = make_planner(clock, backoff_initial_s=5.0)
    planner.observe(sample(2.0))
    succeed(planner, targets=(Target.NODE,))  # the CNR write failed

    await clock.advance(1)
    planner.observe(sample(2.0))
    assert planner.due() is None
    await clock.advance(4)
    report = planner.due()
    assert report is not None
    assert report.targets == {Target.CNR: "initial"}


async def test_disabled_targets_are_never_due() -> None:
    planner = make_planner(FakeClock(), cnr=False)
    planner.observe(sample(1.0))
    report = planner.due()
    assert report is not None
    assert report.targets == {Target.NODE: "initial"}
    assert set(planner.targets) == {Target.NODE}


async def test_zones_split_the_smoothed_totals_by_the_latest_weights() -> None:
    clock = FakeClock()
    planner = make_planner(clock)
    planner.observe(
        sample(
            3.0,
            6 * GIB,
            cpu_weights={0: 2, 1: 1, 2: 0, 3: 0},
            memory_weights={0: 1, 1: 1, 2: 1, 3: 3},
        )
    )
    report = planner.due()
    assert report is not None
    assert report.values == Reclaimed(
        millicpu=3000,
        memory_bytes=6 * GIB,
        zones=(
            ZoneAmount(numa=0, socket=0, millicpu=2000, memory_bytes=GIB),
            ZoneAmount(numa=1, socket=0, millicpu=1000, memory_bytes=GIB),
            ZoneAmount(numa=2, socket=1, millicpu=0, memory_bytes=GIB),
            ZoneAmount(numa=3, socket=1, millicpu=0, memory_bytes=3 * GIB),
        ),
    )


async def test_a_zone_change_is_due_to_the_cnr_only() -> None:
    clock = FakeClock()
    planner = make_planner(clock, window_s=0.0, min_interval_s=0.0)
    planner.observe(sample(2.0, cpu_weights={0: 1, 1: 1, 2: 0, 3: 0}))
    succeed(planner)

    await clock.advance(1)
    # Same total; the reclaim pool moved to the other socket.
    planner.observe(sample(2.0, cpu_weights={0: 0, 1: 0, 2: 1, 3: 1}))
    report = planner.due()

    assert report is not None
    assert report.targets == {Target.CNR: "change"}


async def test_without_a_topology_no_zones_are_reported() -> None:
    planner = make_planner(FakeClock(), numa_sockets={})
    planner.observe(sample(1.0))
    report = planner.due()
    assert report is not None and report.values.zones == ()


async def test_wake_in_names_the_next_pending_deadline() -> None:
    clock = FakeClock()
    planner = make_planner(clock, window_s=60.0, min_interval_s=10.0, resync_s=600.0)
    assert planner.wake_in() is None
    planner.observe(sample(1.0))
    succeed(planner)
    assert planner.wake_in() == pytest.approx(10.0)  # a held rise could go then
    await clock.advance(5)
    planner.observe(sample(2.0))
    # The first sample leaves the window at t=60; the minimum interval ends at t=10.
    assert planner.wake_in() == pytest.approx(5.0)
    await clock.advance(6)
    assert planner.wake_in() == pytest.approx(49.0)
