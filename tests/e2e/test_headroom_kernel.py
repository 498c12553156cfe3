"""The sysadvisor on the real kernel: the standalone node runs a shared service whose
load the test switches on and off and a CPU-hungry reclaimed job; the reclaimed
pods' CFS quota, read back from the kernel's file, shrinks when the service gets
busy and grows back when it goes idle, and the job's measured CPU follows."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import aiohttp
import pytest

from agent.app import run
from agent.config import AgentConfig
from agent.standalone.node import RECLAIMED_ROOT
from agent.sysadvisor import AdvisorConfig, LimitsConfig
from katalyst import cli
from katalyst.cgroup import HostCgroupFS, open_driver
from katalyst.cpuset import CPUSet
from tests.support.kernel import check_kernel_ready
from tests.support.wait import eventually

pytestmark = pytest.mark.kernel

SERVICE = """\
apiVersion: v1
kind: Pod
metadata:
  name: service
  annotations: {{katalyst.kubewharf.io/qos_level: shared_cores}}
spec:
  containers:
    - name: server
      # Busy while the switch file exists, nearly idle otherwise.
      command: ["sh", "-c", "while :; do if [ -e {switch} ]; then :; else sleep 0.1; fi; done"]
      resources: {{requests: {{cpu: 500m, memory: 32Mi}}}}
"""

BATCH = """\
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
          resource.katalyst.kubewharf.io/reclaimed_millicpu: "500"
          resource.katalyst.kubewharf.io/reclaimed_memory: 64Mi
"""


async def test_reclaimed_cpu_shrinks_under_service_load_and_grows_back(
    short_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    check_kernel_ready(["cpu", "cpuset", "memory"])
    folder = tmp_path / "pods"
    folder.mkdir()
    switch = tmp_path / "busy"
    (folder / "service.yaml").write_text(SERVICE.format(switch=switch))
    (folder / "batch.yaml").write_text(BATCH)
    root = f"kqos-headroom-{id(tmp_path)}"
    advisor = AdvisorConfig(
        period_s=0.5,
        limits=dataclasses.replace(LimitsConfig(), safety_cooldown_periods=4),
    )
    config = AgentConfig(
        standalone=folder,
        state_dir=short_dir,
        cgroup_root=root,
        reserved_cpus=CPUSet.of([0]),
        metrics_addr="127.0.0.1:0",
        sysadvisor=advisor,
    )
    stop, ready = asyncio.Event(), asyncio.Event()
    http: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run(config, stop=stop, node_ready=ready, http_ready=http))
    driver = open_driver(HostCgroupFS(), base=root, below_own_cgroup=True)
    quotas: list[int | None] = []

    def quota() -> int | None:
        if not driver.exists(RECLAIMED_ROOT):
            return None
        value = driver.cpu_quota(RECLAIMED_ROOT)[0]
        quotas.append(value)
        return value

    async def batch_cores(seconds: float = 1.0) -> float:
        """CPU the reclaimed pods used over ``seconds``, from the kernel's cpuacct."""
        before = driver.cpu_usage_ns(RECLAIMED_ROOT)
        await asyncio.sleep(seconds)
        return (driver.cpu_usage_ns(RECLAIMED_ROOT) - before) / 1e9 / seconds

    try:
        await asyncio.wait(
            {asyncio.ensure_future(ready.wait()), task}, return_when=asyncio.FIRST_COMPLETED
        )
        if task.done():
            task.result()
        # Idle service: the reclaimed job is lent most of the non-reserved CPUs.
        await eventually(
            lambda: (quota() or 0) >= 50_000, "the lend to grow while the service idles", timeout=30
        )
        idle_quota = quota()
        assert await batch_cores() > 0.25  # the job runs on what the service leaves

        switch.touch()  # the service gets busy
        await eventually(
            lambda: (q := quota()) is not None and q <= 10_000,
            "the lend to drop under load",
            timeout=30,
        )
        assert await batch_cores() < 0.1  # throttled to the floor's 1 % quota

        switch.unlink()  # idle again: the lend comes back after the cool-down
        await eventually(lambda: (quota() or 0) >= 50_000, "the lend to grow back", timeout=30)
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://{http.result()}/status") as response,
        ):
            status = json.loads(await response.text())
        assert status["sysadvisor"]["mode"] == "normal"
        assert status["sysadvisor"]["reclaimed_cgroup"] == RECLAIMED_ROOT
        # The operator's view of the same, from the CLI (blocking: off the loop).
        capsys.readouterr()
        assert await asyncio.to_thread(cli.main, ["status", "--addr", http.result()]) == 0
        table = capsys.readouterr().out
        assert "sysadvisor: normal mode" in table
        assert "cpu_usage_ratio" in table
        assert f"on {RECLAIMED_ROOT}" in table
        assert idle_quota is not None
    finally:
        switch.unlink(missing_ok=True)
        stop.set()
        await asyncio.wait_for(task, timeout=20)
    assert not driver.exists(""), "the node removed its cgroups on the way out"
    # The quota really moved both ways, as the kernel reported it.
    assert min(q for q in quotas if q is not None) <= 10_000
    assert max(q for q in quotas if q is not None) >= 50_000
