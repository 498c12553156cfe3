"""The fake kube-apiserver (:mod:`tests.support.apiserver`), driven by the official
``kubernetes`` client: ``kubernetes.aio`` on the test's loop, and the sync client in
a thread. Every client gets its own ``Configuration``; none touches the global default.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from kubernetes import client as sclient
from kubernetes import config as sconfig
from kubernetes import watch as swatch
from kubernetes.aio import client as aclient
from kubernetes.aio import config as aconfig
from kubernetes.aio import watch as awatch

from tests.support.apiserver import FakeApiServer, PodJSON, RecordedWrite, pod_manifest

T = TypeVar("T")

Event = dict[str, Any]


@pytest.fixture
async def api() -> AsyncIterator[FakeApiServer]:
    async with FakeApiServer(bookmark_interval=0.05) as server:
        yield server


def _aio_config(api: FakeApiServer, token: str | None = None) -> aclient.Configuration:
    key = {"BearerToken": f"Bearer {token or api.token}"}
    return aclient.Configuration(host=api.url, api_key=key)


@pytest.fixture
async def core(api: FakeApiServer) -> AsyncIterator[aclient.CoreV1Api]:
    async with aclient.ApiClient(_aio_config(api)) as client:
        yield aclient.CoreV1Api(client)


async def in_sync_client(api: FakeApiServer, call: Callable[[sclient.CoreV1Api], T]) -> T:
    """Run ``call`` with a sync CoreV1Api of its own, in a worker thread."""
    config = sclient.Configuration(host=api.url, api_key={"BearerToken": f"Bearer {api.token}"})

    def run() -> T:
        with sclient.ApiClient(config) as client:
            return call(sclient.CoreV1Api(client))

    return await asyncio.to_thread(run)


def new_watch() -> Any:
    """A ``kubernetes.aio.watch.Watch`` (untyped in the client)."""
    return awatch.Watch()  # type: ignore[no-untyped-call]


async def take(stream: Any, count: int, *, timeout: float = 5.0) -> list[Event]:
    """The next ``count`` events of an aio watch stream."""
    events: list[Event] = []
    async with asyncio.timeout(timeout):
        async for event in stream:
            events.append(event)
            if len(events) == count:
                break
    return events


async def drain(stream: Any, *, timeout: float = 5.0) -> list[Event]:
    """Every event until the stream ends."""
    async with asyncio.timeout(timeout):
        return [event async for event in stream]


def summary(events: list[Event]) -> list[tuple[str, str, str]]:
    return [
        (e["type"], e["raw_object"]["metadata"].get("name", ""), _rv(e["raw_object"]))
        for e in events
    ]


def _rv(obj: PodJSON) -> str:
    return str(obj["metadata"]["resourceVersion"])


def names(pod_list: Any) -> list[str]:
    """The names of a PodList's items (an aio or a sync model)."""
    return [pod.metadata.name for pod in pod_list.items]


def status_of(error: aclient.ApiException | sclient.ApiException) -> PodJSON:
    """The Status object in an error's body."""
    assert error.body is not None
    body = json.loads(error.body)
    assert isinstance(body, dict)
    return body


async def raw_lines(response: aiohttp.ClientResponse, *, timeout: float = 5.0) -> list[PodJSON]:
    """Every JSON line of a raw response until it ends; then release it."""
    async with response, asyncio.timeout(timeout):
        return [json.loads(line) async for line in response.content]


# --- list and get ---------------------------------------------------------------------


async def test_list_is_a_podlist_at_the_current_resource_version(
    api: FakeApiServer, core: aclient.CoreV1Api
) -> None:
    api.create_pod(pod_manifest("a", namespace="ns1", node_name="n1"))
    api.create_pod(pod_manifest("b", namespace="ns2", node_name="n2"))

    everything = await core.list_pod_for_all_namespaces()
    in_ns1 = await core.list_namespaced_pod("ns1")

    assert names(everything) == ["a", "b"]
    assert names(in_ns1) == ["a"]
    assert everything.metadata is not None and everything.items[0].metadata is not None
    assert everything.metadata.resource_version == api.resource_version
    assert everything.items[0].metadata.uid == api.pods()[0]["metadata"]["uid"]


