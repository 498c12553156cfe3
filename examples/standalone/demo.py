"""``make demo``: the standalone node, for real, for about half a minute.

1. Starts ``katalyst-agent --standalone`` on a folder holding the latency-sensitive
   service (``shared_cores``) and measures its latency alone, at a fixed open-loop
   request rate.
2. Drops two CPU-hungry batch jobs (``reclaimed_cores``) into the folder while
   the agent runs; the agent admits them through its plugin sockets and runs them
   in their cgroups; the service's latency is measured again.
3. Prints the pods as the kernel sees them (cgroups, cpusets, limits, processes),
   the CPU pools, and the latency percentiles; then stops the agent with SIGTERM.

Everything runs below this process's own cgroups and is removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from agent.qrm.cpu import CPUPolicy
from agent.standalone.manifests import load_folder
from agent.standalone.node import RECLAIMED_ROOT
from examples.standalone.loadgen import percentile, run_load
from katalyst.cgroup import CgroupDriver, CgroupError, HostCgroupFS, open_driver
from katalyst.checkpoint import CheckpointLoaded, CheckpointStore
from katalyst.cli import format_status
from katalyst.cpuset import CPUSet
from katalyst.qos import PodUID
from katalyst.topology import read_cpu_topology

HERE = Path(__file__).resolve().parent
URL = "http://127.0.0.1:18080/"
CGROUP_ROOT = "katalyst-demo"


def _wait_for_service(deadline_s: float) -> bool:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        with contextlib.suppress(OSError), urllib.request.urlopen(URL, timeout=1) as response:
            response.read()
            return True
        time.sleep(0.2)
    return False


def _wait_for_pods(driver_base: str, count: int, deadline_s: float) -> None:
    driver = open_driver(HostCgroupFS(), base=driver_base, below_own_cgroup=True)
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        with contextlib.suppress(CgroupError):
            running = [c for c in _container_cgroups(driver) if driver.procs(c)]
            if len(running) >= count:
                return
        time.sleep(0.2)


def _pod_cgroups(driver: CgroupDriver) -> list[str]:
    """Every pod's cgroup; reclaimed pods live below the node's ``reclaimed`` parent."""
    pods = [p for p in driver.children("") if p != RECLAIMED_ROOT]
    if driver.exists(RECLAIMED_ROOT):
        pods += [f"{RECLAIMED_ROOT}/{p}" for p in driver.children(RECLAIMED_ROOT)]
    return sorted(pods)


def _container_cgroups(driver: CgroupDriver) -> list[str]:
    return [f"{p}/{c}" for p in _pod_cgroups(driver) for c in driver.children(p)]


def _pods_table(folder: Path) -> tuple[list[str], float]:
    driver = open_driver(HostCgroupFS(), base=CGROUP_ROOT, below_own_cgroup=True)
    pods, _ = load_folder(folder)
    by_uid = {p.view.uid: p for p in pods.values()}
    lines = [f"  {'POD':<24} {'QOS':<16} {'CONTAINER':<10} {'CPUSET':<7} {'MEM LIMIT':<10} PIDS"]
    batch_cpu_s = 0.0
    for cgroup in _pod_cgroups(driver):
        pod = by_uid.get(PodUID(cgroup.rsplit("/", 1)[-1].removeprefix("pod")))
        for container in driver.children(cgroup):
            path = f"{cgroup}/{container}"
            limit = driver.memory_limit(path)
            name = pod.key if pod else cgroup
            level = str(pod.view.level) if pod else "?"
            if level == "reclaimed_cores":
                batch_cpu_s += driver.cpu_usage_ns(path) / 1e9
            lines.append(
                f"  {name:<24} {level:<16} {container:<10} {driver.cpuset(path)[0]!s:<7} "
                f"{(str(limit // 2**20) + 'Mi') if limit else '-':<10} "
                f"{' '.join(map(str, driver.procs(path)))}"
            )
    return lines, batch_cpu_s


def _pools(state_dir: Path, reserved: CPUSet) -> str:
    loaded = CheckpointStore(state_dir / "checkpoints").load("qrm_cpu_plugin")
    if not isinstance(loaded, CheckpointLoaded):
        return "  (no CPU checkpoint yet)"
    policy = CPUPolicy.from_state(loaded.data, topology=read_cpu_topology(), reserved=reserved)
    return "  " + ", ".join(f"{name} {cpus}" for name, cpus in sorted(policy.pools().items()))


def _agent_status(log: Path) -> list[str]:
    """What ``katalyst status`` prints, from the agent whose log is ``log``."""
    match = re.search(r"metrics and health on http://(\S+)/metrics", log.read_text())
    if match is None:
        return ["(the agent's HTTP address is not in its log)"]
    try:
        with urllib.request.urlopen(f"http://{match.group(1)}/status", timeout=5) as response:
            return format_status(json.load(response))
    except (OSError, ValueError) as exc:
        return [f"(no status from the agent: {exc})"]


def main() -> int:
    parser = argparse.ArgumentParser(description="the standalone colocation demo")
    parser.add_argument("--rate", type=float, default=150.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per phase")
    parser.add_argument(
        "--warmup", type=float, default=12.0, help="seconds of load before phase 2 is measured"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kqdemo"))
    folder, state = work / "pods", work / "state"
    folder.mkdir()
    for manifest in (HERE / "pods").glob("*.yaml"):
        shutil.copy(manifest, folder)
    agent_cmd = [
        str(Path(sys.executable).with_name("katalyst-agent")),
        "--standalone", str(folder),
        "--state-dir", str(state),
        "--cgroup-root", CGROUP_ROOT,
        "--metrics-addr", "127.0.0.1:0",
    ]  # fmt: skip
    print(f"$ {' '.join(agent_cmd)}")
    log = (work / "agent.log").open("wb")
    agent = subprocess.Popen(agent_cmd, stdout=log, stderr=subprocess.STDOUT)
    results: dict[str, list[float]] = {}
    try:
        if not _wait_for_service(30):
            print("the service did not come up; agent log:\n" + (work / "agent.log").read_text())
            return 1
        print(f"phase 1: the service alone, {args.rate:.0f} req/s for {args.seconds:.0f} s")
        results["alone"] = run_load(URL, rate=args.rate, seconds=args.seconds)
        for manifest in (HERE / "batch").glob("*.yaml"):
            shutil.copy(manifest, folder)
        print("phase 2: two reclaimed batch jobs dropped into the folder; the agent admits them")
        _wait_for_pods(CGROUP_ROOT, 3, 15)
        # The service went idle while the jobs were admitted; its load coming back
        # trips the sysadvisor's safety layer (the lend drops to the floor for the
        # cool-down). Measure the steady state after that, as an SRE would.
        print(f"  warming up {args.warmup:.0f} s at {args.rate:.0f} req/s (not measured)")
        run_load(URL, rate=args.rate, seconds=args.warmup)
        results["with batch"] = run_load(URL, rate=args.rate, seconds=args.seconds)
        advisor = _agent_status(work / "agent.log")
        table, batch_cpu_s = _pods_table(folder)
        print("\npods, as the kernel sees them (cgroups below the agent's own)")
        print("\n".join(table))
        print("\nCPU pools (from the CPU plugin's checkpoint)")
        print(_pools(state, CPUSet.of([0])))
        print("\nservice latency (ms), open loop")
        print(f"  {'':<12} {'p50':>7} {'p99':>7} {'p99.9':>7} {'requests':>9}")
        for phase, values in results.items():
            print(
                f"  {phase:<12} {percentile(values, 50):7.2f} {percentile(values, 99):7.2f} "
                f"{percentile(values, 99.9):7.2f} {len(values):9d}"
            )
        print(f"\nbatch jobs used {batch_cpu_s:.1f} CPU-seconds meanwhile")
        print("\nthe sysadvisor at the end of phase 2 (katalyst status)")
        print("\n".join("  " + line if line else "" for line in advisor))
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            status = agent.wait(timeout=15)
        except subprocess.TimeoutExpired:
            agent.kill()
            status = agent.wait()
        log.close()
        print(f"agent stopped (SIGTERM) with exit status {status}; its log: {work / 'agent.log'}")
        shutil.rmtree(state / "plugins", ignore_errors=True)
    return 0 if status == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
