"""The fake kube-apiserver's outage switch and write records
(:meth:`FakeApiServer.start_outage`, :meth:`FakeApiServer.writes_to`): every request
fails (a 503 ``Status``, or a TCP reset) while the cluster goes on, and a
controller's resync afterwards can be checked for duplicate writes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import urllib3
from kubernetes import client as sclient
from kubernetes.aio import client as aclient

from tests.integration.test_fake_apiserver import new_watch, raw_lines, status_of, take
from tests.support.apiserver import (
    CONFIG_GROUP,
    CONFIG_VERSION,
    CUSTOM_NODE_CONFIGS,
    FakeApiServer,
    Obj,
    OutageMode,
    RecordedWrite,
    node_manifest,
    pod_manifest,
)
from tests.support.wait import eventually

CNC = CUSTOM_NODE_CONFIGS


@pytest.fixture
async def api() -> AsyncIterator[FakeApiServer]:
    async with FakeApiServer(bookmark_interval=0.05) as server:
        yield server


def _config(api: FakeApiServer) -> aclient.Configuration:
    return aclient.Configuration(host=api.url, api_key={"BearerToken": f"Bearer {api.token}"})


@pytest.fixture
async def core(api: FakeApiServer) -> AsyncIterator[aclient.CoreV1Api]:
    async with aclient.ApiClient(_config(api)) as client:
        yield aclient.CoreV1Api(client)


async def test_unavailable_answers_every_request_with_a_503_status(
    api: FakeApiServer, core: aclient.CoreV1Api
) -> None:
    api.create_pod(pod_manifest("a"))
    manifest = aclient.V1Pod.from_dict(pod_manifest("b"))
    assert manifest is not None

    api.start_outage()
    with pytest.raises(aclient.ApiException) as listed:
        await core.list_namespaced_pod("default")
    with pytest.raises(aclient.ApiException) as created:
        await core.create_namespaced_pod("default", manifest)
    async with aiohttp.ClientSession() as session, session.get(api.url + "/healthz") as health:
        health_status = health.status
    # The cluster goes on without its clients.
    api.create_pod(pod_manifest("c"))
    mode = api.outage_mode
    api.end_outage()
    pods = await core.list_namespaced_pod("default")

    assert mode == "unavailable"
    assert listed.value.status == created.value.status == health_status == 503
    assert status_of(listed.value) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "fake apiserver: outage (simulated)",
        "reason": "ServiceUnavailable",
        "code": 503,
    }
    assert [p.metadata.name for p in pods.items if p.metadata is not None] == ["a", "c"]
    assert api.outage_mode is None
    assert api.writes == [RecordedWrite("POST", "pods", "default", "", "", 503, False)]


async def test_reset_drops_connections_without_an_answer(
    api: FakeApiServer, core: aclient.CoreV1Api
) -> None:
    api.create_pod(pod_manifest("a"))

    def sync_list() -> Any:
        config = sclient.Configuration(host=api.url, api_key={"BearerToken": f"Bearer {api.token}"})
        with sclient.ApiClient(config) as client:
            return sclient.CoreV1Api(client).list_namespaced_pod("default")

    with api.outage("reset"):
        with pytest.raises(aiohttp.ClientError):
            await core.list_namespaced_pod("default")
        with pytest.raises(urllib3.exceptions.HTTPError):
            await asyncio.to_thread(sync_list)
        with pytest.raises(aiohttp.ClientError):
            await core.delete_namespaced_pod("a", "default")
    pods = await core.list_namespaced_pod("default")

    assert len(pods.items) == 1
    # aiohttp retries an idempotent request once when a reused connection drops.
    assert api.writes
    assert set(api.writes) == {RecordedWrite("DELETE", "pods", "default", "a", "", 0, False)}


@pytest.mark.parametrize("mode", ["unavailable", "reset"])
async def test_an_outage_closes_open_watches(
    api: FakeApiServer, core: aclient.CoreV1Api, mode: OutageMode
) -> None:
    response = await core.list_namespaced_pod_without_preload_content("default", watch=True)
    await api.wait_for_watches()

    closed = api.start_outage(mode)

    assert closed == 1
    if mode == "unavailable":
        assert await raw_lines(response) == []  # a clean end
    else:
        with pytest.raises(aiohttp.ClientError):
            await raw_lines(response)
    await eventually(lambda: api.open_watches == 0, "the watch handler to finish")


async def test_a_watching_client_fails_until_the_outage_ends_then_resumes(
    api: FakeApiServer, core: aclient.CoreV1Api
) -> None:
    start = api.resource_version
    api.create_pod(pod_manifest("a"))

    async with new_watch() as w:
        stream = w.stream(core.list_namespaced_pod, "default", resource_version=start)
        (first,) = await take(stream, 1)
        await api.wait_for_watches()
        api.start_outage()
        # The aio Watch reconnects from its resourceVersion and meets the 503.
        with pytest.raises(aclient.ApiException) as caught:
            await take(stream, 1)
        resume_at = w.resource_version
    api.create_pod(pod_manifest("b"))
    api.end_outage()
    async with new_watch() as w:
        stream = w.stream(core.list_namespaced_pod, "default", resource_version=resume_at)
        (second,) = await take(stream, 1)

    assert caught.value.status == 503
    assert [first["object"].metadata.name, second["object"].metadata.name] == ["a", "b"]


async def test_injected_failures_wait_for_the_outage_to_end(
    api: FakeApiServer, core: aclient.CoreV1Api
) -> None:
    api.fail_next(1, status=500)

    with api.outage(), pytest.raises(aclient.ApiException) as during:
        await core.list_namespaced_pod("default")
    with pytest.raises(aclient.ApiException) as after:
        await core.list_namespaced_pod("default")
    pods = await core.list_namespaced_pod("default")

    assert (during.value.status, after.value.status) == (503, 500)
    assert pods.items == []


# --- resync after an outage -----------------------------------------------------------------


class NodeConfigMirror:
    """A minimal level-triggered controller, as the dynamic-config controller will be:
    every node has a CustomNodeConfig whose spec carries the node's labels, written
    only when it differs from what is stored (write suppression). It lists nodes and
    configs, watches nodes from the list's resourceVersion, and after any error backs
    off and starts over (relist), as client-go's reflector does."""

    def __init__(self, client: aclient.ApiClient) -> None:
        self.core = aclient.CoreV1Api(client)
        self.custom = aclient.CustomObjectsApi(client)
        self.configs: dict[str, Obj] = {}
        self.errors = 0
        self.relists = 0

    async def run(self) -> None:
        while True:
            try:
                await self._list_and_watch()
            except (aclient.ApiException, aiohttp.ClientError, TimeoutError):
                self.errors += 1
                await asyncio.sleep(0.05)

    async def _list_and_watch(self) -> None:
        nodes = await self.core.list_node()
        listed: Any = await self.custom.list_cluster_custom_object(
            CONFIG_GROUP, CONFIG_VERSION, CNC.plural
        )
        self.relists += 1
        self.configs = {c["metadata"]["name"]: c for c in listed["items"]}
        labels = {
            n.metadata.name: n.metadata.labels or {}
            for n in nodes.items
            if n.metadata is not None and n.metadata.name is not None
        }
        for name, node_labels in labels.items():
            await self._ensure(name, node_labels)
        for name in set(self.configs) - set(labels):
            await self._remove(name)
        assert nodes.metadata is not None
        async with new_watch() as w:
            stream = w.stream(self.core.list_node, resource_version=nodes.metadata.resource_version)
            async for event in stream:
                node = event["raw_object"]
                name = node["metadata"]["name"]
                if event["type"] == "DELETED":
                    await self._remove(name)
                else:
                    await self._ensure(name, node["metadata"].get("labels") or {})

    async def _ensure(self, name: str, labels: dict[str, str]) -> None:
        spec = {"nodeLabels": labels}
        current = self.configs.get(name)
        if current is None:
            body = {
                "apiVersion": CNC.api_version,
                "kind": CNC.kind,
                "metadata": {"name": name},
                "spec": spec,
            }
            written: Any = await self.custom.create_cluster_custom_object(
                CONFIG_GROUP, CONFIG_VERSION, CNC.plural, body
            )
        elif current.get("spec") != spec:
            written = await self.custom.replace_cluster_custom_object(
                CONFIG_GROUP, CONFIG_VERSION, CNC.plural, name, dict(current, spec=spec)
            )
        else:
            return
        self.configs[name] = written

    async def _remove(self, name: str) -> None:
        current = self.configs.pop(name, None)
        if current is not None:
            preconditions = aclient.V1Preconditions(uid=current["metadata"]["uid"])
            await self.custom.delete_cluster_custom_object(
                CONFIG_GROUP,
                CONFIG_VERSION,
                CNC.plural,
                name,
                body=aclient.V1DeleteOptions(preconditions=preconditions),
            )