async def test_list_wire_format_matches_the_apiserver(
    api: FakeApiServer, core: aclient.CoreV1Api
) -> None:
    api.create_pod(pod_manifest("a"))

    response = await core.list_namespaced_pod_without_preload_content("default")
    body = json.loads(await response.read())

    assert response.status == 200
    assert response.content_type == "application/json"
    assert body["kind"] == "PodList" and body["apiVersion"] == "v1"
    assert body["metadata"] == {"resourceVersion": api.resource_version}
    # List items carry no kind/apiVersion of their own, as in the real list.
    (item,) = body["items"]
    assert "kind" not in item and item["metadata"]["name"] == "a"
    assert item["metadata"]["resourceVersion"] == api.resource_version


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("spec.nodeName=n1", ["a", "c"]),
        ("spec.nodeName==n1", ["a", "c"]),
        ("spec.nodeName!=n1", ["b", "d"]),
        ("spec.nodeName=", ["d"]),
        ("spec.nodeName=n1,status.phase=Running", ["a"]),
        ("status.phase!=Running", ["c", "d"]),
        ("metadata.name=b", ["b"]),
        ("metadata.namespace=other", ["c"]),
        ("spec.hostNetwork=true", ["b"]),
        # Unset fields select as the server's defaulted values would.
        ("spec.restartPolicy=Always,spec.schedulerName=default-scheduler", ["a", "b", "c", "d"]),
        ("", ["a", "b", "c", "d"]),
    ],
)
async def test_field_selectors(api: FakeApiServer, selector: str, expected: list[str]) -> None:
    api.create_pod(pod_manifest("a", node_name="n1", phase="Running"))
    api.create_pod(pod_manifest("b", node_name="n2", phase="Running"))
    api.update_pod("default", "b", lambda p: p["spec"].update(hostNetwork=True))
    api.create_pod(pod_manifest("c", namespace="other", node_name="n1", phase="Succeeded"))
    api.create_pod(pod_manifest("d"))

    pods = await in_sync_client(
        api, lambda v1: v1.list_pod_for_all_namespaces(field_selector=selector)
    )

    assert sorted(names(pods)) == expected
    assert api.requests[-1] == ("GET", "/api/v1/pods", {"fieldSelector": selector})


async def test_an_unsupported_field_is_a_400_with_the_apiservers_message(
    core: aclient.CoreV1Api,
) -> None:
    with pytest.raises(aclient.ApiException) as caught:
        await core.list_pod_for_all_namespaces(field_selector="spec.nodeName=n1,spec.foo=x")

    assert caught.value.status == 400
    status = status_of(caught.value)
    assert status["kind"] == "Status" and status["status"] == "Failure"
    assert status["reason"] == "BadRequest" and status["code"] == 400
    assert status["message"] == "field label not supported: spec.foo"


async def test_a_field_selector_without_an_operator_is_a_400(core: aclient.CoreV1Api) -> None:
    with pytest.raises(aclient.ApiException) as caught:
        await core.list_pod_for_all_namespaces(field_selector="spec.nodeName")

    assert caught.value.status == 400
    assert "can't understand 'spec.nodeName'" in status_of(caught.value)["message"]


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=web", ["a"]),
        ("app==web", ["a"]),
        ("app!=web", ["b", "c"]),
        ("app in (web,db)", ["a", "b"]),
        ("app notin (web)", ["b", "c"]),
        ("app", ["a", "b"]),
        ("!app", ["c"]),
        ("app=web,tier=front", ["a"]),
    ],
)
async def test_label_selectors(
    api: FakeApiServer, core: aclient.CoreV1Api, selector: str, expected: list[str]
) -> None:
    api.create_pod(pod_manifest("a", labels={"app": "web", "tier": "front"}))
    api.create_pod(pod_manifest("b", labels={"app": "db"}))
    api.create_pod(pod_manifest("c"))

    pods = await core.list_namespaced_pod("default", label_selector=selector)

    assert names(pods) == expected


