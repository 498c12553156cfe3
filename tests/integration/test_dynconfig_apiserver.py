"""The cluster node's dynamic configuration over real HTTP, through the official client,
against the fake API server: the node's CustomNodeConfig watched
(:class:`ObjectWatcher`), the configs it lists fetched by hash
(:class:`ApiServerConfigClient`), applied through the applier, refused with an Event
(:class:`ApiServerEvictionClient`'s), checkpointed, and kept across outages.

The test plays the controller: it writes the CNC with the library's hash of each
config's spec, as ``katalyst-controller`` does."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agent.app import run
from agent.config import AgentConfig
from agent.dynconfig import (
    REFUSED_REASON,
    ClusterSource,
    DynamicConfigCollector,
    LayerCheckpoint,
    SettingsApplier,
)
from agent.metaserver.apiserver import (
    ApiServerConfigClient,
    ApiServerEvictionClient,
    ObjectWatcher,
    WatchSettings,
    connect,
)
from agent.sysadvisor import AdvisorConfig
from katalyst.cgroup import open_driver
from katalyst.cgroup.fake import FakeCgroupFS
from katalyst.clock import MonotonicClock
from katalyst.config.io import IOConfig
from katalyst.cpuset import CPUSet
from katalyst.dynconfig import ADMIN_QOS_GVR, CNC_GVR, spec_hash
from tests.support.apiserver import FakeApiServer, node_manifest
from tests.support.wait import eventually
from tests.unit.qrm.cpu.machines import write_numa_machine

NODE = "node-a"
NS = "katalyst-system"
AQC = "adminqosconfigurations"
CNC = "customnodeconfigs"
FAST = WatchSettings(backoff_initial_s=0.01, backoff_max_s=0.05, request_timeout_s=5)


def usage(target: float) -> dict[str, Any]:
    return {"sysadvisor": {"indicators": {"cpu_usage_ratio": {"target": target}}}}


def create(api: FakeApiServer, name: str, config: Mapping[str, Any], **spec: Any) -> None:
    """An SRE's AdminQoSConfiguration."""
    api.create_object(
        AQC, {"metadata": {"name": name, "namespace": NS}, "spec": {"config": config, **spec}}
    )


def edit(api: FakeApiServer, name: str, config: Mapping[str, Any]) -> None:
    """An SRE's edit of a config's ``spec.config``."""
    api.update_object(AQC, name, lambda o: o["spec"].update(config=config), namespace=NS)


def spec_of(api: FakeApiServer, name: str) -> dict[str, Any]:
    obj = api.get_object(AQC, name, namespace=NS)
    assert obj is not None
    spec: dict[str, Any] = obj["spec"]
    return spec


def publish(api: FakeApiServer, *listed: str | tuple[str, str]) -> None:
    """The controller's write of this node's CNC: each config (lowest precedence
    first) with the hash of its spec as stored, or with the hash given."""
    entries = []
    for item in listed:
        name, digest = item if isinstance(item, tuple) else (item, spec_hash(spec_of(api, item)))
        entries.append(
            {
                "configType": ADMIN_QOS_GVR.to_json(),
                "configNamespace": NS,
                "configName": name,
                "hash": digest,
            }
        )
    status = {"katalystCustomConfigList": entries}
    if api.get_object(CNC, NODE) is None:
        api.create_object(CNC, {"metadata": {"name": NODE}, "status": status})
    else:
        api.update_object(CNC, NODE, lambda o: o.update(status=status))


def fetches(api: FakeApiServer, name: str) -> int:
    """GETs of one config seen by the API server."""
    path = f"/apis/{ADMIN_QOS_GVR.group}/{ADMIN_QOS_GVR.version}/namespaces/{NS}/{AQC}/{name}"
    return sum(1 for r in api.requests if r.method == "GET" and r.path == path)


