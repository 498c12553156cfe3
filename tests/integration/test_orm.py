"""The agent in ORM mode (vanilla kubelet), end to end: the fake API server speaks the
Kubernetes HTTP API to the official client, the agent lists and watches its node's
pods, admits them through its own plugin sockets, and writes the kubelet's container
cgroups (a file-faithful fake of the cgroup tree, on a fake two-NUMA machine)."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent.app import main, run
from agent.config import AgentConfig, Mode
from katalyst.cgroup import CgroupDriver, open_driver
from katalyst.cgroup.fake import FakeCgroupFS
from katalyst.cpuset import CPUSet
from tests.support.apiserver import FakeApiServer, node_manifest
from tests.support.kubelet import Container, KubeletEmulator, Pod
from tests.support.wait import eventually
from tests.unit.qrm.cpu.machines import write_numa_machine

GiB = 1024**3
NODE = "node-a"
LEVEL = "katalyst.kubewharf.io/qos_level"


def pod(name: str, uid: str, *, level: str, cpu: str, guaranteed: bool = False) -> dict[str, Any]:
    resources: dict[str, Any] = {"requests": {"cpu": cpu, "memory": "1Gi"}}
    if guaranteed:
        resources["limits"] = dict(resources["requests"])
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": uid,
            "annotations": {LEVEL: level},
        },
        "spec": {
            "nodeName": NODE,
            "containers": [{"name": "app", "image": "app:1", "resources": resources}],
        },
    }


def kubelet_runs(container_id: str, qos: str) -> Callable[[dict[str, Any]], None]:
    """What the kubelet reports once the container started."""

    def mutate(p: dict[str, Any]) -> None:
        p["status"] = {
            "phase": "Running",
            "qosClass": qos,
            "containerStatuses": [
                {
                    "name": "app",
                    "containerID": f"containerd://{container_id}",
                    "state": {"running": {"startedAt": "2026-11-29T00:00:00Z"}},
                }
            ],
        }

    return mutate


class Cluster:
    def __init__(self, api: FakeApiServer, driver: CgroupDriver) -> None:
        self.api = api
        self.driver = driver

    def start_pod(self, manifest: Mapping[str, Any], container_id: str, qos: str) -> str:
        """Create the pod, make its cgroup as the kubelet does, report it running;
        return the container's cgroup."""
        self.api.create_pod(copy.deepcopy(dict(manifest)))
        tier = "" if qos == "Guaranteed" else f"/{qos.lower()}"
        cgroup = f"kubepods{tier}/pod{manifest['metadata']['uid']}/{container_id}"
        self.driver.create(cgroup)
        self.api.update_pod(
            "default", manifest["metadata"]["name"], kubelet_runs(container_id, qos)
        )
        return cgroup

    def cpus(self, cgroup: str) -> CPUSet:
        return self.driver.cpuset(cgroup)[0]


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    root = write_numa_machine(tmp_path / "sys", nodes=2, cores_per_node=4, threads=2)
    for node in (0, 1):
        meminfo = root / f"devices/system/node/node{node}/meminfo"
        meminfo.write_text(f"Node {node} MemTotal:       {8 * GiB // 1024} kB\n")
    return root


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    driver = open_driver(FakeCgroupFS.hybrid(cpus="0-15", mems="0-1"))
    driver.create("kubepods")
    async with FakeApiServer() as api:
        api.create_node(node_manifest(NODE))  # the kubelet registered it
        yield Cluster(api, driver)


@asynccontextmanager
async def orm_agent(
    cluster: Cluster, sysfs: Path, state_dir: Path, tmp_path: Path, *, mode: Mode = Mode.ORM
) -> AsyncIterator[str]:
    """A running agent in ORM mode (or QRM with an API server); yields its HTTP address."""
    config = AgentConfig(
        node_name=NODE,
        mode=mode,
        kubeconfig=cluster.api.kubeconfig(tmp_path / "kubeconfig"),
        state_dir=state_dir,
        qrm_socket_dir=state_dir / "plugins",
        reserved_cpus=CPUSet.parse("0-1"),
        metrics_addr="127.0.0.1:0",
    )
    stop, ready = asyncio.Event(), asyncio.Event()
    http: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run(
            config,
            stop=stop,
            sysfs=str(sysfs),
            cluster_driver=cluster.driver,
            node_ready=ready,
            http_ready=http,
        )
    )
    try:
        waiter = asyncio.ensure_future(ready.wait())
        await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()
        yield http.result()
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)


async def metrics(address: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"http://{address}/metrics") as r:
        return await r.text()


