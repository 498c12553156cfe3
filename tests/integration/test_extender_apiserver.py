"""The whole extender process (its composition root, :func:`scheduler_plugins.app.run`)
against the fake API server: CNRs and pods arrive through the official client's
list-watch, the bind goes out as a ``pods/binding`` with the chosen GPUs."""

from __future__ import annotations

import argparse
import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from scheduler_plugins import app
from tests.support.apiserver import FakeApiServer
from tests.unit.scheduler.helpers import cnr_json, gpu_zone, pod_json

GPU_INDICES = "katalyst.kubewharf.io/gpu_indices"
ASSUME_TTL_S = 0.5
"""Short: past it, only the pod watch can keep the bound pods counted."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Running:
    api: FakeApiServer
    url: str
    session: aiohttp.ClientSession

    async def post(self, verb: str, body: Any) -> Any:
        async with self.session.post(f"{self.url}/{verb}", json=body) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()

    async def until(self, check: Callable[[], Any], what: str) -> None:
        for _ in range(250):
            if await check():
                return
            await asyncio.sleep(0.02)
        pytest.fail(f"timed out waiting for {what}")


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    async with FakeApiServer() as api:
        port = free_port()
        args = app.build_parser().parse_args(
            [
                "--listen",
                f"127.0.0.1:{port}",
                "--kubeconfig",
                str(api.kubeconfig(tmp_path / "kubeconfig")),
            ]
        )
        stop = asyncio.Event()
        task = asyncio.create_task(app.run(args, stop))
        async with aiohttp.ClientSession() as session:
            running = Running(api, f"http://127.0.0.1:{port}", session)

            async def healthy() -> bool:
                try:
                    async with session.get(f"{running.url}/healthz") as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False

            await running.until(healthy, "the extender to listen")
            yield running
        stop.set()
        await asyncio.wait_for(task, 5)


def names(pod: dict[str, Any], *nodes: str) -> dict[str, Any]:
    return {"Pod": pod, "Nodes": None, "NodeNames": list(nodes)}


async def test_gpu_pods_are_placed_bound_and_never_double_booked(running: Running) -> None:
    api = running.api
    api.create_cnr(cnr_json("g", zones=[gpu_zone(0, memory=16384), gpu_zone(1, memory=16384)]))
    first = api.create_pod(pod_json("a", uid="uid-a", gpu_memory=12288))
    second = api.create_pod(pod_json("b", uid="uid-b", gpu_memory=12288))
    third = api.create_pod(pod_json("c", uid="uid-c", gpu_memory=12288))

    async def placed() -> bool:
        result = await running.post("filter", names(first, "g"))
        return bool(result["NodeNames"] == ["g"])

    await running.until(placed, "the CNR to arrive through the watch")
    for pod in (first, second):
        assert (await running.post("filter", names(pod, "g")))["NodeNames"] == ["g"]
        bind = {
            "PodName": pod["metadata"]["name"],
            "PodNamespace": "default",
            "PodUID": pod["metadata"]["uid"],
            "Node": "g",
        }
        assert await running.post("bind", bind) == {"Error": ""}
    stored = [api.get_pod("default", n) for n in ("a", "b")]
    assert [(p or {})["spec"].get("nodeName") for p in stored] == ["g", "g"]
    # binpack: the first pod takes gpu 0; the second cannot fit beside it, takes gpu 1.
    assert [(p or {})["metadata"]["annotations"][GPU_INDICES] for p in stored] == ["0", "1"]
    assert [b["kind"] for b in api.bindings] == ["Binding", "Binding"]
    # Past the assume TTL, the pod watch alone keeps the third pod off the node.
    await asyncio.sleep(ASSUME_TTL_S * 2)
    result = await running.post("filter", names(third, "g"))
    assert result["FailedNodes"] == {
        "g": "gpu-share: gpu 0 has 4096 MiB free, gpu 1 has 4096 MiB free, pod needs 12288"
    }

    # Once the watch has shown both bindings, a relist after 410 Gone keeps them.
    api.compact()
    api.drop_watches()
    await api.wait_for_watches(2)
    result = await running.post("filter", names(third, "g"))
    assert result["NodeNames"] == []


async def test_a_bind_the_api_server_refuses_is_an_error(running: Running) -> None:
    api = running.api
    api.create_cnr(cnr_json("g", zones=[gpu_zone(0)]))
    api.create_cnr(cnr_json("h", zones=[gpu_zone(0)]))
    pod = api.create_pod(pod_json("a", uid="uid-a", gpu_memory=1024, node="h"))

    async def known() -> bool:
        return bool((await running.post("filter", names(pod, "g")))["NodeNames"] == ["g"])

    await running.until(known, "the CNR to arrive")
    bind = {"PodName": "a", "PodNamespace": "default", "PodUID": "uid-a", "Node": "g"}
    answer = await running.post("bind", bind)
    assert "already assigned to node" in answer["Error"]
    assert api.bindings == []


def test_bad_flags_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--listen", "nowhere"], ["--assume-ttl-s", "-1"], ["--gpu-strategy", "x"]):
        with pytest.raises(SystemExit) as exc:
            app.main(argv)
        assert exc.value.code == 2
    assert "is not HOST:PORT" in capsys.readouterr().err


def test_parser_defaults() -> None:
    args: argparse.Namespace = app.build_parser().parse_args([])
    every = ("0.0.0.0", 8888)  # noqa: S104 - the default the parser should give
    assert (args.listen, args.score_strategy, args.gpu_strategy, args.assume_ttl_s) == (
        every,
        "least-allocated",
        "binpack",
        30.0,
    )
