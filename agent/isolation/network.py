"""Network isolation: one HTB class per QoS class on each shaped interface, and a
reclaimed class capped every period from what the others measurably use.

Classes (minor numbers under the agent's root qdisc ``6b71:``, see
:mod:`agent.isolation.tc`):

========  ===========================  ==========================================
class     who                          rate / ceil
========  ===========================  ==========================================
``10``    system_cores, dedicated_     the pods' guaranteed ``net_bandwidth`` (at
          cores, and unclassified      least ``min_class_ratio`` of the link) /
          traffic (the default class)  the link
``20``    shared_cores                 the same for shared pods / the link
``30``    reclaimed_cores              ``min(floor, cap)`` / the cap, at the lowest
                                       priority for spare bandwidth
========  ===========================  ==========================================

The cap follows Heracles (Lo et al., ISCA 2015), from the byte counters of the
other classes measured over the last period::

    cap = link - service_bw - max(headroom_ratio * link, service_margin_ratio * service_bw)

clamped to ``[floor, link]``; a lower cap applies at once, a higher one grows by
at most ``step_up_ratio * link`` per period (the CPU loop's ramp rules), and
counters that are missing for ``stale_periods`` periods put the cap at the floor
(degraded), never at the link.

Traffic is classified by cgroup: each container's ``net_cls.classid`` is the class
id of its QoS class (:mod:`agent.isolation.netcls`) and the agent's nftables
table sets ``skb->priority`` from it (:mod:`agent.isolation.nft`), which HTB maps
to the class. The loop owns its qdisc, classes, table and classids: it restores
them when someone removes them, and :meth:`NetworkLoop.cleanup` removes them all.

:meth:`NetworkLoop.configure` takes new cap settings at run time (the next period
uses them); what was fixed when the loop was built (:data:`STATIC_FIELDS`: the
interfaces, the classification, the qdisc and net_cls set-up, the plugin's
reserve) cannot change without a restart, and a new configuration that changes
it is refused.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from agent.isolation.netcls import NetClsClassifier, NetClsError
from agent.isolation.nft import CgroupV2Rule, ClassifyRule, NftError, NftTable, Rule
from agent.isolation.tc import ClassSpec, ClassStats, HTBShaper, ShaperError, classid
from agent.metaserver.metrics import ContainerRef, HeartbeatSink
from katalyst.cgroup import CgroupError
from katalyst.clock import Clock, first_of
from katalyst.config.network import InterfaceConfig, NetworkConfig, NetworkConfigError
from katalyst.qos import QoSLevel

log = logging.getLogger(__name__)

__all__ = [
    "CLASSES",
    "MINOR",
    "RECLAIMED",
    "SHARED",
    "STATIC_FIELDS",
    "SYSTEM",
    "CapController",
    "CapDecision",
    "InterfaceConfig",
    "NetworkCollector",
    "NetworkConfig",
    "NetworkConfigError",
    "NetworkLoop",
    "ShapedInterface",
    "class_of",
    "class_specs",
    "heracles_cap",
    "static_changes",
]

SYSTEM, SHARED, RECLAIMED = "system", "shared", "reclaimed"
CLASSES: tuple[str, ...] = (SYSTEM, SHARED, RECLAIMED)
MINOR = {SYSTEM: 0x10, SHARED: 0x20, RECLAIMED: 0x30}
"""The leaf class of each QoS class; unclassified traffic goes to ``system``."""
RECLAIMED_PRIO = 7
"""HTB lends spare bandwidth to lower priorities first: the reclaimed class last."""


STATIC_FIELDS: tuple[str, ...] = (
    "interfaces",
    "reserved_ratio",
    "classify",
    "replace_foreign_qdisc",
    "mount_net_cls",
    "net_cls_mountpoint",
)
"""The ``network:`` settings read once at start-up: the interfaces shaped (and their
link rates), the bandwidth plugin's reserve, how traffic is classified, whether a
foreign qdisc is replaced, where net_cls is mounted. The rest (the cap's ratios,
its ramp, the period) is read every period."""


def static_changes(old: NetworkConfig, new: NetworkConfig) -> list[str]:
    """A message per :data:`STATIC_FIELDS` setting that differs between ``old`` (the
    one in force since start-up) and ``new``; empty when ``new`` may be applied."""

    def show(value: object) -> str:
        if isinstance(value, tuple) and all(isinstance(i, InterfaceConfig) for i in value):
            return repr(
                [
                    i.name
                    + (f" at {i.speed_mbit} Mbit/s" if i.speed_mbit else "")
                    + (f" in netns {i.netns}" if i.netns else "")
                    for i in value
                ]
            )
        return repr(value)

    return [
        f"network.{name}: fixed at start-up by the agent's --config file "
        f"({show(getattr(old, name))}); a dynamic config cannot change it "
        f"(got {show(getattr(new, name))})"
        for name in STATIC_FIELDS
        if getattr(old, name) != getattr(new, name)
    ]


def class_of(level: QoSLevel | str) -> str:
    """The network class of a QoS level: dedicated and system pods share one."""
    value = str(level)
    if value == QoSLevel.RECLAIMED_CORES.value:
        return RECLAIMED
    if value == QoSLevel.SHARED_CORES.value:
        return SHARED
    return SYSTEM


# ---- the cap ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CapDecision:
    """One period's decision for the reclaimed class of one interface."""

    cap_mbit: float
    """The reclaimed class's ceil from now on."""
    target_mbit: float | None
    """Heracles' cap for the measured traffic, before the ramp; None when this period
    measured nothing (a baseline, or missing counters)."""
    service_mbit: float | None
    """The other classes' measured traffic; None when not measured this period."""
    mode: str
    """``normal``, or ``degraded`` (counters stale: the floor)."""


