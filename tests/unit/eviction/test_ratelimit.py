"""The token bucket, in virtual time."""

from __future__ import annotations

import pytest

from agent.eviction import RateLimiter
from katalyst.clock import FakeClock


async def test_starts_full_then_refills_at_the_rate_up_to_the_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_minute=6, burst=3, clock=clock)
    assert [limiter.try_acquire() for _ in range(4)] == [True, True, True, False]
    await clock.advance(9.0)
    assert not limiter.try_acquire()
    await clock.advance(1.0)
    assert limiter.try_acquire()
    await clock.advance(3600.0)
    assert limiter.tokens == 3.0  # capped at the burst


async def test_many_small_refills_add_up_to_a_token() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_minute=6, burst=1, clock=clock)
    assert limiter.try_acquire()
    for _ in range(10):
        await clock.advance(1.0)
        _ = limiter.tokens  # refills in ten steps of 0.1
    assert limiter.try_acquire()


async def test_at_most_burst_plus_rate_times_window() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_minute=2, burst=2, clock=clock)
    passed = 0
    for _ in range(600):  # ten minutes, a try every second
        passed += limiter.try_acquire()
        await clock.advance(1.0)
    assert passed == 2 + 2 * 10 - 1  # the last token would come at t=600 exactly


@pytest.mark.parametrize(("per_minute", "burst"), [(0, 1), (-1, 1), (1, 0)])
def test_bad_settings_are_refused(per_minute: float, burst: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        RateLimiter(per_minute=per_minute, burst=burst, clock=FakeClock())