async def test_a_label_selector_the_fake_does_not_understand_is_a_400(
    core: aclient.CoreV1Api,
) -> None:
    with pytest.raises(aclient.ApiException) as caught:
        await core.list_namespaced_pod("default", label_selector="version>3")

    assert caught.value.status == 400


async def test_get_and_not_found(api: FakeApiServer, core: aclient.CoreV1Api) -> None:
    created = api.create_pod(pod_manifest("a", uid="11111111-2222-3333-4444-555555555555"))

    pod = await core.read_namespaced_pod("a", "default")
    with pytest.raises(aclient.ApiException) as caught:
        await core.read_namespaced_pod("nope", "default")

    assert pod.metadata is not None and pod.status is not None
    assert pod.metadata.uid == "11111111-2222-3333-4444-555555555555"
    assert pod.metadata.resource_version == created["metadata"]["resourceVersion"]
    assert pod.kind == "Pod" and pod.status.phase == "Pending"
    assert caught.value.status == 404
    status = status_of(caught.value)
    assert status["message"] == 'pods "nope" not found' and status["reason"] == "NotFound"
    assert status["details"] == {"name": "nope", "kind": "pods"}


async def test_an_unknown_path_is_a_404_status(core: aclient.CoreV1Api) -> None:
    with pytest.raises(aclient.ApiException) as caught:
        await core.list_namespace()  # namespaces are not served

    assert caught.value.status == 404
    status = status_of(caught.value)
    assert status["message"] == "the server could not find the requested resource"


async def test_an_unserved_method_is_a_405_status(
    api: FakeApiServer, core: aclient.CoreV1Api
) -> None:
    api.create_pod(pod_manifest("a"))
    pod = aclient.V1Pod.from_dict(pod_manifest("a"))
    assert pod is not None

    with pytest.raises(aclient.ApiException) as caught:
        await core.replace_namespaced_pod("a", "default", pod)  # pods take no PUT here

    assert caught.value.status == 405
    assert status_of(caught.value)["reason"] == "MethodNotAllowed"


async def test_version(api: FakeApiServer) -> None:
    async with aclient.ApiClient(_aio_config(api)) as client:
        info = await aclient.VersionApi(client).get_code()

    assert (info.major, info.minor) == ("1", "37")
    assert info.git_version.startswith("v1.37")


# --- writes over HTTP --------------------------------------------------------------


async def test_create_and_delete_over_http(api: FakeApiServer, core: aclient.CoreV1Api) -> None:
    before = int(api.resource_version)
    manifest = aclient.V1Pod.from_dict(pod_manifest("a", uid="client-chosen", phase="Running"))
    assert manifest is not None

    created = await core.create_namespaced_pod("default", manifest)
    with pytest.raises(aclient.ApiException) as duplicate:
        await core.create_namespaced_pod("default", manifest)
    deleted = await core.delete_namespaced_pod("a", "default")

    # The server assigns the UID and a fresh status, whatever the client sent.
    assert created.metadata is not None and created.status is not None
    assert deleted.metadata is not None and created.metadata.resource_version is not None
    assert deleted.metadata.resource_version is not None
    assert created.metadata.uid not in (None, "client-chosen")
    assert created.metadata.creation_timestamp is not None
    assert created.status.phase == "Pending"
    assert int(created.metadata.resource_version) == before + 1
    assert duplicate.value.status == 409
    assert status_of(duplicate.value)["reason"] == "AlreadyExists"
    assert status_of(duplicate.value)["message"] == 'pods "a" already exists'
    assert deleted.metadata.uid == created.metadata.uid
    assert int(deleted.metadata.resource_version) == before + 2
    assert api.pods() == []
    assert [r.method for r in api.requests] == ["POST", "POST", "DELETE"]


