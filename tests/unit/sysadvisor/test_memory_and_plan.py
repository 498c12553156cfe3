"""The memory limit of reclaimed pods, the CFS quota and the reclaim cpuset size."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from agent.sysadvisor import Advisor, AdvisorInput, RegionInput
from tests.unit.sysadvisor.support import GIB, config, dedicated, node, share

MIB = 1 << 20


def test_memory_limit_is_allocatable_less_working_sets_with_margin_less_reserve() -> None:
    advisor = Advisor(config())  # margin 0.1, reserve 512 MiB
    plan = advisor.advise(
        node(share(3.0, ws=10 * GIB), dedicated("a", 1.0, ws=6 * GIB), memory=64 * GIB)
    )
    estimate = 16 * GIB + math.ceil(16 * GIB * 0.1)
    assert plan.memory_estimate == estimate
    assert plan.reclaim_memory_limit == 64 * GIB - estimate - 512 * MIB


def test_memory_limit_settings() -> None:
    advisor = Advisor(
        config(
            {"memory": {"working_set_margin": 0.5, "reserve_bytes": 0, "reclaim_floor_bytes": 0}}
        )
    )
    plan = advisor.advise(node(share(3.0, ws=10 * GIB), memory=64 * GIB))
    assert plan.reclaim_memory_limit == 49 * GIB


def test_memory_limit_never_below_its_floor() -> None:
    advisor = Advisor(config({"memory": {"reclaim_floor_bytes": GIB}}))
    plan = advisor.advise(node(share(3.0, ws=60 * GIB), memory=64 * GIB))
    assert plan.reclaim_memory_limit == GIB
    # ... and the floor never exceeds the allocatable memory.
    assert (
        Advisor(config({"memory": {"reclaim_floor_bytes": GIB}}))
        .advise(node(share(3.0, ws=0), memory=MIB))
        .reclaim_memory_limit
        == MIB
    )


def test_a_working_set_never_seen_lends_only_the_floor() -> None:
    advisor = Advisor(config())
    plan = advisor.advise(node(share(3.0, ws=GIB), dedicated("a", 1.0), memory=64 * GIB))
    assert plan.memory_estimate == 64 * GIB
    assert plan.reclaim_memory_limit == 0


def test_held_working_sets_never_let_the_limit_grow() -> None:
    advisor = Advisor(config({"memory": {"reserve_bytes": 0, "working_set_margin": 0.0}}))
    first = advisor.advise(node(share(3.0, ws=8 * GIB), dedicated("a", 1.0, ws=8 * GIB)))
    assert first.reclaim_memory_limit == 48 * GIB
    # a's working set is missing: its last value stands in, and the limit may only fall.
    smaller = advisor.advise(node(share(3.0, ws=4 * GIB), dedicated("a", 1.0)))
    assert smaller.memory_estimate == 12 * GIB
    assert smaller.reclaim_memory_limit == 48 * GIB
    larger = advisor.advise(node(share(3.0, ws=12 * GIB), dedicated("a", 1.0)))
    assert larger.reclaim_memory_limit == 44 * GIB
    # Stale metrics: every working set is held.
    stale = advisor.advise(node(share(3.0, ws=GIB), dedicated("a", 1.0, ws=GIB), fresh=False))
    assert stale.reclaim_memory_limit == 44 * GIB
    # Fresh and complete again: the limit follows the estimate at once.
    back = advisor.advise(node(share(3.0, ws=GIB), dedicated("a", 1.0, ws=GIB)))
    assert back.reclaim_memory_limit == 62 * GIB


@pytest.mark.parametrize(
    ("requests", "alloc", "lend", "pool"),
    [
        (5.0, 16.0, 11.0, 11),  # whole numbers: share keeps 5 CPUs, reclaim gets 11
        (5.2, 16.0, 10.8, 10),  # share keeps ceil(5.2) = 6 CPUs
        (0.5, 1.0, 0.5, 0),  # a tiny node: no whole CPU to spare, the quota separates them
        (5.0, 5.5, 0.5, 0),
    ],
)
def test_reclaim_pool_size(requests: float, alloc: float, lend: float, pool: int) -> None:
    advisor = Advisor(config({"limits": {"ramp_up_cpus_per_period": 100.0}}))
    plan = advisor.advise(node(share(requests * 0.6, requests=requests), alloc=alloc))
    assert plan.reclaim_cpus == pytest.approx(lend)
    assert plan.reclaim_pool_size == pool


def test_the_pool_is_no_bigger_than_the_lend_while_ramping() -> None:
    advisor = Advisor(config())
    plans = [advisor.advise(node(share(3.0, requests=5.0))) for _ in range(4)]
    assert [p.reclaim_pool_size for p in plans] == [0, 1, 1, 2]


@pytest.mark.parametrize(
    ("lend_requests", "period_us", "quota"),
    [
        (16.0, 100_000, 1000),  # a lend of 0: the kernel's minimum quota, not 0
        (13.5, 100_000, 250_000),  # 2.5 cores
        (13.5, 50_000, 125_000),
        (15.995, 100_000, 1000),  # 0.005 cores = 500 µs, raised to 1000
    ],
)
def test_quota_us(lend_requests: float, period_us: int, quota: int) -> None:
    advisor = Advisor(config({"limits": {"ramp_up_cpus_per_period": 100.0}}))
    plan = advisor.advise(node(share(lend_requests * 0.6, requests=lend_requests)))
    assert plan.quota_us(period_us) == quota


@pytest.mark.parametrize("period_us", [999, 1_000_001, 0])
def test_quota_us_refuses_a_period_the_kernel_refuses(period_us: int) -> None:
    plan = Advisor(config()).advise(node(share(3.0)))
    with pytest.raises(ValueError, match="period_us"):
        plan.quota_us(period_us)


def test_no_share_region_counts_as_an_empty_share_pool() -> None:
    plan = Advisor(config({"limits": {"ramp_up_cpus_per_period": 100.0}})).advise(node(alloc=4.0))
    assert plan.share_requirement == 0.25
    assert plan.reclaim_cpus == 3.75
    assert plan.reclaim_pool_size == 3


def test_the_floor_never_exceeds_the_allocatable_cpus() -> None:
    advisor = Advisor(config({"limits": {"reclaim_floor_cpus": 2.0}}))
    plan = advisor.advise(node(share(3.0, requests=5.0), alloc=1.0))
    assert plan.reclaim_floor_cpus == 1.0
    assert plan.reclaim_cpus == 1.0
    # The share pool's bound (allocatable less the floor) is below its minimum: the
    # minimum stands, and the floor, not the headroom, decides the lend.
    assert plan.share_requirement == 0.25
    assert plan.headroom_cpus == 0.75


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: RegionInput("share", "share", cpus=-1.0, requests_cpu=0.0), r"share\)\.cpus"),
        (
            lambda: RegionInput("share", "share", cpus=1.0, requests_cpu=math.nan),
            r"requests_cpu",
        ),
        (lambda: RegionInput("", "share", cpus=1.0, requests_cpu=0.0), "name"),
        (lambda: node(share(), share()), "duplicate"),
        (
            lambda: node(share(), RegionInput("share2", "share", cpus=1.0, requests_cpu=0.0)),
            "more than one share",
        ),
        (lambda: node(alloc=math.inf), "allocatable_cpus"),
        (lambda: node(memory=-1), "memory_allocatable"),
    ],
)
def test_malformed_inputs_are_refused_naming_the_field(
    build: Callable[[], object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_input_type_is_plain_data() -> None:
    inp = node(share(3.0))
    assert isinstance(inp, AdvisorInput)
    assert inp.share is inp.regions[0]
