"""The agent in QRM mode with the real CPU and memory policies, driven through the
kubelet emulator over its sockets, on a fake two-NUMA machine (sysfs tree)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import grpc
import pytest

from agent.app import run
from agent.config import AgentConfig
from katalyst.api.resourceplugin.v1alpha1 import api_pb2 as rp_pb2
from katalyst.cpuset import CPUSet
from tests.support.kubelet import Container, KubeletEmulator, PluginCallError, Pod
from tests.unit.qrm.cpu.machines import write_numa_machine

GiB = 1024**3
LEVEL = "katalyst.kubewharf.io/qos_level"
MEMORY = "katalyst.kubewharf.io/memory_enhancement"
BOUND = json.dumps({"numa_binding": "true"})


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    """Two NUMA nodes x 4 cores x 2 threads (CPUs 0-7 and 8-15), 8 GiB each."""
    root = write_numa_machine(tmp_path / "sys", nodes=2, cores_per_node=4, threads=2)
    for node in (0, 1):
        meminfo = root / f"devices/system/node/node{node}/meminfo"
        meminfo.write_text(f"Node {node} MemTotal:       {8 * GiB // 1024} kB\n")
    return root


@pytest.fixture
def state_dir(short_dir: Path) -> Path:
    """The agent's state directory; the plugin sockets live below it."""
    return short_dir


@asynccontextmanager
async def agent(sysfs: Path, state_dir: Path) -> AsyncIterator[tuple[KubeletEmulator, str]]:
    """A running agent, a kubelet that has registered its plugins, and the agent's
    HTTP address."""
    config = AgentConfig(
        state_dir=state_dir,
        qrm_socket_dir=state_dir / "plugins",
        reserved_cpus=CPUSet.parse("0-1"),
        metrics_addr="127.0.0.1:0",
    )
    stop, ready = asyncio.Event(), asyncio.Event()
    http: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run(config, stop=stop, sysfs=str(sysfs), node_ready=ready, http_ready=http)
    )
    try:
        waiter = asyncio.ensure_future(ready.wait())
        await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()
        async with KubeletEmulator(numa_nodes=(0, 1)) as kubelet:
            await kubelet.discover(state_dir / "plugins")
            yield kubelet, http.result()
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)


def pod(uid: str, level: str, cpu: float, *, memory: str | None = None, mem: int = GiB) -> Pod:
    annotations = {LEVEL: level}
    if memory is not None:
        annotations[MEMORY] = memory
    return Pod(
        uid=uid,
        name=uid,
        containers=(Container(name="app", requests={"cpu": cpu, "memory": float(mem)}),),
        annotations=annotations,
    )


async def _cpuset(kubelet: KubeletEmulator, uid: str) -> CPUSet:
    reconciled = await kubelet.reconcile()
    return CPUSet.parse(reconciled["cpu"][uid]["app"]["cpu"]["allocation_result"])


async def test_every_level_and_pool_recomputation(sysfs: Path, state_dir: Path) -> None:
    async with agent(sysfs, state_dir) as (kubelet, _addr):
        shared = await kubelet.admit(pod("shared-1", "shared_cores", 1))
        assert shared["app"].allocations["cpu"]["cpu"]["allocation_result"] == "2-15"
        assert shared["app"].allocations["memory"]["memory"]["allocation_result"] == "0-1"
        system = await kubelet.admit(pod("system-1", "system_cores", 0.5))
        assert system["app"].allocations["cpu"]["cpu"]["allocation_result"] == "0-1"
        reclaimed = await kubelet.admit(pod("batch-1", "reclaimed_cores", 0))
        assert reclaimed["app"].allocations["cpu"]["cpu"]["allocation_result"] == "2-15"
        # A NUMA-bound dedicated pod: whole cores on one node, memory there too.
        dedicated = await kubelet.admit(pod("ded-1", "dedicated_cores", 4, memory=BOUND))
        cpus = CPUSet.parse(dedicated["app"].allocations["cpu"]["cpu"]["allocation_result"])
        mems = dedicated["app"].allocations["memory"]["memory"]["allocation_result"]
        assert len(cpus) == 4
        node = CPUSet.parse("0-7") if cpus.issubset(CPUSet.parse("0-7")) else CPUSet.parse("8-15")
        assert cpus.issubset(node)
        assert mems == ("0" if node == CPUSet.parse("0-7") else "1")
        # The share and reclaim pools gave those CPUs up: reconcile says so.
        expected_share = CPUSet.parse("2-15").difference(cpus)
        assert await _cpuset(kubelet, "shared-1") == expected_share
        assert await _cpuset(kubelet, "batch-1") == expected_share
        # Removing the dedicated pod gives them back.
        await kubelet.remove("ded-1")
        assert await _cpuset(kubelet, "shared-1") == CPUSet.parse("2-15")


