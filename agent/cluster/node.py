"""The node of a cluster: the kubelet's pods, enforced in the kubelet's cgroups.

With a vanilla kubelet (``--mode orm``, the out-of-band resource manager) nobody
calls the plugins, so this loop plays the kubelet's resource-manager part for the
pods the API server binds to this node: a pod that appears is admitted through
the plugin sockets with the kubelet's calls (``GetTopologyHints``, ``Allocate``,
via :class:`agent.standalone.kubelet.LocalKubelet`); a pod that is deleted or
terminates (``Succeeded``/``Failed``) is released (``RemovePod``). The kubelet
has already admitted the pod and will run it whatever the plugins answer, so a
refusal (no exclusive CPUs left, a malformed QoS annotation) is logged and
counted, the pod keeps the placement the kubelet gave it, and admission is tried
again after ``retry_period``.

In both modes (with the patched kubelet, ``--mode qrm``, the kubelet admits and
this loop only enforces) the allocations are written into the containers' cgroups
under the kubelet's cgroup root, whose layout (``cgroupfs`` or ``systemd``
driver) is detected from the hierarchy: on every pod change for that pod, and
every ``reconcile_period`` for all of them after ``GetResourcesAllocation``, which
is how pool resizes reach running containers. Every write is read-compare-write.

With the patched kubelet, a running pod that a plugin holds nothing for at start
(its checkpoint was lost, or set aside as corrupt) is admitted by this loop, so
that the plugins' state is rebuilt from the live pods.

The pod source is level-triggered: each pass compares the source's current pods
with what this loop holds, so a missed or repeated watch event, or a re-list after
410 Gone, cannot leave an allocation behind. At start, once the source has synced,
allocations the plugins hold for pods that no longer exist (deleted while the
agent was down) are released.

A known gap of the out-of-band mode: a container runs with the kubelet's cpuset
from its start until the kubelet reports its container ID and this loop writes
the cgroup (one watch round trip); Katalyst closes it with a runtime hook (NRI).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent.enforcement.applier import Applier, target_for
from agent.metaserver.kubelet_cgroups import (
    CgroupNameError,
    KubeletCgroupDriver,
    container_cgroup,
    detect_kubelet_driver,
)
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
from katalyst.cgroup import CgroupDriver, CgroupError
from katalyst.clock import Clock, first_of
from katalyst.qos import NativeQoSClass, PodView, QoSLevel, QoSValidationError

log = logging.getLogger(__name__)

TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


class PodSource(Protocol):
    """Where the node's pods come from (:class:`agent.metaserver.apiserver.PodWatcher`)."""

    @property
    def pods(self) -> Mapping[str, Mapping[str, Any]]:
        """UID -> the pod's wire JSON."""

    @property
    def synced(self) -> asyncio.Event:
        """Set once ``pods`` holds a complete list."""

    @property
    def changed(self) -> asyncio.Event:
        """Set when ``pods`` changed; cleared by the reader."""


@dataclass
class ClusterPod:
    """What this loop knows of one pod."""

    raw: Mapping[str, Any]
    view: PodView | None = None
    problem: str = ""
    """Why the pod is not (yet) enforced: a QoS model error or a refused admission."""
    admitted: bool = False
    retry_at: float = 0.0
    allocations: dict[str, dict[str, AllocationDict]] = field(default_factory=dict)
    """container -> resource name -> allocation."""
    containers: dict[str, str] = field(default_factory=dict)
    """container name -> its running container's ID (``containerd://...``)."""

    @property
    def key(self) -> str:
        """``namespace/name``."""
        meta = self.raw.get("metadata") or {}
        return f"{meta.get('namespace', 'default')}/{meta.get('name', '?')}"


def _phase(raw: Mapping[str, Any]) -> str:
    status = raw.get("status")
    phase = status.get("phase") if isinstance(status, Mapping) else None
    return phase if isinstance(phase, str) else "Pending"