class Node:
    """A ClusterSource running against the fake API server."""

    def __init__(self, source: ClusterSource, feed: ObjectWatcher) -> None:
        self.source = source
        self.feed = feed

    @property
    def status(self) -> dict[str, Any]:
        part = self.source.record.status()["dynamic_config"]
        assert isinstance(part, dict)
        return part

    def target(self) -> float:
        return self.source.record.settings.sysadvisor.indicators.cpu_usage_ratio.target


@asynccontextmanager
async def node(
    api: FakeApiServer, tmp_path: Path, *, base: AgentConfig | None = None
) -> AsyncIterator[Node]:
    """The agent's dynamic config for this node, its checkpoint under ``tmp_path``
    (a second one with the same ``tmp_path`` is the same node restarted)."""
    client = await connect(api.kubeconfig(tmp_path / "kubeconfig"))
    clock = MonotonicClock()
    feed = ObjectWatcher(
        client,
        resource=CNC_GVR,
        name=NODE,
        clock=clock,
        settings=FAST,
        rng=random.Random(1),  # noqa: S311 - jitter
    )
    source = ClusterSource(
        feed=feed,
        reader=ApiServerConfigClient(client, request_timeout_s=5),
        events=ApiServerEvictionClient(client, request_timeout_s=5),
        applier=SettingsApplier(base or AgentConfig()),
        node_name=NODE,
        clock=clock,
        checkpoint=LayerCheckpoint(tmp_path / "state" / "dynamic_config"),
        retry_initial_s=0.01,
        retry_max_s=0.05,
        rng=random.Random(2),  # noqa: S311 - jitter
    )
    stop = asyncio.Event()
    await source.start()
    task = asyncio.create_task(source.run(stop))
    try:
        yield Node(source, feed)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=5)
        await client.close()  # type: ignore[no-untyped-call]


@pytest.fixture
async def api() -> AsyncIterator[FakeApiServer]:
    async with FakeApiServer(bookmark_interval=0.2) as server:
        yield server


async def test_a_cnc_listing_a_pool_config_applies_its_settings(
    api: FakeApiServer, tmp_path: Path
) -> None:
    create(api, "cluster", {"reclaim": {"enabled": False}, **usage(0.5)})
    create(api, "pool-batch", usage(0.4), nodeLabelSelector="node-pool=batch", priority=1)
    create(api, "elsewhere", usage(0.1), nodeLabelSelector="node-pool=web")  # not listed
    publish(api, "cluster", "pool-batch")
    async with node(api, tmp_path) as agent:
        await eventually(lambda: agent.target() == 0.4, "the pool's target")
        assert not agent.source.record.settings.reclaim_enabled  # the cluster layer's
        status = agent.status
        assert status["source"] == f"CustomNodeConfig {NODE}"
        assert status["origin"] == "cluster"
        assert [(x["name"], x["level"], x["hash"]) for x in status["layers"]] == [
            (f"{NS}/cluster", "cluster", spec_hash(spec_of(api, "cluster"))),
            (f"{NS}/pool-batch", "pool", spec_hash(spec_of(api, "pool-batch"))),
        ]
        assert status["pending"] is None
        assert status["last_error"] is None
        assert (fetches(api, "cluster"), fetches(api, "pool-batch")) == (1, 1)
        assert fetches(api, "elsewhere") == 0
        # Only this node's CNC is listed and watched.
        cnc_path = f"/apis/{CNC_GVR.group}/{CNC_GVR.version}/{CNC}"
        selectors = {r.query.get("fieldSelector") for r in api.requests if r.path == cnc_path}
        assert selectors == {f"metadata.name={NODE}"}
        # What the loops got is what the record shows.
        registry = CollectorRegistry()
        registry.register(DynamicConfigCollector(agent.source.record))
        families = {
            f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())
        }
        assert families["katalyst_dynamic_config_fetches"].samples[0].value == 2.0
        assert families["katalyst_dynamic_config_reclaim_enabled"].samples[0].value == 0.0