@pytest.mark.parametrize("mode", ["unavailable", "reset"])
async def test_a_controller_resyncs_after_an_outage_without_duplicate_writes(
    api: FakeApiServer, mode: OutageMode
) -> None:
    api.create_node(node_manifest("n1", labels={"pool": "a"}))
    api.create_node(node_manifest("n2", labels={"pool": "b"}))
    api.create_node(node_manifest("n3", labels={"pool": "b"}))

    def spec_of(name: str) -> object:
        config = api.get_object(CNC, name)
        return None if config is None else config["spec"]

    async with aclient.ApiClient(_config(api)) as client:
        controller = NodeConfigMirror(client)
        task = asyncio.create_task(controller.run())
        try:
            await eventually(lambda: len(api.objects(CNC)) == 3, "a config per node")
            await api.wait_for_watches()

            with api.outage(mode):
                # The cluster changes while the controller is blind.
                api.update_node("n1", lambda n: n["metadata"]["labels"].update(pool="c"))
                api.delete_node("n2")
                api.create_node(node_manifest("n4", labels={"pool": "a"}))
                await eventually(lambda: controller.errors >= 2, "the controller to retry")
            await eventually(
                lambda: (
                    spec_of("n1") == {"nodeLabels": {"pool": "c"}}
                    and spec_of("n2") is None
                    and spec_of("n4") == {"nodeLabels": {"pool": "a"}}
                ),
                "the controller to resync",
            )
            relists = controller.relists
            # Idle: a watch is open again, and nothing more gets written.
            await api.wait_for_watches()
            await asyncio.sleep(0.2)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def history(name: str) -> list[tuple[str, int, bool]]:
        return [(w.method, w.code, w.changed) for w in api.writes_to(CNC, name)]

    assert relists >= 2
    assert history("n1") == [("POST", 201, True), ("PUT", 200, True)]
    assert history("n2") == [("POST", 201, True), ("DELETE", 200, True)]
    assert history("n3") == [("POST", 201, True)]  # unchanged: not rewritten on relist
    assert history("n4") == [("POST", 201, True)]
    assert spec_of("n3") == {"nodeLabels": {"pool": "b"}}
