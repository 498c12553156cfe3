"""Shared helpers of the reporter's unit tests: planners on a fake clock, samples,
and an in-memory :class:`ReportClient` with the API server's answers scripted."""

from __future__ import annotations

import copy
import random
from collections.abc import Mapping
from typing import Any

from agent.reporter import (
    ReclaimSample,
    ReporterConfig,
    ReportPlanner,
    Target,
)
from katalyst.clock import FakeClock

GIB = 1024**3
MIB = 1024**2
NUMA_SOCKETS = {0: 0, 1: 0, 2: 1, 3: 1}


class FullDelay(random.Random):
    """Jitter that always takes the whole back-off: exact reaction times in tests."""

    def uniform(self, a: float, b: float) -> float:
        return b


def make_planner(
    clock: FakeClock, *, numa_sockets: Mapping[int, int] | None = None, **settings: Any
) -> ReportPlanner:
    return ReportPlanner(
        ReporterConfig(**settings),
        numa_sockets=NUMA_SOCKETS if numa_sockets is None else numa_sockets,
        clock=clock,
        rng=FullDelay(),
    )


def sample(
    cpus: float,
    memory: int = 8 * GIB,
    *,
    cpu_weights: Mapping[int, float] | None = None,
    memory_weights: Mapping[int, float] | None = None,
) -> ReclaimSample:
    return ReclaimSample(
        cpus=cpus,
        memory_bytes=memory,
        cpu_weights=dict(cpu_weights or {0: 1, 1: 1, 2: 1, 3: 1}),
        memory_weights=dict(memory_weights or {0: 1, 1: 1, 2: 1, 3: 1}),
    )


def succeed(planner: ReportPlanner, targets: tuple[Target, ...] | None = None) -> None:
    """Write what is due and record it as a success (for ``targets``, others failed)."""
    report = planner.due()
    assert report is not None
    planner.record(report, {t: targets is None or t in targets for t in report.targets})


class ScriptedClient:
    """A :class:`ReportClient` in memory: one Node and maybe one CNR, stored as the API
    server would (resourceVersion bumps, status dropped on create, merge patches),
    with statuses to answer instead, queued per call."""

    def __init__(self, *, node_exists: bool = True) -> None:
        self.node: dict[str, Any] | None = (
            {"metadata": {"name": "n1"}, "status": {"capacity": {}, "allocatable": {}}}
            if node_exists
            else None
        )
        self.cnr: dict[str, Any] | None = None
        self.calls: list[tuple[str, Any]] = []
        self.answers: dict[str, list[int | BaseException]] = {}
        self.after_get: list[Any] = []
        """Callables run after a get_cnr returned (another writer acting in between)."""
        self._rv = 1

    def answer(self, call: str, *statuses: int | BaseException) -> None:
        self.answers.setdefault(call, []).extend(statuses)

    def _scripted(self, call: str) -> int | None:
        queue = self.answers.get(call)
        if not queue:
            return None
        answer = queue.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def bump(self) -> str:
        self._rv += 1
        return str(self._rv)

    async def patch_node_status(self, name: str, body: Mapping[str, Any]) -> int:
        self.calls.append(("patch_node_status", copy.deepcopy(dict(body))))
        scripted = self._scripted("patch_node_status")
        if scripted is not None:
            return scripted
        if self.node is None:
            return 404
        status = self.node.setdefault("status", {})
        for key in ("capacity", "allocatable"):
            status.setdefault(key, {}).update(body["status"][key])
        return 200

    async def get_cnr(self, name: str) -> dict[str, Any] | None:
        self.calls.append(("get_cnr", name))
        scripted = self._scripted("get_cnr")
        if scripted is not None:
            raise ConnectionError(f"HTTP {scripted}")
        found = copy.deepcopy(self.cnr)
        for hook in self.after_get:
            hook()
        self.after_get.clear()
        return found

    async def create_cnr(self, body: Mapping[str, Any]) -> int:
        self.calls.append(("create_cnr", copy.deepcopy(dict(body))))
        scripted = self._scripted("create_cnr")
        if scripted is not None:
            return scripted
        if self.cnr is not None:
            return 409
        cnr = copy.deepcopy(dict(body))
        cnr.pop("status", None)
        cnr["metadata"]["resourceVersion"] = self.bump()
        self.cnr = cnr
        return 201

    async def patch_cnr_status(self, name: str, body: Mapping[str, Any]) -> int:
        self.calls.append(("patch_cnr_status", copy.deepcopy(dict(body))))
        scripted = self._scripted("patch_cnr_status")
        if scripted is not None:
            return scripted
        if self.cnr is None:
            return 404
        want = body.get("metadata", {}).get("resourceVersion")
        if want is not None and want != self.cnr["metadata"]["resourceVersion"]:
            return 409
        status = self.cnr.setdefault("status", {})
        resources = status.setdefault("resources", {})
        for key, value in body["status"]["resources"].items():
            resources.setdefault(key, {}).update(value)
        if "topologyZone" in body["status"]:
            status["topologyZone"] = copy.deepcopy(body["status"]["topologyZone"])
        self.cnr["metadata"]["resourceVersion"] = self.bump()
        return 200

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]
