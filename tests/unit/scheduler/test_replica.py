"""Which replica answers kube-scheduler, when it is ready, and how the leader's
EndpointSlice follows leadership: the pure rules, and :class:`LeaderSlice` on an
in-memory slice store (with the API server's optimistic concurrency) in virtual
time."""

from __future__ import annotations

import asyncio
import copy
import random
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from katalyst.clock import FakeClock
from scheduler_plugins.replica import (
    MANAGED_BY_LABEL,
    SERVICE_NAME_LABEL,
    LeaderEndpoint,
    LeaderSlice,
    Replica,
    SliceConflict,
    SliceError,
    SliceSettings,
    check_service_name,
    holds,
    leader_endpoint,
    not_ready,
    published,
    publishes,
    slice_object,
    standby,
    withdrawn,
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


# ---- the slice's content ----------------------------------------------------------------

ME = LeaderEndpoint("ext", "sys", "10.0.0.1", 8888, pod="ext-a", node="n1")
OTHER = LeaderEndpoint("ext", "sys", "10.0.0.2", 8888, pod="ext-b", node="n2")


def test_the_slice_routes_the_service_to_the_leader() -> None:
    assert ME.slice_name == "ext-leader"
    assert slice_object(ME) == {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "ext-leader",
            "namespace": "sys",
            "labels": {
                "kubernetes.io/service-name": "ext",
                "endpointslice.kubernetes.io/managed-by": "katalyst-scheduler-extender",
            },
        },
        "addressType": "IPv4",
        "endpoints": [
            {
                "addresses": ["10.0.0.1"],
                "conditions": {"ready": True},
                "targetRef": {"kind": "Pod", "namespace": "sys", "name": "ext-a"},
                "nodeName": "n1",
            }
        ],
        "ports": [{"name": "http", "port": 8888, "protocol": "TCP"}],
    }
    # Without $POD_NAME and $NODE_NAME: no targetRef, no nodeName.
    bare = leader_endpoint(service="ext", namespace="sys", ip="fd00:0::1", port=80)
    body = slice_object(bare)
    assert (bare.ip, body["addressType"]) == ("fd00::1", "IPv6")
    assert body["endpoints"] == [{"addresses": ["fd00::1"], "conditions": {"ready": True}}]


def test_what_a_stored_slice_routes_to() -> None:
    stored = slice_object(ME)
    stored["metadata"].update(resourceVersion="7", uid="u", annotations={"a": "b"})
    # Fields the server may default, and metadata that is not ours, do not count.
    stored["endpoints"][0]["conditions"]["serving"] = True
    stored["metadata"]["labels"]["team"] = "x"
    assert publishes(stored, ME)
    assert not publishes(stored, OTHER)
    assert holds(stored, "10.0.0.1")
    assert not holds(stored, "10.0.0.2")
    assert not publishes({}, ME)
    assert not holds({"endpoints": "garbage"}, "10.0.0.1")
    broken: dict[str, Any]
    for broken in (
        {"addressType": "IPv6"},
        {"ports": [{"name": "http", "port": 9999, "protocol": "TCP"}]},
        {"endpoints": []},
    ):
        assert not publishes({**stored, **broken}, ME)
    other = copy.deepcopy(stored)
    other["metadata"]["labels"][SERVICE_NAME_LABEL] = "someone-else"
    assert not publishes(other, ME)

    # A replace keeps the resourceVersion read (conditional), and others' labels and
    # annotations; a withdrawal empties the endpoints and keeps everything else.
    body = published(slice_object(OTHER) | {"metadata": stored["metadata"]}, ME)
    assert publishes(body, ME)
    meta = body["metadata"]
    assert (meta["resourceVersion"], meta["annotations"], meta["labels"]["team"]) == (
        "7",
        {"a": "b"},
        "x",
    )
    assert meta["labels"][MANAGED_BY_LABEL] == "katalyst-scheduler-extender"
    gone = withdrawn(stored)
    assert gone["endpoints"] == []
    assert gone["metadata"] == stored["metadata"]
    assert gone["ports"] == stored["ports"]
    assert stored["endpoints"]  # not changed in place


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ip": "10.0.0"}, "$POD_IP: '10.0.0' is not an IPv4 or IPv6 address"),
        ({"ip": "pod-a"}, "$POD_IP: 'pod-a' is not an IPv4 or IPv6 address"),
        ({"service": "Ext"}, "--service: 'Ext' is not a Service name"),
        ({"service": "1ext"}, "--service: '1ext' is not a Service name"),
        ({"service": "e" * 64}, f"--service: '{'e' * 64}' is not a Service name"),
    ],
)
def test_a_bad_endpoint_names_what_is_wrong(kwargs: dict[str, str], message: str) -> None:
    args: dict[str, Any] = {"service": "ext", "namespace": "sys", "ip": "10.0.0.1", "port": 1}
    with pytest.raises(ValueError, match="^" + message.replace("$", r"\$")):
        leader_endpoint(**(args | kwargs))
    assert check_service_name("katalyst-scheduler-extender")


