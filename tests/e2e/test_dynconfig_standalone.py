"""The standalone agent with a dynamic-config folder: a changed file changes the
running sysadvisor's target and the reclaim switch without a restart (seen on
``/status``), a bad file is refused (``/metrics``, ``/status``) while the last good
settings stay, and a restart with the folder broken runs what ran before (the
checkpoint).

The agent runs in this process (``agent.app.run``) on a cgroup tree that behaves
as the kernel's (:class:`FakeCgroupFS`, the driver's constructor seam): no pod runs,
and nothing here needs root."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.app import StartupError, run
from agent.config import AgentConfig
from agent.sysadvisor import AdvisorConfig
from katalyst.cgroup.fake import FakeCgroupFS
from katalyst.cpuset import CPUSet


def aqc(name: str, spec: str) -> str:
    return (
        "apiVersion: config.katalyst.kubewharf.io/v1alpha1\n"
        "kind: AdminQoSConfiguration\n"
        f"metadata: {{name: {name}, namespace: katalyst-system}}\n"
        f"spec:\n{spec}"
    )


def cluster(target: str) -> str:
    usage = f"{{cpu_usage_ratio: {{target: {target}}}}}"
    return aqc("cluster", f"  config: {{sysadvisor: {{indicators: {usage}}}}}\n")


POOL_OFF = aqc(
    "batch-pool",
    "  nodeLabelSelector: node-pool=batch\n  priority: 1\n  config: {reclaim: {enabled: false}}\n",
)


def put(path: Path, text: str) -> None:
    """As an operator should: a finished file renamed into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


class Agent:
    """A running standalone agent's HTTP endpoints, read synchronously between polls."""

    def __init__(self, session: aiohttp.ClientSession, address: str) -> None:
        self._session = session
        self._address = address
        self.status: dict[str, object] = {}
        self.metrics: dict[str, float] = {}

    async def refresh(self) -> None:
        # /metrics first: a condition met on /metrics holds on the /status read after it.
        async with self._session.get(f"http://{self._address}/metrics") as response:
            text = await response.text()
        async with self._session.get(f"http://{self._address}/status") as response:
            self.status = json.loads(await response.text())
        self.metrics = {
            s.name: s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name.startswith("katalyst_dynamic_config_")
        }

    def target(self) -> float | None:
        advisor = self.status.get("sysadvisor")
        if not isinstance(advisor, dict):
            return None
        for step in advisor["indicators"]:
            if step["region"] == "share" and step["indicator"] == "cpu_usage_ratio":
                return float(step["target"])
        return None

    def dynamic(self) -> dict[str, object]:
        part = self.status.get("dynamic_config")
        assert isinstance(part, dict)
        return part

    def mode(self) -> str | None:
        advisor = self.status.get("sysadvisor")
        return str(advisor["mode"]) if isinstance(advisor, dict) else None

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        """Read the endpoints until ``condition`` holds (a bound on the agent's work,
        not a timing assertion)."""

        async def check() -> None:
            while True:
                await self.refresh()
                if condition():
                    return
                await asyncio.sleep(0.05)

        try:
            await asyncio.wait_for(check(), timeout=20)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}; status: {self.status}") from None


@asynccontextmanager
async def agent(config: AgentConfig) -> AsyncIterator[tuple[Agent, asyncio.Task[object]]]:
    stop, ready = asyncio.Event(), asyncio.Event()
    http: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task: asyncio.Task[object] = asyncio.create_task(
        run(
            config,
            stop=stop,
            node_ready=ready,
            http_ready=http,
            cgroupfs=FakeCgroupFS.hybrid(cpus="0-3"),
        )
    )
    try:
        readiness = asyncio.ensure_future(ready.wait())
        await asyncio.wait({readiness, task}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # the agent stopped early: raise what stopped it
        assert ready.is_set(), "the standalone agent did not start"
        async with aiohttp.ClientSession() as session:
            yield Agent(session, http.result()), task
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=20)


