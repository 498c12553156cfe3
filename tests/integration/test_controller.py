"""``katalyst-controller`` end to end: the process's ``run`` against the fake API server,
over real HTTP through the official client, as an SRE and the cluster would drive it
(objects created, edited and deleted through the server; results read back from it).

Covers every precedence rule, every rejection, expiry, the CNC and CNR lifecycle,
KCC conditions, write suppression on resync and restart, /metrics and /healthz. The
helpers here are shared by ``test_controller_leader.py``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from controllers.apiserver import Informer, WatchSettings, connect, metadata_only
from controllers.app import run
from controllers.config import ControllerConfig
from controllers.resources import CNCS, KCCS, NODES, target_resource
from controllers.status import LAST_GOOD
from katalyst.clock import MonotonicClock
from katalyst.dynconfig import ADMIN_QOS_GVR, spec_hash
from tests.support.apiserver import (
    ADMIN_QOS_CONFIGURATIONS,
    CUSTOM_NODE_CONFIGS,
    CUSTOM_NODE_RESOURCES,
    KATALYST_CUSTOM_CONFIGS,
    LEASES,
    FakeApiServer,
    Obj,
    RecordedWrite,
    node_manifest,
    object_manifest,
)
from tests.support.rbac import policy_for_values
from tests.support.wait import eventually

NS = "katalyst-system"
AQC = ADMIN_QOS_CONFIGURATIONS
TARGET = {
    "group": "config.katalyst.kubewharf.io",
    "version": "v1alpha1",
    "resource": "adminqosconfigurations",
}
ALLOWED = {0: ["node-pool"], 1: ["node-pool", "zone"]}

# ---- shared helpers ------------------------------------------------------------------------


@dataclass
class Replica:
    """One controller process (its ``run``), with its own registry."""

    identity: str
    registry: CollectorRegistry
    stop: asyncio.Event
    task: asyncio.Task[None]
    addr: str

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    @property
    def leading(self) -> bool:
        return self.metric("katalyst_controller_leader") == 1.0

    @property
    def writes(self) -> float:
        """Every write this replica made (its counter, all kinds and outcomes)."""
        total = 0.0
        for family in self.registry.collect():
            if family.name == "katalyst_controller_writes":
                total += sum(s.value for s in family.samples if s.name.endswith("_total"))
        return total

    async def shut_down(self) -> None:
        """SIGTERM: stop writing, release the Lease, exit."""
        self.stop.set()
        await asyncio.wait_for(self.task, 10)

    async def kill(self) -> None:
        """SIGKILL: the task stops where it is; nothing is released."""
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


class Cluster:
    """The fake API server and the controller replicas started against it."""

    def __init__(self, api: FakeApiServer, tmp_path: Path) -> None:
        self.api = api
        self.kubeconfig = api.kubeconfig(tmp_path / "kubeconfig")
        self.replicas: list[Replica] = []

    def config(self, identity: str, **overrides: Any) -> ControllerConfig:
        base = ControllerConfig(
            kubeconfig=self.kubeconfig,
            namespace=NS,
            identity=identity,
            metrics_addr="127.0.0.1:0",
            lease_duration_s=1,
            renew_deadline_s=0.6,
            retry_period_s=0.2,
            backoff_initial_s=0.05,
            backoff_max_s=0.5,
        )
        return replace(base, **overrides)

    async def start(self, identity: str = "ctl-a", **overrides: Any) -> Replica:
        registry = CollectorRegistry()
        stop = asyncio.Event()
        ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(
            run(self.config(identity, **overrides), stop=stop, registry=registry, http_ready=ready)
        )
        waits: set[asyncio.Future[Any]] = {ready, task}
        done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()
        replica = Replica(identity, registry, stop, task, ready.result())
        self.replicas.append(replica)
        return replica

    async def leader(self, *candidates: Replica) -> Replica:
        group = candidates or tuple(self.replicas)
        await eventually(lambda: any(r.leading for r in group), "a leader")
        (leader,) = [r for r in group if r.leading]
        return leader

    async def close(self) -> None:
        for replica in self.replicas:
            replica.stop.set()
        for replica in self.replicas:
            await asyncio.wait({replica.task}, timeout=5)
            await replica.kill()


@pytest.fixture
async def api() -> AsyncIterator[FakeApiServer]:
    async with FakeApiServer(bookmark_interval=0.05) as server:
        yield server


@pytest.fixture
async def cluster(api: FakeApiServer, tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(api, tmp_path)
    try:
        yield c
    finally:
        await c.close()


def kcc(
    api: FakeApiServer,
    name: str = "admin-qos",
    *,
    allowed: Mapping[int, list[str]] | None = None,
    target: Mapping[str, str] | None = None,
) -> Obj:
    allowed = ALLOWED if allowed is None else allowed
    spec = {
        "targetType": dict(target or TARGET),
        "nodeLabelSelectorAllowedKeyList": [
            {"priority": p, "keyList": keys} for p, keys in sorted(allowed.items())
        ],
    }
    return api.create_object(
        KATALYST_CUSTOM_CONFIGS,
        object_manifest(KATALYST_CUSTOM_CONFIGS, name, namespace=NS, spec=spec),
    )


def aqc(
    api: FakeApiServer, name: str, spec: Mapping[str, Any], *, created: str | None = None
) -> Obj:
    obj = object_manifest(AQC, name, namespace=NS, spec=spec)
    if created is not None:
        obj["metadata"]["creationTimestamp"] = created
    return api.create_object(AQC, obj)


def edit(api: FakeApiServer, name: str, change: Callable[[Obj], None]) -> Obj:
    return api.update_object(AQC, name, lambda o: change(o["spec"]), namespace=NS)


def node(api: FakeApiServer, name: str, **labels: str) -> Obj:
    return api.create_node(
        node_manifest(name, labels={k.replace("_", "-"): v for k, v in labels.items()})
    )


def relabel(api: FakeApiServer, name: str, **labels: str) -> Obj:
    return api.update_node(
        name,
        lambda n: n["metadata"].update(labels={k.replace("_", "-"): v for k, v in labels.items()}),
    )


def cluster_wide(config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"config": dict(config or {"reclaim": {"enabled": True}})}


def pool(selector: str, *, priority: int = 0, target: float = 0.6) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "nodeLabelSelector": selector,
        "config": {"sysadvisor": {"indicators": {"cpu_usage_ratio": {"target": target}}}},
    }
    if priority:
        spec["priority"] = priority
    return spec


def named(*nodes: str, duration: str = "1h") -> dict[str, Any]:
    return {
        "ephemeralSelector": {"nodeNames": list(nodes), "lastDuration": duration},
        "config": {"reclaim": {"enabled": False}},
    }


def listed(api: FakeApiServer, name: str) -> list[str] | None:
    """The config names a node's CNC lists, in order; None without a CNC."""
    cnc = api.get_object(CUSTOM_NODE_CONFIGS, name)
    if cnc is None:
        return None
    entries = (cnc.get("status") or {}).get("katalystCustomConfigList") or []
    return [e["configName"] for e in entries]