async def test_a_hash_change_fetches_only_the_changed_config(
    api: FakeApiServer, tmp_path: Path
) -> None:
    create(api, "cluster", usage(0.5))
    create(api, "pool-batch", usage(0.4), nodeLabelSelector="node-pool=batch")
    publish(api, "cluster", "pool-batch")
    async with node(api, tmp_path) as agent:
        await eventually(lambda: agent.target() == 0.4, "the pool's target")
        edit(api, "pool-batch", usage(0.35))
        publish(api, "cluster", "pool-batch")
        await eventually(lambda: agent.target() == 0.35, "the edited pool's target")
        assert (fetches(api, "cluster"), fetches(api, "pool-batch")) == (1, 2)
        assert agent.status["last_changes"] == [
            "sysadvisor.indicators.cpu_usage_ratio.target: 0.4 -> 0.35"
        ]
        # The pool config leaves the node's list: its layer goes, nothing is fetched.
        publish(api, "cluster")
        await eventually(lambda: agent.target() == 0.5, "the cluster's target alone")
        assert (fetches(api, "cluster"), fetches(api, "pool-batch")) == (1, 2)
        # A CNC written again with the same content fetches nothing either.
        api.update_object(CNC, NODE, lambda o: o["metadata"].setdefault("labels", {"x": "y"}))
        await asyncio.sleep(0.2)
        assert (fetches(api, "cluster"), fetches(api, "pool-batch")) == (1, 2)


async def test_a_cnc_hash_the_object_does_not_have_is_not_applied_until_it_does(
    api: FakeApiServer, tmp_path: Path
) -> None:
    create(api, "pool-batch", usage(0.4))
    publish(api, "pool-batch")
    async with node(api, tmp_path) as agent:
        await eventually(lambda: agent.target() == 0.4, "the first version")
        # The CNC lists a version of the config that the API server does not hold (the
        # SRE edited it again before the controller caught up).
        listed = spec_hash({"config": usage(0.3)})
        edit(api, "pool-batch", usage(0.2))
        publish(api, ("pool-batch", listed))
        await eventually(
            lambda: "waiting for the controller" in str(agent.status["pending"]),
            "the mismatch on /status",
        )
        assert listed in str(agent.status["pending"])
        assert agent.target() == 0.4
        assert agent.status["refusals_total"] == 0  # not a refusal: a wait
        # The controller catches up: the CNC lists what the object holds.
        publish(api, "pool-batch")
        await eventually(lambda: agent.target() == 0.2, "the version the CNC lists now")
        assert agent.status["pending"] is None
        assert fetches(api, "pool-batch") == 3


async def test_an_invalid_config_posts_an_event_and_keeps_the_last_good_settings(
    api: FakeApiServer, tmp_path: Path
) -> None:
    create(api, "pool-batch", usage(0.4))
    publish(api, "pool-batch")
    async with node(api, tmp_path) as agent:
        await eventually(lambda: agent.target() == 0.4, "the good version")
        edit(api, "pool-batch", usage(-1))
        publish(api, "pool-batch")
        await eventually(lambda: len(api.events) == 1, "the Event")
        [event] = api.events
        stored = api.get_object(AQC, "pool-batch", namespace=NS)
        assert stored is not None
        assert event["reason"] == REFUSED_REASON
        assert event["type"] == "Warning"
        assert event["metadata"]["namespace"] == NS
        assert event["involvedObject"] == {
            "apiVersion": "config.katalyst.kubewharf.io/v1alpha1",
            "kind": "AdminQoSConfiguration",
            "namespace": NS,
            "name": "pool-batch",
            "uid": stored["metadata"]["uid"],
            "resourceVersion": stored["metadata"]["resourceVersion"],
        }
        field = "spec.config.sysadvisor.indicators.cpu_usage_ratio.target: must be > 0"
        assert field in event["message"]
        assert event["source"] == {"component": "katalyst-agent", "host": NODE}
        assert agent.target() == 0.4
        assert agent.status["refusals_total"] == 1
        assert field in str(agent.status["last_error"])
        # The same version listed again: no second Event, no second count, no GET.
        fetched = fetches(api, "pool-batch")
        api.update_object(CNC, NODE, lambda o: o["metadata"].setdefault("labels", {"x": "y"}))
        await asyncio.sleep(0.2)
        assert len(api.events) == 1
        assert agent.status["refusals_total"] == 1
        assert fetches(api, "pool-batch") == fetched
        # Fixed: applied, and the error is gone.
        edit(api, "pool-batch", usage(0.45))
        publish(api, "pool-batch")
        await eventually(lambda: agent.target() == 0.45, "the fixed version")
        assert agent.status["last_error"] is None