async def test_create_without_containers_is_invalid(api: FakeApiServer) -> None:
    # The typed client refuses to send such a pod, so this one goes by plain HTTP.
    headers = {"Authorization": f"Bearer {api.token}"}
    async with (
        aiohttp.ClientSession(headers=headers) as session,
        session.post(
            f"{api.url}/api/v1/namespaces/default/pods",
            json={"metadata": {"name": "a"}, "spec": {}},
        ) as response,
    ):
        status = await response.json()

    assert response.status == 422
    assert status["reason"] == "Invalid"
    assert status["message"] == 'Pod "a" is invalid: spec.containers: Required value'
    assert api.pods() == []


async def test_eviction_deletes_the_pod_and_answers_201_status(
    api: FakeApiServer, core: aclient.CoreV1Api
) -> None:
    api.create_pod(pod_manifest("a", node_name="n1"))
    wire = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": "a", "namespace": "default"},
        "deleteOptions": {"gracePeriodSeconds": 0},
    }
    eviction = aclient.V1Eviction.from_dict(wire)
    assert eviction is not None

    response = await core.create_namespaced_pod_eviction_without_preload_content(
        "a", "default", eviction
    )
    body = json.loads(await response.read())
    with pytest.raises(aclient.ApiException) as again:
        await core.create_namespaced_pod_eviction("a", "default", eviction)

    assert response.status == 201
    assert body == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "code": 201,
    }
    assert api.pods() == []
    assert api.evictions == [wire]
    assert ("POST", "/api/v1/namespaces/default/pods/a/eviction", {}) in api.requests
    assert again.value.status == 404


async def test_the_typed_eviction_call_accepts_the_status_reply(
    api: FakeApiServer, core: aclient.CoreV1Api
) -> None:
    api.create_pod(pod_manifest("a"))
    body = aclient.V1Eviction(metadata=aclient.V1ObjectMeta(name="a", namespace="default"))

    # The client deserializes the 201 Status into a V1Eviction whose kind is "Status".
    reply = await core.create_namespaced_pod_eviction("a", "default", body)

    assert reply.kind == "Status"
    assert api.pods() == []


async def test_an_eviction_of_a_replaced_pod_is_a_precondition_conflict(
    api: FakeApiServer, core: aclient.CoreV1Api
) -> None:
    created = api.create_pod(pod_manifest("a", uid="new-uid"))
    body = aclient.V1Eviction.from_dict(
        {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": "a", "namespace": "default"},
            "deleteOptions": {"preconditions": {"uid": "old-uid"}},
        }
    )
    assert body is not None

    with pytest.raises(aclient.ApiException) as caught:
        await core.create_namespaced_pod_eviction("a", "default", body)

    assert caught.value.status == 409
    status = status_of(caught.value)
    assert status["reason"] == "Conflict"
    assert status["message"] == (
        'Operation cannot be fulfilled on pods "a": StorageError: invalid object, Code: 4, '
        "Key: /registry/pods/default/a, ResourceVersion: 0, AdditionalErrorMsg: Precondition "
        "failed: UID in precondition: old-uid, UID in object meta: new-uid"
    )
    assert api.get_pod("default", "a") == created
    assert api.evictions == []
    assert api.writes_to("pods", "a", namespace="default") == [
        RecordedWrite("POST", "pods", "default", "a", "eviction", 409, False)
    ]


async def test_pod_delete_preconditions(api: FakeApiServer, core: aclient.CoreV1Api) -> None:
    created = api.create_pod(pod_manifest("a"))
    stale = aclient.V1DeleteOptions(preconditions=aclient.V1Preconditions(resource_version="1"))

    with pytest.raises(aclient.ApiException) as caught:
        await core.delete_namespaced_pod("a", "default", body=stale)
    fresh = aclient.V1DeleteOptions(
        preconditions=aclient.V1Preconditions(
            resource_version=created["metadata"]["resourceVersion"]
        )
    )
    deleted = await core.delete_namespaced_pod("a", "default", body=fresh)

    assert caught.value.status == 409
    assert (
        "Precondition failed: ResourceVersion in precondition: 1"
        in status_of(caught.value)["message"]
    )
    assert deleted.metadata is not None and deleted.metadata.name == "a"
    assert api.pods() == []


# --- watch -----------------------------------------------------------------------------


