"""Build the isolation pieces from the agent's settings: the network plugin's NIC
inventory and policy, the network and IO loops with their metrics, and
``--cleanup``. The composition root (:mod:`agent.app`) calls these."""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Callable, Iterable, Mapping, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from agent.isolation.io_loop import IOLoop
from agent.isolation.io_metrics import IOCollector
from agent.isolation.netcls import (
    NetClsClassifier,
    NetClsError,
    find_net_cls,
    mount_net_cls,
    reset_classids,
)
from agent.isolation.network import (
    NetworkCollector,
    NetworkConfig,
    NetworkLoop,
    ShapedInterface,
)
from agent.isolation.nft import NftError, NftTable
from agent.isolation.tc import HANDLE_MAJOR, HTBShaper, ShaperError
from agent.metaserver.metrics import ContainerRef
from agent.observability import Heartbeat
from agent.qrm.checkpoints import restore_or_new
from agent.qrm.network import NIC, NetworkPolicy, NICInventoryError, read_nics
from katalyst.cgroup import CgroupDriver, CgroupError, IOLimit
from katalyst.checkpoint import CheckpointStore
from katalyst.clock import Clock
from katalyst.config.io import IOConfig

log = logging.getLogger(__name__)


class IsolationSetupError(Exception):
    """The settings name something the host does not have; the message says what."""


def network_nics(config: NetworkConfig, sysfs: str) -> list[NIC]:
    """The NICs the network plugin accounts: the configured interfaces (those in a
    named namespace from the configuration alone, since the host's sysfs does not
    show them), or every physical NIC when none is configured."""
    host = [i for i in config.interfaces if i.netns is None]
    nics: list[NIC] = []
    try:
        if host or not config.interfaces:
            inventory = read_nics(
                sysfs,
                interfaces=[i.name for i in host],
                speeds={i.name: i.speed_mbit for i in host if i.speed_mbit is not None},
            )
            nics.extend(inventory.nics)
        for i in config.interfaces:
            if i.netns is None:
                continue
            if i.speed_mbit is None:
                raise IsolationSetupError(
                    f"network.interfaces: {i.name} (netns {i.netns}) needs speed_mbit: the "
                    "host's sysfs does not show interfaces of other namespaces"
                )
            nics.append(NIC(name=i.name, speed_mbit=i.speed_mbit, numa_node=None, netns=i.netns))
    except (NICInventoryError, ValueError) as exc:
        raise IsolationSetupError(f"network.interfaces: {exc}") from exc
    return nics


NFT_CGROUP_BASE = "/sys/fs/cgroup"
"""Where nft looks up ``socket cgroupv2`` paths (it assumes the cgroup2 mount there)."""


def cgroupv2_match(driver: CgroupDriver) -> Callable[[str], tuple[str, int] | None]:
    """A container cgroup -> (its path for nft, its level in the cgroup2 hierarchy);
    None while it has no directory in the unified hierarchy, or when that hierarchy
    is not below ``/sys/fs/cgroup`` (where nft resolves paths)."""
    unified = driver.layout.unified

    def match(cgroup: str) -> tuple[str, int] | None:
        if unified is None:
            return None
        try:
            path = driver.path_in(unified, cgroup)
        except CgroupError:
            return None
        if not driver.fs.is_dir(path):
            return None
        for_nft = posixpath.relpath(path, NFT_CGROUP_BASE)
        if for_nft.startswith(".."):
            return None
        in_hierarchy = posixpath.join(unified.root, posixpath.relpath(path, unified.mountpoint))
        level = len([p for p in posixpath.normpath(in_hierarchy).split("/") if p not in ("", ".")])
        return for_nft, level

    return match


def build_network_policy(
    config: NetworkConfig, *, store: CheckpointStore, sysfs: str
) -> tuple[NetworkPolicy, list[NIC]]:
    """The ``qrm_network_plugin`` policy, restored from its checkpoint when it fits."""
    nics = network_nics(config, sysfs)
    policy, restored = restore_or_new(
        store,
        "qrm_network_plugin",
        restore=lambda s: NetworkPolicy.from_state(
            s, nics=nics, reserved_ratio=config.reserved_ratio
        ),
        new=lambda: NetworkPolicy(nics, reserved_ratio=config.reserved_ratio),
    )
    log.info(
        "network plugin %s: %s",
        "restored" if restored else "fresh",
        ", ".join(f"{n.name} {n.speed_mbit} Mbit/s" for n in nics) or "no NICs",
    )
    return policy, nics


class SupportedCollector(Collector):
    """``katalyst_isolation_supported{resource, feature}``: one family for every
    isolation loop (a registry refuses the same family from two collectors)."""

    def __init__(self, *, network: NetworkLoop | None, io: IOLoop | None) -> None:
        self._network = network
        self._io = io

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "katalyst_isolation_supported",
            "Whether the host offers an isolation feature (1) or not (0)",
            labels=["resource", "feature"],
        )
        net = self._network
        if net is not None and net.passes:
            shaped = bool(net.interfaces) and all(s.error is None for s in net.interfaces)
            family.add_metric(["network", "shaping"], 1.0 if shaped else 0.0)
            family.add_metric(["network", "classification"], 0.0 if net.classify_error else 1.0)
        if self._io is not None:
            for feature, value in sorted(self._io.supported.items()):
                if value is not None:
                    family.add_metric(["io", feature], 1.0 if value else 0.0)
        yield family