def hashes(api: FakeApiServer, name: str) -> dict[str, str]:
    cnc = api.get_object(CUSTOM_NODE_CONFIGS, name) or {}
    entries = (cnc.get("status") or {}).get("katalystCustomConfigList") or []
    return {e["configName"]: e["hash"] for e in entries}


def spec_hash_of(api: FakeApiServer, name: str) -> str:
    obj = api.get_object(AQC, name, namespace=NS)
    assert obj is not None
    return spec_hash(obj["spec"])


def valid(api: FakeApiServer, name: str, resource: Any = AQC) -> dict[str, Any] | None:
    obj = api.get_object(resource, name, namespace=NS)
    if obj is None:
        return None
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Valid":
            return dict(condition)
    return None


def reason(api: FakeApiServer, name: str, resource: Any = AQC) -> str | None:
    condition = valid(api, name, resource)
    return None if condition is None else condition["reason"]


def object_writes(api: FakeApiServer) -> list[RecordedWrite]:
    """Writes to anything but the Lease (renewals are the election's, not content)."""
    return [w for w in api.writes if w.resource != LEASES.qualified]


def iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


# ---- precedence --------------------------------------------------------------------------


async def test_every_level_applies_in_precedence_order(
    cluster: Cluster, api: FakeApiServer
) -> None:
    node(api, "n1", node_pool="batch", zone="a")
    node(api, "n2", node_pool="batch", zone="b")
    node(api, "n3", node_pool="online")
    node(api, "n4")
    kcc(api)
    aqc(api, "cluster", cluster_wide())
    aqc(api, "batch", pool("node-pool=batch"))
    aqc(api, "batch-zone-a", pool("zone=a", priority=1, target=0.5))
    incident = named("n2")
    incident["serviceOverrides"] = [
        {
            "namespace": "default",
            "selector": {"matchLabels": {"app": "web"}},
            "indicators": {"cpu_usage_ratio": {"target": 0.4}},
        }
    ]
    aqc(api, "incident", incident)
    await cluster.start()

    expected = {
        # the highest-priority matching pool wins over a lower one
        "n1": ["cluster", "batch-zone-a"],
        # named nodes over the pool over the cluster, lowest first
        "n2": ["cluster", "batch", "incident"],
        "n3": ["cluster"],
        "n4": ["cluster"],
    }
    await eventually(lambda: all(listed(api, n) == v for n, v in expected.items()), "the CNCs")
    for name in ("cluster", "batch", "batch-zone-a", "incident"):
        assert hashes(api, "n2" if name == "incident" else "n1").get(
            name, spec_hash_of(api, name)
        ) == (spec_hash_of(api, name))
    cnc = api.get_object(CUSTOM_NODE_CONFIGS, "n2")
    assert cnc is not None
    assert cnc["status"]["katalystCustomConfigList"][2] == {
        "configType": TARGET,
        "configNamespace": NS,
        "configName": "incident",
        "hash": spec_hash_of(api, "incident"),
    }
    await eventually(
        lambda: all(
            reason(api, n) == "Valid" for n in ("cluster", "batch", "batch-zone-a", "incident")
        ),
        "Valid conditions",
    )
    condition = valid(api, "batch")
    assert condition is not None
    assert (condition["status"], condition["observedGeneration"]) == ("True", 1)
    await eventually(lambda: reason(api, "admin-qos", KATALYST_CUSTOM_CONFIGS) == "Valid", "KCC")

    # A node joins a pool by a label change; a pool config goes; a service override
    # changes (the CNC's hash is how the node's agent learns of it).
    relabel(api, "n3", node_pool="batch")
    api.delete_object(AQC, "batch-zone-a", namespace=NS)
    old = spec_hash_of(api, "incident")
    edit(
        api,
        "incident",
        lambda s: s["serviceOverrides"][0]["indicators"].update(cpu_usage_ratio={"target": 0.3}),
    )
    await eventually(lambda: listed(api, "n3") == ["cluster", "batch"], "n3 joins the pool")
    await eventually(lambda: listed(api, "n1") == ["cluster", "batch"], "n1 falls back")
    await eventually(
        lambda: hashes(api, "n2")["incident"] == spec_hash_of(api, "incident") != old, "new hash"
    )


