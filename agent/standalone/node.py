"""The local node: the kubelet's part for the pods of a manifest folder.

Every ``sync_period`` it re-reads the folder. A new pod is admitted through the
agent's plugin sockets exactly as the kubelet does (``GetTopologyHints``,
``Allocate``, via :class:`agent.standalone.kubelet.LocalKubelet`); each container
gets a cgroup ``pod<uid>/<container>`` below the node's cgroup root (a reclaimed
pod's below ``reclaimed/``, the common parent whose quota and memory limit the
sysadvisor sets), its allocation applied, and its command started inside it
(init containers first, one after the other). A pod whose manifest disappeared
is stopped, its cgroups removed and its resources released (``RemovePod``); a
changed manifest replaces the pod. Containers that exit are restarted as
``restartPolicy`` says, with exponential back-off. Every ``reconcile_period``
the allocations are fetched again (``GetResourcesAllocation``) and re-applied
(at once when a plugin says its allocations changed), which is how pool resizes
reach running containers.

A pod that fails admission stays failed, with the plugin's message, until its
manifest changes. On shutdown every process is stopped and the cgroups removed,
but allocations are kept (they are checkpointed), so that the same pods get the
same placement when the agent comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import subprocess
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from agent.enforcement.applier import RECLAIMED_SHARES, Applier, target_for
from agent.metaserver.metrics import ContainerRef, cpu_request
from agent.observability import Heartbeat
from agent.standalone.kubelet import (
    AllocationDict,
    LocalKubelet,
    PluginCallError,
    TopologyAffinityError,
    allocation_info,
    pod_for,
)
from agent.standalone.manifests import LocalPod, load_folder
from agent.standalone.runtime import (
    ContainerLogs,
    kill_cgroup_tasks,
    spawn_in_cgroup,
    stop_processes,
)
from katalyst.cgroup import CgroupDriver, CgroupError, CgroupUnsupported
from katalyst.clock import Clock, first_of
from katalyst.qos import PodView, QoSLevel

log = logging.getLogger(__name__)

#: The parent of every reclaimed pod's cgroup (Katalyst's reclaimed root cgroup; the
#: kubelet's ``besteffort`` tier plays that part on a cluster node).
RECLAIMED_ROOT = "reclaimed"
MAX_BACKOFF_S = 30.0
#: A container that ran this long before exiting starts its back-off afresh (the kubelet's 10 min).
BACKOFF_RESET_S = 600.0


@dataclass
class ContainerState:
    """One container of a running pod."""

    name: str
    init: bool
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = 0.0
    exit_code: int | None = None
    done: bool = False
    """An init container that succeeded, or a main container that will not restart."""


@dataclass
class PodState:
    """What the local node knows of one pod."""

    pod: LocalPod
    phase: str = "Pending"
    """Pending, Running, Succeeded, Failed."""
    message: str = ""
    containers: dict[str, ContainerState] = field(default_factory=dict)
    allocations: dict[str, dict[str, AllocationDict]] = field(default_factory=dict)
    """container -> resource name -> allocation, as last admitted or reconciled."""

    @property
    def cgroup(self) -> str:
        """The pod's cgroup, relative to the node's cgroup root: reclaimed pods live
        below the common :data:`RECLAIMED_ROOT`, whose quota and memory limit the
        sysadvisor sets."""
        if self.pod.view.level is QoSLevel.RECLAIMED_CORES:
            return f"{RECLAIMED_ROOT}/pod{self.pod.view.uid}"
        return f"pod{self.pod.view.uid}"


def pod_cpu_shares(pod: LocalPod) -> int:
    """The pod cgroup's ``cpu.shares``, as the kubelet sets it.

    Reclaimed pods get the minimum (2), like the kubelet's BestEffort tier;
    others 1024 per requested core (the kubelet's ``MilliCPUToShares``), at
    least 2, at most 262144.
    """
    if pod.view.level is QoSLevel.RECLAIMED_CORES:
        return RECLAIMED_SHARES
    milli = sum(
        math.ceil(float(c.requests["cpu"].amount) * 1000)
        for c in pod.view.containers
        if "cpu" in c.requests
    )
    return max(2, min(262144, milli * 1024 // 1000))


class LocalNode:
    """Runs the pods of ``folder`` on this machine; see the module docstring."""

    def __init__(
        self,
        *,
        folder: Path,
        driver: CgroupDriver,
        kubelet: LocalKubelet,
        logs: ContainerLogs,
        clock: Clock,
        sync_period: float = 1.0,
        reconcile_period: float = 5.0,
        stop_grace_s: float = 2.0,
        heartbeat: Heartbeat | None = None,
    ) -> None:
        self._folder = folder
        self._driver = driver
        self._kubelet = kubelet
        self._applier = Applier(driver)
        self._logs = logs
        self._clock = clock
        self._sync_period = sync_period
        self._reconcile_period = reconcile_period
        self._grace = stop_grace_s
        self._heartbeat = heartbeat
        self._pods: dict[str, PodState] = {}
        self._reported: set[str] = set()
        self._last_reconcile = float("-inf")
        self._wake = asyncio.Event()

    @property
    def pods(self) -> Mapping[str, PodState]:
        """Pods by ``namespace/name``."""
        return self._pods

    @property
    def applier(self) -> Applier:
        """The applier of every container write (its counters feed /metrics)."""
        return self._applier

    @property
    def driver(self) -> CgroupDriver:
        """The cgroup driver whose base is the node's cgroup root."""
        return self._driver

    def containers(self) -> list[ContainerRef]:
        """The containers of running pods, for per-container metrics."""
        return [
            ContainerRef(
                namespace=state.pod.view.namespace,
                pod=state.pod.view.name,
                container=name,
                qos_level=str(state.pod.view.level),
                cgroup=f"{state.cgroup}/{name}",
                pod_uid=state.pod.view.uid,
                cpu_request=cpu_request(state.pod.view, name),
            )
            for state in list(self._pods.values())
            if state.phase == "Running"
            for name in state.containers
        ]

    async def run(self, stop: asyncio.Event) -> None:
        """Sync until ``stop`` is set, then stop every pod (allocations are kept)."""
        created = self._driver.create("")
        if not created and self._driver.children(""):
            log.warning(
                "the node's cgroup root already holds cgroups (left by an agent that was "
                "killed?); pods of this run are created beside them"
            )
        try:
            await self._guarded("release unknown allocations", self.release_unknown_allocations())
            while not stop.is_set():
                await self._guarded("sync", self.sync())
                if self._heartbeat is not None:
                    self._heartbeat.beat(self._clock.monotonic())
                await first_of(self._clock.sleep(self._sync_period), stop, self._wake)
                self._wake.clear()
        finally:
            await asyncio.gather(*(self._teardown(key) for key in list(self._pods)))
            if created:  # never remove a root this run did not create
                try:
                    self._driver.remove("")
                except CgroupError as exc:
                    log.warning("could not remove the node's cgroup root: %s", exc)

    def views(self) -> list[PodView]:
        """The pods that hold resources (pending or running), for the eviction manager."""
        return [s.pod.view for s in list(self._pods.values()) if s.phase == "Running"]

    async def evict(self, namespace: str, name: str, reason: str) -> bool:
        """Stop a pod as the kubelet evicts one: its containers are stopped, its
        resources released, and it stays ``Failed`` (``Evicted: reason``) until its
        manifest changes. False if no such pod runs."""
        key = f"{namespace}/{name}"
        state = self._pods.get(key)
        if state is None or state.phase != "Running":
            return False
        # Failed before the first await: the sync loop, which runs meanwhile, must
        # see the eviction and not admit the pod again while it is being stopped.
        self._pods[key] = PodState(pod=state.pod, phase="Failed", message=f"Evicted: {reason}")
        log.warning("pod %s evicted: %s", key, reason)
        await self._stop(key, state)
        await self._guarded("release", self._kubelet.remove(state.pod.view.uid))
        return True

    def allocations_changed(self) -> None:
        """A plugin changed allocations outside admission (the sysadvisor resized the
        reclaim pool): re-read and apply them all on the next pass, now."""
        self._last_reconcile = float("-inf")
        self._wake.set()

    async def _guarded(self, what: str, step: Awaitable[None]) -> None:
        """Run one step; a plugin or cgroup failure is logged and retried next pass,
        never the end of the node."""
        try:
            await step
        except (PluginCallError, CgroupError, OSError) as exc:
            log.warning("standalone node: %s failed, retrying on the next pass: %s", what, exc)

    async def release_unknown_allocations(self) -> None:
        """Release what the plugins hold for pods that are no longer in the folder
        (they were removed while the agent was down)."""
        wanted = {p.view.uid for p in load_folder(self._folder)[0].values()}
        held: set[str] = set()
        for pods in (await self._kubelet.reconcile()).values():
            held.update(pods)
        for uid in sorted(held - wanted):
            log.info("releasing the allocation of pod %s, no longer in %s", uid, self._folder)
            await self._kubelet.remove(uid)

    async def sync(self) -> None:
        """One pass: follow the folder, then progress every pod's containers."""
        desired, errors = load_folder(self._folder)
        for error in errors:
            if error.message not in self._reported:
                log.warning("manifest left out: %s", error.message)
        self._reported = {e.message for e in errors}
        for key in list(self._pods):
            current = self._pods[key]
            if key not in desired or desired[key].revision != current.pod.revision:
                log.info("pod %s %s", key, "removed" if key not in desired else "changed")
                await self._teardown(key)
                await self._kubelet.remove(current.pod.view.uid)
        for key, pod in desired.items():
            if key not in self._pods:
                await self._admit(pod)
        now = self._clock.monotonic()
        for state in self._pods.values():
            self._progress(state, now)
        if now - self._last_reconcile >= self._reconcile_period:
            self._last_reconcile = now
            await self._guarded("reconcile", self.reconcile())

    async def reconcile(self) -> None:
        """Fetch every allocation again and apply what changed (pool resizes)."""
        reconciled = await self._kubelet.reconcile()
        for state in self._pods.values():
            if state.phase not in ("Pending", "Running"):
                continue
            uid = state.pod.view.uid
            for name in state.containers:
                per_resource: dict[str, AllocationDict] = {}
                for pods in reconciled.values():
                    per_resource.update(pods.get(uid, {}).get(name, {}))
                if per_resource:
                    state.allocations[name] = per_resource
                    self._apply(state, name)

    async def _admit(self, pod: LocalPod) -> None:
        state = PodState(pod=pod)
        self._pods[pod.key] = state
        try:
            admitted = await self._kubelet.admit(pod_for(pod.view))
        except (PluginCallError, TopologyAffinityError) as exc:
            details = exc.details if isinstance(exc, PluginCallError) else str(exc)
            state.phase, state.message = "Failed", f"admission refused: {details}"
            log.warning("pod %s: %s", pod.key, state.message)
            await self._guarded("release", self._kubelet.remove(pod.view.uid))
            return
        for name, admission in admitted.items():
            flat: dict[str, AllocationDict] = {}
            for resources in admission.allocations.values():
                flat.update(resources)
            state.allocations[name] = flat
        try:
            if pod.view.level is QoSLevel.RECLAIMED_CORES:
                self._driver.create(RECLAIMED_ROOT)
                self._setup_reclaimed_root()  # read-compare-write: cheap to repeat
            self._driver.create(state.cgroup)
            # Weights compete level by level: the pod's own cgroup carries the
            # pod's weight, as the kubelet's pod cgroups do, or a reclaimed
            # container's low weight would only count inside its own pod.
            self._driver.set_cpu_shares(state.cgroup, pod_cpu_shares(pod))
            for spec in pod.containers:
                state.containers[spec.name] = ContainerState(name=spec.name, init=spec.init)
                self._driver.create(f"{state.cgroup}/{spec.name}")
                self._apply(state, spec.name)
        except CgroupError as exc:
            state.phase, state.message = "Failed", f"cannot set up cgroups: {exc}"
            log.warning("pod %s: %s", pod.key, state.message)
            with contextlib.suppress(CgroupError):
                self._driver.remove(state.cgroup)
            await self._guarded("release", self._kubelet.remove(pod.view.uid))
            return
        state.phase = "Running"
        log.info("pod %s admitted (%s)", pod.key, str(pod.view.level))

    def _setup_reclaimed_root(self) -> None:
        """The reclaimed pods' parent runs SCHED_IDLE (``cpu.idle``, Linux 5.15+): a
        waking service task preempts a batch task at once instead of waiting for
        the batch's slice, which a low weight alone does not give (the tail latency
        of the service). Where the kernel has no ``cpu.idle``, the minimum weight
        the kubelet gives its BestEffort tier. The sysadvisor's quota applies on top
        either way."""
        try:
            self._driver.set_cpu_idle(RECLAIMED_ROOT, True)
        except CgroupUnsupported as exc:
            log.info("reclaimed pods get the minimum CPU weight, not SCHED_IDLE: %s", exc)
            self._driver.set_cpu_shares(RECLAIMED_ROOT, RECLAIMED_SHARES)

    def _apply(self, state: PodState, container: str) -> None:
        allocation = state.allocations.get(container, {})
        try:
            target = target_for(
                cgroup=f"{state.cgroup}/{container}",
                level=state.pod.view.level,
                cpu=allocation_info(allocation.get("cpu")),
                memory=allocation_info(allocation.get("memory")),
            )
        except ValueError as exc:
            log.warning(
                "pod %s container %s: unusable allocation: %s", state.pod.key, container, exc
            )
            return
        try:
            self._applier.apply(target)
        except (CgroupError, ValueError) as exc:
            log.warning("pod %s container %s: %s", state.pod.key, container, exc)

    def _progress(self, state: PodState, now: float) -> None:
        if state.phase != "Running":
            return
        inits = [c for c in state.containers.values() if c.init]
        pending_init = next((c for c in inits if not c.done), None)
        if pending_init is not None:
            self._step(state, pending_init, now)
            if pending_init.done and pending_init.exit_code:
                # An init container that failed for good (restartPolicy Never)
                # fails the pod; the main containers never start.
                state.phase = "Failed"
                state.message = (
                    f"init container {pending_init.name} exited {pending_init.exit_code}"
                )
                log.warning("pod %s failed: %s", state.pod.key, state.message)
            return
        for container in state.containers.values():
            if not container.init:
                self._step(state, container, now)
        mains = [c for c in state.containers.values() if not c.init]
        if mains and all(c.done for c in mains):
            failed = any(c.exit_code for c in mains)
            state.phase = "Failed" if failed else "Succeeded"
            log.info("pod %s %s", state.pod.key, state.phase.lower())

    def _step(self, state: PodState, container: ContainerState, now: float) -> None:
        if container.done:
            return
        if container.proc is not None:
            code = container.proc.poll()
            if code is None:
                return
            container.proc = None
            container.exit_code = code
            if now - container.started_at >= BACKOFF_RESET_S:
                container.restarts = 0
            policy = state.pod.restart_policy
            if container.init and code == 0:
                container.done = True
                return
            if policy == "Never" or (policy == "OnFailure" and code == 0):
                container.done = True
                return
            backoff = min(MAX_BACKOFF_S, 2.0**container.restarts)
            container.restarts += 1
            container.next_start = now + backoff
            log.info(
                "pod %s container %s exited %s; restart %d in %.0f s",
                state.pod.key,
                container.name,
                code,
                container.restarts,
                backoff,
            )
            return
        if now < container.next_start:
            return
        spec = next(s for s in state.pod.containers if s.name == container.name)
        cgroup = f"{state.cgroup}/{container.name}"
        if container.restarts:
            kill_cgroup_tasks(self._driver, cgroup)  # what the last run left behind
        try:
            with self._logs.open(
                namespace=state.pod.view.namespace,
                pod=state.pod.view.name,
                container=container.name,
            ) as out:
                container.proc = spawn_in_cgroup(
                    self._driver, cgroup, spec.argv, env=spec.env, stdout=out
                )
        except (OSError, CgroupError, ValueError) as exc:
            container.next_start = now + min(MAX_BACKOFF_S, 2.0 ** (container.restarts + 1))
            container.restarts += 1
            log.warning(
                "pod %s container %s could not start: %s", state.pod.key, container.name, exc
            )
            return
        container.started_at = now
        self._apply(state, container.name)  # oom_score_adj needs the process
        log.info(
            "pod %s container %s started (pid %d)",
            state.pod.key,
            container.name,
            container.proc.pid,
        )

    async def _teardown(self, key: str) -> None:
        """Stop the pod's processes and remove its cgroups (allocations stay).

        The grace period is waited in a thread: the plugin servers share this
        event loop and must keep answering meanwhile.
        """
        await self._stop(key, self._pods.pop(key))

    async def _stop(self, key: str, state: PodState) -> None:
        running = [c.proc for c in state.containers.values() if c.proc is not None]
        await asyncio.to_thread(stop_processes, running, grace_s=self._grace)
        # Children that outlived their container's main process would otherwise be
        # moved to the parent cgroup by the removal and escape the pod's limits.
        for name in state.containers:
            await asyncio.to_thread(kill_cgroup_tasks, self._driver, f"{state.cgroup}/{name}")
        try:
            self._driver.remove(state.cgroup)
        except CgroupError as exc:
            log.warning("pod %s: could not remove its cgroup: %s", key, exc)