async def test_orm_places_pods_from_the_api_server_and_keeps_them_across_a_restart(
    cluster: Cluster, sysfs: Path, short_dir: Path, tmp_path: Path
) -> None:
    shared_uid = "11111111-1111-4111-8111-111111111111"
    dedicated_uid = "22222222-2222-4222-8222-222222222222"
    async with orm_agent(cluster, sysfs, short_dir, tmp_path) as address:
        shared = cluster.start_pod(
            pod("web", shared_uid, level="shared_cores", cpu="2"), "a" * 64, "Burstable"
        )
        await eventually(lambda: cluster.cpus(shared) == CPUSet.parse("2-15"), "the share pool")

        dedicated = cluster.start_pod(
            pod("db", dedicated_uid, level="dedicated_cores", cpu="4", guaranteed=True),
            "b" * 64,
            "Guaranteed",
        )
        await eventually(lambda: len(cluster.cpus(dedicated)) == 4, "exclusive CPUs")
        exclusive = cluster.cpus(dedicated)
        await eventually(
            lambda: cluster.cpus(shared) == CPUSet.parse("2-15").difference(exclusive),
            "the share pool to shrink",
        )
        # The reporter publishes what the sysadvisor lends, on the Node and the CNR.
        reclaimed = "resource.katalyst.kubewharf.io/reclaimed_millicpu"

        def reported() -> bool:
            node = cluster.api.get_node(NODE) or {}
            cnr = cluster.api.get_cnr(NODE) or {}
            resources = cnr.get("status", {}).get("resources", {})
            return reclaimed in node.get("status", {}).get(
                "allocatable", {}
            ) and reclaimed in resources.get("allocatable", {})

        # The Node is written first, then the CNR (created, then its status patched).
        await eventually(reported, "the reclaimed resources on the Node and the CNR")
        cnr = cluster.api.get_cnr(NODE)
        assert cnr is not None
        assert {z["type"] for z in cnr["status"]["topologyZone"]} == {"Socket"}
        text = await metrics(address)
        assert "katalyst_apiserver_synced 1.0" in text
        assert 'katalyst_reporter_writes_total{outcome="written",target="node"}' in text
        assert 'katalyst_node_pods{state="enforced"} 2.0' in text
        # Only pods bound to this node were asked for.
        assert all(
            r.query.get("fieldSelector") == f"spec.nodeName={NODE}"
            for r in cluster.api.requests
            if r.path == "/api/v1/pods"
        )

    # The agent restarts; the kubelet and the pods carried on. The checkpoint gives
    # the dedicated pod the same CPUs.
    cluster.driver.set_cpuset(dedicated, cpus=CPUSet.parse("0-15"))  # drifted meanwhile
    async with orm_agent(cluster, sysfs, short_dir, tmp_path):
        await eventually(lambda: cluster.cpus(dedicated) == exclusive, "the same exclusive CPUs")

        cluster.api.delete_pod("default", "db")
        await eventually(
            lambda: cluster.cpus(shared) == CPUSet.parse("2-15"), "the share pool to grow back"
        )


async def test_a_pod_deleted_while_the_agent_was_down_is_released_at_start(
    cluster: Cluster, sysfs: Path, short_dir: Path, tmp_path: Path
) -> None:
    uid = "33333333-3333-4333-8333-333333333333"
    async with orm_agent(cluster, sysfs, short_dir, tmp_path):
        cgroup = cluster.start_pod(
            pod("db", uid, level="dedicated_cores", cpu="6", guaranteed=True),
            "c" * 64,
            "Guaranteed",
        )
        await eventually(lambda: len(cluster.cpus(cgroup)) == 6, "exclusive CPUs")
    cluster.api.delete_pod("default", "db")
    async with orm_agent(cluster, sysfs, short_dir, tmp_path):
        web = cluster.start_pod(
            pod("web", "44444444-4444-4444-8444-444444444444", level="shared_cores", cpu="1"),
            "d" * 64,
            "Burstable",
        )
        # Had the deleted pod's six CPUs stayed held, the share pool would lack them.
        await eventually(lambda: cluster.cpus(web) == CPUSet.parse("2-15"), "the whole share pool")


def test_orm_without_an_api_server_is_a_start_up_error(
    short_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = short_dir / "no-kubeconfig"
    status = main(
        [
            "--mode",
            "orm",
            "--kubeconfig",
            str(missing),
            "--state-dir",
            str(short_dir / "state"),
            "--qrm-socket-dir",
            str(short_dir / "plugins"),
            "--metrics-addr",
            "127.0.0.1:0",
        ]
    )
    assert status == 2
    err = capsys.readouterr().err
    assert "mode orm needs the API server" in err
    assert str(missing) in err


async def test_qrm_mode_rebuilds_a_corrupt_checkpoint_from_the_live_pods(
    cluster: Cluster,
    sysfs: Path,
    short_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    uid = "55555555-5555-4555-8555-555555555555"
    manifest = pod("db", uid, level="dedicated_cores", cpu="4", guaranteed=True)
    kubelet_pod = Pod(
        uid=uid,
        name="db",
        containers=(Container(name="app", requests={"cpu": 4.0, "memory": float(GiB)}),),
        annotations={LEVEL: "dedicated_cores"},
        native_qos_class="Guaranteed",
    )
    async with (
        orm_agent(cluster, sysfs, short_dir, tmp_path, mode=Mode.QRM),
        KubeletEmulator(numa_nodes=(0, 1)) as kubelet,
    ):
        await kubelet.discover(short_dir / "plugins")
        await kubelet.admit(kubelet_pod)  # the patched kubelet admits
        cgroup = cluster.start_pod(manifest, "e" * 64, "Guaranteed")
        # The agent carries the allocation into the kubelet's cgroup.
        await eventually(lambda: len(cluster.cpus(cgroup)) == 4, "exclusive CPUs")

    checkpoint = short_dir / "checkpoints" / "qrm_cpu_plugin"
    checkpoint.write_bytes(checkpoint.read_bytes()[:40])  # torn by a crash of the disk
    async with (
        orm_agent(cluster, sysfs, short_dir, tmp_path, mode=Mode.QRM),
        KubeletEmulator(numa_nodes=(0, 1)) as kubelet,
    ):
        await kubelet.discover(short_dir / "plugins")

        async def held() -> bool:
            return uid in (await kubelet.reconcile())["cpu"]

        for _ in range(250):
            if await held():
                break
            await asyncio.sleep(0.02)
        reconciled = await kubelet.reconcile()
        assert uid in reconciled["cpu"]
        cpus = CPUSet.parse(reconciled["cpu"][uid]["app"]["cpu"]["allocation_result"])
        assert len(cpus) == 4
        await eventually(lambda: cluster.cpus(cgroup) == cpus, "the rebuilt CPUs in the cgroup")
    assert "rebuilding it from the live pod" in caplog.text