async def test_a_paused_config_applies_nowhere(cluster: Cluster, api: FakeApiServer) -> None:
    node(api, "n1", node_pool="batch")
    kcc(api)
    aqc(api, "cluster", cluster_wide())
    spec = pool("node-pool=batch")
    spec["paused"] = True
    aqc(api, "batch", spec)
    await cluster.start()
    await eventually(lambda: reason(api, "batch") == "Paused", "Paused")
    assert listed(api, "n1") == ["cluster"]
    edit(api, "batch", lambda s: s.update(paused=False))
    await eventually(lambda: listed(api, "n1") == ["cluster", "batch"], "unpaused")


# ---- rejections ----------------------------------------------------------------------------


async def test_rejections_set_a_condition_and_the_last_good_cnc_stays(
    cluster: Cluster, api: FakeApiServer
) -> None:
    node(api, "n1", node_pool="batch", zone="a")
    node(api, "n2", node_pool="online")
    kcc(api)
    aqc(api, "cluster", cluster_wide())
    aqc(api, "batch", pool("node-pool=batch"))
    await cluster.start()
    await eventually(lambda: listed(api, "n1") == ["cluster", "batch"], "the first CNC")
    good = hashes(api, "n1")["batch"]

    # A value the agent would refuse: rejected, naming the field; its last good version stays.
    edit(
        api,
        "batch",
        lambda s: s["config"]["sysadvisor"]["indicators"]["cpu_usage_ratio"].update(target=-1),
    )
    await eventually(lambda: reason(api, "batch") == "Invalid", "Invalid")
    condition = valid(api, "batch")
    assert condition is not None
    assert condition["status"] == "False"
    assert condition["observedGeneration"] == 2
    assert (
        "spec.config.sysadvisor.indicators.cpu_usage_ratio.target: must be > 0"
        in condition["message"]
    )
    assert hashes(api, "n1")["batch"] == good
    await eventually(
        lambda: any(
            e["reason"] == "Invalid"
            and e["involvedObject"]["name"] == "batch"
            and e["type"] == "Warning"
            for e in api.events
        ),
        "a Warning Event",
    )

    # A label key the KCC does not allow; nodeNames without lastDuration; both at once.
    aqc(api, "by-rack", {"nodeLabelSelector": "rack=r1", "config": {}})
    aqc(api, "forever", {"ephemeralSelector": {"nodeNames": ["n2"]}, "config": {}})
    # Overlapping selectors at one priority; a second cluster-wide config: the newcomer
    # is rejected, the established one stays.
    aqc(api, "batch-too", pool("node-pool in (batch,gpu)"))
    aqc(api, "cluster-2", cluster_wide({"reclaim": {"enabled": False}}))
    await eventually(
        lambda: (
            [reason(api, n) for n in ("by-rack", "forever", "batch-too", "cluster-2")]
            == ["Invalid", "Invalid", "Conflict", "Conflict"]
        ),
        "rejections",
    )
    messages = {
        n: (valid(api, n) or {})["message"]
        for n in ("by-rack", "forever", "batch-too", "cluster-2")
    }
    assert "spec.nodeLabelSelector: key 'rack' is not allowed" in messages["by-rack"]
    assert "spec.ephemeralSelector.lastDuration: required with nodeNames" in messages["forever"]
    assert "overlaps" in messages["batch-too"] and "batch" in messages["batch-too"]
    assert "another cluster-wide config" in messages["cluster-2"]
    assert listed(api, "n1") == ["cluster", "batch"]
    assert hashes(api, "n1")["batch"] == good
    assert listed(api, "n2") == ["cluster"]

    # The established configs carry the conflict too, and stay in effect.
    assert "stays in effect" in (valid(api, "cluster") or {})["message"]

    # The newcomers go and the edit is fixed: the new version applies.
    api.delete_object(AQC, "batch-too", namespace=NS)
    api.delete_object(AQC, "cluster-2", namespace=NS)
    edit(
        api,
        "batch",
        lambda s: s["config"]["sysadvisor"]["indicators"]["cpu_usage_ratio"].update(target=0.7),
    )
    await eventually(
        lambda: hashes(api, "n1").get("batch") == spec_hash_of(api, "batch") != good, "fixed"
    )
    await eventually(lambda: reason(api, "batch") == "Valid", "Valid again")


