"""ORM mode on the real kernel: the fake API server reports a shared and a reclaimed
pod running on this node; the test plays the kubelet and the container runtime (it
makes the pods' cgroups in the kubelet's ``cgroupfs`` layout, below its own cgroup,
and starts a real process in each); the agent must write the real cgroup files and
the processes' ``oom_score_adj``."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.app import run
from agent.config import AgentConfig, Mode
from katalyst.cgroup import CgroupDriver
from katalyst.cpuset import CPUSet
from katalyst.topology import read_cpu_topology
from tests.support.apiserver import FakeApiServer
from tests.support.kernel import Processes, check_kernel_ready, kernel_driver

pytestmark = pytest.mark.kernel
MiB = 1024 * 1024
NODE = "kernel-node"


@pytest.fixture
def driver() -> Iterator[CgroupDriver]:
    check_kernel_ready(["cpu", "cpuset", "memory"])
    with kernel_driver() as d:
        yield d


def running_pod(
    name: str, uid: str, container_id: str, annotations: dict[str, str], resources: dict[str, Any]
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": uid, "annotations": annotations},
        "spec": {
            "nodeName": NODE,
            "containers": [{"name": "main", "image": "busybox", "resources": resources}],
        },
    }


def started(container_id: str, qos: str) -> Callable[[dict[str, Any]], None]:
    def mutate(pod: dict[str, Any]) -> None:
        pod["status"] = {
            "phase": "Running",
            "qosClass": qos,
            "containerStatuses": [
                {
                    "name": "main",
                    "containerID": f"containerd://{container_id}",
                    "state": {"running": {}},
                }
            ],
        }

    return mutate


def oom_score_adj(pid: int) -> int:
    return int(Path(f"/proc/{pid}/oom_score_adj").read_text())


async def test_orm_writes_the_kubelets_cgroups_and_processes(
    driver: CgroupDriver, short_dir: Path, tmp_path: Path
) -> None:
    online = read_cpu_topology("/sys").online
    reserved = CPUSet.of([min(online.ids)])
    share = online.difference(reserved)
    web_cgroup = "kubepods/burstable/pod11111111-1111-4111-8111-111111111111/" + "a" * 64
    batch_cgroup = "kubepods/besteffort/pod22222222-2222-4222-8222-222222222222/" + "b" * 64
    procs = Processes()
    async with FakeApiServer() as api:
        try:
            for cgroup in (web_cgroup, batch_cgroup):
                driver.create(cgroup)
            web = procs.start_in(driver, web_cgroup, ["sleep", "600"])
            batch = procs.start_in(driver, batch_cgroup, ["sleep", "600"])
            for name, uid, cid, level, resources, qos in (
                (
                    "web",
                    "11111111-1111-4111-8111-111111111111",
                    "a" * 64,
                    "shared_cores",
                    {"requests": {"cpu": "500m", "memory": "64Mi"}},
                    "Burstable",
                ),
                (
                    "batch",
                    "22222222-2222-4222-8222-222222222222",
                    "b" * 64,
                    "reclaimed_cores",
                    {
                        "requests": {
                            "resource.katalyst.kubewharf.io/reclaimed_millicpu": "1000",
                            "resource.katalyst.kubewharf.io/reclaimed_memory": "128Mi",
                        }
                    },
                    "BestEffort",
                ),
            ):
                api.create_pod(
                    copy.deepcopy(
                        running_pod(
                            name, uid, cid, {"katalyst.kubewharf.io/qos_level": level}, resources
                        )
                    )
                )
                api.update_pod("default", name, started(cid, qos))

            config = AgentConfig(
                node_name=NODE,
                mode=Mode.ORM,
                kubeconfig=api.kubeconfig(tmp_path / "kubeconfig"),
                state_dir=short_dir,
                qrm_socket_dir=short_dir / "plugins",
                reserved_cpus=reserved,
                metrics_addr="127.0.0.1:0",
            )
            stop = asyncio.Event()
            agent = asyncio.create_task(run(config, stop=stop, cluster_driver=driver))
            try:
                for _ in range(200):
                    if agent.done():
                        agent.result()
                    # Both pods are admitted and written one after the other: wait for
                    # the last of everything checked below.
                    if (
                        driver.memory_limit(batch_cgroup) == 128 * MiB
                        and oom_score_adj(batch.pid) > oom_score_adj(web.pid)
                        and driver.cpuset(web_cgroup)[0] == share
                        and driver.cpuset(batch_cgroup)[0] == share
                    ):
                        break
                    await asyncio.sleep(0.05)
                # What the kernel holds now, read back from its files.
                assert driver.cpuset(web_cgroup)[0] == share
                assert driver.cpuset(batch_cgroup)[0] == share
                assert driver.memory_limit(batch_cgroup) == 128 * MiB
                assert driver.cpu_shares(batch_cgroup) == 2
                assert oom_score_adj(batch.pid) > oom_score_adj(web.pid)
                assert driver.procs(web_cgroup) == [web.pid]  # the agent moved nothing
            finally:
                stop.set()
                await asyncio.wait_for(agent, timeout=10)
            assert web.poll() is None, "the agent must never stop the kubelet's containers"
        finally:
            procs.kill_all()