async def test_watch_from_a_resource_version(api: FakeApiServer, core: aclient.CoreV1Api) -> None:
    api.create_pod(pod_manifest("old"))
    listed = await core.list_namespaced_pod("default")
    assert listed.metadata is not None and listed.metadata.resource_version is not None
    rv = listed.metadata.resource_version
    api.create_pod(pod_manifest("a"))
    api.update_pod("default", "a", lambda p: p["status"].update(phase="Running"))
    api.delete_pod("default", "a")

    async with new_watch() as w:
        events = await take(w.stream(core.list_namespaced_pod, "default", resource_version=rv), 3)
        resumed_at = w.resource_version

    r = int(rv)
    assert summary(events) == [
        ("ADDED", "a", str(r + 1)),
        ("MODIFIED", "a", str(r + 2)),
        ("DELETED", "a", str(r + 3)),
    ]
    assert events[1]["object"].status.phase == "Running"
    assert events[2]["raw_object"]["status"]["phase"] == "Running"
    assert events[0]["raw_object"]["kind"] == "Pod"
    assert resumed_at == str(r + 3)
    assert api.requests[-1].query["resourceVersion"] == rv
    assert api.requests[-1].query["watch"] == "true"


async def test_watch_follows_live_writes(api: FakeApiServer, core: aclient.CoreV1Api) -> None:
    rv = api.resource_version
    async with new_watch() as w:
        stream = w.stream(core.list_namespaced_pod, "default", resource_version=rv)
        consumer = asyncio.create_task(take(stream, 2))
        await api.wait_for_watches()
        api.create_pod(pod_manifest("a"))
        api.update_pod("default", "a", lambda p: p["metadata"].setdefault("labels", {}))
        events = await consumer

    assert [e["type"] for e in events] == ["ADDED", "MODIFIED"]


@pytest.mark.parametrize("rv", [None, "0"])
async def test_watch_without_a_resource_version_starts_with_the_current_state(
    api: FakeApiServer, core: aclient.CoreV1Api, rv: str | None
) -> None:
    api.create_pod(pod_manifest("a", node_name="n1"))
    api.create_pod(pod_manifest("b", node_name="n2"))
    api.create_pod(pod_manifest("c", node_name="n1"))
    api.delete_pod("default", "c")
    kwargs = {} if rv is None else {"resource_version": rv}

    async with new_watch() as w:
        stream = w.stream(
            core.list_pod_for_all_namespaces, field_selector="spec.nodeName=n1", **kwargs
        )
        (first,) = await take(stream, 1)
        api.create_pod(pod_manifest("d", node_name="n1"))
        (second,) = await take(stream, 1)

    assert [first["type"], second["type"]] == ["ADDED", "ADDED"]
    assert [first["object"].metadata.name, second["object"].metadata.name] == ["a", "d"]


async def test_a_pod_leaving_the_selector_is_deleted_and_one_entering_is_added(
    api: FakeApiServer, core: aclient.CoreV1Api
) -> None:
    rv = api.resource_version
    api.create_pod(pod_manifest("a"))  # Pending: not selected
    api.update_pod("default", "a", lambda p: p["status"].update(phase="Running"))
    api.update_pod("default", "a", lambda p: p["metadata"].update(labels={"x": "y"}))
    api.update_pod("default", "a", lambda p: p["status"].update(phase="Succeeded"))
    api.delete_pod("default", "a")  # no longer selected: no event

    async with new_watch() as w:
        stream = w.stream(
            core.list_namespaced_pod,
            "default",
            field_selector="status.phase=Running",
            resource_version=rv,
            timeout_seconds=1,
        )
        events = await take(stream, 3)
        rest = await drain(stream)

    r = int(rv)
    assert summary(events) == [
        ("ADDED", "a", str(r + 2)),
        ("MODIFIED", "a", str(r + 3)),
        ("DELETED", "a", str(r + 4)),
    ]
    # The DELETED event carries the last state that matched, at the event's version.
    assert events[2]["raw_object"]["status"]["phase"] == "Running"
    assert events[2]["raw_object"]["metadata"]["labels"] == {"x": "y"}
    assert rest == []


