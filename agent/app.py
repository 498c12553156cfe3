"""``katalyst-agent``: the composition root of the node agent.

It builds every dependency (topology, checkpoints, the CPU and memory policies,
their plugin servers and, in standalone mode, the local node) and runs the
servers and loops until SIGTERM or SIGINT: then the sockets are closed, the
checkpoints flushed, and the process exits 0, well within 5 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

import psutil
from prometheus_client import CollectorRegistry

from agent.cluster.metrics import ClusterCollector
from agent.cluster.node import ClusterNode
from agent.config import AgentConfig, Mode, load_config
from agent.dynconfig import (
    ClusterSource,
    DynamicConfigCollector,
    FolderSource,
    LayerCheckpoint,
    SettingsApplier,
)
from agent.dynconfig.sink import service_targets_hook
from agent.errors import ConfigError
from agent.eviction import (
    ApiServerEvictor,
    EvictionCollector,
    EvictionLoop,
    EvictionManager,
    Evictor,
    LocalEvictor,
    Sample,
    build_plugins,
)
from agent.eviction.sampling import build_sample
from agent.gpu.inventory import RDMADevice, read_rdma_devices
from agent.isolation.io_loop import IOLoop
from agent.isolation.network import NetworkLoop
from agent.isolation.setup import (
    IsolationSetupError,
    build_network_policy,
    isolation_loops,
)
from agent.isolation.setup import cleanup as isolation_cleanup
from agent.metaserver.apiserver import (
    ApiClient,
    ApiServerConfigClient,
    ApiServerError,
    ApiServerEvictionClient,
    ApiServerReportClient,
    ObjectWatcher,
    PodWatcher,
    connect,
)
from agent.metaserver.metrics import ContainerRef, MetricsCollector, MetricsLoop, MetricsSnapshot
from agent.observability import (
    AgentCollector,
    ContainerCollector,
    Heartbeat,
    WritesCollector,
    build_app,
    start_http,
)
from agent.qrm.checkpoints import restore_or_new
from agent.qrm.cpu import CPUPolicy
from agent.qrm.gpu import GPUPolicy, build_gpu_policy
from agent.qrm.memory import MemoryPolicy
from agent.qrm.network import NIC, NetworkPolicy
from agent.qrm.server import OnChange, PluginServer, PluginServerError
from agent.reporter import (
    ReclaimSample,
    Reporter,
    ReporterCollector,
    ReportLoop,
    ReportPlanner,
    cpu_weights,
    numa_sockets,
)
from agent.reporter import status as reporter_status
from agent.reporter.devices import device_zones, rdma_allocations
from agent.standalone.kubelet import LocalKubelet
from agent.standalone.node import RECLAIMED_ROOT, LocalNode
from agent.standalone.runtime import ContainerLogs
from agent.sysadvisor import Advisor
from agent.sysadvisor.loop import AdvisorLoop
from agent.sysadvisor.metrics import AdvisorCollector
from agent.sysadvisor.metrics import status as advisor_status
from katalyst.cgroup import CgroupDriver, CgroupError, CgroupFS, HostCgroupFS, open_driver
from katalyst.checkpoint import CheckpointStore
from katalyst.clock import Clock, MonotonicClock, first_of
from katalyst.dynconfig import CNC_GVR
from katalyst.logsetup import configure_logging
from katalyst.qos import PodView
from katalyst.topology import CPUTopology, TopologyError, read_cpu_topology, read_numa_memory

log = logging.getLogger(__name__)
_T = TypeVar("_T")
PROG = "katalyst-agent"
STANDALONE_CGROUP_ROOT = "katalyst"
SERVER_GRACE_S = 1.0
#: A pod's service-account token; with KUBERNETES_SERVICE_HOST, the agent runs in a cluster.
IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


class StartupError(Exception):
    """The agent cannot start; the message says why (exit status 2)."""


def _numa_memory(sysfs: str) -> dict[int, int]:
    numa = read_numa_memory(sysfs)
    if len(numa) <= 1:
        # One node holds all memory; sysfs's per-node MemTotal can be smaller than
        # the machine's on some virtual machines (hot-plugged memory).
        return {next(iter(numa), 0): psutil.virtual_memory().total}
    return numa


def build_policies(
    config: AgentConfig, *, store: CheckpointStore, sysfs: str
) -> tuple[CPUPolicy, MemoryPolicy]:
    """The CPU and memory policies, restored from their checkpoints when those fit."""
    try:
        topology = read_cpu_topology(sysfs)
    except TopologyError as exc:
        raise StartupError(f"cannot read the CPU topology: {exc}") from exc
    missing = config.reserved_cpus.difference(topology.online)
    if missing.ids or not config.reserved_cpus.ids:
        raise StartupError(
            f"reserved_cpus {config.reserved_cpus!s} must be a non-empty set of online CPUs "
            f"({topology.online!s} are online)"
        )
    numa = _numa_memory(sysfs)
    cpu, cpu_restored = restore_or_new(
        store,
        "qrm_cpu_plugin",
        restore=lambda s: CPUPolicy.from_state(s, topology=topology, reserved=config.reserved_cpus),
        new=lambda: CPUPolicy(topology=topology, reserved=config.reserved_cpus),
    )
    memory, memory_restored = restore_or_new(
        store,
        "qrm_memory_plugin",
        restore=lambda s: MemoryPolicy.from_state(s, numa_memory=numa),
        new=lambda: MemoryPolicy(numa_memory=numa),
    )
    log.info(
        "policies ready: cpu %s, memory %s",
        "restored" if cpu_restored else "fresh",
        "restored" if memory_restored else "fresh",
    )
    return cpu, memory


def _checkpointer(
    store: CheckpointStore,
    policy: CPUPolicy | MemoryPolicy | NetworkPolicy | GPUPolicy,
    listeners: Sequence[Callable[[], None]] = (),
) -> OnChange:
    """Save the policy after every change, then tell ``listeners`` (kept by reference:
    loops built later add themselves)."""

    async def save() -> None:
        # The state is taken here, on the event loop; the write and its fsyncs run
        # in a worker thread so the kubelet's calls are not stalled meanwhile. The
        # plugin server awaits this under its lock: saves never overtake each other.
        state = policy.to_state()
        await asyncio.to_thread(store.save, policy.plugin_name, state)
        for listener in listeners:
            listener()

    return save


def socket_dir_for(config: AgentConfig) -> Path:
    """The plugin socket directory; standalone nodes keep theirs in the state dir."""
    if config.standalone is not None and config.qrm_socket_dir == AgentConfig().qrm_socket_dir:
        return config.state_dir / "plugins"
    return config.qrm_socket_dir


def _metrics_loop(
    driver: CgroupDriver,
    containers: Callable[[], Iterable[ContainerRef]],
    *,
    registry: CollectorRegistry,
    heartbeats: list[Heartbeat],
    clock: Clock,
    period: float,
) -> MetricsLoop:
    """Per-container and node metrics, read once a period (the sysadvisor's: it
    decides on every snapshot), served on /metrics and shared with the control
    loops; its heartbeat joins /healthz."""
    beat = Heartbeat("metrics", max_age=max(30.0, 10 * period))
    heartbeats.append(beat)
    loop = MetricsLoop(
        MetricsCollector(driver, clock=clock),
        containers,
        clock=clock,
        period=period,
        heartbeat=beat,
    )
    registry.register(ContainerCollector(loop=loop))
    return loop


def _node_metrics(
    node: LocalNode | ClusterNode,
    config: AgentConfig,
    *,
    listeners: list[Callable[[], None]],
    registry: CollectorRegistry,
    heartbeats: list[Heartbeat],
    clock: Clock,
) -> MetricsLoop:
    """Hook a node (standalone or cluster) into the agent: it hears of allocation
    changes, its cgroup writes are counted, and its containers are measured."""
    listeners.append(node.allocations_changed)
    registry.register(WritesCollector(node.applier))
    return _metrics_loop(
        node.driver,
        node.containers,
        registry=registry,
        heartbeats=heartbeats,
        clock=clock,
        period=config.sysadvisor.period_s,
    )


class _Loop(Protocol):
    async def run(self, stop: asyncio.Event) -> None: ...


LOOP_RESTART_MAX_S = 60.0


async def _supervised(name: str, loop: _Loop, stop: asyncio.Event, clock: Clock) -> None:
    """Run ``loop`` until ``stop``; an unexpected error is logged with its traceback
    and the loop started again after a back-off (1 s doubling to a minute), so that
    one loop's bug does not stop the whole agent and every pod with it. Its
    heartbeat shows the outage on /healthz meanwhile."""
    delay = 1.0
    while not stop.is_set():
        try:
            await loop.run(stop)
            return
        except Exception:
            log.exception("loop %s failed; starting it again in %.0f s", name, delay)
            await first_of(stop, clock.sleep(delay))
            delay = min(LOOP_RESTART_MAX_S, delay * 2)


def _control_loops(
    config: AgentConfig,
    *,
    metrics: MetricsLoop,
    cpu: CPUPolicy,
    cpu_server: PluginServer,
    driver: CgroupDriver,
    reclaimed_cgroup: Callable[[], str | None],
    views: Callable[[], Iterable[PodView]],
    evictor: Evictor,
    registry: CollectorRegistry,
    heartbeats: list[Heartbeat],
    status_parts: dict[str, Callable[[], Mapping[str, object]]],
    clock: Clock,
) -> tuple[AdvisorLoop, EvictionLoop]:
    """The sysadvisor (headroom -> reclaim pool, quota, memory limit) and the eviction
    manager, both driven by the metrics loop's snapshots."""
    advisor_beat = Heartbeat("sysadvisor", max_age=max(30.0, 10 * config.sysadvisor.period_s))
    heartbeats.append(advisor_beat)
    advisor = AdvisorLoop(
        Advisor(config.sysadvisor),
        metrics=metrics,
        cpu=cpu,
        cpu_server=cpu_server,
        driver=driver,
        reclaimed_cgroup=reclaimed_cgroup,
        clock=clock,
        heartbeat=advisor_beat,
    )
    registry.register(AdvisorCollector(advisor))
    status_parts["sysadvisor"] = lambda: advisor_status(advisor)

    manager = EvictionManager(config.eviction, plugins=build_plugins(config.eviction), clock=clock)
    registry.register(EvictionCollector(manager))
    snapshot: list[MetricsSnapshot | None] = [None]

    async def next_sample() -> Sample | None:
        current = snapshot[0] = await metrics.next_snapshot(snapshot[0])
        latest = advisor.latest
        # What the node can lend (before the ramp and the safety layer, both
        # transient): over-commit is about capacity, not a passing surge or restart.
        return build_sample(
            current,
            views(),
            reclaim_cpus=latest.plan.target_reclaim_cpus if latest is not None else None,
            reclaim_memory_bytes=latest.plan.reclaim_memory_limit if latest is not None else None,
        )

    eviction_beat = Heartbeat("eviction", max_age=60.0)
    heartbeats.append(eviction_beat)
    eviction = EvictionLoop(
        manager, evictor, next_sample=next_sample, clock=clock, heartbeat=eviction_beat
    )
    return advisor, eviction