async def test_a_config_the_agent_cannot_take_is_refused_naming_the_setting(
    api: FakeApiServer, tmp_path: Path
) -> None:
    # Valid for the controller; this agent's file has the IO loop off.
    create(api, "io-on", {"io": {"enabled": True}})
    publish(api, "io-on")
    base = AgentConfig(io=IOConfig(enabled=False))
    async with node(api, tmp_path, base=base) as agent:
        await eventually(lambda: len(api.events) == 1, "the Event")
        assert "io.enabled: the IO loop was not started" in api.events[0]["message"]
        assert agent.source.record.settings.io == base.io


async def test_layers_that_do_not_merge_are_refused_on_the_upper_one(
    api: FakeApiServer, tmp_path: Path
) -> None:
    create(api, "cluster", {"io": {"min_read_bps": 100, "max_read_bps": 200}})
    create(api, "pool-batch", usage(0.4))
    publish(api, "cluster", "pool-batch")
    async with node(api, tmp_path) as agent:
        await eventually(lambda: agent.target() == 0.4, "both layers")
        # Valid alone (no ceiling in the agent's file), not over the cluster layer.
        edit(api, "pool-batch", {**usage(0.3), "io": {"min_read_bps": 500}})
        publish(api, "cluster", "pool-batch")
        await eventually(lambda: len(api.events) == 1, "the Event")
        [event] = api.events
        assert event["involvedObject"]["name"] == "pool-batch"
        assert "spec.config.io.min_read_bps: must be <=" in event["message"]
        assert f"merged over {NS}/cluster" in event["message"]
        assert agent.target() == 0.4
        assert agent.source.record.settings.io.min_read_bps == 100
        # The controller lists the version in force again (its last good one, while
        # the object stays broken): the node has it, nothing is fetched.
        fetched = fetches(api, "pool-batch")
        publish(api, "cluster", ("pool-batch", spec_hash({"config": usage(0.4)})))
        await eventually(lambda: agent.status["pending"] is None, "the version in force")
        assert fetches(api, "pool-batch") == fetched
        assert agent.status["last_error"] is None
        assert len(api.events) == 1


async def test_a_failed_get_is_retried(api: FakeApiServer, tmp_path: Path) -> None:
    create(api, "pool-batch", usage(0.4))
    async with node(api, tmp_path) as agent:
        await agent.feed.synced.wait()
        await api.wait_for_watches()
        assert "no CustomNodeConfig" in str(agent.status["pending"])
        api.fail_next(1, 503)  # the next request is the GET (the watch is open)
        publish(api, "pool-batch")
        await eventually(lambda: agent.target() == 0.4, "the config after a retry")
        assert fetches(api, "pool-batch") == 2


async def test_a_restart_with_the_api_server_down_applies_the_checkpoint(
    api: FakeApiServer, tmp_path: Path
) -> None:
    create(api, "pool-batch", usage(0.4))
    publish(api, "pool-batch")
    async with node(api, tmp_path) as agent:
        await eventually(lambda: agent.target() == 0.4, "the config")
    api.start_outage("reset")
    async with node(api, tmp_path) as agent:
        # Applied at start, before the API server answered anything.
        assert agent.target() == 0.4
        assert agent.status["origin"] == "checkpoint"
        await eventually(lambda: agent.feed.failures >= 2, "the watch retrying")
        assert not agent.feed.synced.is_set()
        api.end_outage()
        await eventually(agent.feed.synced.is_set, "the watch after the outage")
        await api.wait_for_watches()
        # The CNC lists what the checkpoint holds: nothing to fetch, nothing to apply.
        await asyncio.sleep(0.1)
        assert fetches(api, "pool-batch") == 1
        assert agent.status["origin"] == "checkpoint"
        assert agent.status["pending"] is None


