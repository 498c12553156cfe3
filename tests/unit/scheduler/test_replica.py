"""Which replica answers kube-scheduler, when it is ready, and how the leader's label
follows leadership: the pure rules, and :class:`LeaderLabel` on an in-memory pod in
virtual time."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from katalyst.clock import FakeClock
from scheduler_plugins.replica import (
    LEADER_LABEL,
    LabelSettings,
    LeaderLabel,
    PodLabelError,
    Replica,
    not_ready,
    standby,
)


@dataclass
class Elector:
    identity: str = "me"
    leading: bool = False
    holder: str = ""


@dataclass
class Watch:
    what: str
    synced: asyncio.Event = field(default_factory=asyncio.Event)


def test_without_leader_election_the_replica_always_answers() -> None:
    assert standby(None) is None
    cnr, pod = Watch("cnr"), Watch("pod")
    assert not_ready([cnr, pod]) == "not synced: waiting for the first list of cnr and pod"
    cnr.synced.set()
    pod.synced.set()
    assert not_ready([cnr, pod]) is None


def test_only_the_holder_answers_and_every_synced_replica_is_ready() -> None:
    elector = Elector()
    watch = Watch("pod")
    replica = Replica(elector, [watch])
    assert replica.serving() == "standby: this replica (me) does not hold the lease yet"
    assert replica.ready() == "not synced: waiting for the first list of pod"
    elector.holder = "other"
    assert replica.serving() == "standby: other holds the lease, not this replica (me)"
    # A synced standby is Ready (a spare that rollouts and PDBs count) and still
    # refuses the verbs.
    watch.synced.set()
    assert replica.ready() is None
    assert replica.serving() == "standby: other holds the lease, not this replica (me)"
    elector.leading, elector.holder = True, "me"
    assert (replica.serving(), replica.ready()) == (None, None)
    # Stepping down is seen by the very next call.
    elector.leading = False
    assert replica.serving() == "standby: this replica (me) does not hold the lease yet"


def test_a_leader_that_has_not_listed_answers_but_is_not_ready() -> None:
    replica = Replica(Elector(leading=True, holder="me"), [Watch("cnr")])
    assert replica.serving() is None
    assert replica.ready() == "not synced: waiting for the first list of cnr"


# ---- LeaderLabel -------------------------------------------------------------------------


@dataclass
class Pod:
    """A pod's labels, patched as the API server would; ``fail`` refuses that many
    patches in a row."""

    labels: dict[str, str] = field(default_factory=dict)
    fail: int = 0
    sent: list[str | None] = field(default_factory=list)

    @property
    def where(self) -> str:
        return "pod ns/p"

    async def put(self, value: str | None) -> None:
        self.sent.append(value)
        await asyncio.sleep(0)
        if self.fail:
            self.fail -= 1
            raise PodLabelError("pod ns/p: HTTP 500: injected")
        if value is None:
            self.labels.pop(LEADER_LABEL, None)
        else:
            self.labels[LEADER_LABEL] = value


@dataclass
class Running:
    pod: Pod
    clock: FakeClock
    label: LeaderLabel
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def settle(self) -> None:
        for _ in range(20):
            await asyncio.sleep(0)


def jitter() -> random.Random:
    return random.Random(0)  # noqa: S311 - jitter


SETTINGS = LabelSettings(backoff_initial_s=1.0, backoff_max_s=8.0, stop_deadline_s=5.0)


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    # A crashed predecessor in this pod left the label.
    pod = Pod(labels={LEADER_LABEL: "true", "app": "x"})
    clock = FakeClock()
    label = LeaderLabel(pod, clock=clock, settings=SETTINGS, rng=jitter())
    stop = asyncio.Event()
    r = Running(pod, clock, label, stop, asyncio.create_task(label.run(stop)))
    try:
        yield r
    finally:
        stop.set()
        r.task.cancel()
        await asyncio.gather(r.task, return_exceptions=True)


async def test_the_stale_label_goes_first_then_the_label_follows_leadership(
    running: Running,
) -> None:
    pod, label = running.pod, running.label
    await asyncio.wait_for(label.first_try.wait(), 5)
    assert pod.labels == {"app": "x"}
    assert label.labelled is False
    label.lead(True)
    await running.settle()
    assert pod.labels == {LEADER_LABEL: "true", "app": "x"}
    label.lead(False)
    await running.settle()
    assert pod.labels == {"app": "x"}
    # Nothing to do, nothing sent.
    await running.settle()
    assert pod.sent == [None, "true", None]


async def test_a_failed_patch_is_retried_with_backoff(running: Running) -> None:
    pod, label, clock = running.pod, running.label, running.clock
    await asyncio.wait_for(label.first_try.wait(), 5)
    pod.fail = 3
    label.lead(True)
    await running.settle()
    assert (pod.sent, label.failures) == ([None, "true"], 1)
    # Retries back off (full jitter over 1, 2, 4 s caps): none before half the first cap.
    await clock.advance(0.4)
    assert len(pod.sent) == 2
    for _ in range(3):
        await clock.advance(SETTINGS.backoff_max_s)
        await running.settle()
    assert pod.sent == [None, "true", "true", "true", "true"]
    assert pod.labels[LEADER_LABEL] == "true"
    assert (label.failures, label.labelled) == (0, True)


async def test_a_change_of_leadership_cuts_a_backoff_short(running: Running) -> None:
    pod, label = running.pod, running.label
    await asyncio.wait_for(label.first_try.wait(), 5)
    pod.fail = 1
    label.lead(True)
    await running.settle()
    assert pod.sent == [None, "true"]
    # Stepped down while backing off: the removal goes at once (no time advanced).
    label.lead(False)
    await running.settle()
    assert pod.sent == [None, "true", None]
    assert label.labelled is False


async def test_a_graceful_stop_removes_the_label_and_gives_up_at_its_deadline(
    running: Running,
) -> None:
    pod, label = running.pod, running.label
    await asyncio.wait_for(label.first_try.wait(), 5)
    label.lead(True)
    await running.settle()
    assert label.labelled is True
    running.stop.set()
    await asyncio.wait_for(running.task, 5)
    assert LEADER_LABEL not in pod.labels

    # The API server down at the stop: tries until the deadline, then returns.
    pod2 = Pod(fail=1_000)
    clock = FakeClock()
    label2 = LeaderLabel(pod2, clock=clock, settings=SETTINGS, rng=jitter())
    stop = asyncio.Event()
    stop.set()
    task = asyncio.create_task(label2.run(stop))
    while not task.done():
        await clock.advance(1.0)
    await task
    assert label2.first_try.is_set()
    assert 1 < len(pod2.sent) < 10
    assert clock.monotonic() <= SETTINGS.stop_deadline_s + 1.0


async def test_a_start_that_cannot_remove_the_stale_label_still_lets_the_campaign_start() -> None:
    pod = Pod(labels={LEADER_LABEL: "true"}, fail=1)
    clock = FakeClock()
    label = LeaderLabel(pod, clock=clock, settings=SETTINGS, rng=jitter())
    stop = asyncio.Event()
    task = asyncio.create_task(label.run(stop))
    try:
        await asyncio.wait_for(label.first_try.wait(), 5)
        assert pod.labels == {LEADER_LABEL: "true"}
        assert label.labelled is None
        await clock.advance(SETTINGS.backoff_initial_s)
        for _ in range(20):
            await asyncio.sleep(0)
        assert pod.labels == {}
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
