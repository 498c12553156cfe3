"""The scheduler extender's filter + prioritize latency, against a JSON-only baseline.

One GPU pod (8 GiB on one GPU) is filtered and then prioritized over every node of
a synthetic cluster of 1,000 and of 5,000 nodes (each with a CNR carrying reclaimed
headroom and four 80 GiB GPUs, and 8 bound pods), in node-cache-capable mode (the
payloads carry node names), over HTTP on loopback, one call pair at a time. The
baseline is an aiohttp server on the same loopback that only parses each request
and serializes an answer of the same shape (every node passes, every score 0).
Printed: p50 and p99 of one filter+prioritize pair, pairs per second, and the
ratio of p99s. Goal (issue #7): p99 under 20 ms at 5,000 nodes and at most 3x the
baseline; reported as PASS or MISS, never asserted.

    python -m bench.extender [--calls 200] [--nodes 1000 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from katalyst.clock import MonotonicClock
from scheduler_plugins.extender import Extender
from scheduler_plugins.server import make_app
from scheduler_plugins.state import ClusterState

GIB = 2**30
GPU_MEMORY = "resource.katalyst.kubewharf.io/gpu_memory"


class _NoBinder:
    async def bind(self, *args: Any) -> None:
        raise RuntimeError("the benchmark never binds")


def _cnr(name: str) -> dict[str, Any]:
    gpus = [
        {
            "type": "GPU",
            "name": str(i),
            "resources": {"capacity": {GPU_MEMORY: "81920"}},
            "attributes": [
                {"name": "uuid", "value": f"GPU-{name}-{i}"},
                {"name": "numa_node", "value": str(i // 2)},
                {"name": "pcie_switch", "value": f"sw{i // 2}"},
            ],
            "allocations": [],
        }
        for i in range(4)
    ]
    return {
        "metadata": {"name": name},
        "status": {
            "resources": {
                "allocatable": {
                    "resource.katalyst.kubewharf.io/reclaimed_millicpu": "16000",
                    "resource.katalyst.kubewharf.io/reclaimed_memory": str(64 * GIB),
                }
            },
            "topologyZone": [{"type": "Socket", "name": "0", "resources": {}, "children": gpus}],
        },
    }


def _pod(name: str, node: str | None, gpu: int | None) -> dict[str, Any]:
    notes = {} if gpu is None else {"katalyst.kubewharf.io/gpu_indices": str(gpu)}
    pod: dict[str, Any] = {
        "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}",
                     "annotations": notes},
        "spec": {"containers": [{"name": "c", "resources": {"limits": {
            GPU_MEMORY: "20480",
            "resource.katalyst.kubewharf.io/reclaimed_millicpu": "500"}}}]},
        "status": {"phase": "Running"},
    }  # fmt: skip
    if node:
        pod["spec"]["nodeName"] = node
    return pod


def _baseline_app() -> web.Application:
    async def filter_(request: web.Request) -> web.Response:
        args = json.loads(await request.read())
        body = {"Nodes": None, "NodeNames": args["NodeNames"], "FailedNodes": {},
                "FailedAndUnresolvableNodes": {}, "Error": ""}  # fmt: skip
        return web.Response(body=json.dumps(body).encode(), content_type="application/json")

    async def prioritize(request: web.Request) -> web.Response:
        args = json.loads(await request.read())
        body = [{"Host": n, "Score": 0} for n in args["NodeNames"]]
        return web.Response(body=json.dumps(body).encode(), content_type="application/json")

    app = web.Application(client_max_size=64 * 2**20)
    app.router.add_post("/filter", filter_)
    app.router.add_post("/prioritize", prioritize)
    return app


async def _measure(app: web.Application, names: list[str], calls: int) -> list[float]:
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    url = str(server.make_url("")).rstrip("/")
    args = json.dumps({"Pod": _pod("new", None, None), "Nodes": None, "NodeNames": names})
    data = args.encode()
    out: list[float] = []
    try:
        async with aiohttp.ClientSession() as session:
            for i in range(calls + 10):
                start = time.perf_counter()
                async with session.post(f"{url}/filter", data=data) as resp:
                    passed = (await resp.json())["NodeNames"]
                body = json.dumps({"Pod": json.loads(args)["Pod"], "Nodes": None,
                                   "NodeNames": passed}).encode()  # fmt: skip
                async with session.post(f"{url}/prioritize", data=body) as resp:
                    await resp.json()
                if i >= 10:  # warm-up
                    out.append(time.perf_counter() - start)
    finally:
        await server.close()
    return out


def _summary(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered) * 1e3, p99 * 1e3, len(samples) / sum(samples)


async def main(calls: int, sizes: list[int]) -> None:
    for size in sizes:
        state = ClusterState(clock=MonotonicClock())
        names = [f"node-{i:05d}" for i in range(size)]
        for n, name in enumerate(names):
            state.set_cnr(_cnr(name))
            for j in range(8):
                state.set_pod(_pod(f"p-{n}-{j}", name, j % 4))
        extender = Extender(state=state, binder=_NoBinder())
        ours = _summary(await _measure(make_app(extender), names, calls))
        base = _summary(await _measure(_baseline_app(), names, calls))
        ratio = ours[1] / base[1]
        verdict = "PASS" if (size < 5000 or ours[1] < 20.0) and ratio <= 3.0 else "MISS"
        print(
            f"{size:>5} nodes  extender p50 {ours[0]:6.2f} ms  p99 {ours[1]:6.2f} ms  "
            f"{ours[2]:7.1f} pairs/s | baseline p50 {base[0]:6.2f} ms  p99 {base[1]:6.2f} ms  "
            f"{base[2]:7.1f} pairs/s | p99 ratio {ratio:4.2f}  {verdict}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--nodes", type=int, nargs="+", default=[1000, 5000])
    ns = parser.parse_args()
    asyncio.run(main(ns.calls, ns.nodes))
