"""The fake kube-apiserver's nodes (list, watch, create, delete, replace: what a
controller that watches nodes needs) and leases (what leader election needs), driven
by the official ``kubernetes`` client's ``CoreV1Api`` and ``CoordinationV1Api`` over
HTTP.

(The client's own ``kubernetes.aio.leaderelection`` cannot be used here: its
LeaseLock passes ``pretty=True`` where the client's validation wants a string, so
its create always fails, against any server.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import aiohttp
import pytest
from kubernetes import client as sclient
from kubernetes.aio import client as aclient

from tests.integration.test_fake_apiserver import new_watch, status_of, summary, take
from tests.support.apiserver import (
    LEASES,
    STRATEGIC_MERGE_PATCH,
    FakeApiServer,
    Obj,
    micro_time,
    node_manifest,
    object_manifest,
    parse_micro_time,
)

NS = "katalyst-system"


@pytest.fixture
async def api() -> AsyncIterator[FakeApiServer]:
    async with FakeApiServer(bookmark_interval=0.05) as server:
        yield server


@pytest.fixture
async def client(api: FakeApiServer) -> AsyncIterator[aclient.ApiClient]:
    config = aclient.Configuration(host=api.url, api_key={"BearerToken": f"Bearer {api.token}"})
    async with aclient.ApiClient(config) as c:
        yield c


@pytest.fixture
def core(client: aclient.ApiClient) -> aclient.CoreV1Api:
    return aclient.CoreV1Api(client)


@pytest.fixture
def coordination(client: aclient.ApiClient) -> aclient.CoordinationV1Api:
    return aclient.CoordinationV1Api(client)


async def error_of(call: Any) -> tuple[int, Obj]:
    with pytest.raises(aclient.ApiException) as caught:
        await call
    return caught.value.status, status_of(caught.value)


def names(listing: Any) -> list[str]:
    return [item.metadata.name for item in listing.items]


# --- nodes ---------------------------------------------------------------------------------


async def test_list_nodes_with_selectors(api: FakeApiServer, core: aclient.CoreV1Api) -> None:
    api.create_node(node_manifest("n1", labels={"node-pool": "batch", "zone": "a"}))
    api.create_node(node_manifest("n2", labels={"node-pool": "online", "zone": "b"}))
    api.create_node(node_manifest("n3", labels={"node-pool": "batch", "zone": "b"}))
    api.update_node("n3", lambda n: n["spec"].update(unschedulable=True))

    everything = await core.list_node()
    batch = await core.list_node(label_selector="node-pool=batch,zone in (a,b)")
    by_name = await core.list_node(field_selector="metadata.name=n2")
    schedulable = await core.list_node(field_selector="spec.unschedulable=false")
    response = await core.list_node_without_preload_content()
    wire = await response.json()
    status, unsupported = await error_of(core.list_node(field_selector="metadata.namespace=x"))

    assert names(everything) == ["n1", "n2", "n3"]
    assert everything.kind == "NodeList"
    assert everything.metadata is not None
    assert everything.metadata.resource_version == api.resource_version
    assert "kind" not in wire["items"][0]  # typed list items carry no kind
    assert names(batch) == ["n1", "n3"]
    assert names(by_name) == ["n2"]
    assert names(schedulable) == ["n1", "n2"]
    assert status == 400
    assert unsupported["message"] == "field label not supported: metadata.namespace"


async def test_watch_nodes(api: FakeApiServer, core: aclient.CoreV1Api) -> None:
    api.create_node(node_manifest("n1", labels={"node-pool": "batch"}))
    listed = await core.list_node(label_selector="node-pool=batch")
    assert listed.metadata is not None and listed.metadata.resource_version is not None
    start = listed.metadata.resource_version

    async with new_watch() as w:
        stream = w.stream(core.list_node, label_selector="node-pool=batch", resource_version=start)
        api.create_node(node_manifest("n2", labels={"node-pool": "batch"}))
        api.create_node(node_manifest("n3"))  # not selected
        api.update_node("n1", lambda n: n["metadata"]["labels"].update(zone="a"))
        api.update_node("n2", lambda n: n["metadata"]["labels"].update({"node-pool": "online"}))
        api.delete_node("n1")
        events = await take(stream, 4)

    s = int(start)
    assert summary(events) == [
        ("ADDED", "n2", str(s + 1)),
        ("MODIFIED", "n1", str(s + 3)),
        ("DELETED", "n2", str(s + 4)),  # left the selector
        ("DELETED", "n1", str(s + 5)),
    ]
    assert events[1]["object"].metadata.labels == {"node-pool": "batch", "zone": "a"}
    assert events[0]["object"].kind == "Node"


async def test_create_replace_and_delete_nodes_over_http(
    api: FakeApiServer, core: aclient.CoreV1Api
) -> None:
    body = aclient.V1Node.from_dict(node_manifest("n1", capacity={"cpu": "2000m"}))
    assert body is not None

    created = await core.create_node(body)
    assert created.metadata is not None and created.status is not None
    assert created.status.capacity == {"cpu": "2"}  # canonical form
    created.metadata.labels = {"node-pool": "batch"}
    created.status.capacity = {"cpu": "64"}
    replaced = await core.replace_node("n1", created)
    status, conflict = await error_of(core.replace_node("n1", created))
    # A built-in kind takes an update without a resourceVersion (unconditional).
    created.metadata.resource_version = None
    created.metadata.labels = {"node-pool": "online"}
    unconditional = await core.replace_node("n1", created)
    deleted = await core.delete_node("n1")

    assert replaced.metadata is not None and replaced.status is not None
    assert replaced.metadata.labels == {"node-pool": "batch"}
    assert replaced.status.capacity == {"cpu": "2"}  # PUT to the node keeps its status
    assert status == 409
    assert conflict["message"] == (
        'Operation cannot be fulfilled on nodes "n1": the object has been modified; please '
        "apply your changes to the latest version and try again"
    )
    assert unconditional.metadata is not None
    assert unconditional.metadata.labels == {"node-pool": "online"}
    # The client types a delete's answer as a plain object: the Status.
    assert isinstance(deleted, dict)
    assert deleted["status"] == "Success"
    assert deleted["details"]["kind"] == "nodes"
    assert api.nodes() == []


async def test_node_status_replace_keeps_the_spec(
    api: FakeApiServer, core: aclient.CoreV1Api
) -> None:
    api.create_node(node_manifest("n1"))
    node = await core.read_node_status("n1")
    assert node.spec is not None and node.status is not None
    node.spec.unschedulable = True
    node.status.capacity = {"cpu": "8"}

    replaced = await core.replace_node_status("n1", node)

    assert replaced.status is not None and replaced.status.capacity == {"cpu": "8"}
    assert replaced.spec is not None and not replaced.spec.unschedulable


async def test_a_node_precondition_names_the_minions_key(
    api: FakeApiServer, core: aclient.CoreV1Api
) -> None:
    api.create_node(node_manifest("n1"))
    options = aclient.V1DeleteOptions(preconditions=aclient.V1Preconditions(uid="0000"))

    status, answer = await error_of(core.delete_node("n1", body=options))

    assert status == 409
    assert "Key: /registry/minions/n1," in answer["message"]
    assert api.get_node("n1") is not None


# --- leases ---------------------------------------------------------------------------------


def lease_body(
    holder: str, *, renew: datetime, duration: int = 15, transitions: int = 0
) -> aclient.V1Lease:
    return aclient.V1Lease(
        metadata=aclient.V1ObjectMeta(name="katalyst-controller"),
        spec=aclient.V1LeaseSpec(
            holder_identity=holder,
            lease_duration_seconds=duration,
            acquire_time=renew,
            renew_time=renew,
            lease_transitions=transitions,
        ),
    )


T0 = datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)


async def test_lease_create_get_replace_delete(
    api: FakeApiServer, coordination: aclient.CoordinationV1Api
) -> None:
    created = await coordination.create_namespaced_lease(NS, lease_body("a", renew=T0))
    status, exists = await error_of(
        coordination.create_namespaced_lease(NS, lease_body("b", renew=T0))
    )
    read = await coordination.read_namespaced_lease("katalyst-controller", NS)
    assert read.spec is not None and read.metadata is not None
    read.spec.renew_time = T0 + timedelta(seconds=5)
    renewed = await coordination.replace_namespaced_lease("katalyst-controller", NS, read)
    deleted = await coordination.delete_namespaced_lease("katalyst-controller", NS)

    assert created.metadata is not None and created.spec is not None
    assert created.spec.renew_time == T0 and created.spec.holder_identity == "a"
    assert created.metadata.generation is None  # built-in: no generation
    assert status == 409 and exists["reason"] == "AlreadyExists"
    assert exists["message"] == 'leases.coordination.k8s.io "katalyst-controller" already exists'
    assert renewed.spec is not None and renewed.spec.renew_time == T0 + timedelta(seconds=5)
    assert isinstance(deleted, dict) and deleted["status"] == "Success"
    assert api.objects(LEASES) == []


async def test_micro_times_are_stored_in_utc_with_six_digits(
    api: FakeApiServer, coordination: aclient.CoordinationV1Api
) -> None:
    body = lease_body("a", renew=T0)
    assert body.spec is not None
    body.spec.acquire_time = datetime(2026, 1, 1, 4, 0, 0, 1, tzinfo=timezone(timedelta(hours=2)))

    await coordination.create_namespaced_lease(NS, body)
    stored = api.get_object(LEASES, "katalyst-controller", namespace=NS)

    assert stored is not None
    assert stored["spec"]["acquireTime"] == "2026-01-01T02:00:00.000001Z"
    assert stored["spec"]["renewTime"] == "2026-01-01T00:00:00.123456Z"
    assert micro_time(parse_micro_time("2026-01-01T03:00:00,000001+01:00")) == (
        "2026-01-01T02:00:00.000001Z"
    )


async def test_a_micro_time_without_its_fraction_is_refused(
    api: FakeApiServer, coordination: aclient.CoordinationV1Api
) -> None:
    # datetime.isoformat() drops the fraction when microsecond == 0; the server's
    # time.Parse(RFC3339Micro) needs exactly six digits.
    status, answer = await error_of(
        coordination.create_namespaced_lease(NS, lease_body("a", renew=T0.replace(microsecond=0)))
    )

    assert status == 400 and answer["reason"] == "BadRequest"
    assert answer["message"] == (
        'Lease in version "v1" cannot be handled as a Lease: parsing time '
        '"2026-01-01T00:00:00+00:00" as "2006-01-02T15:04:05.000000Z07:00": cannot parse '
        '"+00:00" as ".000000"'
    )
    assert api.objects(LEASES) == []


@pytest.mark.parametrize(
    ("spec", "code", "message"),
    [
        (
            {"leaseDurationSeconds": 0},
            422,
            'Lease.coordination.k8s.io "l" is invalid: spec.leaseDurationSeconds: Invalid '
            "value: 0: must be greater than 0",
        ),
        (
            {"leaseTransitions": -1},
            422,
            'Lease.coordination.k8s.io "l" is invalid: spec.leaseTransitions: Invalid value: '
            "-1: must be greater than or equal to 0",
        ),
        (
            {"leaseDurationSeconds": "15"},
            400,
            'Lease in version "v1" cannot be handled as a Lease: json: cannot unmarshal string '
            "into Go struct field LeaseSpec.spec.leaseDurationSeconds of type int32",
        ),
        (
            {"renewTime": "yesterday"},
            400,
            'Lease in version "v1" cannot be handled as a Lease: parsing time "yesterday" as '
            '"2006-01-02T15:04:05.000000Z07:00": cannot parse "yesterday" as "2006"',
        ),
        (
            {"renewTime": "2026-01-01T00:00:00.000000"},
            400,
            'Lease in version "v1" cannot be handled as a Lease: parsing time '
            '"2026-01-01T00:00:00.000000" as "2006-01-02T15:04:05.000000Z07:00": cannot parse '
            '"" as "Z07:00"',
        ),
    ],
    ids=["zero-duration", "negative-transitions", "string-duration", "bad-time", "no-zone"],
)
async def test_lease_validation(api: FakeApiServer, spec: Obj, code: int, message: str) -> None:
    # Raw bodies: the typed client would not send most of these.
    body = object_manifest(LEASES, "l", namespace=NS, spec=spec)
    headers = {"Authorization": f"Bearer {api.token}"}
    async with (
        aiohttp.ClientSession(headers=headers) as session,
        session.post(api.url + LEASES.collection_path(NS), json=body) as response,
    ):
        answer = await response.json()

    assert (response.status, answer["code"], answer["message"]) == (code, code, message)
    assert api.objects(LEASES) == []


async def test_lease_field_selector_and_patches(
    api: FakeApiServer, coordination: aclient.CoordinationV1Api
) -> None:
    await coordination.create_namespaced_lease(NS, lease_body("a", renew=T0))

    selected = await coordination.list_namespaced_lease(
        NS, field_selector="metadata.name=katalyst-controller"
    )
    status, unsupported = await error_of(
        coordination.list_namespaced_lease(NS, field_selector="spec.holderIdentity=a")
    )
    # The client sends a strategic merge patch for a dict body.
    patched = await coordination.patch_namespaced_lease(
        "katalyst-controller", NS, {"spec": {"holderIdentity": "b"}}
    )
    json_patch = await error_of(
        coordination.patch_namespaced_lease(
            "katalyst-controller",
            NS,
            [{"op": "replace", "path": "/spec/holderIdentity", "value": "c"}],
        )
    )

    assert names(selected) == ["katalyst-controller"]
    assert status == 400
    assert unsupported["message"] == (
        '"spec.holderIdentity" is not a known field selector: only "metadata.name", '
        '"metadata.namespace"'
    )
    assert patched.spec is not None and patched.spec.holder_identity == "b"
    assert api.patches[0].content_type == STRATEGIC_MERGE_PATCH
    assert json_patch[0] == 415  # this fake does JSON patch for custom resources only


async def test_two_candidates_race_for_one_lease(
    api: FakeApiServer, coordination: aclient.CoordinationV1Api
) -> None:
    """The compare-and-swap that leader election relies on: both read the same
    version, exactly one replace wins, the loser sees 409 and the winner's lease."""
    await coordination.create_namespaced_lease(NS, lease_body("a", renew=T0))
    mine = await coordination.read_namespaced_lease("katalyst-controller", NS)
    theirs = await coordination.read_namespaced_lease("katalyst-controller", NS)
    assert mine.spec is not None and theirs.spec is not None
    later = T0 + timedelta(seconds=20)
    for lease, holder in ((mine, "b"), (theirs, "c")):
        assert lease.spec is not None
        lease.spec.holder_identity = holder
        lease.spec.acquire_time = lease.spec.renew_time = later
        lease.spec.lease_transitions = 1

    won = await coordination.replace_namespaced_lease("katalyst-controller", NS, mine)
    status, lost = await error_of(
        coordination.replace_namespaced_lease("katalyst-controller", NS, theirs)
    )
    current = await coordination.read_namespaced_lease("katalyst-controller", NS)

    assert won.spec is not None and won.spec.holder_identity == "b"
    assert status == 409 and lost["reason"] == "Conflict"
    assert current.spec is not None
    assert (current.spec.holder_identity, current.spec.lease_transitions) == ("b", 1)
    assert [w.code for w in api.writes_to(LEASES, "katalyst-controller", namespace=NS)] == [
        201,
        200,
        409,
    ]


