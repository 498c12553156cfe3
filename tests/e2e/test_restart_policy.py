"""The standalone node's container lifecycle on the real kernel: restarts with
back-off under OnFailure, and a failed init container failing its pod under Never.
Observed through the containers' log files, as a user would."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from agent.app import run
from agent.config import AgentConfig
from tests.support.kernel import check_kernel_ready

pytestmark = pytest.mark.kernel

CRASHING = """\
apiVersion: v1
kind: Pod
metadata: {name: crasher}
spec:
  restartPolicy: OnFailure
  containers:
    - name: main
      command: ["sh", "-c", "echo run; exit 3"]
"""

BROKEN_INIT = """\
apiVersion: v1
kind: Pod
metadata: {name: broken-init}
spec:
  restartPolicy: Never
  initContainers:
    - name: setup
      command: ["sh", "-c", "echo init; exit 1"]
  containers:
    - name: main
      command: ["sh", "-c", "echo main; sleep 600"]
"""


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def test_restarts_and_a_failed_init_container(short_dir: Path) -> None:
    check_kernel_ready(["cpu", "cpuset", "memory"])
    folder = short_dir / "pods"
    folder.mkdir()
    (folder / "crasher.yaml").write_text(CRASHING)
    (folder / "broken.yaml").write_text(BROKEN_INIT)
    config = AgentConfig(
        standalone=folder,
        state_dir=short_dir / "state",
        cgroup_root=f"kqos-restart-{os.getpid()}",
        metrics_addr="127.0.0.1:0",
    )
    logs = short_dir / "state" / "logs"
    stop = asyncio.Event()
    task = asyncio.create_task(run(config, stop=stop))
    try:
        for _ in range(200):  # 1 s, then 2 s of back-off: three runs within ~4 s
            if len(_lines(logs / "default_crasher_main.log")) >= 3 or task.done():
                break
            await asyncio.sleep(0.05)
        assert _lines(logs / "default_crasher_main.log") == ["run", "run", "run"]
        assert _lines(logs / "default_broken-init_setup.log") == ["init"]
    finally:
        stop.set()
        node = await asyncio.wait_for(task, timeout=15)
    assert node is not None
    assert not (logs / "default_broken-init_main.log").exists(), "main never started"