# ---- expiry ------------------------------------------------------------------------------


async def test_a_named_config_expires_is_deleted_and_leaves_the_cncs(
    cluster: Cluster, api: FakeApiServer
) -> None:
    node(api, "n1")
    node(api, "n2")
    kcc(api)
    aqc(api, "cluster", cluster_wide())
    # Created an hour ago, for an hour and two seconds: it expires in about two seconds.
    aqc(api, "incident", named("n1", duration="1h2s"), created=iso(time.time() - 3600))
    # Already expired: deleted at once, never listed.
    aqc(api, "old-incident", named("n2"), created=iso(time.time() - 7200))
    replica = await cluster.start()
    await eventually(lambda: listed(api, "n1") == ["cluster", "incident"], "listed while it lasts")
    await eventually(lambda: reason(api, "incident") == "Valid", "its condition")
    until = (valid(api, "incident") or {})["message"]
    assert until.startswith("applies until ") and until.endswith("Z")
    await eventually(
        lambda: api.get_object(AQC, "old-incident", namespace=NS) is None, "old one deleted"
    )
    assert listed(api, "n2") == ["cluster"]

    await eventually(
        lambda: api.get_object(AQC, "incident", namespace=NS) is None, "deleted on expiry"
    )
    await eventually(lambda: listed(api, "n1") == ["cluster"], "gone from the CNC")
    await eventually(
        lambda: (
            {e["involvedObject"]["name"] for e in api.events if e["reason"] == "Expired"}
            == {"incident", "old-incident"}
        ),
        "an Expired Event on each",
    )
    expired = [e for e in api.events if e["reason"] == "Expired"]
    assert all(e["type"] == "Normal" and "expired at" in e["message"] for e in expired)
    assert replica.metric("katalyst_controller_expired_configs_deleted_total") == 2.0