def heracles_cap(
    link_mbit: float, service_mbit: float, *, headroom_ratio: float, margin_ratio: float
) -> float:
    """``link - service - max(headroom_ratio * link, margin_ratio * service)``, >= 0."""
    slack = max(headroom_ratio * link_mbit, margin_ratio * service_mbit)
    return max(0.0, link_mbit - service_mbit - slack)


class CapController:
    """The reclaimed cap of one interface, period by period (pure: no I/O)."""

    def __init__(self, config: NetworkConfig, link_mbit: float) -> None:
        if not link_mbit > 0 or not math.isfinite(link_mbit):
            raise ValueError(f"link_mbit must be a positive number, got {link_mbit}")
        self._config = config
        self.link_mbit = link_mbit
        self.floor_mbit = config.reclaimed_floor_ratio * link_mbit
        self.cap_mbit = self.floor_mbit
        """Starts at the floor: nothing is lent before the first measurement."""
        self._missing = 0

    def configure(self, config: NetworkConfig) -> None:
        """New ratios from the next decision on. The cap stays where it is, so that
        the ramp rules apply from there (raised at once to a higher floor, as the
        floor is a guarantee); the count of periods without counters stays."""
        self._config = config
        self.floor_mbit = config.reclaimed_floor_ratio * self.link_mbit
        self.cap_mbit = min(self.link_mbit, max(self.cap_mbit, self.floor_mbit))

    def hold(self) -> CapDecision:
        """A period without a comparable reading that is not a missing one (the first
        reading of a new tree: only a baseline): the cap stays, nothing counts."""
        return CapDecision(self.cap_mbit, None, None, "normal")

    def decide(self, service_mbit: float | None) -> CapDecision:
        cfg = self._config
        if service_mbit is None or not math.isfinite(service_mbit):
            self._missing += 1
            if self._missing >= cfg.stale_periods:
                self.cap_mbit = self.floor_mbit
                return CapDecision(self.cap_mbit, None, None, "degraded")
            return CapDecision(self.cap_mbit, None, None, "normal")
        self._missing = 0
        service = max(0.0, service_mbit)
        target = heracles_cap(
            self.link_mbit,
            service,
            headroom_ratio=cfg.headroom_ratio,
            margin_ratio=cfg.service_margin_ratio,
        )
        target = min(self.link_mbit, max(self.floor_mbit, target))
        if target <= self.cap_mbit:
            self.cap_mbit = target  # down: at once
        else:
            self.cap_mbit = min(target, self.cap_mbit + cfg.step_up_ratio * self.link_mbit)
        return CapDecision(self.cap_mbit, target, service, "normal")