async def test_topology_aware_views_per_numa_node(sysfs: Path, state_dir: Path) -> None:
    async with agent(sysfs, state_dir) as (kubelet, _addr):
        await kubelet.admit(pod("ded-1", "dedicated_cores", 4, memory=BOUND, mem=2 * GiB))
        cpu = kubelet.plugin("cpu").stub
        view = await cpu.GetTopologyAwareResources(
            rp_pb2.GetTopologyAwareResourcesRequest(pod_uid="ded-1", container_name="app"),
            timeout=10,
        )
        held = view.container_topology_aware_resources.allocated_resources["cpu"]
        assert held.aggregated_quantity == 4.0
        per_node = [(q.node, q.resource_value) for q in held.topology_aware_quantity_list]
        assert len(per_node) == 1 and per_node[0][1] == 4.0  # NUMA-bound: one node

        allocatable = await cpu.GetTopologyAwareAllocatableResources(
            rp_pb2.GetTopologyAwareAllocatableResourcesRequest(), timeout=10
        )
        cpus = allocatable.allocatable_resources["cpu"]
        assert cpus.aggregated_capacity_quantity == 16.0
        assert cpus.aggregated_allocatable_quantity == 14.0  # reserved 0-1 left out
        assert [q.resource_value for q in cpus.topology_aware_allocatable_quantity_list] == [
            6.0,
            8.0,
        ]
        memory = await kubelet.plugin("memory").stub.GetTopologyAwareAllocatableResources(
            rp_pb2.GetTopologyAwareAllocatableResourcesRequest(), timeout=10
        )
        assert memory.allocatable_resources["memory"].aggregated_capacity_quantity == 16 * GiB
        bound = await kubelet.plugin("memory").stub.GetTopologyAwareResources(
            rp_pb2.GetTopologyAwareResourcesRequest(pod_uid="ded-1", container_name="app"),
            timeout=10,
        )
        mem = bound.container_topology_aware_resources.allocated_resources["memory"]
        assert [q.node for q in mem.topology_aware_quantity_list] == [per_node[0][0]]


async def test_refusal_and_bad_annotations_keep_the_agent_serving(
    sysfs: Path, state_dir: Path
) -> None:
    async with agent(sysfs, state_dir) as (kubelet, _addr):
        with pytest.raises(PluginCallError) as refused:
            await kubelet.admit(pod("huge", "dedicated_cores", 15))
        assert refused.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "asked" in refused.value.details
        assert "free" in refused.value.details
        await kubelet.remove("huge")
        with pytest.raises(PluginCallError) as bad:
            await kubelet.admit(pod("bad", "fast_cores", 1))
        assert bad.value.code is grpc.StatusCode.INVALID_ARGUMENT
        assert "katalyst.kubewharf.io/qos_level" in bad.value.details
        ok = await kubelet.admit(pod("fine", "dedicated_cores", 2))
        assert len(CPUSet.parse(ok["app"].allocations["cpu"]["cpu"]["allocation_result"])) == 2


async def test_restart_restores_the_allocations_identically(sysfs: Path, state_dir: Path) -> None:
    async with agent(sysfs, state_dir) as (kubelet, _addr):
        await kubelet.admit(pod("ded-1", "dedicated_cores", 2, memory=BOUND))
        await kubelet.admit(pod("shared-1", "shared_cores", 1))
        before = await kubelet.reconcile()
    async with agent(sysfs, state_dir) as (kubelet, _addr):
        assert await kubelet.reconcile() == before


async def test_a_corrupt_checkpoint_is_set_aside_and_the_agent_starts_fresh(
    sysfs: Path, state_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with agent(sysfs, state_dir) as (kubelet, _addr):
        await kubelet.admit(pod("ded-1", "dedicated_cores", 2))
    checkpoint = state_dir / "checkpoints" / "qrm_cpu_plugin"
    checkpoint.write_bytes(checkpoint.read_bytes()[:40])  # truncated by a crash of the disk
    async with agent(sysfs, state_dir) as (kubelet, _addr):
        reconciled = await kubelet.reconcile()
        assert reconciled["cpu"] == {}
        assert "ded-1" in reconciled["memory"]
    assert any(p.name.startswith("qrm_cpu_plugin.corrupt-") for p in checkpoint.parent.iterdir())
    assert "corrupt" in caplog.text


async def test_metrics_and_health_over_http(sysfs: Path, state_dir: Path) -> None:
    async with agent(sysfs, state_dir) as (kubelet, addr):
        await kubelet.admit(pod("ded-1", "dedicated_cores", 2))
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://{addr}/healthz") as health:
                assert health.status == 200
                assert await health.text() == "ok\n"
            async with session.get(f"http://{addr}/metrics") as metrics:
                text = await metrics.text()
        assert 'katalyst_cpu_pool_cpus{pool="dedicated/ded-1"} 2.0' in text
        assert 'katalyst_cpu_pool_cpus{pool="share"} 12.0' in text
        assert 'katalyst_qrm_plugin_registered{plugin="qrm_cpu_plugin"} 1.0' in text
        assert 'katalyst_qrm_pods{plugin="qrm_memory_plugin"} 1.0' in text
