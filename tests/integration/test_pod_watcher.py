"""The API-server pod watch over real HTTP, through the official client, against the
fake API server: list, watch, resume, relist after 410 Gone, back-off on errors."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from kubernetes.aio import client as k8s

from agent.metaserver.apiserver import ApiServerError, PodWatcher, WatchSettings, connect
from katalyst.clock import MonotonicClock
from tests.support.apiserver import FakeApiServer, pod_manifest
from tests.support.wait import eventually

NODE = "node-a"
FAST = WatchSettings(backoff_initial_s=0.01, backoff_max_s=0.05, request_timeout_s=5)


@pytest.fixture
async def api() -> AsyncIterator[FakeApiServer]:
    async with FakeApiServer(bookmark_interval=0.2) as server:
        yield server


@asynccontextmanager
async def watching(
    api: FakeApiServer, tmp_path: Path, *, kubeconfig: Path | None = None
) -> AsyncIterator[PodWatcher]:
    client = await connect(kubeconfig or api.kubeconfig(tmp_path / "kubeconfig"))
    watcher = PodWatcher(
        client,
        node_name=NODE,
        clock=MonotonicClock(),
        settings=FAST,
        rng=random.Random(1),  # noqa: S311 - jitter
    )
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop))
    try:
        yield watcher
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=5)
        await client.close()  # type: ignore[no-untyped-call]


def names(watcher: PodWatcher) -> set[str]:
    return {pod["metadata"]["name"] for pod in watcher.pods.values()}


async def test_only_this_nodes_pods_are_listed_then_followed(
    api: FakeApiServer, tmp_path: Path
) -> None:
    api.create_pod(pod_manifest("mine", node_name=NODE))
    api.create_pod(pod_manifest("theirs", node_name="node-b"))
    async with watching(api, tmp_path) as watcher:
        await asyncio.wait_for(watcher.synced.wait(), timeout=5)
        assert names(watcher) == {"mine"}
        await api.wait_for_watches()

        api.create_pod(pod_manifest("new", node_name=NODE))
        await eventually(lambda: names(watcher) == {"mine", "new"}, "the ADDED pod")
        api.update_pod(
            "default", "new", lambda p: p.setdefault("status", {}).update(phase="Running")
        )
        await eventually(
            lambda: any(p["status"].get("phase") == "Running" for p in watcher.pods.values()),
            "the MODIFIED pod",
        )
        api.delete_pod("default", "mine")
        await eventually(lambda: names(watcher) == {"new"}, "the DELETED pod")
    selectors = {r.query.get("fieldSelector") for r in api.requests if r.path == "/api/v1/pods"}
    assert selectors == {f"spec.nodeName={NODE}"}
    watches = [r for r in api.requests if r.query.get("watch") in ("true", "1", "True")]
    assert watches and all(r.query.get("resourceVersion") for r in watches)


async def test_a_dropped_watch_resumes_from_the_last_version_without_listing_again(
    api: FakeApiServer, tmp_path: Path
) -> None:
    async with watching(api, tmp_path) as watcher:
        await asyncio.wait_for(watcher.synced.wait(), timeout=5)
        await api.wait_for_watches()
        api.create_pod(pod_manifest("a", node_name=NODE))
        await eventually(lambda: names(watcher) == {"a"}, "pod a")
        api.drop_watches(abort=True)
        api.create_pod(pod_manifest("b", node_name=NODE))  # while no watch is open
        await eventually(lambda: names(watcher) == {"a", "b"}, "pod b after the reconnect")
        assert watcher.lists == 1


async def test_an_expired_version_lists_again_and_forgets_pods_deleted_meanwhile(
    api: FakeApiServer, tmp_path: Path
) -> None:
    api.create_pod(pod_manifest("a", node_name=NODE))
    api.create_pod(pod_manifest("b", node_name=NODE))
    async with watching(api, tmp_path) as watcher:
        await asyncio.wait_for(watcher.synced.wait(), timeout=5)
        await api.wait_for_watches()
        api.drop_watches()
        api.delete_pod("default", "a")
        api.compact()  # the watch's version leaves the history: 410 on resume
        await eventually(lambda: watcher.lists >= 2, "a second list")
        await eventually(lambda: names(watcher) == {"b"}, "the relisted state")


async def test_a_pod_moved_off_the_node_by_the_selector_is_dropped(
    api: FakeApiServer, tmp_path: Path
) -> None:
    api.create_pod(pod_manifest("a", node_name=NODE))
    async with watching(api, tmp_path) as watcher:
        await asyncio.wait_for(watcher.synced.wait(), timeout=5)
        await api.wait_for_watches()
        api.update_pod("default", "a", lambda p: p["spec"].update(nodeName="node-b"))
        await eventually(lambda: not watcher.pods, "pod a leaving")


async def test_server_errors_back_off_and_recover(api: FakeApiServer, tmp_path: Path) -> None:
    api.create_pod(pod_manifest("a", node_name=NODE))
    api.fail_next(3, status=500)
    async with watching(api, tmp_path) as watcher:
        await asyncio.wait_for(watcher.synced.wait(), timeout=10)
        assert names(watcher) == {"a"}
        assert watcher.failures == 0  # reset by the list that worked
    lists = [r for r in api.requests if r.path == "/api/v1/pods" and "watch" not in r.query]
    assert len(lists) == 4  # three failures, then the list that worked


async def test_a_wrong_token_is_a_failure_that_is_retried_not_a_crash(
    api: FakeApiServer, tmp_path: Path
) -> None:
    # A token the server does not accept: 401.
    kubeconfig = api.kubeconfig(tmp_path / "kubeconfig", token="stale")  # noqa: S106
    async with watching(api, tmp_path, kubeconfig=kubeconfig) as watcher:
        await eventually(lambda: watcher.failures >= 3, "three failures")
        assert not watcher.synced.is_set()
        assert any(r.path == "/api/v1/pods" for r in api.requests)
        api.token = None  # the server accepts any token again
        await asyncio.wait_for(watcher.synced.wait(), timeout=5)


async def test_the_backoff_grows_and_is_capped() -> None:
    watcher = PodWatcher(
        k8s.ApiClient(k8s.Configuration()),  # never sends anything here
        node_name=NODE,
        clock=MonotonicClock(),
        settings=WatchSettings(backoff_initial_s=1.0, backoff_max_s=8.0),
        rng=random.Random(7),  # noqa: S311 - jitter
    )
    delays = []
    for failures in range(1, 8):
        watcher.failures = failures
        delays.append(watcher._backoff())
    caps = [1, 2, 4, 8, 8, 8, 8]
    assert all(cap / 2 <= d <= cap for d, cap in zip(delays, caps, strict=True))


async def test_an_unreadable_kubeconfig_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "kubeconfig"
    bad.write_text("clusters: [nonsense")
    with pytest.raises(ApiServerError, match="kubeconfig"):
        await connect(bad)
    with pytest.raises(ApiServerError, match=str(tmp_path / "missing")):
        await connect(tmp_path / "missing")