async def test_watch_wire_format(api: FakeApiServer, core: aclient.CoreV1Api) -> None:
    rv = api.resource_version
    api.create_pod(pod_manifest("a"))

    response = await core.list_namespaced_pod_without_preload_content(
        "default", watch=True, resource_version=rv, timeout_seconds=1
    )
    lines = await raw_lines(response)

    assert response.status == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Transfer-Encoding"] == "chunked"
    (event,) = lines
    assert event["type"] == "ADDED"
    assert event["object"]["kind"] == "Pod" and event["object"]["apiVersion"] == "v1"
    assert event["object"]["metadata"]["resourceVersion"] == api.resource_version


async def test_a_watch_from_before_a_compaction_gets_410_expired(
    api: FakeApiServer, core: aclient.CoreV1Api
) -> None:
    old = api.resource_version
    api.create_pod(pod_manifest("a"))
    api.create_pod(pod_manifest("b"))
    api.compact()
    oldest = api.resource_version

    response = await core.list_namespaced_pod_without_preload_content(
        "default", watch=True, resource_version=old
    )
    lines = await raw_lines(response)
    async with new_watch() as w:
        with pytest.raises(aclient.ApiException) as caught:
            await take(w.stream(core.list_namespaced_pod, "default", resource_version=old), 1)

    # As the watch cache does: a 200 stream with one ERROR event, then the end.
    assert response.status == 200
    assert lines == [
        {
            "type": "ERROR",
            "object": {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": f"too old resource version: {old} ({oldest})",
                "reason": "Expired",
                "code": 410,
            },
        }
    ]
    assert caught.value.status == 410
    assert caught.value.reason == f"Expired: too old resource version: {old} ({oldest})"


async def test_a_watch_from_the_compaction_point_is_served(
    api: FakeApiServer, core: aclient.CoreV1Api
) -> None:
    api.create_pod(pod_manifest("a"))
    api.compact()
    rv = api.resource_version
    api.create_pod(pod_manifest("b"))

    async with new_watch() as w:
        events = await take(w.stream(core.list_namespaced_pod, "default", resource_version=rv), 1)

    assert summary(events) == [("ADDED", "b", api.resource_version)]


async def test_a_live_watch_that_falls_behind_a_compaction_is_closed(
    api: FakeApiServer, core: aclient.CoreV1Api
) -> None:
    rv = api.resource_version
    response = await core.list_namespaced_pod_without_preload_content(
        "default", watch=True, resource_version=rv
    )
    await api.wait_for_watches()
    # Both in one step of the loop: the watch has not been sent "a" when it is forgotten.
    api.create_pod(pod_manifest("a"))
    api.compact()

    assert await raw_lines(response) == []
    assert api.open_watches == 0


async def test_bookmarks_carry_the_current_resource_version(
    api: FakeApiServer, core: aclient.CoreV1Api
) -> None:
    api.create_pod(pod_manifest("a"))
    rv = api.resource_version

    async with new_watch() as w:
        stream = w.stream(
            core.list_namespaced_pod, "default", resource_version=rv, allow_watch_bookmarks=True
        )
        (first,) = await take(stream, 1)
        api.create_pod(pod_manifest("b"))
        events = await take(stream, 3)
        resumed_at = w.resource_version

    assert first["type"] == "BOOKMARK"
    assert first["raw_object"] == {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": rv},
    }
    added = [e for e in events if e["type"] == "ADDED"]
    assert [e["object"].metadata.name for e in added] == ["b"]
    assert events[-1]["type"] == "BOOKMARK"
    assert events[-1]["raw_object"]["metadata"]["resourceVersion"] == api.resource_version
    assert resumed_at == api.resource_version
    assert api.requests[-1].query["allowWatchBookmarks"] == "true"


async def test_timeout_seconds_ends_the_stream_and_no_bookmarks_unless_asked(
    api: FakeApiServer, core: aclient.CoreV1Api
) -> None:
    api.create_pod(pod_manifest("a"))

    async with new_watch() as w:
        events = await drain(w.stream(core.list_namespaced_pod, "default", timeout_seconds=1))

    assert summary(events) == [("ADDED", "a", api.resource_version)]
    assert api.open_watches == 0


