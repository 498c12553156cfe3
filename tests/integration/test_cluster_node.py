"""The cluster node loop with the real CPU and memory plugins over their sockets, on a
fake two-NUMA machine, writing a file-faithful fake of the kubelet's cgroups.

The pod source is an in-memory stand-in here (the API-server watch has its own
tests, and the whole chain runs in test_orm.py): each test says exactly which
pods the API server would report, then runs one pass.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent.cluster.node import ClusterNode, running_containers
from agent.metaserver.kubelet_cgroups import KubeletCgroupDriver
from agent.qrm.cpu import CPUPolicy
from agent.qrm.memory import MemoryPolicy
from agent.qrm.server import PluginServer
from katalyst.cgroup import CgroupDriver, open_driver
from katalyst.cgroup.fake import FakeCgroupFS
from katalyst.clock import FakeClock
from katalyst.cpuset import CPUSet
from katalyst.topology import read_cpu_topology
from tests.support.kubelet import Container, KubeletEmulator, Pod
from tests.unit.qrm.cpu.machines import write_numa_machine

GiB = 1024**3
LEVEL = "katalyst.kubewharf.io/qos_level"
NODE = "node-a"
RESERVED = CPUSet.parse("0-1")


@dataclass
class Source:
    """The pods the API server reports for this node."""

    pods: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def put(self, pod: Mapping[str, Any]) -> None:
        self.pods[pod["metadata"]["uid"]] = copy.deepcopy(pod)
        self.changed.set()

    def delete(self, uid: str) -> None:
        del self.pods[uid]
        self.changed.set()


def pod_json(
    uid: str,
    *,
    level: str = "shared_cores",
    cpu: str = "1",
    memory: str = "1Gi",
    guaranteed: bool = False,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    resources: dict[str, Any] = {"requests": {"cpu": cpu, "memory": memory}}
    if guaranteed:
        resources["limits"] = {"cpu": cpu, "memory": memory}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"pod-{uid[:8]}",
            "namespace": "default",
            "uid": uid,
            "annotations": {LEVEL: level, **(annotations or {})},
        },
        "spec": {"nodeName": NODE, "containers": [{"name": "app", "resources": resources}]},
        "status": {"phase": "Pending", "qosClass": "Guaranteed" if guaranteed else "Burstable"},
    }


def started(pod: Mapping[str, Any], container_id: str) -> dict[str, Any]:
    """The pod once the kubelet reports its container running."""
    out = copy.deepcopy(dict(pod))
    out["status"]["phase"] = "Running"
    out["status"]["containerStatuses"] = [
        {"name": "app", "containerID": f"containerd://{container_id}", "state": {"running": {}}}
    ]
    return out


def uid(n: int) -> str:
    return f"{n:08d}-0000-4000-8000-000000000000"


def cid(n: int) -> str:
    return f"{n:064x}"


@dataclass
class Node:
    cpu: CPUPolicy
    memory: MemoryPolicy
    socket_dir: Path
    fs: FakeCgroupFS
    driver: CgroupDriver
    kubelet: KubeletEmulator
    source: Source
    clock: FakeClock

    def node(self, *, admit: bool = True, root: str = "kubepods") -> ClusterNode:
        return ClusterNode(
            source=self.source,
            driver=self.driver,
            kubelet=self.kubelet,
            clock=self.clock,
            admit=admit,
            cgroup_root=root,
        )

    def kubelet_creates(self, pod: Mapping[str, Any], container_id: str) -> str:
        """Make the container's cgroup as the kubelet's cgroupfs driver does; its path."""
        qos = pod["status"]["qosClass"]
        part = "" if qos == "Guaranteed" else f"/{qos.lower()}"
        path = f"kubepods{part}/pod{pod['metadata']['uid']}/{container_id}"
        self.driver.create(path)
        return path

    def cpus_of(self, cgroup: str) -> CPUSet:
        return self.driver.cpuset(cgroup)[0]


@pytest.fixture
async def env(tmp_path: Path, short_dir: Path) -> AsyncIterator[Node]:
    sysfs = write_numa_machine(tmp_path / "sys", nodes=2, cores_per_node=4, threads=2)
    cpu = CPUPolicy(topology=read_cpu_topology(str(sysfs)), reserved=RESERVED)
    memory = MemoryPolicy(numa_memory={0: 8 * GiB, 1: 8 * GiB})
    fs = FakeCgroupFS.hybrid(cpus="0-15", mems="0-1")
    driver = open_driver(fs)
    clock = FakeClock()
    async with (
        PluginServer(cpu, socket_dir=short_dir, clock=clock),
        PluginServer(memory, socket_dir=short_dir, clock=clock),
        KubeletEmulator(numa_nodes=(0, 1)) as kubelet,
    ):
        await kubelet.discover(short_dir)
        source = Source()
        source.synced.set()
        yield Node(cpu, memory, short_dir, fs, driver, kubelet, source, clock)


async def test_orm_admits_a_new_pod_and_writes_its_container_cgroup_once_it_runs(
    env: Node,
) -> None:
    node = env.node()
    shared = pod_json(uid(1))
    env.source.put(shared)
    await node.sync()
    assert uid(1) in env.cpu.allocations()  # admitted while Pending
    assert node.layout is None  # no kubelet cgroups yet: nothing to write

    path = env.kubelet_creates(shared, cid(1))
    env.source.put(started(shared, cid(1)))
    await node.sync()
    assert node.layout is KubeletCgroupDriver.CGROUPFS
    assert env.cpus_of(path) == env.cpu.pools()["share"]
    assert env.cpus_of(path) == CPUSet.parse("2-15")
    assert [c.cgroup for c in node.containers()] == [path]


async def test_a_dedicated_pod_shrinks_the_share_pool_of_running_containers_in_the_same_pass(
    env: Node,
) -> None:
    node = env.node()
    shared = pod_json(uid(1))
    shared_path = env.kubelet_creates(shared, cid(1))
    env.source.put(started(shared, cid(1)))
    await node.sync()
    assert env.cpus_of(shared_path) == CPUSet.parse("2-15")

    dedicated = pod_json(uid(2), level="dedicated_cores", cpu="4", guaranteed=True)
    dedicated_path = env.kubelet_creates(dedicated, cid(2))
    env.source.put(started(dedicated, cid(2)))
    await node.sync()
    exclusive = env.cpus_of(dedicated_path)
    assert len(exclusive) == 4
    assert dedicated_path.startswith(f"kubepods/pod{uid(2)}/")  # Guaranteed: no QoS tier
    assert env.cpus_of(shared_path) == CPUSet.parse("2-15").difference(exclusive)

    env.source.delete(uid(2))
    await node.sync()
    assert uid(2) not in env.cpu.allocations()  # RemovePod reached the plugin
    assert env.cpus_of(shared_path) == CPUSet.parse("2-15")


async def test_a_refused_pod_keeps_the_kubelets_placement_and_the_node_is_unchanged(
    env: Node,
) -> None:
    node = env.node()
    greedy = pod_json(uid(3), level="dedicated_cores", cpu="15", guaranteed=True)
    path = env.kubelet_creates(greedy, cid(3))
    before = env.cpus_of(path)
    pools = dict(env.cpu.pools())
    env.source.put(started(greedy, cid(3)))
    await node.sync()
    state = node.pods[uid(3)]
    assert state.problem.startswith("admission refused:")
    assert "15" in state.problem  # the message says how many were asked
    assert node.refusals == 1
    assert env.cpus_of(path) == before
    assert dict(env.cpu.pools()) == pools
    assert uid(3) not in env.cpu.allocations()

    # Not asked again before the retry period, asked again after it.
    await node.sync()
    assert node.refusals == 1
    await env.clock.advance(31)
    await node.sync()
    assert node.refusals == 2


async def test_a_malformed_annotation_is_reported_with_its_key_and_the_pod_left_alone(
    env: Node,
) -> None:
    node = env.node()
    bad = pod_json(uid(4), annotations={"katalyst.kubewharf.io/memory_enhancement": "{not json"})
    env.source.put(bad)
    await node.sync()
    assert "katalyst.kubewharf.io/memory_enhancement" in node.pods[uid(4)].problem
    assert uid(4) not in env.cpu.allocations()


async def test_a_finished_pod_is_released(env: Node) -> None:
    node = env.node()
    job = pod_json(uid(5), level="reclaimed_cores", cpu="0", memory="0")
    env.source.put(job)
    await node.sync()
    assert uid(5) in env.cpu.allocations()
    done = copy.deepcopy(job)
    done["status"]["phase"] = "Succeeded"
    env.source.put(done)
    await node.sync()
    assert uid(5) not in env.cpu.allocations()
    assert uid(5) not in node.pods


async def test_allocations_of_pods_deleted_while_the_agent_was_down_are_released(
    env: Node,
) -> None:
    ghost = Pod(
        uid=uid(6),
        name="ghost",
        containers=(Container(name="app", requests={"cpu": 1.0, "memory": float(GiB)}),),
        annotations={LEVEL: "shared_cores"},
    )
    await env.kubelet.admit(ghost)
    assert uid(6) in env.cpu.allocations()
    await env.node().release_unknown()
    assert uid(6) not in env.cpu.allocations()


async def test_the_systemd_layout_is_detected_and_written(env: Node) -> None:
    node = env.node()
    shared = pod_json(uid(7))
    scope = (
        f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
        f"{uid(7).replace('-', '_')}.slice/cri-containerd-{cid(7)}.scope"
    )
    env.driver.create(scope)
    env.source.put(started(shared, cid(7)))
    await node.sync()
    assert node.layout is KubeletCgroupDriver.SYSTEMD
    assert env.cpus_of(scope) == CPUSet.parse("2-15")


async def test_qrm_mode_enforces_what_the_kubelet_admitted_without_admitting_itself(
    env: Node,
) -> None:
    node = env.node(admit=False)
    shared = pod_json(uid(8))
    path = env.kubelet_creates(shared, cid(8))
    env.source.put(started(shared, cid(8)))
    await node.sync()
    assert uid(8) not in env.cpu.allocations()  # the kubelet admits in QRM mode

    await env.kubelet.admit(
        Pod(
            uid=uid(9),
            name="dedicated",
            containers=(Container(name="app", requests={"cpu": 2.0, "memory": float(GiB)}),),
            annotations={LEVEL: "dedicated_cores"},
            native_qos_class="Guaranteed",
        )
    )
    await env.kubelet.admit(
        Pod(
            uid=uid(8),
            name=shared["metadata"]["name"],
            containers=(Container(name="app", requests={"cpu": 1.0, "memory": float(GiB)}),),
            annotations={LEVEL: "shared_cores"},
        )
    )
    node.allocations_changed()  # what the plugins' on_change hook does in the agent
    await node.sync()
    assert env.cpus_of(path) == env.cpu.pools()["share"]
    assert len(env.cpus_of(path)) == 14 - 2


async def test_a_vanished_container_cgroup_is_pod_churn(env: Node) -> None:
    node = env.node()
    shared = pod_json(uid(10))
    path = env.kubelet_creates(shared, cid(10))
    env.driver.remove(path)
    env.source.put(started(shared, cid(10)))
    await node.sync()  # no exception: the container is gone
    assert node.pods[uid(10)].admitted


async def test_the_loop_wakes_on_a_change_and_stops_on_request(env: Node) -> None:
    node = env.node()
    stop = asyncio.Event()
    task = asyncio.create_task(node.run(stop))
    env.source.put(pod_json(uid(11)))
    for _ in range(200):
        if uid(11) in env.cpu.allocations():
            break
        await asyncio.sleep(0.01)
    assert uid(11) in env.cpu.allocations()
    stop.set()
    await asyncio.wait_for(task, timeout=5)


def test_running_containers_reads_only_running_ones_with_an_id() -> None:
    pod = {
        "status": {
            "initContainerStatuses": [
                {"name": "init", "containerID": "containerd://aa", "state": {"terminated": {}}}
            ],
            "containerStatuses": [
                {"name": "app", "containerID": f"containerd://{cid(1)}", "state": {"running": {}}},
                {"name": "side", "state": {"waiting": {}}},
                "garbage",
            ],
        }
    }
    assert running_containers(pod) == {"app": f"containerd://{cid(1)}"}
    assert running_containers({"status": "nonsense"}) == {}
    assert json.dumps(running_containers({})) == "{}"


async def test_the_besteffort_tier_is_the_reclaimed_cgroup_only_while_it_holds_only_reclaimed(
    env: Node, caplog: pytest.LogCaptureFixture
) -> None:
    node = env.node()
    env.driver.create("kubepods/besteffort")
    batch = pod_json(uid(20), level="reclaimed_cores", cpu="0", memory="0")
    batch["spec"]["containers"][0]["resources"] = {}
    batch["status"]["qosClass"] = "BestEffort"
    env.source.put(batch)
    await node.sync()
    assert node.reclaimed_cgroup() == "kubepods/besteffort"

    plain = pod_json(uid(21))  # shared_cores, no requests: BestEffort too
    plain["spec"]["containers"][0]["resources"] = {}
    plain["status"]["qosClass"] = "BestEffort"
    env.source.put(plain)
    await node.sync()
    assert node.reclaimed_cgroup() is None  # a quota there would throttle it with the batch
    assert "not reclaimed_cores" in caplog.text