async def test_an_outage_then_recovery_resumes_the_watch(
    api: FakeApiServer, tmp_path: Path
) -> None:
    create(api, "pool-batch", usage(0.4))
    publish(api, "pool-batch")
    async with node(api, tmp_path) as agent:
        await eventually(lambda: agent.target() == 0.4, "the config")
        await api.wait_for_watches()
        with api.outage("reset"):
            # The cluster goes on while the node cannot see it.
            edit(api, "pool-batch", usage(0.3))
            publish(api, "pool-batch")
            await eventually(lambda: agent.feed.failures >= 2, "the watch retrying")
            assert agent.target() == 0.4
        await eventually(lambda: agent.target() == 0.3, "the change made during the outage")
        assert agent.feed.lists == 1  # resumed from its resourceVersion

        # A watch whose version left the history lists again (410 Gone).
        api.drop_watches()
        edit(api, "pool-batch", usage(0.25))
        publish(api, "pool-batch")
        api.compact()
        await eventually(lambda: agent.target() == 0.25, "the change after the relist")
        assert agent.feed.lists >= 2


# ---- the agent process ---------------------------------------------------------------


async def test_the_agent_follows_its_cnc_in_a_cluster_mode(
    api: FakeApiServer, tmp_path: Path, short_dir: Path
) -> None:
    """``agent.app.run`` in QRM mode with a kubeconfig wires the cluster source: the
    running sysadvisor takes the CNC's config, seen on ``/status``."""
    sysfs = write_numa_machine(tmp_path / "sys", nodes=1, cores_per_node=4, threads=1)
    (sysfs / "devices/system/node/node0/meminfo").write_text("Node 0 MemTotal: 8388608 kB\n")
    driver = open_driver(FakeCgroupFS.hybrid(cpus="0-3", mems="0"))
    driver.create("kubepods")
    api.create_node(node_manifest(NODE))
    create(api, "cluster", usage(0.45))
    publish(api, "cluster")
    config = AgentConfig(
        node_name=NODE,
        kubeconfig=api.kubeconfig(tmp_path / "kubeconfig"),
        state_dir=short_dir,
        qrm_socket_dir=short_dir / "plugins",
        reserved_cpus=CPUSet.parse("0"),
        metrics_addr="127.0.0.1:0",
        sysadvisor=AdvisorConfig(period_s=0.1),
    )
    stop, ready = asyncio.Event(), asyncio.Event()
    http: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run(
            config,
            stop=stop,
            sysfs=str(sysfs),
            cluster_driver=driver,
            node_ready=ready,
            http_ready=http,
        )
    )
    status: dict[str, Any] = {}

    async def read() -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://{http.result()}/status") as response,
        ):
            status.update(await response.json())

    def target() -> float | None:
        for step in (status.get("sysadvisor") or {}).get("indicators", []):
            if step["region"] == "share" and step["indicator"] == "cpu_usage_ratio":
                return float(step["target"])
        return None

    try:
        waiter = asyncio.ensure_future(ready.wait())
        await asyncio.wait({waiter, task}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()
        for _ in range(200):
            await read()
            if target() == 0.45:
                break
            await asyncio.sleep(0.05)
        assert target() == 0.45, status
        dynamic = status["dynamic_config"]
        assert dynamic["source"] == f"CustomNodeConfig {NODE}"
        assert [x["name"] for x in dynamic["layers"]] == [f"{NS}/cluster"]
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)
