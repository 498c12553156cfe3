"""Leader election: the pure decisions, and the elector's loop in virtual time against an
in-memory Lease that behaves as the API server's (conditional writes, conflicts)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import pytest

from katalyst.clock import FakeClock
from katalyst.leader import (
    LeaderElector,
    LeaseConflict,
    LeaseError,
    LeaseRecord,
    LeaseSettings,
    Observed,
    acquired,
    lease_spec,
    may_acquire,
    micro_time,
    record_from_lease,
    released,
)

WALL = 1_700_000_000.0

# ---- pure decisions ----------------------------------------------------------------------


def test_micro_time_has_exactly_six_fractional_digits() -> None:
    assert micro_time(WALL) == "2023-11-14T22:13:20.000000Z"
    assert micro_time(WALL + 0.5) == "2023-11-14T22:13:20.500000Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", micro_time(WALL + 1e-7))


def record(holder: str = "a", *, duration: int = 15, transitions: int = 0) -> LeaseRecord:
    return LeaseRecord(holder, duration, "t0", "t1", transitions, resource_version="7")


def test_may_acquire_a_missing_free_own_or_expired_lease_only() -> None:
    assert may_acquire(None, identity="b", now=0.0)
    assert may_acquire(Observed(record(""), at=100.0), identity="b", now=100.0)
    assert may_acquire(Observed(record("b"), at=100.0), identity="b", now=100.0)
    held = Observed(record("a", duration=15), at=100.0)
    assert not may_acquire(held, identity="b", now=114.9)
    assert may_acquire(held, identity="b", now=115.0)


def test_acquired_renews_or_takes_over_with_a_transition() -> None:
    fresh = acquired(None, identity="a", wall=WALL, duration_s=15)
    assert (fresh.holder, fresh.duration_s, fresh.transitions) == ("a", 15, 0)
    assert fresh.acquire_time == fresh.renew_time == micro_time(WALL)

    renewed = acquired(record("a", transitions=3), identity="a", wall=WALL + 2, duration_s=15)
    assert renewed.holder == "a"
    assert renewed.transitions == 3
    assert renewed.acquire_time == "t0"  # kept
    assert renewed.renew_time == micro_time(WALL + 2)
    assert renewed.resource_version == "7"  # the write is conditional on it

    taken = acquired(record("a", transitions=3), identity="b", wall=WALL + 20, duration_s=15)
    assert (taken.holder, taken.transitions) == ("b", 4)
    assert taken.acquire_time == taken.renew_time == micro_time(WALL + 20)


def test_released_clears_the_holder_with_a_one_second_lease() -> None:
    gone = released(record("a", transitions=2), wall=WALL)
    assert (gone.holder, gone.duration_s, gone.transitions) == ("", 1, 2)
    assert lease_spec(gone) == {
        "holderIdentity": "",
        "leaseDurationSeconds": 1,
        "leaseTransitions": 2,
        "acquireTime": micro_time(WALL),
        "renewTime": micro_time(WALL),
    }


def test_a_lease_of_the_wrong_shape_reads_as_free() -> None:
    garbage = record_from_lease(
        {
            "metadata": {"resourceVersion": 5},
            "spec": {"holderIdentity": 3, "leaseTransitions": True},
        }
    )
    assert garbage == LeaseRecord()
    assert record_from_lease({}) == LeaseRecord()
    good = record_from_lease(
        {
            "metadata": {"resourceVersion": "9"},
            "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15, "leaseTransitions": 1},
        }
    )
    assert (good.holder, good.duration_s, good.transitions, good.resource_version) == (
        "a",
        15,
        1,
        "9",
    )


# ---- the elector in virtual time -----------------------------------------------------------


class MemoryLease:
    """One Lease with the API server's rules: writes are conditional on the
    resourceVersion (a stale one is a conflict), a create of an existing one too."""

    def __init__(self) -> None:
        self.record: LeaseRecord | None = None
        self.version = 0
        self.down = False
        """Every request fails (an outage)."""
        self.hang = False
        """Every request waits forever (a dead connection)."""
        self.writes: list[LeaseRecord] = []
        self.conflicts = 0

    async def _gate(self) -> None:
        # Suspend once, as a request does: two replicas' requests interleave.
        await asyncio.sleep(0)
        if self.hang:
            await asyncio.get_running_loop().create_future()
        if self.down:
            raise LeaseError("the API server does not answer")

    def _store(self, record: LeaseRecord) -> LeaseRecord:
        self.version += 1
        self.record = replace(record, resource_version=str(self.version))
        self.writes.append(self.record)
        return self.record

    async def get(self) -> LeaseRecord | None:
        await self._gate()
        return self.record

    async def create(self, record: LeaseRecord) -> LeaseRecord:
        await self._gate()
        if self.record is not None:
            raise LeaseConflict("already exists")
        return self._store(record)

    async def update(self, record: LeaseRecord) -> LeaseRecord:
        await self._gate()
        if self.record is None or record.resource_version != self.record.resource_version:
            self.conflicts += 1
            raise LeaseConflict("the object has been modified")
        return self._store(record)

    def hold(self, holder: str) -> None:
        """Another writer takes the Lease (e.g. an operator's edit)."""
        assert self.record is not None
        self._store(replace(self.record, holder=holder))


SETTINGS = LeaseSettings(duration_s=15, renew_deadline_s=10.0, retry_period_s=2.0, jitter=0.0)


class Replica:
    def __init__(self, lease: MemoryLease, clock: FakeClock, identity: str) -> None:
        self.changes: list[tuple[float, bool]] = []
        self.clock = clock
        self.elector = LeaderElector(
            lease,
            identity=identity,
            settings=SETTINGS,
            clock=clock,
            on_change=lambda leading: self.changes.append((clock.monotonic(), leading)),
        )
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.ensure_future(self.elector.run(self.stop))

    async def kill(self) -> None:
        assert self.task is not None
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task

    async def shut_down(self) -> None:
        assert self.task is not None
        self.stop.set()
        await asyncio.wait_for(self.task, 5)


@asynccontextmanager
async def replicas(
    lease: MemoryLease, clock: FakeClock, *names: str
) -> AsyncIterator[list[Replica]]:
    group = [Replica(lease, clock, name) for name in names]
    try:
        yield group
    finally:
        for replica in group:
            if replica.task is not None and not replica.task.done():
                replica.task.cancel()
                await asyncio.gather(replica.task, return_exceptions=True)


async def test_the_first_replica_leads_at_once_and_renews_every_retry_period() -> None:
    clock, lease = FakeClock(), MemoryLease()
    async with replicas(lease, clock, "a") as (a,):
        a.start()
        await clock.advance(0)
        assert a.changes == [(0.0, True)]
        assert lease.record is not None and lease.record.holder == "a"
        await clock.advance(10)
        assert len(lease.writes) == 1 + 5  # the create, then one renewal per 2 s
        assert {w.transitions for w in lease.writes} == {0}
        assert a.elector.leading


async def test_a_standby_takes_over_one_lease_after_the_last_renewal_it_saw() -> None:
    clock, lease = FakeClock(), MemoryLease()
    async with replicas(lease, clock, "a", "b") as (a, b):
        a.start()
        await clock.advance(0)
        b.start()
        await clock.advance(7)
        assert not b.elector.leading
        assert b.changes == []
        # a dies at t=7 without releasing; its last renewal was at t=6, and b saw it
        # at its try at t=6 (b tries at 0, 2, 4, ...).
        await a.kill()
        await clock.advance(13.9)  # t=20.9: 14.9 s after b saw the record change
        assert not b.elector.leading
        await clock.advance(1.1)  # t=22: b's first try at or after 6 + 15
        assert b.changes == [(22.0, True)]
        assert lease.record is not None
        assert (lease.record.holder, lease.record.transitions) == ("b", 1)


async def test_a_leader_that_cannot_renew_steps_down_at_the_renew_deadline() -> None:
    clock, lease = FakeClock(), MemoryLease()
    async with replicas(lease, clock, "a") as (a,):
        a.start()
        await clock.advance(4)  # renewed at 2 and 4
        lease.down = True
        await clock.advance(9.9)
        assert a.elector.leading
        await clock.advance(0.1)  # t=14: the try at 14 fails, 10 s after the renewal at 4
        assert a.changes == [(0.0, True), (14.0, False)]
        lease.down = False
        await clock.advance(2)  # the Lease is still its own: it leads again at its next try
        assert a.changes[-1] == (16.0, True)
        assert lease.record is not None and lease.record.transitions == 0


async def test_a_leader_steps_down_on_time_even_when_a_request_hangs() -> None:
    clock, lease = FakeClock(), MemoryLease()
    async with replicas(lease, clock, "a") as (a,):
        a.start()
        await clock.advance(4)
        lease.hang = True
        await clock.advance(9.9)
        assert a.elector.leading
        await clock.advance(0.1)
        assert a.changes[-1] == (14.0, False)


async def test_a_leader_steps_down_at_once_when_another_holder_shows_up() -> None:
    clock, lease = FakeClock(), MemoryLease()
    async with replicas(lease, clock, "a") as (a,):
        a.start()
        await clock.advance(3)
        lease.hold("intruder")
        await clock.advance(1)  # its try at t=4 sees the other holder
        assert a.changes == [(0.0, True), (4.0, False)]
        await clock.advance(14)  # the intruder's lease is valid until 3 + 15 as a saw it
        assert not a.elector.leading


async def test_a_graceful_stop_releases_and_the_standby_takes_over_at_its_next_try() -> None:
    clock, lease = FakeClock(), MemoryLease()
    async with replicas(lease, clock, "a", "b") as (a, b):
        a.start()
        await clock.advance(0)
        b.start()
        await clock.advance(5)
        await a.shut_down()
        assert a.changes == [(0.0, True), (5.0, False)]
        assert lease.record is not None
        assert (lease.record.holder, lease.record.duration_s) == ("", 1)
        await clock.advance(1)  # b's next try is at t=6, not a lease later
        assert b.changes == [(6.0, True)]
        assert (lease.record.holder, lease.record.transitions) == ("b", 1)


async def test_a_killed_leader_does_not_release() -> None:
    clock, lease = FakeClock(), MemoryLease()
    async with replicas(lease, clock, "a") as (a,):
        a.start()
        await clock.advance(3)
        await a.kill()
        assert a.changes == [(0.0, True), (3.0, False)]
        assert lease.record is not None and lease.record.holder == "a"


async def test_a_standby_that_loses_the_race_for_an_expired_lease_stays_standby() -> None:
    clock, lease = FakeClock(), MemoryLease()
    lease._store(LeaseRecord("gone", 15, "t", "t", 4))
    async with replicas(lease, clock, "c") as (c,):
        c.start()
        await clock.advance(15.9)
        assert not c.elector.leading
        # Between c's read of the expired Lease and its write, b's write lands.
        update = lease.update

        async def b_first(record: LeaseRecord) -> LeaseRecord:
            lease.hold("b")
            lease.update = update  # type: ignore[method-assign]
            return await update(record)

        lease.update = b_first  # type: ignore[method-assign]
        await clock.advance(10)
        assert lease.conflicts == 1
        assert not c.elector.leading
        assert c.changes == []
        assert lease.record is not None and lease.record.holder == "b"