# ---- LeaderSlice ------------------------------------------------------------------------


@dataclass
class Store:
    """One EndpointSlice as the API server keeps it: a resourceVersion per write, a
    conditional update answered with a conflict when it is stale. ``fail`` refuses
    that many requests in a row; ``race`` runs before the next write lands (another
    writer getting in between our read and our write)."""

    obj: dict[str, Any] | None = None
    fail: int = 0
    race: list[Any] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)
    """"GET", "POST", "PUT <addresses>" per request, in order."""
    rv: int = 1

    @property
    def where(self) -> str:
        return "endpointslice sys/ext-leader"

    def put(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """The cluster (another writer) stores ``obj``."""
        self.rv += 1
        self.obj = copy.deepcopy(dict(obj))
        self.obj["metadata"]["resourceVersion"] = str(self.rv)
        return copy.deepcopy(self.obj)

    def addresses(self) -> list[str] | None:
        if self.obj is None:
            return None
        return [a for e in self.obj["endpoints"] for a in e["addresses"]]

    async def _request(self, what: str) -> None:
        self.sent.append(what)
        await asyncio.sleep(0)
        if self.fail:
            self.fail -= 1
            raise SliceError(f"{self.where}: HTTP 500: injected")

    async def _race(self) -> None:
        if self.race:
            self.race.pop(0)(self)

    async def get(self) -> Mapping[str, Any] | None:
        await self._request("GET")
        return None if self.obj is None else copy.deepcopy(self.obj)

    async def create(self, obj: Mapping[str, Any]) -> Mapping[str, Any]:
        await self._request("POST")
        await self._race()
        if self.obj is not None:
            raise SliceConflict("already exists")
        return self.put(obj)

    async def update(self, obj: Mapping[str, Any]) -> Mapping[str, Any]:
        addresses = [a for e in obj["endpoints"] for a in e["addresses"]]
        await self._request(f"PUT {','.join(addresses)}")
        await self._race()
        if self.obj is None:
            raise SliceConflict("not found")
        if obj["metadata"].get("resourceVersion") != self.obj["metadata"]["resourceVersion"]:
            raise SliceConflict("the object has been modified")
        return self.put(obj)


def jitter() -> random.Random:
    return random.Random(0)  # noqa: S311 - jitter


SETTINGS = SliceSettings(
    backoff_initial_s=1.0, backoff_max_s=8.0, reassert_s=30.0, stop_deadline_s=5.0
)


@dataclass
class Running:
    store: Store
    clock: FakeClock
    slice: LeaderSlice
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def settle(self) -> None:
        for _ in range(20):
            await asyncio.sleep(0)


def publisher(store: Store, clock: FakeClock, endpoint: LeaderEndpoint = ME) -> LeaderSlice:
    return LeaderSlice(store, endpoint, clock=clock, settings=SETTINGS, rng=jitter())


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    # A crashed predecessor in this pod left its address.
    store = Store()
    store.put(slice_object(ME))
    clock = FakeClock()
    leader = publisher(store, clock)
    stop = asyncio.Event()
    r = Running(store, clock, leader, stop, asyncio.create_task(leader.run(stop)))
    try:
        yield r
    finally:
        stop.set()
        r.task.cancel()
        await asyncio.gather(r.task, return_exceptions=True)


async def test_the_stale_address_goes_first_then_the_slice_follows_leadership(
    running: Running,
) -> None:
    store, leader = running.store, running.slice
    await asyncio.wait_for(leader.first_try.wait(), 5)
    assert store.addresses() == []
    assert leader.routed is False
    leader.lead(True)
    await running.settle()
    assert store.obj is not None and publishes(store.obj, ME)
    assert leader.routed is True
    leader.lead(False)
    await running.settle()
    assert store.addresses() == []
    # Nothing to do, nothing sent.
    await running.settle()
    assert store.sent == ["GET", "PUT ", "GET", "PUT 10.0.0.1", "GET", "PUT "]
    assert leader.writes == 3


async def test_a_missing_slice_is_created_and_a_create_race_reads_again() -> None:
    store, clock = Store(), FakeClock()
    leader = publisher(store, clock)
    stop = asyncio.Event()
    task = asyncio.create_task(leader.run(stop))
    try:
        await asyncio.wait_for(leader.first_try.wait(), 5)
        # No slice: nothing of ours to withdraw at start.
        assert store.sent == ["GET"]
        # Someone creates it between our read and our create: 409, read, replace.
        store.race.append(lambda s: s.put(slice_object(OTHER)))
        leader.lead(True)
        for _ in range(20):
            await asyncio.sleep(0)
        assert store.sent == ["GET", "GET", "POST", "GET", "PUT 10.0.0.1"]
        assert store.addresses() == ["10.0.0.1"]
        assert leader.failures == 0
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    # Stopped: it withdrew its address.
    assert store.addresses() == []


async def test_another_replicas_address_is_never_removed(running: Running) -> None:
    store, leader = running.store, running.slice
    await asyncio.wait_for(leader.first_try.wait(), 5)
    leader.lead(True)
    await running.settle()
    assert store.addresses() == ["10.0.0.1"]
    # The next leader writes its address between our read and our withdrawal: the
    # conditional write loses (409), the new read shows it is not ours, and it stays.
    store.race.append(lambda s: s.put(published(s.obj, OTHER)))
    leader.lead(False)
    await running.settle()
    assert store.addresses() == ["10.0.0.2"]
    assert store.sent[-3:] == ["GET", "PUT ", "GET"]
    assert (leader.routed, leader.failures) == (False, 0)
    # Nor at a graceful stop.
    running.stop.set()
    await asyncio.wait_for(running.task, 5)
    assert store.addresses() == ["10.0.0.2"]
    assert store.sent[-1] == "GET"


async def test_a_failed_request_is_retried_with_backoff(running: Running) -> None:
    store, leader, clock = running.store, running.slice, running.clock
    await asyncio.wait_for(leader.first_try.wait(), 5)
    sent = len(store.sent)
    store.fail = 3
    leader.lead(True)
    await running.settle()
    assert (len(store.sent) - sent, leader.failures) == (1, 1)
    # Retries back off (full jitter over 1, 2, 4 s caps): none before half the first cap.
    await clock.advance(0.4)
    assert len(store.sent) - sent == 1
    for _ in range(3):
        await clock.advance(SETTINGS.backoff_max_s)
        await running.settle()
    assert store.sent[sent:] == ["GET", "GET", "GET", "GET", "PUT 10.0.0.1"]
    assert store.addresses() == ["10.0.0.1"]
    assert (leader.failures, leader.routed) == (0, True)


async def test_a_write_that_keeps_losing_races_backs_off() -> None:
    store, clock = Store(), FakeClock()
    store.put(slice_object(OTHER))
    leader = publisher(store, clock)
    stop = asyncio.Event()
    task = asyncio.create_task(leader.run(stop))
    try:
        await asyncio.wait_for(leader.first_try.wait(), 5)
        store.race.extend([lambda s: s.put(s.obj)] * SETTINGS.conflict_retries)
        leader.lead(True)
        for _ in range(20):
            await asyncio.sleep(0)
        assert store.sent[1:] == ["GET", "PUT 10.0.0.1"] * SETTINGS.conflict_retries
        assert (leader.failures, leader.routed) == (1, None)
        await clock.advance(SETTINGS.backoff_initial_s)
        for _ in range(20):
            await asyncio.sleep(0)
        assert store.addresses() == ["10.0.0.1"]
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def test_the_leader_reasserts_the_slice(running: Running) -> None:
    store, leader, clock = running.store, running.slice, running.clock
    await asyncio.wait_for(leader.first_try.wait(), 5)
    leader.lead(True)
    await running.settle()
    writes = leader.writes
    # Unchanged: a read every 30 s, no write.
    await clock.advance(30)
    await running.settle()
    assert store.sent[-1] == "GET"
    assert leader.writes == writes
    # Deleted by someone: nothing happens before the next check, which recreates it.
    store.obj = None
    await clock.advance(29)
    await running.settle()
    assert store.obj is None
    await clock.advance(1)
    await running.settle()
    assert store.sent[-2:] == ["GET", "POST"]
    assert store.addresses() == ["10.0.0.1"]
    # Edited by someone: restored at the next check.
    assert store.obj is not None
    store.put(published(store.obj, OTHER))
    await clock.advance(30)
    await running.settle()
    assert store.addresses() == ["10.0.0.1"]
    assert leader.writes == writes + 2
    # A standby checks nothing.
    leader.lead(False)
    await running.settle()
    sent = len(store.sent)
    await clock.advance(300)
    await running.settle()
    assert len(store.sent) == sent


async def test_held_it_publishes_nothing_and_withdraws_at_the_stop(running: Running) -> None:
    store, leader, clock = running.store, running.slice, running.clock
    await asyncio.wait_for(leader.first_try.wait(), 5)
    leader.lead(True)
    await running.settle()
    # A graceful stop: the elector steps down and releases; the address stays until
    # the publisher's stop, and no check restores anything meanwhile.
    leader.hold()
    store.put(published(store.obj or {}, OTHER))
    sent = len(store.sent)
    await clock.advance(60)
    await running.settle()
    assert (len(store.sent), store.addresses()) == (sent, ["10.0.0.2"])
    store.put(published(store.obj or {}, ME))
    running.stop.set()
    await asyncio.wait_for(running.task, 5)
    assert store.addresses() == []


async def test_a_graceful_stop_withdraws_and_gives_up_at_its_deadline(running: Running) -> None:
    store, leader = running.store, running.slice
    await asyncio.wait_for(leader.first_try.wait(), 5)
    leader.lead(True)
    await running.settle()
    assert leader.routed is True
    running.stop.set()
    await asyncio.wait_for(running.task, 5)
    assert store.addresses() == []

    # The API server down at the stop: tries until the deadline, then returns.
    store2 = Store(fail=1_000)
    clock = FakeClock()
    leader2 = publisher(store2, clock)
    stop = asyncio.Event()
    stop.set()
    task = asyncio.create_task(leader2.run(stop))
    while not task.done():
        await clock.advance(1.0)
    await task
    assert leader2.first_try.is_set()
    assert 1 < len(store2.sent) < 10
    assert clock.monotonic() <= SETTINGS.stop_deadline_s + 1.0


async def test_a_start_that_cannot_withdraw_still_lets_the_campaign_start() -> None:
    store, clock = Store(fail=1), FakeClock()
    store.put(slice_object(ME))
    leader = publisher(store, clock)
    stop = asyncio.Event()
    task = asyncio.create_task(leader.run(stop))
    try:
        await asyncio.wait_for(leader.first_try.wait(), 5)
        assert store.addresses() == ["10.0.0.1"]
        assert leader.routed is None
        await clock.advance(SETTINGS.backoff_initial_s)
        for _ in range(20):
            await asyncio.sleep(0)
        assert store.addresses() == []
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