# ---- CNC and CNR lifecycle -------------------------------------------------------------------


async def test_cncs_and_cnrs_come_and_go_with_their_nodes(
    cluster: Cluster, api: FakeApiServer
) -> None:
    node(api, "n1")
    # The node's agent made its CNR already, with a status: left as it is.
    api.create_cnr(
        {
            "metadata": {"name": "n1"},
            "status": {"resources": {"allocatable": {"cpu": "4"}, "capacity": {"cpu": "4"}}},
        }
    )
    # A CNC and a CNR of a node that is gone.
    api.create_object(CUSTOM_NODE_CONFIGS, {"metadata": {"name": "gone"}})
    api.create_cnr({"metadata": {"name": "gone"}})
    kcc(api)
    await cluster.start()
    await eventually(
        lambda: api.get_object(CUSTOM_NODE_CONFIGS, "gone") is None, "stray CNC deleted"
    )
    await eventually(lambda: api.get_cnr("gone") is None, "stray CNR deleted")
    await eventually(lambda: listed(api, "n1") == [], "n1's CNC")
    assert api.writes_to(CUSTOM_NODE_RESOURCES, "n1") == []

    joined = node(api, "n5", node_pool="batch")
    await eventually(
        lambda: api.get_cnr("n5") is not None and listed(api, "n5") == [], "n5's CNR and CNC"
    )
    cnr = api.get_cnr("n5")
    assert cnr is not None
    assert "status" not in cnr
    owner = {"apiVersion": "v1", "kind": "Node", "name": "n5", "uid": joined["metadata"]["uid"]}
    assert cnr["metadata"]["ownerReferences"] == [owner]
    cnc = api.get_object(CUSTOM_NODE_CONFIGS, "n5")
    assert cnc is not None and cnc["metadata"]["ownerReferences"] == [owner]

    api.delete_node("n5")
    await eventually(lambda: api.get_cnr("n5") is None, "CNR deleted with the node")
    await eventually(
        lambda: api.get_object(CUSTOM_NODE_CONFIGS, "n5") is None, "CNC deleted with it"
    )
    assert api.get_cnr("n1") is not None


# ---- KCCs ----------------------------------------------------------------------------------


async def test_kcc_conditions(cluster: Cluster, api: FakeApiServer) -> None:
    node(api, "n1")
    kcc(api, "admin-qos")
    aqc(api, "cluster", cluster_wide())
    await cluster.start()
    await eventually(lambda: listed(api, "n1") == ["cluster"], "resolved")
    kcc(api, "admin-qos-2")
    kcc(api, "other", target={**TARGET, "resource": "otherconfigs"})
    api.create_object(
        KATALYST_CUSTOM_CONFIGS,
        object_manifest(
            KATALYST_CUSTOM_CONFIGS, "broken", namespace=NS, spec={"targetType": "aqc"}
        ),
    )
    await eventually(
        lambda: (
            [
                reason(api, n, KATALYST_CUSTOM_CONFIGS)
                for n in ("admin-qos", "admin-qos-2", "other", "broken")
            ]
            == ["Valid", "Duplicate", "TargetForbidden", "Invalid"]
        ),
        "KCC conditions",
    )
    messages = {
        n: (valid(api, n, KATALYST_CUSTOM_CONFIGS) or {})["message"]
        for n in ("admin-qos-2", "other", "broken")
    }
    assert (
        "already configured by KatalystCustomConfig katalyst-system/admin-qos"
        in messages["admin-qos-2"]
    )
    # The shipped RBAC lets the controller read only the target kinds it knows.
    assert "may not list otherconfigs.config.katalyst.kubewharf.io" in messages["other"]
    assert messages["broken"].startswith("spec.targetType: must be a mapping")
    assert listed(api, "n1") == ["cluster"]

    # The KCC in force goes: the duplicate takes over, with the same result.
    api.delete_object(KATALYST_CUSTOM_CONFIGS, "admin-qos", namespace=NS)
    await eventually(
        lambda: reason(api, "admin-qos-2", KATALYST_CUSTOM_CONFIGS) == "Valid", "takes over"
    )
    assert listed(api, "n1") == ["cluster"]

    # No KCC for the type any more: its configs are in force nowhere.
    api.delete_object(KATALYST_CUSTOM_CONFIGS, "admin-qos-2", namespace=NS)
    await eventually(lambda: listed(api, "n1") == [], "taken off the node")


