"""The extender remembers verdicts per request shape and node view: never stale,
and bounded (one entry per node and shape, at most ``SHAPES`` shapes)."""

from __future__ import annotations

from typing import Any

from katalyst.clock import FakeClock
from scheduler_plugins.extender import SHAPES, Extender
from scheduler_plugins.plugins.model import parse_pod
from scheduler_plugins.state import ClusterState
from tests.unit.scheduler.helpers import cnr_json, gpu_zone, pod_json


class _Binder:
    async def bind(self, *args: Any) -> None:
        raise AssertionError("not called")


def _setup() -> tuple[ClusterState, Extender]:
    state = ClusterState(clock=FakeClock(), assume_ttl_s=30.0)
    return state, Extender(state=state, binder=_Binder())


def _args(pod: dict[str, Any], *names: str) -> dict[str, Any]:
    return {"Pod": pod, "Nodes": None, "NodeNames": list(names)}


def test_a_changed_node_replaces_its_entry_and_is_judged_again() -> None:
    state, ext = _setup()
    for n in ("a", "b", "c"):
        state.set_cnr(cnr_json(n, zones=[gpu_zone(0, memory=16384)]))
    pod = pod_json("p", gpu_memory=8192)
    for round_ in range(50):
        memory = 4096 if round_ % 2 else 16384
        state.set_cnr(cnr_json("b", zones=[gpu_zone(0, memory=memory)]))
        result = ext.filter(_args(pod, "a", "b", "c"))
        expected = ["a", "c"] if round_ % 2 else ["a", "b", "c"]
        assert result["NodeNames"] == expected
    (memo,) = ext._memo.values()
    assert len(memo.by_id) == 3 and len(memo.by_name) == 3


def test_a_node_with_an_assumed_pod_is_judged_on_every_call() -> None:
    state, ext = _setup()
    state.set_cnr(cnr_json("g", zones=[gpu_zone(0, memory=16384)]))
    first = pod_json("p1", gpu_memory=8192)
    assert ext.filter(_args(first, "g"))["NodeNames"] == ["g"]
    state.assume(parse_pod(first), "g", (0,))
    assert ext.filter(_args(pod_json("p2", gpu_memory=8192), "g"))["NodeNames"] == ["g"]
    state.assume(parse_pod(pod_json("p2", gpu_memory=8192)), "g", (0,))
    result = ext.filter(_args(pod_json("p3", gpu_memory=8192), "g"))
    assert result["FailedNodes"] == {"g": "gpu-share: gpu 0 has 0 MiB free, pod needs 8192"}


def test_only_the_recent_shapes_are_kept() -> None:
    state, ext = _setup()
    state.set_cnr(cnr_json("g", zones=[gpu_zone(0, memory=16384)]))
    for mib in range(1, SHAPES + 10):
        ext.prioritize(_args(pod_json(f"p{mib}", gpu_memory=mib), "g"))
    assert len(ext._memo) == SHAPES
    # The most recent shape is kept, the oldest went first.
    kept = {shape[2] for shape in ext._memo}
    assert kept == set(range(10, SHAPES + 10))