def isolation_loops(
    *,
    network: NetworkConfig,
    io: IOConfig,
    nics: Sequence[NIC],
    policy: NetworkPolicy,
    driver: CgroupDriver,
    containers: Callable[[], Sequence[ContainerRef]],
    reclaimed_cgroup: Callable[[], str | None],
    registry: CollectorRegistry,
    heartbeats: list[Heartbeat],
    status_parts: dict[str, Callable[[], Mapping[str, object]]],
    clock: Clock,
    sysfs: str,
) -> list[NetworkLoop | IOLoop]:
    """The network loop (when interfaces are configured) and the IO loop (unless
    ``io.enabled`` is false), their metrics, ``/status`` parts and heartbeats."""
    loops: list[NetworkLoop | IOLoop] = []
    net_loop: NetworkLoop | None = None
    if network.interfaces:
        speeds = {n.name: n.speed_mbit for n in nics}
        shaped = [
            ShapedInterface(i.name, float(i.speed_mbit or speeds.get(i.name, 0)), i.netns)
            for i in network.interfaces
        ]
        missing = [s.name for s in shaped if s.link_mbit <= 0]
        if missing:
            raise IsolationSetupError(
                f"network.interfaces: no speed known for {', '.join(missing)}; set speed_mbit"
            )

        def classifier() -> NetClsClassifier:
            hier = (
                mount_net_cls(driver.fs, network.net_cls_mountpoint)
                if network.mount_net_cls
                else find_net_cls(driver.fs)
            )
            if hier is None:
                raise NetClsError("net_cls is not mounted and network.mount_net_cls is false")
            return NetClsClassifier(driver, hier)

        unified = driver.layout.unified
        v2_usable = (
            unified is not None
            and unified in driver.hierarchies()
            and not posixpath.relpath(unified.mountpoint, NFT_CGROUP_BASE).startswith("..")
        )
        if network.classify == "cgroupv2" and not v2_usable:
            raise IsolationSetupError(
                f"network.classify: cgroupv2 needs the cgroup2 hierarchy below "
                f"{NFT_CGROUP_BASE}, managed by the agent (found: "
                f"{unified.mountpoint if unified else 'none'}); set network.classify: net_cls"
            )
        v2 = network.classify == "cgroupv2" or (
            network.classify == "auto" and driver.version == 2 and v2_usable
        )
        beat = Heartbeat("network", max_age=max(30.0, 10 * network.period_s))
        heartbeats.append(beat)
        net_loop = NetworkLoop(
            network,
            interfaces=shaped,
            guaranteed=policy.class_rates,
            containers=containers,
            classifier=None if v2 else classifier,
            cgroupv2_match=cgroupv2_match(driver) if v2 else None,
            clock=clock,
            heartbeat=beat,
        )
        registry.register(NetworkCollector(net_loop))
        status_parts["network"] = net_loop.status
        loops.append(net_loop)
    io_loop: IOLoop | None = None
    if io.enabled:
        beat = Heartbeat("io", max_age=max(30.0, 10 * io.period_s))
        heartbeats.append(beat)
        io_loop = IOLoop(
            io,
            driver=driver,
            containers=containers,
            reclaimed_cgroup=reclaimed_cgroup,
            clock=clock,
            heartbeat=beat,
            sysfs=sysfs,
        )
        registry.register(IOCollector(io_loop, supported=False))
        status_parts["io"] = io_loop.status
        loops.append(io_loop)
    registry.register(SupportedCollector(network=net_loop, io=io_loop))
    return loops


def cleanup(network: NetworkConfig, *, driver: CgroupDriver, reclaimed: Sequence[str]) -> list[str]:
    """``katalyst-agent --cleanup``: remove the agent's tc trees and nftables tables
    from the configured interfaces, reset every classid it hands out, and lift the
    IO throttles in the ``reclaimed`` cgroup subtrees; returns what was done."""
    done: list[str] = []
    for i in network.interfaces:
        shaper = HTBShaper(i.name, netns=i.netns, default_minor=0x10)
        try:
            if shaper.remove():
                done.append(f"removed the agent's tc tree from {shaper.where}")
        except ShaperError as exc:
            log.warning("cleanup: %s", exc)
        table = NftTable(netns=i.netns)
        try:
            if table.remove():
                done.append(f"removed {table.where}")
        except NftError as exc:
            log.warning("cleanup: %s", exc)
    if not network.interfaces:
        # The table may be left in the agent's own namespace from an older config.
        table = NftTable()
        try:
            if table.available() and table.remove():
                done.append(f"removed {table.where}")
        except NftError as exc:
            log.warning("cleanup: %s", exc)
    hier = find_net_cls(driver.fs)
    if hier is not None:
        try:
            top = NetClsClassifier(driver, hier).path_for("")
        except CgroupError as exc:
            log.warning("cleanup: net_cls: %s", exc)
            top = None
        count = (
            reset_classids(driver.fs, hier, major=HANDLE_MAJOR, top=top)
            if top is not None and driver.fs.is_dir(top)
            else 0
        )
        if count:
            done.append(f"reset {count} net_cls classid(s) below {hier.mountpoint}")
    lifted = 0
    for top in reclaimed:
        lifted += _lift_io(driver, top)
    if lifted:
        done.append(f"lifted {lifted} IO throttle(s) of reclaimed cgroups")
    return done


def _lift_io(driver: CgroupDriver, top: str) -> int:
    if not driver.exists(top):
        return 0
    lifted = 0
    stack = [top]
    while stack:
        cgroup = stack.pop()
        try:
            stack.extend(f"{cgroup}/{c}" for c in driver.children(cgroup))
            for device in driver.io_limited_devices(cgroup):
                if driver.set_io_limit(cgroup, device, IOLimit()):
                    lifted += 1
        except CgroupError as exc:
            log.warning("cleanup: %s: %s", cgroup, exc)
    return lifted


__all__ = [
    "IsolationSetupError",
    "SupportedCollector",
    "build_network_policy",
    "cleanup",
    "isolation_loops",
    "network_nics",
]