# ---- write suppression ---------------------------------------------------------------------


def node_lists(api: FakeApiServer) -> int:
    return sum(1 for r in api.requests if r.path == "/api/v1/nodes" and "watch" not in r.query)


async def test_a_resync_with_nothing_changed_writes_nothing(
    cluster: Cluster, api: FakeApiServer
) -> None:
    for i in range(3):
        node(api, f"n{i}", node_pool="batch")
    kcc(api)
    aqc(api, "cluster", cluster_wide())
    aqc(api, "batch", pool("node-pool=batch"))
    replica = await cluster.start(resync_s=0.2)
    await eventually(
        lambda: all(listed(api, f"n{i}") == ["cluster", "batch"] for i in range(3)), "converged"
    )
    await eventually(
        lambda: reason(api, "batch") == "Valid" and reason(api, "cluster") == "Valid", "conditions"
    )
    await eventually(lambda: reason(api, "admin-qos", KATALYST_CUSTOM_CONFIGS) == "Valid", "KCC")
    before = len(object_writes(api))
    passes = replica.metric("katalyst_controller_passes_total", outcome="ok")
    lists = node_lists(api)
    await eventually(lambda: node_lists(api) >= lists + 3, "three resyncs")
    await eventually(
        lambda: replica.metric("katalyst_controller_passes_total", outcome="ok") >= passes + 3,
        "passes after them",
    )
    assert object_writes(api)[before:] == []


def last_good(api: FakeApiServer, name: str) -> dict[str, Any] | None:
    obj = api.get_object(AQC, name, namespace=NS)
    text = ((obj or {}).get("metadata") or {}).get("annotations", {}).get(LAST_GOOD)
    return None if text is None else dict(json.loads(text))


def generation(api: FakeApiServer, name: str) -> int:
    obj = api.get_object(AQC, name, namespace=NS)
    return int((obj or {}).get("metadata", {}).get("generation", 0))


async def converged(api: FakeApiServer, expected: Mapping[str, list[str]]) -> None:
    """Every CNC as expected, every config Valid with its last good version kept."""
    await eventually(lambda: all(listed(api, n) == v for n, v in expected.items()), "CNCs")
    names = {c for v in expected.values() for c in v}
    await eventually(
        lambda: all(
            reason(api, n) == "Valid"
            and (valid(api, n) or {}).get("observedGeneration") == generation(api, n)
            and (last_good(api, n) or {}).get("hash") == spec_hash_of(api, n)
            for n in names
        ),
        "conditions and last good versions",
    )
    await eventually(lambda: reason(api, "admin-qos", KATALYST_CUSTOM_CONFIGS) == "Valid", "KCC")


async def test_a_cold_restart_writes_nothing_over_an_unchanged_cluster(
    cluster: Cluster, api: FakeApiServer
) -> None:
    node(api, "n1", node_pool="batch")
    node(api, "n2")
    kcc(api)
    aqc(api, "cluster", cluster_wide())
    aqc(api, "batch", pool("node-pool=batch"))
    aqc(api, "incident", named("n2"))
    first = await cluster.start("ctl-a")
    await converged(api, {"n1": ["cluster", "batch"], "n2": ["cluster", "incident"]})
    await first.shut_down()
    before = len(object_writes(api))
    second = await cluster.start("ctl-b")
    await cluster.leader(second)
    await eventually(
        lambda: second.metric("katalyst_controller_passes_total", outcome="ok") >= 1, "a pass"
    )
    assert object_writes(api)[before:] == []


async def test_a_cold_restart_keeps_the_last_good_version_of_a_config_rejected_meanwhile(
    cluster: Cluster, api: FakeApiServer
) -> None:
    node(api, "n1", node_pool="batch")
    kcc(api)
    aqc(api, "cluster", cluster_wide())
    aqc(api, "batch", pool("node-pool=batch"))
    first = await cluster.start("ctl-a")
    await converged(api, {"n1": ["cluster", "batch"]})
    await first.shut_down()
    good = hashes(api, "n1")

    # While no controller runs: the pool config is broken, and a newcomer overlaps it.
    edit(
        api,
        "batch",
        lambda s: s["config"]["sysadvisor"]["indicators"]["cpu_usage_ratio"].update(target=-1),
    )
    aqc(api, "batch-too", pool("node-pool=batch"))
    before = len(api.writes_to(CUSTOM_NODE_CONFIGS, "n1"))
    await cluster.start("ctl-b")
    await eventually(lambda: reason(api, "batch") == "Invalid", "the edit rejected")
    await eventually(lambda: reason(api, "batch-too") == "Conflict", "the newcomer rejected")
    assert (
        "generation 1, its last good version, stays in effect"
        in (valid(api, "batch") or {})["message"]
    )
    assert hashes(api, "n1") == good
    assert api.writes_to(CUSTOM_NODE_CONFIGS, "n1")[before:] == []