def class_specs(
    link_mbit: float,
    *,
    guaranteed: Mapping[str, float],
    cap_mbit: float,
    config: NetworkConfig,
) -> list[ClassSpec]:
    """The leaf classes of one interface, in :data:`CLASSES` order: the system and
    shared classes guaranteed their pods' bandwidth (at least ``min_class_ratio`` of
    the link) and free to borrow up to the link; the reclaimed class guaranteed the
    floor (never above the cap) and capped at ``cap_mbit``, lent to last."""
    minimum = config.min_class_ratio * link_mbit
    floor = min(config.reclaimed_floor_ratio * link_mbit, cap_mbit)
    return [
        ClassSpec(MINOR[SYSTEM], max(minimum, guaranteed.get(SYSTEM, 0.0)), link_mbit, 0),
        ClassSpec(MINOR[SHARED], max(minimum, guaranteed.get(SHARED, 0.0)), link_mbit, 0),
        ClassSpec(MINOR[RECLAIMED], max(floor, 0.001), max(cap_mbit, 0.001), RECLAIMED_PRIO),
    ]


# ---- one interface --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShapedInterface:
    """An interface to shape and its link rate."""

    name: str
    link_mbit: float
    netns: str | None = None


@dataclass(slots=True)
class InterfaceState:
    """What the loop knows of one interface (for status and metrics)."""

    iface: ShapedInterface
    controller: CapController
    shaper: HTBShaper
    nft: NftTable
    error: str | None = None
    last: CapDecision | None = None
    stats: dict[int, ClassStats] = field(default_factory=dict)
    throughput_mbit: dict[str, float] = field(default_factory=dict)
    guaranteed_mbit: dict[str, float] = field(default_factory=dict)
    _prev: tuple[float, dict[int, int]] | None = None
    writes: int = 0


def _rates(
    before: tuple[float, Mapping[int, int]] | None, now: float, after: Mapping[int, ClassStats]
) -> dict[str, float] | None:
    """Mbit/s per class between two counter readings; None when they cannot be
    compared (first reading, the tree was recreated, no time passed)."""
    if before is None or not after:
        return None
    at, counts = before
    dt = now - at
    if dt <= 0:
        return None
    out: dict[str, float] = {}
    for name, minor in MINOR.items():
        if minor not in after or minor not in counts:
            return None
        delta = after[minor].bytes - counts[minor]
        if delta < 0:
            return None  # counters went back: the class was recreated
        out[name] = delta * 8 / dt / 1_000_000
    return out