def _isolation(
    config: AgentConfig,
    node: LocalNode | ClusterNode,
    *,
    network: NetworkPolicy,
    nics: Sequence[NIC],
    reclaimed_cgroup: Callable[[], str | None],
    registry: CollectorRegistry,
    heartbeats: list[Heartbeat],
    status_parts: dict[str, Callable[[], Mapping[str, object]]],
    clock: Clock,
    sysfs: str,
) -> list[NetworkLoop | IOLoop]:
    """The network and IO isolation loops of a node (docs/isolation.md)."""
    try:
        return isolation_loops(
            network=config.network,
            io=config.io,
            nics=nics,
            policy=network,
            driver=node.driver,
            containers=node.containers,
            reclaimed_cgroup=reclaimed_cgroup,
            registry=registry,
            heartbeats=heartbeats,
            status_parts=status_parts,
            clock=clock,
            sysfs=sysfs,
        )
    except IsolationSetupError as exc:
        raise StartupError(str(exc)) from exc


def _settings_applier(
    config: AgentConfig,
    controls: Sequence[object],
    *,
    metrics: MetricsLoop,
    heartbeats: Sequence[Heartbeat],
) -> SettingsApplier:
    """The one object that hands new settings to the running loops (agent.dynconfig)."""

    def first(kind: type[_T]) -> _T | None:
        return next((c for c in controls if isinstance(c, kind)), None)

    eviction = first(EvictionLoop)
    return SettingsApplier(
        config,
        advisor=first(AdvisorLoop),
        eviction=eviction.manager if eviction is not None else None,
        network=first(NetworkLoop),
        io=first(IOLoop),
        metrics=metrics,
        heartbeats=heartbeats,
    )


