"""The extender's /metrics over real HTTP: every call counted by verb and outcome,
filter's nodes by result, and the state gauges read at scrape time."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from katalyst.clock import FakeClock
from scheduler_plugins.extender import Extender
from scheduler_plugins.metrics import ExtenderCollector
from scheduler_plugins.server import make_app
from scheduler_plugins.state import ClusterState
from tests.unit.scheduler.helpers import GIB, cnr_json, pod_json


class _Binder:
    async def bind(self, *args: Any) -> None:
        raise RuntimeError("the API server said no")


class _Gate:
    def __init__(self) -> None:
        self.standby: str | None = None

    def serving(self) -> str | None:
        return self.standby

    def ready(self) -> str | None:
        return None


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_calls_and_state_are_counted() -> None:
    state = ClusterState(clock=FakeClock())
    state.set_cnr(cnr_json("big", millicpu=8000, memory=16 * GIB))
    state.set_cnr(cnr_json("small", millicpu=500, memory=16 * GIB))
    state.set_pod(pod_json("running", millicpu=100, node="big"))
    gate = _Gate()
    registry = CollectorRegistry()
    registry.register(
        ExtenderCollector(
            leading=lambda: gate.serving() is None,
            ready=lambda: True,
            nodes=lambda: state.counts()[0],
            pods=lambda: state.counts()[1],
            assumed=lambda: state.counts()[2],
        )
    )
    extender = Extender(state=state, binder=_Binder())
    app = make_app(extender, max_body_bytes=64 * 1024, gate=gate, registry=registry)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    url = str(server.make_url("")).rstrip("/")
    pod = pod_json("new", millicpu=1000)
    args = {"Pod": pod, "Nodes": None, "NodeNames": ["big", "small", "ghost"]}
    try:
        async with aiohttp.ClientSession() as session:

            async def post(verb: str, body: bytes) -> int:
                async with session.post(f"{url}/{verb}", data=body) as resp:
                    await resp.read()
                    return resp.status

            assert await post("filter", json.dumps(args).encode()) == 200
            assert await post("prioritize", json.dumps(args).encode()) == 200
            assert await post("filter", b"{not json") == 400
            assert await post("filter", b"[" + b"1," * 40_000 + b"1]") == 413
            bind = {"PodName": "new", "PodNamespace": "default", "PodUID": "", "Node": "big"}
            assert await post("bind", json.dumps(bind).encode()) == 200  # an Error inside
            gate.standby = "standby: another replica leads"
            assert await post("filter", json.dumps(args).encode()) == 503
            async with session.get(f"{url}/metrics") as resp:
                assert resp.status == 200
                found = _samples(await resp.text())
    finally:
        await server.close()

    def requests(verb: str, outcome: str) -> float:
        key = ("katalyst_extender_requests_total", (("outcome", outcome), ("verb", verb)))
        return found.get(key, 0.0)

    assert requests("filter", "ok") == 1
    assert requests("prioritize", "ok") == 1
    assert requests("filter", "bad_request") == 1
    assert requests("filter", "too_large") == 1
    assert requests("bind", "error") == 1
    assert requests("filter", "standby") == 1
    nodes = {
        r: found.get(("katalyst_extender_filter_nodes_total", (("result", r),)), 0.0)
        for r in ("passed", "failed", "unresolvable")
    }
    # big fits; small lends 500 milli-cores in all (not even preemption makes room for
    # 1000); ghost has no CNR.
    assert nodes == {"passed": 1, "failed": 0, "unresolvable": 2}
    count = ("katalyst_extender_request_duration_seconds_count", (("verb", "filter"),))
    assert found[count] == 4
    assert found[("katalyst_extender_leader", ())] == 0  # standby at the scrape
    assert found[("katalyst_extender_nodes", ())] == 2
    assert found[("katalyst_extender_pods", ())] == 1
    # The failed bind assumed nothing.
    assert found[("katalyst_extender_assumed_pods", ())] == 0
    # No leader election here: no EndpointSlice writes.
    assert found[("katalyst_extender_endpoint_writes_total", ())] == 0
    assert found[("katalyst_extender_endpoint_failures", ())] == 0
