"""The cluster source's edges, with in-memory stand-ins for the API server (the
paths over real HTTP are in tests/integration/test_dynconfig_apiserver.py): a
missing or malformed CustomNodeConfig, a listed config that does not exist, an
Event the API server refuses, and the Event's shape."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from agent.config import AgentConfig
from agent.dynconfig import REFUSED_REASON, ClusterSource, SettingsApplier, config_path
from agent.dynconfig.cluster import _Involved, refusal_event
from katalyst.clock import FakeClock
from katalyst.dynconfig import ADMIN_QOS_GVR, GroupVersionResource, spec_hash

NS = "katalyst-system"
AQC = "adminqosconfigurations"


class Feed:
    def __init__(self, obj: Mapping[str, Any] | None = None) -> None:
        self.object = obj
        self.synced = asyncio.Event()
        self.changed = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        self.synced.set()
        await stop.wait()


class Reader:
    def __init__(self, objects: Mapping[str, Mapping[str, Any]]) -> None:
        self.objects = dict(objects)
        self.gets: list[str] = []

    async def get_object(
        self, resource: GroupVersionResource, namespace: str, name: str
    ) -> Mapping[str, Any] | None:
        self.gets.append(name)
        return self.objects.get(name)


class Events:
    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.posted: list[Mapping[str, Any]] = []

    async def post_event(self, namespace: str, body: Mapping[str, Any]) -> None:
        if self.fail:
            raise ConnectionError("event not created: HTTP 403")
        self.posted.append(body)


def aqc(name: str, config: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "config.katalyst.kubewharf.io/v1alpha1",
        "kind": "AdminQoSConfiguration",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}"},
        "spec": {"config": dict(config)},
    }


def cnc(*listed: tuple[str, str]) -> dict[str, Any]:
    return {
        "kind": "CustomNodeConfig",
        "metadata": {"name": "node-a", "resourceVersion": "7"},
        "status": {
            "katalystCustomConfigList": [
                {
                    "configType": ADMIN_QOS_GVR.to_json(),
                    "configNamespace": NS,
                    "configName": name,
                    "hash": digest,
                }
                for name, digest in listed
            ]
        },
    }


def source(feed: Feed, reader: Reader, events: Events) -> ClusterSource:
    return ClusterSource(
        feed=feed,
        reader=reader,
        events=events,
        applier=SettingsApplier(AgentConfig()),
        node_name="node-a",
        clock=FakeClock(),
    )


async def test_no_cnc_keeps_the_settings_and_says_why() -> None:
    src = source(Feed(None), Reader({}), Events())
    assert await src.sync() is None
    assert "no CustomNodeConfig node-a" in str(src.record.pending)
    assert src.record.origin == "base"


async def test_a_malformed_cnc_is_refused_once_per_version() -> None:
    bad = cnc()
    bad["status"]["katalystCustomConfigList"] = [{"configName": "x"}]
    src = source(Feed(bad), Reader({}), Events())
    await src.sync()
    await src.sync()
    assert src.record.refusals_total == 1
    assert "status.katalystCustomConfigList[0].configType: must be a mapping" in str(
        src.record.last_error
    )


async def test_a_listed_config_that_does_not_exist_is_awaited_not_refused() -> None:
    events = Events()
    src = source(Feed(cnc(("gone", "0123456789abcdef"))), Reader({}), events)
    assert await src.sync() is None
    assert "not found: waiting for the controller" in str(src.record.pending)
    assert src.record.refusals_total == 0
    assert events.posted == []


async def test_an_event_the_api_server_refuses_is_logged_and_the_refusal_stands() -> None:
    bad = aqc("pool", {"sysadvisor": {"period_s": -1}})
    digest = spec_hash(bad["spec"])
    src = source(Feed(cnc(("pool", digest))), Reader({"pool": bad}), Events(fail=True))
    assert await src.sync() is None
    assert src.record.refusals_total == 1
    assert "AdminQoSConfiguration katalyst-system/pool: spec.config.sysadvisor.period_s" in str(
        src.record.last_error
    )


async def test_the_refusal_event_names_the_object_and_the_agent() -> None:
    involved = _Involved(
        "config.katalyst.kubewharf.io/v1alpha1", "AdminQoSConfiguration", NS, "pool", "u1", "9"
    )
    body = refusal_event(involved, message="x" * 5000, node_name="node-a", wall=1.5, serial=2)
    assert body["metadata"] == {"name": f"pool.{1_500_000_002:x}", "namespace": NS}
    assert body["reason"] == REFUSED_REASON
    assert body["involvedObject"]["uid"] == "u1"
    assert len(body["message"]) == 1024
    assert body["firstTimestamp"] == "1970-01-01T00:00:01Z"
    assert body["reportingInstance"] == "node-a"
    path = config_path(ADMIN_QOS_GVR, NS, "pool")
    assert path == f"/apis/config.katalyst.kubewharf.io/v1alpha1/namespaces/{NS}/{AQC}/pool"
