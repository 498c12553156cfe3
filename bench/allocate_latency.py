"""Allocate latency over the unix socket, against a no-op gRPC handler.

The CPU plugin's server on a node that already holds 200 pods (20 dedicated,
180 shared) on a synthetic 2-NUMA, 96-CPU machine answers 1,000 Allocate calls
for new shared pods, one at a time, over a real unix socket; a no-op
``ResourcePlugin`` servicer on the same kind of socket answers the same calls in
the same run. Printed: p50 and p99 of both, and their ratio.
Goal (issue #3): p99 under 2 ms and under 2x the no-op baseline.

    python -m bench.allocate_latency [--calls 1000] [--pods 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import grpc.aio

from agent.qrm.cpu import CPUPolicy
from agent.qrm.server import PluginServer
from agent.qrm.types import ContainerRequest, ContainerType, TopologyHint
from katalyst.api.resourceplugin.v1alpha1 import api_pb2 as rp_pb2
from katalyst.api.resourceplugin.v1alpha1 import api_pb2_grpc as rp_grpc
from katalyst.cpuset import CPUSet
from katalyst.qos import Enhancements, PodUID, QoSLevel
from katalyst.topology import CPUTopology, read_cpu_topology


def _machine(root: Path, *, nodes: int = 2, cores: int = 24, threads: int = 2) -> CPUTopology:
    cpu_dir = root / "devices/system/cpu"
    cpu_dir.mkdir(parents=True)
    total = nodes * cores * threads
    (cpu_dir / "online").write_text(f"0-{total - 1}\n")
    for cpu in range(total):
        node, rest = divmod(cpu, cores * threads)
        core = rest // threads
        first = cpu - cpu % threads
        topo = cpu_dir / f"cpu{cpu}/topology"
        topo.mkdir(parents=True)
        (topo / "core_id").write_text(f"{core}\n")
        (topo / "physical_package_id").write_text(f"{node}\n")
        (topo / "core_cpus_list").write_text(f"{first}-{first + threads - 1}\n")
    for node in range(nodes):
        d = root / f"devices/system/node/node{node}"
        d.mkdir(parents=True)
        lo = node * cores * threads
        (d / "cpulist").write_text(f"{lo}-{lo + cores * threads - 1}\n")
    return read_cpu_topology(root)


def _populated_policy(topology: CPUTopology, pods: int) -> CPUPolicy:
    policy = CPUPolicy(topology=topology, reserved=CPUSet.of([0, 1]))
    for i in range(pods):
        dedicated = i < pods // 10
        level = QoSLevel.DEDICATED_CORES if dedicated else QoSLevel.SHARED_CORES
        policy.allocate(
            ContainerRequest(
                pod_uid=PodUID(f"existing-{i}"),
                pod_namespace="default",
                pod_name=f"existing-{i}",
                container_name="app",
                container_type=ContainerType.MAIN,
                container_index=0,
                resource_name="cpu",
                requests={"cpu": 2.0 if dedicated else 0.5},
                level=level,
                enhancements=Enhancements(),
                hint=TopologyHint(nodes=frozenset({i % 2}), preferred=True) if dedicated else None,
            )
        )
    return policy


def _request(i: int) -> rp_pb2.ResourceRequest:
    return rp_pb2.ResourceRequest(
        pod_uid=f"bench-{i}",
        pod_namespace="default",
        pod_name=f"bench-{i}",
        container_name="app",
        container_type=rp_pb2.MAIN,
        resource_name="cpu",
        resource_requests={"cpu": 0.5},
        annotations={"katalyst.kubewharf.io/qos_level": "shared_cores"},
        native_qos_class="Burstable",
    )


class _NoOp(rp_grpc.ResourcePluginServicer):
    async def Allocate(
        self, request: rp_pb2.ResourceRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> rp_pb2.ResourceAllocationResponse:
        return rp_pb2.ResourceAllocationResponse()


async def _measure(socket: Path, calls: int) -> list[float]:
    async with grpc.aio.insecure_channel(f"unix://{socket}") as channel:
        stub = rp_grpc.ResourcePluginStub(channel)
        for i in range(20):  # warm-up: connection, first-call costs
            await stub.Allocate(_request(10_000_000 + i))
        out: list[float] = []
        for i in range(calls):
            start = time.perf_counter()
            await stub.Allocate(_request(i))
            out.append((time.perf_counter() - start) * 1000)
        return out


def _p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


async def main(calls: int, pods: int) -> None:
    with tempfile.TemporaryDirectory(prefix="kqb") as tmp:
        root = Path(tmp)
        policy = _populated_policy(_machine(root / "sys"), pods)
        async with PluginServer(policy, socket_dir=root / "p") as server:
            agent = await _measure(server.socket_path, calls)
        noop_server = grpc.aio.server()
        rp_grpc.add_ResourcePluginServicer_to_server(_NoOp(), noop_server)
        noop_socket = root / "noop.sock"
        noop_server.add_insecure_port(f"unix://{noop_socket}")
        await noop_server.start()
        try:
            noop = await _measure(noop_socket, calls)
        finally:
            await noop_server.stop(0)
    print(f"Allocate over a unix socket, {calls} calls, node holding {pods} pods")
    print(f"{'':<22} {'p50 ms':>8} {'p99 ms':>8}")
    print(f"{'agent (cpu plugin)':<22} {_p(agent, 50):8.3f} {_p(agent, 99):8.3f}")
    print(f"{'no-op handler':<22} {_p(noop, 50):8.3f} {_p(noop, 99):8.3f}")
    print(f"{'ratio':<22} {_p(agent, 50) / _p(noop, 50):8.2f} {_p(agent, 99) / _p(noop, 99):8.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--pods", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.pods))