def running_containers(raw: Mapping[str, Any]) -> dict[str, str]:
    """Container name -> ID of every container (init ones too) the kubelet reports running."""
    status = raw.get("status")
    if not isinstance(status, Mapping):
        return {}
    out: dict[str, str] = {}
    for key in ("initContainerStatuses", "containerStatuses"):
        statuses = status.get(key)
        if not isinstance(statuses, list):
            continue
        for entry in statuses:
            if not isinstance(entry, Mapping):
                continue
            name, cid, state = entry.get("name"), entry.get("containerID"), entry.get("state")
            if (
                isinstance(name, str)
                and isinstance(cid, str)
                and cid
                and isinstance(state, Mapping)
                and "running" in state
            ):
                out[name] = cid
    return out


class ClusterNode:
    """Enforces the plugins' allocations on the kubelet's pods; see the module docstring."""

    def __init__(
        self,
        *,
        source: PodSource,
        driver: CgroupDriver,
        kubelet: LocalKubelet,
        clock: Clock,
        admit: bool,
        cgroup_root: str = "kubepods",
        sync_period: float = 1.0,
        reconcile_period: float = 5.0,
        retry_period: float = 30.0,
        heartbeat: Heartbeat | None = None,
    ) -> None:
        self._source = source
        self._driver = driver
        self._kubelet = kubelet
        self._applier = Applier(driver)
        self._clock = clock
        self._admit_pods = admit
        self._root = cgroup_root
        self._sync_period = sync_period
        self._reconcile_period = reconcile_period
        self._retry_period = retry_period
        self._heartbeat = heartbeat
        self._pods: dict[str, ClusterPod] = {}
        self._layout: KubeletCgroupDriver | None = None
        self._warned_layout = False
        self._besteffort_warned: set[str] = set()
        self._last_reconcile = float("-inf")
        self._pools_changed = False
        self._wake = asyncio.Event()
        self.refusals = 0
        """Admissions refused so far (a pod running as the kubelet placed it)."""

    @property
    def pods(self) -> Mapping[str, ClusterPod]:
        """Pods by UID."""
        return self._pods

    @property
    def applier(self) -> Applier:
        """The applier of every container write (its counters feed /metrics)."""
        return self._applier

    @property
    def driver(self) -> CgroupDriver:
        """The cgroup driver (its base is each hierarchy's root)."""
        return self._driver

    @property
    def layout(self) -> KubeletCgroupDriver | None:
        """The kubelet's cgroup driver, once detected."""
        return self._layout

    def views(self) -> list[PodView]:
        """The pods this loop manages, for the eviction manager."""
        return [p.view for p in list(self._pods.values()) if p.view is not None]

    def reclaimed_cgroup(self) -> str | None:
        """The kubelet's BestEffort tier, where reclaimed pods live (they request only
        Katalyst's extended resources): the sysadvisor's quota target. None until the
        layout is known."""
        if self._layout is None:
            return None
        others = sorted(
            f"{p.view.namespace}/{p.view.name}"
            for p in list(self._pods.values())
            if p.view is not None
            and p.view.qos_class is NativeQoSClass.BEST_EFFORT
            and p.view.level is not QoSLevel.RECLAIMED_CORES
        )
        if others:
            # The tier holds pods that are not reclaimed: a quota there would
            # throttle them with the batch (and starve them in safety mode).
            if set(others) != self._besteffort_warned:
                self._besteffort_warned = set(others)
                log.warning(
                    "BestEffort pods that are not reclaimed_cores run on this node (%s): "
                    "the reclaimed quota and memory limit are not written until they leave",
                    ", ".join(others[:5]),
                )
            return None
        if self._layout is KubeletCgroupDriver.CGROUPFS:
            return f"{self._root}/besteffort"
        return f"{self._root}.slice/{self._root}-besteffort.slice"

    def containers(self) -> list[ContainerRef]:
        """The running containers, for per-container metrics."""
        out: list[ContainerRef] = []
        for uid, pod in list(self._pods.items()):
            if pod.view is None:
                continue
            for name, cid in pod.containers.items():
                cgroup = self._cgroup_of(uid, pod.view, cid)
                if cgroup is not None:
                    out.append(
                        ContainerRef(
                            namespace=pod.view.namespace,
                            pod=pod.view.name,
                            container=name,
                            qos_level=str(pod.view.level),
                            cgroup=cgroup,
                            pod_uid=uid,
                            cpu_request=cpu_request(pod.view, name),
                        )
                    )
        return out

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the pod source until ``stop`` is set."""
        await first_of(self._source.synced, stop)
        if stop.is_set():
            return
        if self._admit_pods:
            await self._guarded("release unknown allocations", self.release_unknown())
        else:
            await self._guarded("adopt running pods", self.adopt_unheld())
        while not stop.is_set():
            self._source.changed.clear()
            self._wake.clear()
            await self._guarded("sync", self.sync())
            if self._heartbeat is not None:
                self._heartbeat.beat(self._clock.monotonic())
            await first_of(
                self._source.changed, self._wake, stop, self._clock.sleep(self._sync_period)
            )

    def allocations_changed(self) -> None:
        """The plugins changed an allocation (the kubelet admitted or removed a pod):
        bring every container in step on the next pass, without waiting a period."""
        self._pools_changed = True
        self._wake.set()

    async def _guarded(self, what: str, step: Awaitable[None]) -> None:
        try:
            await step
        except (PluginCallError, CgroupError, OSError) as exc:
            log.warning("%s failed, retrying on the next pass: %s", what, exc)

    async def release_unknown(self) -> None:
        """Release what the plugins hold for pods that no longer exist."""
        live = set(self._source.pods)
        held: set[str] = set()
        for pods in (await self._kubelet.reconcile()).values():
            held.update(pods)
        for uid in sorted(held - live):
            log.info("releasing the allocation of pod %s, which no longer exists", uid)
            await self._kubelet.remove(uid)

    async def adopt_unheld(self) -> None:
        """QRM mode: admit the running pods that a plugin holds nothing for.

        The kubelet calls Allocate only for containers it starts; if a plugin's
        checkpoint was lost or set aside as corrupt, its state is rebuilt here from
        the live pods (Allocate is idempotent for the plugins that still hold them).
        A refusal leaves the other plugins' allocations alone: the kubelet admitted
        the pod.
        """
        held = await self._kubelet.reconcile()
        now = self._clock.monotonic()
        for uid, raw in list(self._source.pods.items()):
            missing = sorted(resource for resource, pods in held.items() if uid not in pods)
            if _phase(raw) != "Running" or not missing:
                continue
            pod = ClusterPod(raw=raw)
            self._parse(pod)
            if pod.view is None:
                continue
            log.warning(
                "pod %s runs but the %s plugin holds no allocation for it (checkpoint lost "
                "or corrupt?); rebuilding it from the live pod",
                pod.key,
                ", ".join(missing),
            )
            await self._admit(uid, pod, now, release_on_refusal=False)
            self._pods[uid] = pod

    async def sync(self) -> None:
        """One pass: follow the source, admit and release, enforce what changed."""
        if self._layout is None:
            self._layout = detect_kubelet_driver(self._driver, root=self._root)
            if self._layout is not None:
                log.info("kubelet cgroup driver: %s (root %s)", self._layout, self._root)
            elif not self._warned_layout and any(
                map(running_containers, self._source.pods.values())
            ):
                self._warned_layout = True
                log.warning(
                    "containers run but neither %s nor %s.slice exists in the cgroup "
                    "hierarchies: is --cgroup-root the kubelet's? Nothing is enforced until "
                    "it appears",
                    self._root,
                    self._root,
                )
        now = self._clock.monotonic()
        live = {
            uid: raw for uid, raw in self._source.pods.items() if _phase(raw) not in TERMINAL_PHASES
        }
        for uid in [u for u in self._pods if u not in live]:
            gone = self._pods.pop(uid)
            log.info("pod %s is gone or finished; releasing it", gone.key)
            if self._admit_pods and gone.admitted:
                await self._guarded(f"release of pod {gone.key}", self._kubelet.remove(uid))
                self._pools_changed = True
        for uid, raw in live.items():
            pod = self._pods.get(uid)
            if pod is None:
                pod = self._pods[uid] = ClusterPod(raw=raw)
                self._parse(pod)
            elif pod.raw is not raw:
                pod.raw = raw
            if pod.view is None:
                continue
            if self._admit_pods and not pod.admitted and now >= pod.retry_at:
                await self._admit(uid, pod, now)
            containers = running_containers(raw)
            if containers != pod.containers:
                pod.containers = containers
                self._enforce(uid, pod)
        # An admission or a release resizes the pools: the other containers are
        # brought in step in the same pass, not a reconcile period later.
        if self._pools_changed or now - self._last_reconcile >= self._reconcile_period:
            self._last_reconcile, self._pools_changed = now, False
            await self._guarded("reconcile", self.reconcile())

    def _parse(self, pod: ClusterPod) -> None:
        try:
            pod.view = PodView.from_dict(pod.raw)
        except QoSValidationError as exc:
            # Spec and annotations are immutable for a pod's life: one warning.
            pod.problem = f"not managed: {exc}"
            log.warning("pod %s %s", pod.key, pod.problem)

    async def _admit(
        self, uid: str, pod: ClusterPod, now: float, *, release_on_refusal: bool = True
    ) -> None:
        assert pod.view is not None
        try:
            admitted = await self._kubelet.admit(pod_for(pod.view))
        except (PluginCallError, TopologyAffinityError) as exc:
            details = exc.details if isinstance(exc, PluginCallError) else str(exc)
            first = not pod.problem
            pod.problem = f"admission refused: {details}"
            pod.retry_at = now + self._retry_period
            self.refusals += 1
            (log.warning if first else log.debug)(
                "pod %s %s; it keeps the kubelet's placement, retrying in %.0f s",
                pod.key,
                pod.problem,
                self._retry_period,
            )
            if release_on_refusal:
                # Release what the containers admitted before the refusal hold.
                await self._guarded(f"release of pod {pod.key}", self._kubelet.remove(uid))
            return
        pod.admitted, pod.problem = True, ""
        for name, admission in admitted.items():
            flat: dict[str, AllocationDict] = {}
            for resources in admission.allocations.values():
                flat.update(resources)
            pod.allocations[name] = flat
        log.info("pod %s admitted (%s)", pod.key, pod.view.level)
        self._pools_changed = True
        self._enforce(uid, pod)

    async def reconcile(self) -> None:
        """Fetch every allocation again and enforce what changed (pool resizes)."""
        reconciled = await self._kubelet.reconcile()
        for uid, pod in self._pods.items():
            per_container: dict[str, dict[str, AllocationDict]] = {}
            for pods in reconciled.values():
                for name, resources in pods.get(uid, {}).items():
                    per_container.setdefault(name, {}).update(resources)
            if per_container:
                # With the patched kubelet the plugins' answer is the only record.
                pod.allocations = per_container
                pod.admitted = True
            self._enforce(uid, pod)

    def _cgroup_of(self, uid: str, view: PodView, container_id: str) -> str | None:
        if self._layout is None:
            return None
        try:
            return container_cgroup(
                self._layout,
                qos=view.qos_class,
                pod_uid=uid,
                container_id=container_id,
                root=self._root,
            )
        except CgroupNameError as exc:
            log.debug("pod %s/%s: %s", view.namespace, view.name, exc)
            return None

    def _enforce(self, uid: str, pod: ClusterPod) -> None:
        if pod.view is None or not pod.allocations:
            return
        for name, cid in pod.containers.items():
            cgroup = self._cgroup_of(uid, pod.view, cid)
            allocation = pod.allocations.get(name)
            if cgroup is None or allocation is None:
                continue
            try:
                target = target_for(
                    cgroup=cgroup,
                    level=pod.view.level,
                    cpu=allocation_info(allocation.get("cpu")),
                    memory=allocation_info(allocation.get("memory")),
                )
                self._applier.apply(target)
            except (CgroupError, ValueError) as exc:
                log.warning("pod %s container %s: %s", pod.key, name, exc)
