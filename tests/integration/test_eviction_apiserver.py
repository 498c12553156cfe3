"""ApiServerEvictor against the fake kube-apiserver, through the real client
(``agent.metaserver.apiserver.ApiServerEvictionClient`` over the official
``kubernetes`` client): paths, bodies, status handling, Events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from agent.eviction import (
    COMPONENT,
    ApiServerEvictor,
    EvictionClient,
    EvictionCollector,
    EvictionConfig,
    EvictionDecision,
    EvictionLoop,
    EvictionManager,
    NodeSample,
    Outcome,
    PodSample,
    Resource,
    Sample,
    build_plugins,
)
from agent.metaserver.apiserver import ApiServerEvictionClient, connect
from katalyst.clock import FakeClock
from katalyst.qos import PodUID, QoSLevel
from tests.support.apiserver import FakeApiServer, pod_manifest

NODE = "node-a"
NAMESPACE = "batch"
GIB = 1024**3


ClientFactory = Callable[[FakeApiServer], Awaitable[EvictionClient]]


@pytest.fixture
async def make_client(tmp_path: Path) -> AsyncIterator[ClientFactory]:
    """A function that builds the parametrized client for a started server."""
    closers: list[Callable[[], Awaitable[object]]] = []

    async def make(api: FakeApiServer) -> EvictionClient:
        kube = await connect(api.kubeconfig(tmp_path / "kubeconfig"))
        closers.append(kube.close)
        return ApiServerEvictionClient(kube)

    yield make
    for close in closers:
        await close()


def _pod(name: str, uid: str, **changes: Any) -> PodSample:
    fields: dict[str, Any] = {
        "uid": PodUID(uid),
        "namespace": NAMESPACE,
        "name": name,
        "level": QoSLevel.RECLAIMED_CORES,
        "priority": 0,
        "is_critical": False,
        "memory_usage_bytes": GIB,
    }
    fields.update(changes)
    return PodSample(**fields)


def _decision(pod: PodSample) -> EvictionDecision:
    return EvictionDecision(
        pod=pod,
        plugin="memory_pressure",
        reason="memory_pressure: MemAvailable 100 MiB below the watermark 200 MiB",
        resource=Resource.MEMORY,
    )


def _create(api: FakeApiServer, name: str) -> str:
    stored = api.create_pod(pod_manifest(name, namespace=NAMESPACE, node_name=NODE))
    return str(stored["metadata"]["uid"])


def _evictor(client: EvictionClient, clock: FakeClock, **kw: Any) -> ApiServerEvictor:
    return ApiServerEvictor(client, node_name=NODE, wall=clock.wall, **kw)


async def test_an_accepted_eviction_deletes_the_pod_and_records_an_evicted_event(
    make_client: ClientFactory,
) -> None:
    clock = FakeClock()
    async with FakeApiServer() as api:
        uid = _create(api, "batch-1")
        decision = _decision(_pod("batch-1", uid))
        outcome = await _evictor(await make_client(api), clock, grace_period_s=5).evict(decision)

        assert outcome.outcome is Outcome.EVICTED
        assert api.get_pod(NAMESPACE, "batch-1") is None
        assert ("POST", f"/api/v1/namespaces/{NAMESPACE}/pods/batch-1/eviction") in [
            (r.method, r.path) for r in api.requests
        ]
        [eviction] = api.evictions
        assert eviction["apiVersion"] == "policy/v1"
        assert eviction["kind"] == "Eviction"
        assert eviction["metadata"] == {"name": "batch-1", "namespace": NAMESPACE}
        assert eviction["deleteOptions"] == {"preconditions": {"uid": uid}, "gracePeriodSeconds": 5}

        [event] = api.events
        assert event["kind"] == "Event"
        assert event["apiVersion"] == "v1"
        assert event["metadata"]["namespace"] == NAMESPACE
        assert event["metadata"]["name"].startswith("batch-1.")
        assert event["involvedObject"] == {
            "apiVersion": "v1",
            "kind": "Pod",
            "namespace": NAMESPACE,
            "name": "batch-1",
            "uid": uid,
        }
        assert event["reason"] == "Evicted"
        assert event["type"] == "Warning"
        assert event["message"] == decision.reason
        assert event["source"] == {"component": COMPONENT, "host": NODE}
        assert event["reportingComponent"] == COMPONENT
        assert event["reportingInstance"] == NODE
        assert event["count"] == 1
        assert event["firstTimestamp"] == event["lastTimestamp"] == "2023-11-14T22:13:20Z"


async def test_429_from_a_disruption_budget_is_blocked_and_a_retry_succeeds(
    make_client: ClientFactory,
) -> None:
    clock = FakeClock()
    async with FakeApiServer() as api:
        uid = _create(api, "batch-1")
        evictor = _evictor(await make_client(api), clock)
        decision = _decision(_pod("batch-1", uid))

        api.fail_next(1, status=429)
        blocked = await evictor.evict(decision)
        assert blocked.outcome is Outcome.BLOCKED
        assert not blocked.done
        assert "429" in blocked.detail
        assert api.get_pod(NAMESPACE, "batch-1") is not None
        assert api.evictions == []
        [failed_event] = api.events
        assert failed_event["reason"] == "EvictionFailed"
        assert failed_event["message"].startswith(decision.reason)
        assert "429" in failed_event["message"]

        retried = await evictor.evict(decision)
        assert retried.outcome is Outcome.EVICTED
        assert api.get_pod(NAMESPACE, "batch-1") is None
        assert [e["reason"] for e in api.events] == ["EvictionFailed", "Evicted"]
        # Two events of one (virtual) instant still have distinct names.
        assert len({e["metadata"]["name"] for e in api.events}) == 2


async def test_a_pod_already_gone_is_success_without_an_event(make_client: ClientFactory) -> None:
    async with FakeApiServer() as api:
        outcome = await _evictor(await make_client(api), FakeClock()).evict(
            _decision(_pod("never-there", "uid-0"))
        )
        assert outcome.outcome is Outcome.GONE
        assert outcome.done
        assert api.events == []


async def test_a_new_pod_under_the_old_name_is_not_evicted(make_client: ClientFactory) -> None:
    async with FakeApiServer() as api:
        old_uid = _create(api, "web-0")
        api.delete_pod(NAMESPACE, "web-0")
        new_uid = _create(api, "web-0")  # a StatefulSet's replacement
        assert new_uid != old_uid

        outcome = await _evictor(await make_client(api), FakeClock()).evict(
            _decision(_pod("web-0", old_uid))
        )
        assert outcome.outcome is Outcome.GONE
        assert outcome.detail == "HTTP 409"
        assert api.get_pod(NAMESPACE, "web-0") is not None
        assert api.evictions == []


async def test_a_server_error_is_a_failure_with_an_event(make_client: ClientFactory) -> None:
    async with FakeApiServer() as api:
        uid = _create(api, "batch-1")
        api.fail_next(1, status=500)
        outcome = await _evictor(await make_client(api), FakeClock()).evict(
            _decision(_pod("batch-1", uid))
        )
        assert outcome.outcome is Outcome.FAILED
        assert outcome.detail == "HTTP 500"
        assert [e["reason"] for e in api.events] == ["EvictionFailed"]
        assert api.get_pod(NAMESPACE, "batch-1") is not None


async def test_an_unreachable_server_is_a_failure_not_an_exception(
    make_client: ClientFactory,
) -> None:
    api = FakeApiServer()
    await api.start()
    client = await make_client(api)
    await api.stop()  # the port now refuses connections
    outcome = await _evictor(client, FakeClock()).evict(_decision(_pod("batch-1", "uid-1")))
    assert outcome.outcome is Outcome.FAILED
    assert "no answer from the API server" in outcome.detail


async def test_memory_pressure_evicts_the_lowest_priority_reclaimed_pod_end_to_end(
    make_client: ClientFactory,
) -> None:
    """Samples in, an eviction and an Event on the API server out, the metric counted."""
    clock = FakeClock()
    config = EvictionConfig.from_mapping(
        {"memory_pressure": {"consecutive_samples": 2, "watermark_bytes": 2 * GIB}}
    )
    manager = EvictionManager(config, plugins=build_plugins(config), clock=clock)
    registry = CollectorRegistry()
    registry.register(EvictionCollector(manager))
    async with FakeApiServer() as api:
        uid_low = _create(api, "batch-low")
        uid_high = _create(api, "batch-high")
        pods = (
            _pod("batch-low", uid_low, priority=-10, memory_usage_bytes=GIB),
            _pod("batch-high", uid_high, priority=100, memory_usage_bytes=3 * GIB),
        )
        node = NodeSample(memory_total_bytes=8 * GIB, memory_available_bytes=GIB)
        samples: asyncio.Queue[Sample] = asyncio.Queue()
        loop = EvictionLoop(
            manager,
            _evictor(await make_client(api), clock),
            next_sample=samples.get,
            clock=clock,
        )

        assert await loop.run_once(Sample(at=0.0, node=node, pods=pods)) == []
        [outcome] = await loop.run_once(Sample(at=5.0, node=node, pods=pods))

        assert outcome.outcome is Outcome.EVICTED
        assert api.get_pod(NAMESPACE, "batch-low") is None
        assert api.get_pod(NAMESPACE, "batch-high") is not None
        [event] = api.events
        assert event["involvedObject"]["uid"] == uid_low
        assert event["message"] == (
            "memory_pressure: MemAvailable 1024 MiB below the watermark 2048 MiB for "
            "2 samples in a row; evicting to free 1024 MiB (this pod uses 1024 MiB)"
        )
        text = generate_latest(registry).decode()
        assert (
            'katalyst_evictions_total{outcome="evicted",plugin="memory_pressure",'
            'resource="memory"} 1.0'
        ) in text