async def test_a_cold_restart_keeps_a_named_configs_expiry_clock(
    cluster: Cluster, api: FakeApiServer
) -> None:
    node(api, "n1")
    node(api, "n2")
    kcc(api)
    # An hour after its creation, the config would expire in two seconds...
    created = time.time() - 3600 + 2
    aqc(api, "incident", named("n1", duration="1h"), created=iso(created))
    first = await cluster.start("ctl-a")
    await eventually(lambda: listed(api, "n1") == ["incident"], "listed")
    # ... but its node names are edited: its clock starts again from now.
    edit(api, "incident", lambda s: s["ephemeralSelector"].update(nodeNames=["n1", "n2"]))
    await eventually(lambda: listed(api, "n2") == ["incident"], "n2 named too")
    await eventually(
        lambda: (last_good(api, "incident") or {}).get("nodeNames") == ["n1", "n2"], "kept"
    )
    since = (last_good(api, "incident") or {})["namesSince"]
    assert since > created + 1
    await eventually(
        lambda: (valid(api, "incident") or {}).get("observedGeneration") == 2, "its condition"
    )
    await first.shut_down()
    await eventually(lambda: time.time() > int(created) + 3600 + 0.5, "the first deadline")
    before = len(object_writes(api))
    second = await cluster.start("ctl-b")
    await cluster.leader(second)
    await eventually(
        lambda: second.metric("katalyst_controller_passes_total", outcome="ok") >= 1, "a pass"
    )
    # Counted from creation, it would have been deleted in this first pass.
    assert api.get_object(AQC, "incident", namespace=NS) is not None
    assert listed(api, "n1") == listed(api, "n2") == ["incident"]
    assert object_writes(api)[before:] == []


# ---- conflicts ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["cnc", "kcc", "aqc"])
async def test_a_write_from_a_stale_copy_is_read_again_and_retried_once(
    api: FakeApiServer, tmp_path: Path, kind: str
) -> None:
    if kind == "cnc":
        resource, rtype, name, namespace = CNCS, CUSTOM_NODE_CONFIGS, "n1", ""
        api.create_object(CUSTOM_NODE_CONFIGS, {"metadata": {"name": "n1"}})
    elif kind == "kcc":
        resource, rtype, name, namespace = KCCS, KATALYST_CUSTOM_CONFIGS, "admin-qos", NS
        kcc(api, "admin-qos")
    else:  # a target config: its status, and the read after a conflict, are the controller's
        resource, rtype, name, namespace = target_resource(ADMIN_QOS_GVR), AQC, "cluster", NS
        aqc(api, "cluster", cluster_wide())
    # The controller's own User-Agent: it runs under the RBAC the chart ships.
    kube = await connect(api.kubeconfig(tmp_path / "kc"), user_agent="katalyst-controller/test")
    try:
        stale = await kube.get(resource, name, namespace)
        assert stale is not None
        # Another writer changes the status after our read.
        api.update_object(
            rtype, name, lambda o: o.update(status={"note": "theirs"}), namespace=namespace
        )
        seen: list[Obj] = []

        def rebuild(obj: Obj) -> dict[str, Any] | None:
            status = dict(obj.get("status") or {})
            if status.get("mine"):
                return None
            return {**status, "mine": True}

        stored = await kube.update_status(resource, stale, rebuild, on_read=seen.append)
        assert stored is not None
        assert stored["status"] == {"note": "theirs", "mine": True}
        assert [w.code for w in api.writes_to(rtype, name, namespace=namespace)] == [409, 200]
        assert len(seen) == 1
        # Nothing left to write: no request at all.
        assert await kube.update_status(resource, stored, rebuild) is None
        assert len(api.writes_to(rtype, name, namespace=namespace)) == 2
    finally:
        await kube.close()