async def test_a_takeover_of_an_expired_lease_fences_the_old_holder(
    api: FakeApiServer, coordination: aclient.CoordinationV1Api
) -> None:
    """client-go's algorithm by hand: "b" finds "a"'s lease expired (renewTime +
    leaseDurationSeconds < now), takes it with one more transition; "a"'s renewal from
    its stale copy is a 409, and re-reading shows it the new holder. A watch on the
    lease sees each change once."""
    await coordination.create_namespaced_lease(NS, lease_body("a", renew=T0))
    held_by_a = await coordination.read_namespaced_lease("katalyst-controller", NS)
    assert held_by_a.metadata is not None and held_by_a.spec is not None
    start = held_by_a.metadata.resource_version
    now = T0 + timedelta(seconds=20)

    async with new_watch() as w:
        stream = w.stream(
            coordination.list_namespaced_lease,
            NS,
            field_selector="metadata.name=katalyst-controller",
            resource_version=start,
        )
        seen_by_b = await coordination.read_namespaced_lease("katalyst-controller", NS)
        spec = seen_by_b.spec
        assert spec is not None and spec.renew_time is not None
        assert spec.lease_duration_seconds is not None and spec.lease_transitions is not None
        assert spec.renew_time + timedelta(seconds=spec.lease_duration_seconds) < now
        spec.holder_identity = "b"
        spec.acquire_time = spec.renew_time = now
        spec.lease_transitions += 1
        taken = await coordination.replace_namespaced_lease("katalyst-controller", NS, seen_by_b)
        held_by_a.spec.renew_time = now
        status, _ = await error_of(
            coordination.replace_namespaced_lease("katalyst-controller", NS, held_by_a)
        )
        (event,) = await take(stream, 1)

    assert taken.spec is not None
    assert (taken.spec.holder_identity, taken.spec.lease_transitions) == ("b", 1)
    assert taken.spec.acquire_time == now
    assert status == 409
    assert event["type"] == "MODIFIED"
    assert event["raw_object"]["spec"]["holderIdentity"] == "b"
    assert event["raw_object"]["spec"]["renewTime"] == micro_time(now)


async def test_a_sync_client_lease(api: FakeApiServer) -> None:
    def run() -> Any:
        config = sclient.Configuration(host=api.url, api_key={"BearerToken": f"Bearer {api.token}"})
        with sclient.ApiClient(config) as c:
            coordination = sclient.CoordinationV1Api(c)
            body = sclient.V1Lease(
                metadata=sclient.V1ObjectMeta(name="l"),
                spec=sclient.V1LeaseSpec(holder_identity="a", renew_time=T0),
            )
            coordination.create_namespaced_lease(NS, body)
            return coordination.read_namespaced_lease("l", NS)

    lease: Any = await asyncio.to_thread(run)

    assert lease.spec.renew_time == T0