async def _dynamic_config(
    config: AgentConfig,
    applier: SettingsApplier,
    *,
    store: CheckpointStore,
    registry: CollectorRegistry,
    status_parts: dict[str, Callable[[], Mapping[str, object]]],
    clock: Clock,
    views: Callable[[], Iterable[PodView]],
    advisor: AdvisorLoop | None,
    api: ApiClient | None = None,
) -> tuple[tuple[str, _Loop], ...]:
    """The dynamic configuration's source, its checkpoint restored (and, for a folder,
    the folder read once) before the loops start: their first period uses the result.

    With ``--dynamic-config``: the folder (the operator's explicit choice, in any
    mode). Else, with an API server (``api``): this node's CustomNodeConfig; the
    checkpoint is applied first and nothing waits for the API server, whose watch
    retries in the background. Else none."""
    checkpoint = LayerCheckpoint(store.path("dynamic_config"))
    source: FolderSource | ClusterSource
    if config.dynamic_config is not None:
        if not config.dynamic_config.is_dir():
            raise StartupError(f"dynamic_config {config.dynamic_config}: not a directory")
        source = FolderSource(
            config.dynamic_config,
            applier=applier,
            node_name=config.node_name,
            labels=config.node_labels,
            clock=clock,
            checkpoint=checkpoint,
        )
    elif api is not None:
        source = ClusterSource(
            feed=ObjectWatcher(api, resource=CNC_GVR, name=config.node_name, clock=clock),
            reader=ApiServerConfigClient(api),
            events=ApiServerEvictionClient(api),
            applier=applier,
            node_name=config.node_name,
            clock=clock,
            checkpoint=checkpoint,
        )
    else:
        return ()
    registry.register(DynamicConfigCollector(source.record))
    status_parts["dynamic_config"] = source.record.status
    if advisor is not None:
        advisor.service_targets = service_targets_hook(lambda: source.service_overrides, views)
    await source.start()
    return (("dynamic-config", source),)