async def test_a_sync_watch_in_a_thread(api: FakeApiServer) -> None:
    rv = api.resource_version
    api.create_pod(pod_manifest("a"))
    api.delete_pod("default", "a")

    def watch(v1: sclient.CoreV1Api) -> list[str]:
        w = swatch.Watch()  # type: ignore[no-untyped-call]
        stream: Any = w.stream(  # type: ignore[no-untyped-call]
            v1.list_namespaced_pod, "default", resource_version=rv, timeout_seconds=1
        )
        return [f"{e['type']} {e['object'].metadata.name}" for e in stream]

    assert await in_sync_client(api, watch) == ["ADDED a", "DELETED a"]


async def test_drop_watches_ends_streams_and_the_client_resumes(
    api: FakeApiServer, core: aclient.CoreV1Api
) -> None:
    rv = api.resource_version
    api.create_pod(pod_manifest("a"))

    async with new_watch() as w:
        # No timeout_seconds: the aio Watch reconnects from its last resourceVersion
        # when the server ends the stream.
        stream = w.stream(core.list_namespaced_pod, "default", resource_version=rv)
        (first,) = await take(stream, 1)
        await api.wait_for_watches()
        dropped = api.drop_watches()
        api.create_pod(pod_manifest("b"))
        (second,) = await take(stream, 1)

    assert dropped == 1
    assert summary([first, second]) == [
        ("ADDED", "a", str(int(rv) + 1)),
        ("ADDED", "b", str(int(rv) + 2)),
    ]
    watches = [r for r in api.requests if r.query.get("watch") == "true"]
    assert [r.query["resourceVersion"] for r in watches] == [rv, str(int(rv) + 1)]


async def test_drop_watches_abort_resets_the_connection(
    api: FakeApiServer, core: aclient.CoreV1Api
) -> None:
    response = await core.list_namespaced_pod_without_preload_content("default", watch=True)
    await api.wait_for_watches()

    assert api.drop_watches(abort=True) == 1
    with pytest.raises(aiohttp.ClientError):
        await raw_lines(response)
    async with asyncio.timeout(5):
        while api.open_watches:
            await asyncio.sleep(0.01)


async def test_stop_ends_open_watches(api: FakeApiServer, core: aclient.CoreV1Api) -> None:
    response = await core.list_namespaced_pod_without_preload_content("default", watch=True)
    await api.wait_for_watches()

    await api.stop()

    assert await raw_lines(response) == []


# --- failures, auth, kubeconfig --------------------------------------------------------


async def test_fail_next_answers_status_errors_then_recovers(
    api: FakeApiServer, core: aclient.CoreV1Api
) -> None:
    api.create_pod(pod_manifest("a"))
    api.fail_next(2, status=503)

    with pytest.raises(aclient.ApiException) as listed:
        await core.list_namespaced_pod("default")
    async with new_watch() as w:
        with pytest.raises(aclient.ApiException) as watched:
            await take(w.stream(core.list_namespaced_pod, "default", timeout_seconds=1), 1)
    pods = await core.list_namespaced_pod("default")

    assert listed.value.status == 503
    assert status_of(listed.value)["reason"] == "ServiceUnavailable"
    assert watched.value.status == 503
    assert names(pods) == ["a"]
    assert len(api.requests) == 3


async def test_the_token_is_checked(api: FakeApiServer) -> None:
    anonymous = aclient.Configuration(host=api.url)
    async with aclient.ApiClient(anonymous) as client:
        version = await aclient.VersionApi(client).get_code()
        with pytest.raises(aclient.ApiException) as forbidden:
            await aclient.CoreV1Api(client).list_namespaced_pod("default")
    async with aclient.ApiClient(_aio_config(api, token="wrong")) as client:  # noqa: S106
        with pytest.raises(aclient.ApiException) as unauthorized:
            await aclient.CoreV1Api(client).list_namespaced_pod("default")

    assert version.major == "1"
    assert forbidden.value.status == 403
    assert status_of(forbidden.value)["message"] == (
        'pods is forbidden: User "system:anonymous" cannot list resource "pods" '
        'in API group "" in the namespace "default"'
    )
    assert unauthorized.value.status == 401


