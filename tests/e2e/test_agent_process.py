"""The real ``katalyst-agent`` process: started as a user would, stopped with SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.standalone.runtime import kill_cgroup_tasks
from katalyst.cgroup import HostCgroupFS, open_driver
from tests.support.kernel import check_kernel_ready

pytestmark = pytest.mark.kernel

POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: sleeper
  annotations: {katalyst.kubewharf.io/qos_level: shared_cores}
spec:
  containers:
    - name: main
      command: ["sleep", "600"]
      resources: {requests: {cpu: 100m, memory: 16Mi}}
"""


def test_sigterm_closes_sockets_stops_pods_flushes_checkpoints_and_exits_0(
    short_dir: Path,
) -> None:
    check_kernel_ready(["cpu", "cpuset", "memory"])
    folder, state = short_dir / "pods", short_dir / "state"
    folder.mkdir()
    (folder / "sleeper.yaml").write_text(POD)
    root = f"kqos-proc-{os.getpid()}"
    agent = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("katalyst-agent")),
            "--standalone",
            str(folder),
            "--state-dir",
            str(state),
            "--cgroup-root",
            root,
            "--metrics-addr",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ],
        stderr=subprocess.PIPE,
    )
    driver = open_driver(HostCgroupFS(), base=root, below_own_cgroup=True)
    try:
        pod_pid = None
        for _ in range(300):  # until the pod's process runs in its cgroup
            pods = driver.children("") if driver.exists("") else []
            if pods and driver.exists(f"{pods[0]}/main") and driver.procs(f"{pods[0]}/main"):
                pod_pid = driver.procs(f"{pods[0]}/main")[0]
                break
            assert agent.poll() is None, "the agent exited early"
            time.sleep(0.05)
        assert pod_pid is not None, "the pod never started"
        sockets = sorted(p.name for p in (state / "plugins").iterdir())
        assert sockets == [
            "qrm_cpu_plugin.sock",
            "qrm_gpu_plugin.sock",
            "qrm_memory_plugin.sock",
            "qrm_network_plugin.sock",
        ]
        agent.send_signal(signal.SIGTERM)
        status = agent.wait(timeout=15)
    finally:
        if agent.poll() is None:
            # A failed assertion: stop the agent the way that stops its pods first.
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(timeout=15)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()
        leftover = driver.exists("")
        if leftover:  # what the agent should have removed; removed here so as not to leak
            for pod in driver.children(""):
                for container in driver.children(pod):
                    kill_cgroup_tasks(driver, f"{pod}/{container}")
            driver.remove("")
    stderr = agent.stderr.read().decode() if agent.stderr else ""
    assert status == 0, stderr
    assert list((state / "plugins").iterdir()) == [], "the sockets are closed and removed"
    assert (state / "checkpoints" / "qrm_cpu_plugin").exists()
    assert not leftover, "the pods' cgroups are gone"
    assert '"msg": "stopped; checkpoints flushed"' in stderr
