"""The standalone runtime's processes on the real kernel."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from agent.standalone.runtime import (
    ContainerLogs,
    kill_cgroup_tasks,
    spawn_in_cgroup,
    stop_process,
)
from katalyst.cgroup import CgroupNotFound
from tests.support.kernel import check_kernel_ready, kernel_driver

pytestmark = pytest.mark.kernel


def test_a_process_runs_inside_its_cgroup_and_stops_by_pid(tmp_path: Path) -> None:
    check_kernel_ready(["cpu", "cpuset", "memory"])
    logs = ContainerLogs(tmp_path / "logs")
    with kernel_driver() as driver:
        driver.create("pod/app")
        with logs.open(namespace="default", pod="web", container="app") as out:
            proc = spawn_in_cgroup(
                driver,
                "pod/app",
                ["sh", "-c", 'echo "started $GREETING"; exec sleep 600'],
                env={"GREETING": "hi"},
                stdout=out,
            )
        try:
            with open(f"/proc/{proc.pid}/cgroup", encoding="ascii") as f:
                own = f.read()
            assert "/pod/app" in own
            assert driver.procs("pod/app") == [proc.pid]
            log = tmp_path / "logs" / "default_web_app.log"
            for _ in range(200):  # until the shell has written its line
                if log.read_text():
                    break
                time.sleep(0.01)
        finally:
            status = stop_process(proc, grace_s=2.0)
        assert status == -signal.SIGTERM
        assert (tmp_path / "logs" / "default_web_app.log").read_text().strip() == "started hi"


def test_attaching_to_a_missing_cgroup_leaves_no_process_behind() -> None:
    check_kernel_ready(["cpu", "memory"])
    with kernel_driver() as driver, pytest.raises(CgroupNotFound):
        spawn_in_cgroup(driver, "missing", ["sleep", "600"], stdout=subprocess.DEVNULL)


def test_children_that_outlive_the_main_process_are_killed_by_pid() -> None:
    check_kernel_ready(["cpu", "memory"])
    with kernel_driver() as driver:
        driver.create("pod/app")
        proc = spawn_in_cgroup(driver, "pod/app", ["sh", "-c", "sleep 600 & exit 0"])
        assert proc.wait(timeout=10) == 0
        for _ in range(200):  # the orphaned sleep is still in the cgroup
            if driver.procs("pod/app"):
                break
            time.sleep(0.01)
        (orphan,) = driver.procs("pod/app")
        assert kill_cgroup_tasks(driver, "pod/app") == 1
        assert driver.procs("pod/app") == []
        assert not psutil.pid_exists(orphan) or psutil.Process(orphan).status() == "zombie"