def _release(loops: Iterable[object]) -> None:
    """After the loops stopped: let the network loop prune what belongs to no one."""
    for loop in loops:
        if isinstance(loop, NetworkLoop):
            loop.release()


def _report_loop(
    config: AgentConfig,
    *,
    metrics: MetricsLoop,
    advisor: AdvisorLoop,
    cpu: CPUPolicy,
    memory: MemoryPolicy,
    gpu: GPUPolicy | None,
    rdma: Sequence[RDMADevice],
    pods: Callable[[], Iterable[PodView]],
    topology: CPUTopology,
    client: ApiServerReportClient,
    registry: CollectorRegistry,
    heartbeats: list[Heartbeat],
    status_parts: dict[str, Callable[[], Mapping[str, object]]],
    clock: Clock,
) -> ReportLoop:
    """The reporter: the sysadvisor's lend, smoothed, as the Node's extended resources
    and the node's CNR (cluster modes only: a standalone node has no API server)."""
    numa_cpus = topology.numa_nodes()
    snapshot: list[MetricsSnapshot | None] = [None]

    async def next_sample() -> ReclaimSample | None:
        snapshot[0] = await metrics.next_snapshot(snapshot[0])
        latest = advisor.latest
        if latest is None:
            return None
        return ReclaimSample(
            cpus=latest.plan.reclaim_cpus,
            memory_bytes=latest.plan.reclaim_memory_limit,
            cpu_weights=cpu_weights(cpu.pools()["reclaim"], numa_cpus),
            memory_weights=dict(memory.topology_capacity()["memory"].allocatable),
            devices=device_zones(gpu, rdma, rdma_allocations(pods())),
        )

    beat = Heartbeat("reporter", max_age=120.0)
    heartbeats.append(beat)
    report = ReportLoop(
        ReportPlanner(config.reporter, numa_sockets=numa_sockets(topology), clock=clock),
        Reporter(client, node_name=config.node_name),
        next_sample=next_sample,
        clock=clock,
        heartbeat=beat,
    )
    registry.register(ReporterCollector(report))
    status_parts["reporter"] = lambda: reporter_status(report)
    return report


