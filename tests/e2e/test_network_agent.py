"""The agent's network isolation end to end on the real kernel.

The standalone node runs a ``shared_cores`` pod that asks for guaranteed bandwidth
and a ``reclaimed_cores`` pod, both bulk senders in a network namespace of the
test's own; the agent's config shapes that namespace's veth. Its plugin hands out
the guarantee, its loop classifies the pods by ``net_cls.classid`` and caps the
reclaimed class; ``/status``, ``/metrics`` and ``katalyst status`` show it; after
SIGTERM the tree stays (isolation holds while the agent restarts) and
``katalyst-agent --cleanup`` removes it. Without ``nft`` the agent says so on
``/metrics`` and keeps running its pods.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from agent.app import run
from agent.config import AgentConfig
from agent.isolation.network import InterfaceConfig, NetworkConfig
from agent.isolation.nft import TABLE
from agent.isolation.tc import HANDLE_MAJOR
from katalyst import cli
from katalyst.cgroup.layout import Hierarchy
from katalyst.cpuset import CPUSet
from tests.support.kernel import check_kernel_ready
from tests.support.netns import VethPair, net_cls_hierarchy, sender_argv, sink_argv, veth_pair
from tests.support.wait import eventually

pytestmark = pytest.mark.kernel

LINK_MBIT = 100
GUARANTEE_MBIT = 30
PORT = 5001
IP = shutil.which("ip") or "/usr/sbin/ip"


def _pod(name: str, level: str, argv: list[str], requests: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": {"katalyst.kubewharf.io/qos_level": level}},
        "spec": {
            "containers": [{"name": "c", "command": argv, "resources": {"requests": requests}}]
        },
    }


@pytest.fixture
def net() -> Iterator[tuple[VethPair, Hierarchy]]:
    check_kernel_ready(["cpu", "cpuset", "memory"])
    with veth_pair() as pair, net_cls_hierarchy() as hier:
        sink = pair.exec_argv(pair.ns_b, sink_argv(pair.addr_b, PORT))
        proc = subprocess.Popen(sink, start_new_session=True)
        try:
            yield pair, hier
        finally:
            os.killpg(proc.pid, 9)
            proc.wait()


def _config(pair: VethPair, folder: Path, state: Path, root: str) -> AgentConfig:
    return AgentConfig(
        standalone=folder,
        state_dir=state,
        cgroup_root=root,
        reserved_cpus=CPUSet.of([0]),
        metrics_addr="127.0.0.1:0",
        network=NetworkConfig(
            interfaces=(InterfaceConfig(name=pair.dev_a, speed_mbit=LINK_MBIT, netns=pair.ns_a),),
            period_s=0.5,
            step_up_ratio=0.5,
        ),
    )


def _write_pods(folder: Path, pair: VethPair) -> None:
    send = [IP, "netns", "exec", pair.ns_a, *sender_argv(pair.addr_b, PORT)]
    service = _pod(
        "service",
        "shared_cores",
        send,
        {
            "cpu": "100m",
            "memory": "32Mi",
            "resource.katalyst.kubewharf.io/net_bandwidth": str(GUARANTEE_MBIT),
        },
    )
    batch = _pod(
        "batch",
        "reclaimed_cores",
        send,
        {"resource.katalyst.kubewharf.io/reclaimed_millicpu": "100"},
    )
    (folder / "service.yaml").write_text(yaml.safe_dump(service))
    (folder / "batch.yaml").write_text(yaml.safe_dump(batch))


def _in_ns(pair: VethPair, *argv: str) -> str:
    return subprocess.run(
        [IP, "netns", "exec", pair.ns_a, *argv], capture_output=True, text=True, check=True
    ).stdout


async def test_pods_are_classified_capped_reported_and_cleaned_up(
    net: tuple[VethPair, Hierarchy], short_dir: Path, tmp_path: Path
) -> None:
    pair, _ = net
    folder = tmp_path / "pods"
    folder.mkdir()
    _write_pods(folder, pair)
    root = f"kqos-net-{os.getpid()}"
    config = _config(pair, folder, short_dir, root)
    stop = asyncio.Event()
    http: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run(config, stop=stop, http_ready=http))
    status: dict[str, Any] = {}
    metrics = ""
    try:
        addr = await asyncio.wait_for(http, 30)
        async with aiohttp.ClientSession() as session:

            async def read() -> None:
                nonlocal status, metrics
                async with session.get(f"http://{addr}/status") as r:
                    status = await r.json()
                async with session.get(f"http://{addr}/metrics") as r:
                    metrics = await r.text()

            def capped() -> bool:
                net_status = status.get("network") or {}
                iface = (net_status.get("interfaces") or [{}])[0]
                service = iface.get("service_mbit") or 0.0
                cap = iface.get("reclaimed_cap_mbit")
                return (
                    net_status.get("classified_containers") == 2
                    and cap is not None
                    and cap <= 0.2 * LINK_MBIT
                    and service >= 0.9 * GUARANTEE_MBIT
                )

            async def poll() -> bool:
                await read()
                return capped()

            deadline = asyncio.get_running_loop().time() + 30
            while not await poll():
                if asyncio.get_running_loop().time() > deadline:  # a bound on the kernel's work
                    raise AssertionError(f"not capped within 30 s: {status.get('network')}")
                await asyncio.sleep(0.25)
        iface = status["network"]["interfaces"][0]
        assert status["network"]["supported"] is True
        assert iface["guaranteed_mbit"]["shared"] == GUARANTEE_MBIT  # the plugin's guarantee
        assert 'katalyst_isolation_supported{feature="shaping",resource="network"} 1.0' in metrics
        assert 'katalyst_network_class_bytes_total{interface="' in metrics
        text = "\n".join(cli.format_status(status))
        assert "network isolation: supported, 2 containers classified" in text
        assert f"{pair.dev_a}@{pair.ns_a}"[:16] in text
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    # Isolation holds while the agent is away: the tree and the table stay.
    assert f"htb {HANDLE_MAJOR:x}:" in _in_ns(pair, "tc", "qdisc", "show", "dev", pair.dev_a)
    assert TABLE in _in_ns(pair, "nft", "list", "tables")
    # The operator's way to remove them, from the CLI with the same config.
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "network": {
                    "interfaces": [
                        {"name": pair.dev_a, "speed_mbit": LINK_MBIT, "netns": pair.ns_a}
                    ]
                }
            }
        )
    )
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("katalyst-agent")),
            "--cleanup",
            "--config", str(cfg),
            "--standalone", str(folder),
            "--cgroup-root", root,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "removed the agent's tc tree" in done.stderr
    assert f"htb {HANDLE_MAJOR:x}:" not in _in_ns(pair, "tc", "qdisc", "show", "dev", pair.dev_a)
    assert TABLE not in _in_ns(pair, "nft", "list", "tables")


async def test_without_nft_the_agent_reports_it_and_keeps_running(
    net: tuple[VethPair, Hierarchy],
    short_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pair, _ = net
    bin_dir = tmp_path / "bin"  # everything the agent runs, but nft
    bin_dir.mkdir()
    for tool in ("ip", "mount", "sh", "sleep"):
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).symlink_to(found)
    monkeypatch.setenv("PATH", str(bin_dir))
    folder = tmp_path / "pods"
    folder.mkdir()
    _write_pods(folder, pair)
    config = _config(pair, folder, short_dir, f"kqos-nonft-{os.getpid()}")
    stop = asyncio.Event()
    http: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run(config, stop=stop, http_ready=http))
    try:
        addr = await asyncio.wait_for(http, 30)
        async with aiohttp.ClientSession() as session:
            seen: dict[str, Any] = {}

            async def refresh() -> None:
                async with session.get(f"http://{addr}/metrics") as r:
                    seen["metrics"] = await r.text()
                async with session.get(f"http://{addr}/healthz") as r:
                    seen["healthz"] = r.status
                async with session.get(f"http://{addr}/status") as r:
                    seen["status"] = await r.json()

            def reported() -> bool:
                return (
                    'katalyst_isolation_supported{feature="shaping",resource="network"} 0.0'
                    in seen.get("metrics", "")
                    and (seen["status"].get("network") or {}).get("classified_containers") == 2
                )

            deadline = asyncio.get_running_loop().time() + 30
            await refresh()
            while not reported():
                if asyncio.get_running_loop().time() > deadline:  # a bound, not a timing
                    raise AssertionError(f"not reported within 30 s: {seen.get('status')}")
                await asyncio.sleep(0.25)
                await refresh()
            # The rest keeps running: the pods run, the agent is healthy.
            assert seen["healthz"] == 200
            error = seen["status"]["network"]["interfaces"][0]["error"]
            assert "nft" in error and "not installed" in error
            await eventually(lambda: not task.done(), "the agent keeps running")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    monkeypatch.undo()
    # It shaped nothing it could not classify into, and left nothing behind but
    # the tree (removed here: the test's namespace goes with it anyway).
    assert TABLE not in _in_ns(pair, "nft", "list", "tables")