class NetworkLoop:
    """Shapes the configured interfaces and classifies the containers' traffic."""

    def __init__(
        self,
        config: NetworkConfig,
        *,
        interfaces: Sequence[ShapedInterface],
        guaranteed: Callable[[], Mapping[str, Mapping[str, float]]],
        containers: Callable[[], Sequence[ContainerRef]],
        classifier: Callable[[], NetClsClassifier] | None,
        clock: Clock,
        cgroupv2_match: Callable[[str], tuple[str, int] | None] | None = None,
        heartbeat: HeartbeatSink | None = None,
        nft: str = "nft",
    ) -> None:
        """``guaranteed()``: interface -> class -> the pods' guaranteed Mbit/s (the
        network plugin's allocations); ``containers()``: the running containers;
        ``classifier()``: opens the net_cls classifier (mounting net_cls if needed;
        called until it succeeds), None to leave classification to someone else;
        ``cgroupv2_match(cgroup)``: instead, per-container ``socket cgroupv2`` rules,
        the container's (path for nft, level) or None while it has no cgroup."""
        self._v2_match = cgroupv2_match
        self._config = config
        self._pending: NetworkConfig | None = None
        self._pending_lock = threading.Lock()
        self._guaranteed = guaranteed
        self._containers = containers
        self._open_classifier = classifier
        self._classifier: NetClsClassifier | None = None
        self.classify_error: str | None = None
        self._clock = clock
        self._heartbeat = heartbeat
        self.interfaces = [
            InterfaceState(
                iface=i,
                controller=CapController(config, i.link_mbit),
                shaper=HTBShaper(
                    i.name,
                    netns=i.netns,
                    default_minor=MINOR[SYSTEM],
                    replace_foreign=config.replace_foreign_qdisc,
                ),
                nft=NftTable(netns=i.netns, nft=nft),
            )
            for i in interfaces
        ]
        self.classified = 0
        self.passes = 0
        self.last_pass_s = 0.0

    @property
    def config(self) -> NetworkConfig:
        """The settings in force (or those the next period takes up)."""
        with self._pending_lock:
            return self._pending or self._config

    def configure(self, config: NetworkConfig) -> None:
        """Cap with ``config`` from the next period on (safe from any thread; the
        period's own sleep already running keeps its length). Raises
        :class:`NetworkConfigError` naming the setting, changing nothing, when
        ``config`` changes one of :data:`STATIC_FIELDS`."""
        problems = static_changes(self._config, config)
        if problems:
            raise NetworkConfigError("; ".join(problems))
        with self._pending_lock:
            self._pending = config

    def _take_pending(self) -> None:
        with self._pending_lock:
            config, self._pending = self._pending, None
        if config is None:
            return
        self._config = config
        for state in self.interfaces:
            state.controller.configure(config)

    @property
    def supported(self) -> bool:
        """Whether every interface is shaped and traffic is classified."""
        return (
            bool(self.interfaces)
            and all(s.error is None for s in self.interfaces)
            and self.classify_error is None
        )

    def _report(self, state: InterfaceState | None, error: str | None) -> None:
        previous = state.error if state is not None else self.classify_error
        if error != previous:
            if error is not None:
                log.error("network isolation: %s", error)
            elif previous is not None:
                log.info("network isolation: recovered (%s)", previous)
        if state is None:
            self.classify_error = error
        else:
            state.error = error

    def _classify(self, containers: Sequence[ContainerRef]) -> None:
        if self._open_classifier is None:
            return
        try:
            if self._classifier is None:
                self._classifier = self._open_classifier()
            targets = {c.cgroup: classid(MINOR[class_of(c.qos_level)]) for c in containers}
            written, _ = self._classifier.sync(targets)
            self.classified = len(targets)
            if written:
                log.debug("net_cls: %d container(s) classified", written)
            self._report(None, None)
        except (NetClsError, CgroupError, OSError) as exc:
            self._report(None, f"cannot classify traffic by cgroup: {exc}")

    def _rules(self, containers: Sequence[ContainerRef]) -> list[Rule]:
        """The nft rules: one per class (net_cls), or one per classified container
        (cgroup v2; system containers need none: theirs is the default class)."""
        if self._v2_match is None:
            return [ClassifyRule(classid(MINOR[c])) for c in CLASSES]
        rules: list[Rule] = []
        for c in sorted(containers, key=lambda ref: ref.cgroup):
            cls = class_of(c.qos_level)
            match = self._v2_match(c.cgroup) if cls != SYSTEM else None
            if match is not None:
                rules.append(CgroupV2Rule(match[0], match[1], classid(MINOR[cls])))
        self.classified = len(rules)
        return rules

    def _shape(
        self, state: InterfaceState, guaranteed: Mapping[str, float], rules: Sequence[Rule]
    ) -> None:
        link = state.iface.link_mbit
        now = self._clock.monotonic()
        try:
            stats = state.shaper.stats()
            baseline_only = state._prev is None and bool(stats)
            rates = _rates(state._prev, now, stats)
            state.stats = stats
            state._prev = (now, {m: s.bytes for m, s in stats.items()}) if stats else None
            state.throughput_mbit = rates or {}
            service = None if rates is None else rates[SYSTEM] + rates[SHARED]
            decision = (
                state.controller.hold() if baseline_only else state.controller.decide(service)
            )
            specs = class_specs(
                link, guaranteed=guaranteed, cap_mbit=decision.cap_mbit, config=self._config
            )
            state.guaranteed_mbit = {
                name: spec.rate_mbit for name, spec in zip(CLASSES, specs, strict=True)
            }
            if state.shaper.ensure(link, specs):
                state.writes += 1
            if state.nft.ensure(rules):
                state.writes += 1
            state.last = decision
            self._report(state, None)
        except (ShaperError, NftError, OSError) as exc:
            state._prev = None
            self._report(state, str(exc))

    def _inputs(self) -> tuple[list[ContainerRef], dict[str, dict[str, float]]]:
        """The containers and the guarantees, read where the node and the plugin
        keep them (the event loop's thread)."""
        guaranteed = {nic: dict(rates) for nic, rates in self._guaranteed().items()}
        return list(self._containers()), guaranteed

    def step(
        self,
        containers: Sequence[ContainerRef] | None = None,
        guaranteed: Mapping[str, Mapping[str, float]] | None = None,
    ) -> None:
        """One period: classify, measure, decide, write (blocking: netlink and nft).
        ``containers`` and ``guaranteed`` default to the callables' answers."""
        if containers is None or guaranteed is None:
            containers, guaranteed = self._inputs()
        self._take_pending()
        start = self._clock.monotonic()
        self._classify(containers)
        rules = self._rules(containers)
        for state in self.interfaces:
            self._shape(state, guaranteed.get(state.iface.name, {}), rules)
        self.passes += 1
        self.last_pass_s = self._clock.monotonic() - start

    async def run(self, stop: asyncio.Event) -> None:
        """Every period until ``stop``; the work runs in a worker thread."""
        while not stop.is_set():
            containers, guaranteed = self._inputs()
            await asyncio.to_thread(self.step, containers, guaranteed)
            # Alive even where the host cannot shape (no nft, a foreign qdisc): that
            # is reported as unsupported, and must not fail /healthz and restart
            # the agent with every pod's isolation.
            if self._heartbeat is not None:
                self._heartbeat.beat(self._clock.monotonic())
            await first_of(stop, self._clock.sleep(self.config.period_s))

    def release(self) -> None:
        """After the loops stopped (the agent exits): prune the net_cls directories of
        containers that are gone. The tree, the table and the classids of running
        containers stay, so that isolation holds while the agent restarts."""
        if self._classifier is not None:
            self._classifier.release()

    def cleanup(self) -> list[str]:
        """Remove every qdisc, table and classid the loop made; what was removed."""
        done: list[str] = []
        for state in self.interfaces:
            try:
                if state.shaper.remove():
                    done.append(f"qdisc on {state.shaper.where}")
            except ShaperError as exc:
                log.warning("network cleanup: %s", exc)
            try:
                if state.nft.remove():
                    done.append(state.nft.where)
            except NftError as exc:
                log.warning("network cleanup: %s", exc)
        if self._classifier is not None:
            self._classifier.cleanup()
            done.append(f"net_cls classids below {self._classifier.mountpoint}")
        return done

    def status(self) -> Mapping[str, object]:
        """The ``network`` part of ``/status``."""
        return {
            "network": {
                "supported": self.supported,
                "classified_containers": self.classified,
                "classify_error": self.classify_error,
                "interfaces": [
                    {
                        "name": s.iface.name,
                        "netns": s.iface.netns,
                        "link_mbit": s.iface.link_mbit,
                        "mode": s.last.mode if s.last else None,
                        "reclaimed_cap_mbit": s.last.cap_mbit if s.last else None,
                        "cap_target_mbit": s.last.target_mbit if s.last else None,
                        "service_mbit": s.last.service_mbit if s.last else None,
                        "guaranteed_mbit": dict(s.guaranteed_mbit),
                        "throughput_mbit": dict(s.throughput_mbit),
                        "error": s.error,
                    }
                    for s in self.interfaces
                ],
            }
        }