async def run(
    config: AgentConfig,
    *,
    stop: asyncio.Event,
    sysfs: str = "/sys",
    cgroupfs: CgroupFS | None = None,
    clock: Clock | None = None,
    cluster_driver: CgroupDriver | None = None,
    node_ready: asyncio.Event | None = None,
    http_ready: asyncio.Future[str] | None = None,
) -> LocalNode | None:
    """Run until ``stop`` is set; return the standalone node (for inspection) if any.

    ``cluster_driver`` replaces the cgroup driver of a cluster node (whose base is
    each hierarchy's root, where the kubelet's ``cgroup_root`` lives): tests put
    their kubelet cgroups below their own. ``http_ready``, when given, receives the
    address /metrics and /healthz are bound to.
    """
    clock = clock or MonotonicClock()
    try:
        config.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        store = CheckpointStore(config.state_dir / "checkpoints")
    except OSError as exc:
        raise StartupError(f"state_dir {config.state_dir}: {exc.strerror}") from exc
    cpu, memory = build_policies(config, store=store, sysfs=sysfs)
    try:
        network, nics = build_network_policy(config.network, store=store, sysfs=sysfs)
    except IsolationSetupError as exc:
        raise StartupError(str(exc)) from exc
    # No GPU or no NVIDIA driver: a GPU plugin that has nothing to share out.
    gpu, _ = build_gpu_policy(store=store, sysfs=sysfs)
    socket_dir = socket_dir_for(config)
    policies: tuple[CPUPolicy | MemoryPolicy | NetworkPolicy | GPUPolicy, ...] = (
        cpu,
        memory,
        network,
        gpu,
    )
    # Loops that must hear of every allocation change (the cluster node in QRM mode).
    listeners: list[Callable[[], None]] = []
    checkpointers = [_checkpointer(store, p, listeners) for p in policies]
    servers = [
        PluginServer(p, socket_dir=socket_dir, clock=clock, on_change=save)
        for p, save in zip(policies, checkpointers, strict=True)
    ]
    node: LocalNode | None = None
    async with contextlib.AsyncExitStack() as stack:
        for server in servers:
            try:
                await server.start()
            except PluginServerError as exc:
                raise StartupError(str(exc)) from exc
            stack.push_async_callback(server.stop, SERVER_GRACE_S)
        log.info("plugins serving on %s", socket_dir)
        registry = CollectorRegistry()
        registry.register(AgentCollector(cpu=cpu, servers=servers))
        heartbeats: list[Heartbeat] = []
        if config.standalone is not None:
            heartbeats.append(Heartbeat("standalone-node", max_age=30.0))
        status_parts: dict[str, Callable[[], Mapping[str, object]]] = {}
        app = build_app(
            registry=registry,
            servers=servers,
            heartbeats=heartbeats,
            clock=clock,
            status=lambda: {k: v for part in status_parts.values() for k, v in part().items()},
        )
        try:
            runner, bound = await start_http(app, config.metrics_addr)
        except OSError as exc:
            raise StartupError(f"metrics_addr {config.metrics_addr}: {exc.strerror}") from exc
        stack.push_async_callback(runner.cleanup)
        if http_ready is not None:
            http_ready.set_result(bound)
        if config.standalone is not None:
            node = await _standalone(
                config,
                stack,
                socket_dir=socket_dir,
                cgroupfs=cgroupfs,
                clock=clock,
                heartbeat=heartbeats[0],
            )
            metrics = _node_metrics(
                node,
                config,
                listeners=listeners,
                registry=registry,
                heartbeats=heartbeats,
                clock=clock,
            )
            local = node
            controls: tuple[_Loop, ...] = _control_loops(
                config,
                metrics=metrics,
                cpu=cpu,
                cpu_server=servers[0],
                driver=node.driver,
                reclaimed_cgroup=lambda: (
                    RECLAIMED_ROOT if local.driver.exists(RECLAIMED_ROOT) else None
                ),
                views=node.views,
                evictor=LocalEvictor(node.evict),
                registry=registry,
                heartbeats=heartbeats,
                status_parts=status_parts,
                clock=clock,
            )
            controls += tuple(
                _isolation(
                    config,
                    node,
                    network=network,
                    nics=nics,
                    reclaimed_cgroup=lambda: (
                        RECLAIMED_ROOT if local.driver.exists(RECLAIMED_ROOT) else None
                    ),
                    registry=registry,
                    heartbeats=heartbeats,
                    status_parts=status_parts,
                    clock=clock,
                    sysfs=sysfs,
                )
            )
            dynamic = await _dynamic_config(
                config,
                _settings_applier(config, controls, metrics=metrics, heartbeats=heartbeats),
                store=store,
                registry=registry,
                status_parts=status_parts,
                clock=clock,
                views=node.views,
                advisor=next((c for c in controls if isinstance(c, AdvisorLoop)), None),
            )
            if node_ready is not None:
                node_ready.set()
            async with asyncio.TaskGroup() as loops:
                named: tuple[tuple[str, _Loop], ...] = (
                    ("metrics", metrics),
                    ("standalone-node", node),
                    *dynamic,
                )
                for name, loop in named:
                    loops.create_task(_supervised(name, loop, stop, clock))
                for control in controls:
                    loops.create_task(_supervised(type(control).__name__, control, stop, clock))
            _release(controls)
        else:
            heartbeat = Heartbeat("cluster-node", max_age=60.0)
            setup = await _cluster(
                config,
                stack,
                socket_dir=socket_dir,
                cgroupfs=cgroupfs,
                driver=cluster_driver,
                clock=clock,
                heartbeat=heartbeat,
            )
            if setup is None:
                if node_ready is not None:
                    node_ready.set()
                await stop.wait()
            else:
                watcher, cluster = setup
                heartbeats.append(heartbeat)
                metrics = _node_metrics(
                    cluster,
                    config,
                    listeners=listeners,
                    registry=registry,
                    heartbeats=heartbeats,
                    clock=clock,
                )
                registry.register(ClusterCollector(node=cluster, watcher=watcher))
                advisor, eviction = _control_loops(
                    config,
                    metrics=metrics,
                    cpu=cpu,
                    cpu_server=servers[0],
                    driver=cluster.driver,
                    reclaimed_cgroup=cluster.reclaimed_cgroup,
                    views=cluster.views,
                    evictor=ApiServerEvictor(
                        ApiServerEvictionClient(watcher.api),
                        node_name=config.node_name,
                        wall=clock.wall,
                    ),
                    registry=registry,
                    heartbeats=heartbeats,
                    status_parts=status_parts,
                    clock=clock,
                )
                report = _report_loop(
                    config,
                    metrics=metrics,
                    advisor=advisor,
                    cpu=cpu,
                    memory=memory,
                    gpu=gpu,
                    rdma=read_rdma_devices(sysfs),
                    pods=cluster.views,
                    topology=read_cpu_topology(sysfs),
                    client=ApiServerReportClient(watcher.api),
                    registry=registry,
                    heartbeats=heartbeats,
                    status_parts=status_parts,
                    clock=clock,
                )
                isolation = _isolation(
                    config,
                    cluster,
                    network=network,
                    nics=nics,
                    reclaimed_cgroup=cluster.reclaimed_cgroup,
                    registry=registry,
                    heartbeats=heartbeats,
                    status_parts=status_parts,
                    clock=clock,
                    sysfs=sysfs,
                )
                controls = (advisor, eviction, report, *isolation)
                dynamic = await _dynamic_config(
                    config,
                    _settings_applier(config, controls, metrics=metrics, heartbeats=heartbeats),
                    store=store,
                    registry=registry,
                    status_parts=status_parts,
                    clock=clock,
                    views=cluster.views,
                    advisor=advisor,
                    api=watcher.api,
                )
                if node_ready is not None:
                    node_ready.set()
                async with asyncio.TaskGroup() as loops:
                    cluster_loops: tuple[tuple[str, _Loop], ...] = (
                        ("pod-watch", watcher),
                        ("cluster-node", cluster),
                        ("metrics", metrics),
                        *dynamic,
                    )
                    for name, loop in cluster_loops:
                        loops.create_task(_supervised(name, loop, stop, clock))
                    for control in controls:
                        loops.create_task(_supervised(type(control).__name__, control, stop, clock))
                _release(controls)
    for save in checkpointers:
        await save()
    log.info("stopped; checkpoints flushed")
    return node


