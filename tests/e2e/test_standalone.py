"""The standalone node on the real kernel: one shared and one reclaimed pod, for a
few seconds, checked in the real cgroup files and processes."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import aiohttp
import psutil
import pytest

from agent.app import run
from agent.config import AgentConfig
from agent.standalone.node import RECLAIMED_ROOT
from katalyst.cgroup import HostCgroupFS, open_driver
from katalyst.cpuset import CPUSet
from tests.support.kernel import check_kernel_ready
from tests.support.wait import eventually

pytestmark = pytest.mark.kernel
MiB = 1024 * 1024

SHARED = """\
apiVersion: v1
kind: Pod
metadata:
  name: web
  annotations: {katalyst.kubewharf.io/qos_level: shared_cores}
spec:
  containers:
    - name: server
      command: ["sleep", "600"]
      resources: {requests: {cpu: 500m, memory: 64Mi}}
"""

RECLAIMED = """\
apiVersion: v1
kind: Pod
metadata:
  name: batch
  annotations: {katalyst.kubewharf.io/qos_level: reclaimed_cores}
spec:
  containers:
    - name: burn
      command: ["sh", "-c", "while :; do :; done"]
      resources:
        requests:
          resource.katalyst.kubewharf.io/reclaimed_millicpu: "1000"
          resource.katalyst.kubewharf.io/reclaimed_memory: 128Mi
"""


async def test_a_shared_and_a_reclaimed_pod_run_in_their_cgroups(
    tmp_path: Path, short_dir: Path
) -> None:
    check_kernel_ready(["cpu", "cpuacct", "cpuset", "memory"])
    folder = tmp_path / "pods"
    folder.mkdir()
    (folder / "web.yaml").write_text(SHARED)
    (folder / "batch.yaml").write_text(RECLAIMED)
    root = f"kqos-e2e-{os.getpid()}"
    config = AgentConfig(
        standalone=folder,
        state_dir=short_dir,
        metrics_addr="127.0.0.1:0",
        cgroup_root=root,
        reserved_cpus=CPUSet.of([0]),
    )
    stop, ready = asyncio.Event(), asyncio.Event()
    http: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run(config, stop=stop, node_ready=ready, http_ready=http))
    driver = open_driver(HostCgroupFS(), base=root, below_own_cgroup=True)
    try:
        readiness = asyncio.ensure_future(ready.wait())
        await asyncio.wait({readiness, task}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # the agent stopped early: raise what stopped it
        assert ready.is_set(), "the standalone node did not start"

        def containers() -> dict[str, str]:
            """Container name -> cgroup, for every pod (reclaimed ones below ``reclaimed``)."""
            pods = [p for p in driver.children("") if p != RECLAIMED_ROOT]
            if driver.exists(RECLAIMED_ROOT):
                pods += [f"{RECLAIMED_ROOT}/{p}" for p in driver.children(RECLAIMED_ROOT)]
            return {c: f"{pod}/{c}" for pod in pods for c in driver.children(pod)}

        def running() -> bool:
            found = containers()
            return len(found) == 2 and all(driver.procs(cg) for cg in found.values())

        await eventually(running)
        by_container = containers()
        assert set(by_container) == {"server", "burn"}
        assert by_container["burn"].startswith(f"{RECLAIMED_ROOT}/pod")
        online = driver.cpuset("")[0]
        share = online.difference(CPUSet.of([0]))
        burn, server = by_container["burn"], by_container["server"]
        # The real kernel files: cpusets from the CPU plugin, the reclaimed pod's
        # memory limit and weight, the shared pod's protection.
        assert driver.cpuset(server)[0] == share
        assert driver.cpuset(burn)[0] == share
        assert driver.memory_limit(burn) == 128 * MiB
        assert driver.cpu_shares(burn) == 2
        # The reclaimed pods' common parent runs SCHED_IDLE (a waking service task
        # preempts them at once); weights compete per level below it: the pod's own
        # cgroup at the minimum, the shared pod's at 1024 per requested core
        # (500m -> 512).
        idle = driver.fs.read_text(driver.path("cpu", RECLAIMED_ROOT, "cpu.idle"))
        assert idle.strip() == "1"
        assert driver.cpu_shares(burn.rsplit("/", 1)[0]) == 2
        assert driver.cpu_shares(server.split("/")[0]) == 512
        soft = driver.fs.read_text(driver.path("memory", server, "memory.soft_limit_in_bytes"))
        assert int(soft) == 64 * MiB
        # The real processes: inside their cgroups, with the reclaimed one's OOM score.
        (burn_pid,) = driver.procs(burn)
        (server_pid,) = driver.procs(server)
        # The shell that waited to be attached has exec'ed the container's command.
        await eventually(lambda: psutil.Process(server_pid).cmdline() == ["sleep", "600"])
        assert psutil.Process(server_pid).cmdline() == ["sleep", "600"]
        assert psutil.Process(burn_pid).is_running()
        with open(f"/proc/{burn_pid}/oom_score_adj", encoding="ascii") as f:
            assert f.read().strip() == "333"
        # Per-container series on /metrics, from the metrics loop's snapshot: a
        # container shows up within one period (1 s) of starting.
        burn_cpu = None
        for _ in range(50):
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://{http.result()}/metrics") as response,
            ):
                metrics = await response.text()
            burn_cpu = next(
                (
                    line
                    for line in metrics.splitlines()
                    if line.startswith("katalyst_container_cpu_usage_seconds_total{")
                    and 'container="burn"' in line
                ),
                None,
            )
            if burn_cpu is not None and float(burn_cpu.rsplit(" ", 1)[1]) > 0:
                break
            await asyncio.sleep(0.1)
        assert burn_cpu is not None, "no series for the burn container after 5 s"
        assert float(burn_cpu.rsplit(" ", 1)[1]) > 0
        assert "katalyst_metrics_snapshot_age_seconds" in metrics
        assert "katalyst_metrics_pass_duration_seconds" in metrics
        assert 'katalyst_cgroup_writes_total{outcome="changed",setting="cpuset"}' in metrics
        assert 'katalyst_container_memory_usage_bytes{container="server"' in metrics
        # Removing a manifest stops that pod and removes its cgroup.
        (folder / "batch.yaml").unlink()
        await eventually(
            lambda: not psutil.pid_exists(burn_pid) or psutil.Process(burn_pid).status() == "zombie"
        )
        await eventually(lambda: set(containers()) == {"server"})
        assert driver.children(RECLAIMED_ROOT) == []
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=15)
    assert not driver.exists(""), "the node removed its cgroup root on the way out"
    assert not psutil.pid_exists(server_pid) or psutil.Process(server_pid).status() == "zombie"
    assert (short_dir / "checkpoints" / "qrm_cpu_plugin").exists()