async def test_an_informer_relists_after_410_and_reports_what_changed_meanwhile(
    api: FakeApiServer, tmp_path: Path
) -> None:
    node(api, "n1")
    node(api, "n2", node_pool="batch")
    kube = await connect(api.kubeconfig(tmp_path / "kc"), user_agent="katalyst-controller/test")
    seen: list[tuple[str | None, str | None]] = []

    def name(obj: Obj | None) -> str | None:
        return None if obj is None else str(obj["metadata"]["name"])

    def handler(_: Informer, old: Obj | None, new: Obj | None) -> None:
        seen.append((name(old), name(new)))

    informer = Informer(
        kube,
        NODES,
        clock=MonotonicClock(),
        handler=handler,
        transform=metadata_only,
        settings=WatchSettings(backoff_initial_s=0.05, backoff_max_s=0.2),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(informer.run(stop))
    try:
        await eventually(lambda: informer.synced, "listed")
        assert sorted(seen) == [(None, "n1"), (None, "n2")]
        assert informer.store[("", "n1")] == {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": api.get_node("n1")["metadata"],  # type: ignore[index]
        }
        await api.wait_for_watches(1)
        seen.clear()
        with api.outage("reset"):
            api.delete_node("n1")
            node(api, "n3")
            relabel(api, "n2", node_pool="online")
            api.compact()  # the watch cannot resume: 410, list again
        await eventually(lambda: informer.lists == 2, "listed again")
        assert sorted(seen, key=str) == sorted([("n1", None), (None, "n3"), ("n2", "n2")], key=str)
        assert sorted(key[1] for key in informer.store) == ["n2", "n3"]
        # A write's answer goes into the copy; an older one does not.
        seen.clear()
        stale = dict(informer.store[("", "n2")])
        relabel(api, "n2", node_pool="gpu")
        await eventually(lambda: seen == [("n2", "n2")], "the watch event")
        informer.observe(stale)
        assert seen == [("n2", "n2")]
        assert informer.store[("", "n2")]["metadata"]["labels"] == {"node-pool": "gpu"}
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        await kube.close()


# ---- metrics and health ----------------------------------------------------------------------


async def test_metrics_and_healthz(cluster: Cluster, api: FakeApiServer) -> None:
    node(api, "n1")
    node(api, "n2")
    kcc(api)
    aqc(api, "cluster", cluster_wide())
    aqc(api, "bad", pool("rack=1"))
    replica = await cluster.start()
    await eventually(
        lambda: listed(api, "n2") == ["cluster"] and reason(api, "bad") == "Invalid", "converged"
    )
    await eventually(
        lambda: replica.metric("katalyst_controller_last_sync_timestamp_seconds") > 0, "a sync"
    )
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://{replica.addr}/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
        async with session.get(f"http://{replica.addr}/healthz") as resp:
            assert (resp.status, await resp.text()) == (200, "ok\n")
    for line in (
        "katalyst_controller_leader 1.0",
        "katalyst_controller_nodes 2.0",
        'katalyst_controller_configs{kind="AdminQoSConfiguration",reason="Valid"} 1.0',
        'katalyst_controller_configs{kind="AdminQoSConfiguration",reason="Invalid"} 1.0',
        'katalyst_controller_writes_total{kind="cnc",outcome="ok",verb="create"} 2.0',
        "katalyst_controller_caches_synced 1.0",
    ):
        assert line in text
    assert "katalyst_controller_resolution_duration_seconds_count" in text


async def test_a_granted_target_kind_that_is_not_served(tmp_path: Path) -> None:
    """With the chart's agent.extraConfigTargets granting a kind, a KCC naming it is
    told the API server does not serve it (its CRD is missing)."""
    extra = {"group": TARGET["group"], "resource": "otherconfigs"}
    policy = policy_for_values({"agent": {"extraConfigTargets": [extra]}})
    async with FakeApiServer(bookmark_interval=0.05, rbac=policy) as api:
        c = Cluster(api, tmp_path)
        try:
            node(api, "n1")
            kcc(api, "other", target={**TARGET, "resource": "otherconfigs"})
            await c.start()
            await eventually(
                lambda: reason(api, "other", KATALYST_CUSTOM_CONFIGS) == "TargetNotServed",
                "KCC condition",
            )
            message = (valid(api, "other", KATALYST_CUSTOM_CONFIGS) or {})["message"]
            assert "does not serve otherconfigs" in message
        finally:
            await c.close()