async def _standalone(
    config: AgentConfig,
    stack: contextlib.AsyncExitStack,
    *,
    socket_dir: Path,
    cgroupfs: CgroupFS | None,
    clock: Clock,
    heartbeat: Heartbeat,
) -> LocalNode:
    assert config.standalone is not None
    if not config.standalone.is_dir():
        raise StartupError(f"standalone {config.standalone}: not a directory of Pod manifests")
    root = config.cgroup_root
    if root == AgentConfig().cgroup_root:
        root = STANDALONE_CGROUP_ROOT
    try:
        driver = open_driver(cgroupfs or HostCgroupFS(), base=root, below_own_cgroup=True)
    except CgroupError as exc:
        raise StartupError(f"cgroups: {exc}") from exc
    kubelet = LocalKubelet()
    await stack.enter_async_context(kubelet)
    await kubelet.discover(socket_dir)
    return LocalNode(
        folder=config.standalone,
        driver=driver,
        kubelet=kubelet,
        logs=ContainerLogs(config.state_dir / "logs"),
        clock=clock,
        heartbeat=heartbeat,
    )


def in_cluster(env: Mapping[str, str] | None = None) -> bool:
    """Whether this process runs in a pod with a service account (the DaemonSet)."""
    env = os.environ if env is None else env
    return "KUBERNETES_SERVICE_HOST" in env and IN_CLUSTER_TOKEN.is_file()