class NetworkCollector(Collector):
    """``katalyst_network_*``: per interface and class, the configured rate and
    ceil, the cap, the measured throughput, bytes and drops."""

    def __init__(self, loop: NetworkLoop) -> None:
        self._loop = loop

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        loop = self._loop
        link = GaugeMetricFamily(
            "katalyst_network_link_mbit", "Link rate shaped to, Mbit/s", labels=["interface"]
        )
        rate = GaugeMetricFamily(
            "katalyst_network_class_rate_mbit",
            "Guaranteed rate of the class (HTB rate), Mbit/s",
            labels=["interface", "qos_class"],
        )
        ceil = GaugeMetricFamily(
            "katalyst_network_class_ceil_mbit",
            "Most the class may use (HTB ceil) as the kernel holds it, Mbit/s",
            labels=["interface", "qos_class"],
        )
        through = GaugeMetricFamily(
            "katalyst_network_class_throughput_mbit",
            "Measured throughput of the class over the last period, Mbit/s",
            labels=["interface", "qos_class"],
        )
        sent = CounterMetricFamily(
            "katalyst_network_class_bytes",
            "Bytes sent through the class (since the class was created)",
            labels=["interface", "qos_class"],
        )
        drops = CounterMetricFamily(
            "katalyst_network_class_drops",
            "Packets the class dropped (since the class was created)",
            labels=["interface", "qos_class"],
        )
        cap = GaugeMetricFamily(
            "katalyst_network_reclaimed_cap_mbit",
            "The reclaimed class's cap in force, Mbit/s",
            labels=["interface"],
        )
        target = GaugeMetricFamily(
            "katalyst_network_reclaimed_cap_target_mbit",
            "Heracles' cap for the measured traffic, before the ramp, Mbit/s",
            labels=["interface"],
        )
        service = GaugeMetricFamily(
            "katalyst_network_service_mbit",
            "Measured traffic of the system and shared classes, Mbit/s",
            labels=["interface"],
        )
        degraded = GaugeMetricFamily(
            "katalyst_network_degraded",
            "1 while the counters are stale and the cap is at the floor",
            labels=["interface"],
        )
        ok = GaugeMetricFamily(
            "katalyst_network_interface_shaped",
            "1 when the interface holds the agent's tree, 0 when it could not be shaped",
            labels=["interface"],
        )
        for s in loop.interfaces:
            name = s.iface.name
            link.add_metric([name], s.iface.link_mbit)
            ok.add_metric([name], 0.0 if s.error else 1.0)
            for cls in CLASSES:
                st = s.stats.get(MINOR[cls])
                if cls in s.guaranteed_mbit:
                    rate.add_metric([name, cls], s.guaranteed_mbit[cls])
                if st is not None:
                    ceil.add_metric([name, cls], st.ceil_mbit)
                    sent.add_metric([name, cls], float(st.bytes))
                    drops.add_metric([name, cls], float(st.drops))
                if cls in s.throughput_mbit:
                    through.add_metric([name, cls], s.throughput_mbit[cls])
            if s.last is not None:
                cap.add_metric([name], s.last.cap_mbit)
                if s.last.target_mbit is not None:
                    target.add_metric([name], s.last.target_mbit)
                degraded.add_metric([name], 1.0 if s.last.mode == "degraded" else 0.0)
                if s.last.service_mbit is not None:
                    service.add_metric([name], s.last.service_mbit)
        duration = GaugeMetricFamily(
            "katalyst_network_loop_duration_seconds", "Duration of the last network pass"
        )
        duration.add_metric([], loop.last_pass_s)
        classified = GaugeMetricFamily(
            "katalyst_network_classified_containers",
            "Containers whose net_cls.classid the agent set in the last pass",
        )
        classified.add_metric([], float(loop.classified))
        yield from (link, rate, ceil, through, sent, drops, cap, target, service, degraded, ok)
        yield from (duration, classified)