async def test_kubeconfig_with_the_aio_loader(api: FakeApiServer, tmp_path: Path) -> None:
    api.create_pod(pod_manifest("a"))
    path = api.kubeconfig(tmp_path / "kube" / "config")
    config = aclient.Configuration()

    await aconfig.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(path), client_configuration=config
    )
    async with aclient.ApiClient(config) as client:
        pods = await aclient.CoreV1Api(client).list_namespaced_pod("default")

    assert config.host == api.url
    assert names(pods) == ["a"]


async def test_a_kubeconfig_with_a_wrong_token_is_unauthorized(
    api: FakeApiServer, tmp_path: Path
) -> None:
    path = api.kubeconfig(tmp_path / "config", token="wrong")  # noqa: S106
    config = aclient.Configuration()
    await aconfig.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(path), client_configuration=config
    )

    async with aclient.ApiClient(config) as client:
        with pytest.raises(aclient.ApiException) as caught:
            await aclient.CoreV1Api(client).list_namespaced_pod("default")

    assert caught.value.status == 401
    assert status_of(caught.value)["reason"] == "Unauthorized"


async def test_kubeconfig_with_the_sync_loader(api: FakeApiServer, tmp_path: Path) -> None:
    api.create_pod(pod_manifest("a"))
    path = api.kubeconfig(tmp_path / "config")

    def list_pods() -> list[str]:
        config = sclient.Configuration()
        sconfig.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(path), client_configuration=config
        )
        with sclient.ApiClient(config) as client:
            pods = sclient.CoreV1Api(client).list_pod_for_all_namespaces()
        return names(pods)

    assert await asyncio.to_thread(list_pods) == ["a"]


# --- the Python API ----------------------------------------------------------------


async def test_python_api_semantics(api: FakeApiServer) -> None:
    created = api.create_pod(pod_manifest("a"))
    rv = api.resource_version

    same = api.update_pod("default", "a", lambda p: None)
    changed = api.update_pod("default", "a", lambda p: p["status"].update(phase="Running"))

    assert created["metadata"]["uid"] and created["metadata"]["creationTimestamp"]
    assert created["status"] == {"phase": "Pending"}
    # A write that changes nothing is not a write.
    assert same["metadata"]["resourceVersion"] == rv
    assert changed["metadata"]["resourceVersion"] == str(int(rv) + 1)
    assert api.get_pod("default", "a") == changed
    with pytest.raises(ValueError, match="already exists"):
        api.create_pod(pod_manifest("a"))
    with pytest.raises(ValueError, match=r"metadata\.name"):
        api.update_pod("default", "a", lambda p: p["metadata"].update(name="b"))
    with pytest.raises(KeyError):
        api.update_pod("default", "nope", lambda p: None)
    with pytest.raises(KeyError):
        api.delete_pod("default", "nope")
    assert api.delete_pod("default", "a")["metadata"]["resourceVersion"] == str(int(rv) + 2)
    assert api.pods() == []


async def test_writes_from_another_thread_reach_watches(
    api: FakeApiServer, core: aclient.CoreV1Api
) -> None:
    rv = api.resource_version
    received = threading.Event()

    def cluster() -> None:
        api.create_pod(pod_manifest("a"))
        # Keep the thread alive, so that its completion is not what wakes the loop.
        received.wait(timeout=10)

    async with new_watch() as w:
        stream = w.stream(core.list_namespaced_pod, "default", resource_version=rv)
        consumer = asyncio.create_task(take(stream, 1))
        await api.wait_for_watches()
        writer = asyncio.create_task(asyncio.to_thread(cluster))
        try:
            events = await consumer
        finally:
            received.set()
            await writer

    assert summary(events) == [("ADDED", "a", api.resource_version)]
