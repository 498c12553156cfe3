"""The scheduler extender's filter + prioritize latency, against a JSON-only baseline.

One GPU pod (8 GiB on one GPU) is filtered and then prioritized over every node of
a synthetic cluster of 1,000 and of 5,000 nodes (each with a CNR carrying reclaimed
headroom and four 80 GiB GPUs, and 8 bound pods), in node-cache-capable mode (the
payloads carry node names), over HTTP on loopback, one call pair at a time. The
caller stands in for kube-scheduler and runs in its own process, as it does in a
cluster. The baseline is an aiohttp server on the same loopback that only parses
each request and serializes an answer of the same shape with the same JSON library
(orjson; every node passes, every score 0).
Printed: p50 and p99 of one filter+prioritize pair, pairs per second, and the
ratio of p99s. The pod's shape repeats, as replicas of one workload do, so the
extender serves remembered verdicts; a second row (``--cold-calls``, no goal)
gives each call a new shape, so every node is judged. Goal (issue #7): p99 under
20 ms at 5,000 nodes and at most 3x the baseline; reported as PASS or MISS, never
asserted.

    python -m bench.extender [--calls 200] [--nodes 1000 5000] [--cold-calls 30]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import multiprocessing
import statistics
import time
from multiprocessing.connection import Connection
from typing import Any

import orjson
from aiohttp import web

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
    """Parses each request and serializes an answer of the same shape with the same
    JSON library as the extender, and judges nothing."""

    async def filter_(request: web.Request) -> web.Response:
        args = orjson.loads(await request.read())
        body = {"Nodes": None, "NodeNames": args["NodeNames"], "FailedNodes": {},
                "FailedAndUnresolvableNodes": {}, "Error": ""}  # fmt: skip
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def prioritize(request: web.Request) -> web.Response:
        args = orjson.loads(await request.read())
        body = [{"Host": n, "Score": 0} for n in args["NodeNames"]]
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    app = web.Application(client_max_size=64 * 2**20)
    app.router.add_post("/filter", filter_)
    app.router.add_post("/prioritize", prioritize)
    return app


def _client(port: int, names: list[str], calls: int, cold: bool, out: Connection) -> None:
    """kube-scheduler's side, in its own process (as it is in a cluster) so that its
    encoding and decoding do not run on the server's event loop: one keep-alive
    connection, filter then prioritize on the nodes that passed. ``cold``: every
    call's pod has a shape not seen before (its reclaimed milli-cores differ), so
    the extender remembers no verdict and judges every node."""
    pod = _pod("new", None, None)
    limits = pod["spec"]["containers"][0]["resources"]["limits"]
    data = orjson.dumps({"Pod": pod, "Nodes": None, "NodeNames": names})
    conn = http.client.HTTPConnection("127.0.0.1", port)
    headers = {"Content-Type": "application/json"}
    samples: list[float] = []
    for i in range(calls + 10):
        if cold:
            limits["resource.katalyst.kubewharf.io/reclaimed_millicpu"] = str(100 + i)
            data = orjson.dumps({"Pod": pod, "Nodes": None, "NodeNames": names})
        start = time.perf_counter()
        conn.request("POST", "/filter", body=data, headers=headers)
        passed = orjson.loads(conn.getresponse().read())["NodeNames"]
        body = orjson.dumps({"Pod": pod, "Nodes": None, "NodeNames": passed})
        conn.request("POST", "/prioritize", body=body, headers=headers)
        scores = orjson.loads(conn.getresponse().read())
        if len(scores) != len(passed):
            raise RuntimeError(f"prioritize scored {len(scores)} of {len(passed)} nodes")
        if i >= 10:  # warm-up
            samples.append(time.perf_counter() - start)
    conn.close()
    out.send(samples)
    out.close()


async def _measure(
    app: web.Application, names: list[str], calls: int, *, cold: bool = False
) -> list[float]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_client, args=(port, names, calls, cold, send))
    try:
        proc.start()
        send.close()
        loop = asyncio.get_running_loop()
        samples: list[float] = await loop.run_in_executor(None, receive.recv)
        await loop.run_in_executor(None, proc.join)
    finally:
        if proc.is_alive():
            proc.kill()
        await runner.cleanup()
    return samples


def _summary(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered) * 1e3, p99 * 1e3, len(samples) / sum(samples)


async def main(calls: int, sizes: list[int], cold_calls: int) -> None:
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
        if cold_calls:
            cold = _summary(await _measure(make_app(extender), names, cold_calls, cold=True))
            print(
                f"{size:>5} nodes  cold (a new pod shape per call, every node judged): "
                f"p50 {cold[0]:6.2f} ms  p99 {cold[1]:6.2f} ms  {cold[2]:7.1f} pairs/s "
                f"(no goal; {cold[1] / base[1]:4.1f}x the baseline's p99)"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--nodes", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument(
        "--cold-calls", type=int, default=30, help="calls with a new pod shape each (0: none)"
    )
    ns = parser.parse_args()
    asyncio.run(main(ns.calls, ns.nodes, ns.cold_calls))