async def _cluster(
    config: AgentConfig,
    stack: contextlib.AsyncExitStack,
    *,
    socket_dir: Path,
    cgroupfs: CgroupFS | None,
    driver: CgroupDriver | None,
    clock: Clock,
    heartbeat: Heartbeat,
) -> tuple[PodWatcher, ClusterNode] | None:
    """The pod watch and the cluster node loop; None in QRM mode without an API server.

    In ORM mode they are the agent's job, and a missing API server stops the start.
    With the patched kubelet (QRM) they carry pool resizes to running containers;
    without an API server to list pods that is left to the kubelet's reconcile.
    """
    orm = config.mode is Mode.ORM
    if not orm and config.kubeconfig is None and not in_cluster():
        log.info(
            "qrm mode without --kubeconfig outside a cluster: pool resizes reach running "
            "containers through the kubelet's reconcile only"
        )
        return None
    try:
        api = await connect(config.kubeconfig, node_name=config.node_name)
    except ApiServerError as exc:
        if orm:
            raise StartupError(f"mode orm needs the API server: {exc}") from exc
        log.warning("no API server (%s): pool resizes are left to the kubelet", exc)
        return None
    stack.push_async_callback(api.close)
    if driver is None:
        try:
            driver = open_driver(cgroupfs or HostCgroupFS())
        except CgroupError as exc:
            raise StartupError(f"cgroups: {exc}") from exc
    kubelet = LocalKubelet()
    await stack.enter_async_context(kubelet)
    await kubelet.discover(socket_dir)
    watcher = PodWatcher(api, node_name=config.node_name, clock=clock)
    node = ClusterNode(
        source=watcher,
        driver=driver,
        kubelet=kubelet,
        clock=clock,
        admit=orm,
        cgroup_root=config.cgroup_root,
        heartbeat=heartbeat,
    )
    log.info(
        "following the pods of node %s (%s)",
        config.node_name,
        "admitting them: orm" if orm else "enforcing the kubelet's admissions: qrm",
    )
    return watcher, node


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``katalyst-agent`` console script."""
    try:
        config = load_config(sys.argv[1:] if argv is None else argv)
    except ConfigError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    configure_logging(str(config.log_format))
    try:
        if config.cleanup:
            # Outside any event loop: pyroute2's synchronous API runs one of its own.
            for line in cleanup_node(config) or ["nothing to clean up"]:
                log.info("cleanup: %s", line)
            return 0
        asyncio.run(_main(config))
    except StartupError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    return 0


def cleanup_node(config: AgentConfig, *, cgroupfs: CgroupFS | None = None) -> list[str]:
    """``--cleanup``: remove what the agent wrote to the kernel beyond pod cgroups
    (tc trees and nftables tables on the configured interfaces, net_cls classids,
    the reclaimed pods' IO throttles); returns what it did."""
    fs = cgroupfs or HostCgroupFS()
    try:
        if config.standalone is not None:
            root = config.cgroup_root
            if root == AgentConfig().cgroup_root:
                root = STANDALONE_CGROUP_ROOT
            driver = open_driver(fs, base=root, below_own_cgroup=True)
            reclaimed = [RECLAIMED_ROOT]
        else:
            driver = open_driver(fs)
            root = config.cgroup_root
            reclaimed = [f"{root}/besteffort", f"{root}.slice/{root}-besteffort.slice"]
    except CgroupError as exc:
        raise StartupError(f"cgroups: {exc}") from exc
    return isolation_cleanup(config.network, driver=driver, reclaimed=reclaimed)


async def _main(config: AgentConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run(config, stop=stop)


if __name__ == "__main__":
    sys.exit(main())
