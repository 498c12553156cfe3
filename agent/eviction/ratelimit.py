"""A token bucket on an injectable clock: ``burst`` at once, ``per_minute`` in the long run."""

from __future__ import annotations

from katalyst.clock import Clock


class RateLimiter:
    """A token bucket: it holds up to ``burst`` tokens, starts full and gains
    ``per_minute / 60`` tokens a second; each eviction takes one. Over any window of
    ``t`` seconds at most ``burst + per_minute * t / 60`` evictions pass."""

    def __init__(self, *, per_minute: float, burst: int, clock: Clock) -> None:
        _check(per_minute, burst)
        self._rate = per_minute / 60.0
        self._burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock.monotonic()

    def reconfigure(self, *, per_minute: float, burst: int) -> None:
        """A new rate and size from now on. The tokens earned so far stay (up to the
        new size): a new setting is not a quiet spell, and must not hand out a
        fresh burst."""
        _check(per_minute, burst)
        self._refill()
        self._rate = per_minute / 60.0
        self._burst = float(burst)
        self._tokens = min(self._tokens, self._burst)

    @property
    def tokens(self) -> float:
        """Tokens available now (fractional while refilling)."""
        self._refill()
        return self._tokens

    def try_acquire(self) -> bool:
        """Take a token if there is a whole one; whether it was taken."""
        self._refill()
        # The tolerance absorbs float drift: ten refills of 0.1 may sum to 0.9999999.
        if self._tokens >= 1.0 - 1e-9:
            self._tokens = max(0.0, self._tokens - 1.0)
            return True
        return False

    def _refill(self) -> None:
        now = self._clock.monotonic()
        # max(): a clock that went backwards (it should not) adds nothing.
        elapsed = max(0.0, now - self._last)
        self._last = max(self._last, now)
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)


def _check(per_minute: float, burst: int) -> None:
    if not per_minute > 0:
        raise ValueError(f"per_minute must be > 0, got {per_minute}")
    if burst < 1:
        raise ValueError(f"burst must be >= 1, got {burst}")