async def test_a_changed_file_reaches_the_running_advisor_and_a_bad_one_is_refused(
    tmp_path: Path, short_dir: Path
) -> None:
    pods, dyn = tmp_path / "pods", tmp_path / "dyn"
    pods.mkdir()
    dyn.mkdir()
    put(dyn / "cluster.yaml", cluster("0.5"))
    config = AgentConfig(
        standalone=pods,
        state_dir=short_dir,
        metrics_addr="127.0.0.1:0",
        reserved_cpus=CPUSet.of([0]),
        sysadvisor=AdvisorConfig(period_s=0.1),
        dynamic_config=dyn,
        node_name="node-a",
        node_labels={"node-pool": "batch"},
    )
    async with agent(config) as (node, task):
        await node.until(lambda: node.target() == 0.5, "the folder's target at start")
        assert node.dynamic()["origin"] == "folder"
        assert node.mode() == "normal"

        put(dyn / "cluster.yaml", cluster("0.45"))
        await node.until(lambda: node.target() == 0.45, "the new target without a restart")
        assert not task.done()
        assert node.dynamic()["last_changes"] == [
            "sysadvisor.indicators.cpu_usage_ratio.target: 0.5 -> 0.45"
        ]

        # A pool config for this node's labels switches reclaim off.
        put(dyn / "pool.yaml", POOL_OFF)
        await node.until(lambda: node.mode() == "disabled", "reclaim switched off")
        advisor = node.status["sysadvisor"]
        assert isinstance(advisor, dict)
        assert (advisor["reclaim_cpus"], advisor["reclaim_pool_cpus"]) == (0.0, 0)
        layers = node.dynamic()["layers"]
        assert isinstance(layers, list)
        assert [x["level"] for x in layers] == ["cluster", "pool"]
        (dyn / "pool.yaml").unlink()
        await node.until(lambda: node.mode() == "normal", "reclaim switched on again")

        # A bad file: refused, counted, shown; the last good settings stay.
        put(dyn / "cluster.yaml", cluster("-1"))
        await node.until(
            lambda: node.metrics.get("katalyst_dynamic_config_refusals_total") == 1.0,
            "the refusal on /metrics",
        )
        error = str(node.dynamic()["last_error"])
        assert str(dyn / "cluster.yaml") in error
        assert "spec.config.sysadvisor.indicators.cpu_usage_ratio.target: must be > 0" in error
        await asyncio.sleep(0.5)  # several periods
        await node.refresh()
        assert node.target() == 0.45
        assert node.metrics["katalyst_dynamic_config_refusals_total"] == 1.0
        assert node.metrics["katalyst_dynamic_config_applied_total"] == 4.0

    # Restarted with the folder still broken: the checkpoint's layers, not the defaults.
    async with agent(config) as (node, _):
        await node.until(lambda: node.target() == 0.45, "the checkpoint's target")
        assert node.dynamic()["origin"] == "checkpoint"
        assert "must be > 0" in str(node.dynamic()["last_error"])
        put(dyn / "cluster.yaml", cluster("0.55"))
        await node.until(lambda: node.target() == 0.55, "the fixed file")
        assert node.dynamic()["last_error"] is None


async def test_a_missing_folder_stops_the_start(tmp_path: Path, short_dir: Path) -> None:
    pods = tmp_path / "pods"
    pods.mkdir()
    config = AgentConfig(
        standalone=pods,
        state_dir=short_dir,
        metrics_addr="127.0.0.1:0",
        reserved_cpus=CPUSet.of([0]),
        dynamic_config=tmp_path / "nowhere",
    )
    with pytest.raises(StartupError, match="not a directory") as exc:
        await asyncio.wait_for(
            run(config, stop=asyncio.Event(), cgroupfs=FakeCgroupFS.hybrid(cpus="0-3")),
            timeout=20,
        )
    assert str(exc.value) == f"dynamic_config {tmp_path / 'nowhere'}: not a directory"
