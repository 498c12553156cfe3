"""Block IO isolation's effects: devices, pressure, IO counters and cgroup writes.

Every period :class:`IOLoop`

1. finds the data devices (:class:`BlockDevices`: the configured ones, or every
   whole hardware disk in sysfs);
2. reads every container's IO counters (``io_stat``) and adds what each did since
   the last period to cumulative per-QoS-level counters (a container that goes
   away takes nothing back: the counters only grow) and to the reclaimed tier's
   rate;
3. reads the services' IO pressure (:func:`services_pressure`);
4. asks the :class:`agent.isolation.io.ThrottleController` for the reclaimed
   tier's throttle (pure);
5. writes it, read-compare-write through the cgroup driver, on every data
   device: on cgroup v2 to the reclaimed pods' common parent (``io.max`` limits a
   whole subtree); on cgroup v1 to every cgroup of the reclaimed subtree, split
   evenly among those that hold tasks, because v1's blk-throttle is flat: the
   kernel makes a group's limit apply to its descendants only on the default
   (v2) hierarchy (``block/blk-throttle.c``, ``throtl_pd_init``), which
   ``tests/kernel/test_io_kernel.py`` checks on this kernel;
6. writes each container's and each pod's IO weight from its QoS level.

A setting the kernel does not offer (:class:`CgroupUnsupported`: no blkio
controller, no weight file without BFQ or iocost) is logged once and shown as
unsupported on ``/status`` and ``/metrics``, never an error; a vanished cgroup
(:class:`CgroupNotFound`) is pod churn; a device the kernel refuses (unplugged)
is logged once and skipped. :meth:`IOLoop.cleanup` lifts every limit the loop
wrote and restores every weight, as does switching the loop off.
"""

from __future__ import annotations

import asyncio
import logging
import os
import posixpath
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from agent.isolation.io import IOSignal, ThrottleController, ThrottleDecision
from agent.metaserver.metrics import ContainerRef, HeartbeatSink
from katalyst.cgroup import (
    CgroupDriver,
    CgroupError,
    CgroupInvalidValue,
    CgroupNotFound,
    CgroupUnsupported,
    IOLimit,
    IOStat,
)
from katalyst.clock import Clock, first_of
from katalyst.config.io import DIRECTIONS, IOConfig
from katalyst.qos import QoSLevel

__all__ = [
    "DEFAULT_WEIGHT",
    "BlockDevice",
    "BlockDevices",
    "IOLoop",
    "IOPeriod",
    "PressureReading",
    "PressureSource",
    "services_pressure",
]

log = logging.getLogger(__name__)

DEFAULT_WEIGHT = 100
"""The kernel's default IO weight (v2 ``io.weight``, BFQ's ``blkio.bfq.weight``):
what :meth:`IOLoop.cleanup` restores."""
_RECLAIMED = str(QoSLevel.RECLAIMED_CORES)
_COUNTERS = ("read_bytes", "write_bytes", "read_ios", "write_ios")
#: The IO counter that measures each throttled direction.
_MEASURES = {
    "read_bps": "read_bytes",
    "write_bps": "write_bytes",
    "read_iops": "read_ios",
    "write_iops": "write_ios",
}


# ---- devices -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BlockDevice:
    """A whole disk the throttle applies to."""

    device: str
    """``major:minor`` as cgroup files name it."""
    name: str
    """The kernel's name (``sda``, ``nvme0n1``)."""
    scheduler: str | None
    """The active IO scheduler (``bfq``, ``mq-deadline``, ``none``); weights act only
    under ``bfq`` (or iocost on v2). None when sysfs does not say."""


class BlockDevices:
    """Block devices from sysfs (``<sysfs>/block``, ``<sysfs>/dev/block``,
    ``<sysfs>/class/block``); ``realpath`` resolves ``/dev`` paths (symlinks such as
    ``/dev/disk/by-id/...`` or ``/dev/mapper/...``) to the kernel's name. Both are
    injectable for tests."""

    def __init__(
        self, *, sysfs: str = "/sys", realpath: Callable[[str], str] = os.path.realpath
    ) -> None:
        self._sysfs = sysfs
        self._realpath = realpath

    def discover(self) -> list[BlockDevice]:
        """Every whole disk backed by hardware: entries of ``<sysfs>/block`` with a
        ``device`` link (loop, ram, zram and device-mapper devices have none)."""
        root = posixpath.join(self._sysfs, "block")
        try:
            names = sorted(os.listdir(root))
        except OSError:
            return []
        out = []
        for name in names:
            entry = posixpath.join(root, name)
            if not os.path.lexists(posixpath.join(entry, "device")):
                continue
            found = self._describe(os.path.realpath(entry))
            if found is not None:
                out.append(found)
        return out

    def resolve(self, spec: str) -> BlockDevice | None:
        """The whole disk of ``spec`` (``MAJ:MIN`` or ``/dev/NAME``; a partition gives its
        disk: blk-throttle takes whole disks only); None when the host has no such device."""
        if spec.startswith("/"):
            name = posixpath.basename(self._realpath(spec))
            entry = posixpath.join(self._sysfs, "class", "block", name)
        else:
            entry = posixpath.join(self._sysfs, "dev", "block", spec)
        if not name_is_safe(posixpath.basename(entry)) or not os.path.exists(entry):
            return None
        real = os.path.realpath(entry)
        if os.path.exists(posixpath.join(real, "partition")):
            real = posixpath.dirname(real)
        return self._describe(real)

    def data_devices(self, specs: Sequence[str]) -> tuple[list[BlockDevice], list[str]]:
        """The devices of ``specs`` (every hardware disk when empty), and the specs that
        name no device on this host."""
        if not specs:
            return self.discover(), []
        found: dict[str, BlockDevice] = {}
        missing: list[str] = []
        for spec in specs:
            dev = self.resolve(spec)
            if dev is None:
                missing.append(spec)
            else:
                found.setdefault(dev.device, dev)
        return list(found.values()), missing

    def _describe(self, path: str) -> BlockDevice | None:
        device = _read(posixpath.join(path, "dev"))
        if device is None:
            return None
        scheduler = _read(posixpath.join(path, "queue", "scheduler"))
        active: str | None = None
        if scheduler is not None:
            words = scheduler.split()
            chosen = [w[1:-1] for w in words if w.startswith("[") and w.endswith("]")]
            active = chosen[0] if chosen else (words[0] if len(words) == 1 else None)
        return BlockDevice(device=device, name=posixpath.basename(path), scheduler=active)


def name_is_safe(name: str) -> bool:
    """A device name that stays inside its sysfs directory."""
    return bool(name) and name not in (".", "..") and "/" not in name


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


# ---- pressure ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PressureReading:
    """The services' IO pressure and where it came from."""

    value: float
    """PSI ``some avg10``, percent."""
    scope: Literal["cgroup", "node"]
    """``cgroup``: the worst of the services' own cgroups; ``node``: ``/proc/pressure/io``
    (it counts the reclaimed pods' own stalls too: conservative)."""


PressureSource = Callable[[], PressureReading | None]
"""Reads the services' IO pressure once per period; None when it cannot be read."""


def services_pressure(
    driver: CgroupDriver, containers: Iterable[ContainerRef]
) -> PressureReading | None:
    """The highest IO PSI ``some avg10`` of the non-reclaimed containers' own cgroups,
    where the kernel offers per-cgroup PSI (cgroup v2, or the unified mirror on a
    hybrid host); else the node's ``/proc/pressure/io``; None when neither can be read."""
    worst: float | None = None
    for ref in containers:
        if ref.qos_level == _RECLAIMED:
            continue
        try:
            pressure = driver.pressure(ref.cgroup, "io")
        except CgroupError:
            continue  # gone (pod churn), or not mirrored in the unified hierarchy
        if pressure.scope != "cgroup":
            break  # no per-cgroup PSI in this layout: the node's it is
        worst = pressure.some.avg10 if worst is None else max(worst, pressure.some.avg10)
    if worst is not None:
        return PressureReading(worst, "cgroup")
    try:
        return PressureReading(driver.node_pressure("io").some.avg10, "node")
    except CgroupError:
        return None


# ---- the loop ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IOPeriod:
    """One period of the loop: what it read, decided and wrote."""

    at: float
    """Clock time of the period (seconds, monotonic)."""
    decision: ThrottleDecision
    pressure_scope: str | None
    """``cgroup`` or ``node`` (see :class:`PressureReading`); None without a reading."""
    reclaimed_cgroup: str | None
    devices: tuple[BlockDevice, ...]
    """The data devices of this period."""
    limits: Mapping[str, IOLimit]
    """Per device, the reclaimed tier's limit in force (a device is absent when nothing
    is throttled on it: no reclaimed cgroup, the loop off, a write that failed)."""
    throttled_cgroups: int
    """Cgroups carrying the throttle (1 on v2; the reclaimed subtree on v1)."""
    hierarchical: bool
    """Whether one limit on the parent covers the subtree (cgroup v2)."""
    duration_s: float
    """How long the period's reads, decision and writes took (seconds, wall)."""


class IOLoop:
    """Runs block IO isolation every ``config.period_s``; see the module docstring.

    ``containers`` lists the node's running containers (the metaserver's
    :class:`ContainerRef`); ``reclaimed_cgroup`` names the reclaimed pods' common
    parent, relative to the driver's base (None while there is none); both are
    called on the event loop, once per period. ``sysfs`` is where block devices are
    found (``devices`` replaces the whole lookup). ``pressure`` replaces
    :func:`services_pressure` (tests script it). With ``offload`` (the default) each
    period's file reads and writes, and ``pressure``, run in a worker thread, so
    that a node with many pods never stalls the event loop; tests on a
    :class:`katalyst.clock.FakeClock` pass ``offload=False``.
    """

    def __init__(
        self,
        config: IOConfig,
        *,
        driver: CgroupDriver,
        containers: Callable[[], Sequence[ContainerRef]],
        reclaimed_cgroup: Callable[[], str | None],
        clock: Clock,
        heartbeat: HeartbeatSink | None = None,
        sysfs: str = "/sys",
        devices: BlockDevices | None = None,
        pressure: PressureSource | None = None,
        offload: bool = True,
    ) -> None:
        self._config = config
        self._pending: IOConfig | None = None
        # configure() runs on the event loop, a period in a worker thread: the
        # hand-over is one swap under this lock, so that no new config is lost.
        self._pending_lock = threading.Lock()
        self._driver = driver
        self._containers = containers
        self._reclaimed = reclaimed_cgroup
        self._clock = clock
        self._heartbeat = heartbeat
        self._devices = devices or BlockDevices(sysfs=sysfs)
        self._pressure = pressure
        self._offload = offload
        self._controller = ThrottleController(config)
        self._hierarchical = driver.version == 2
        self._step_lock = threading.Lock()
        self._data_lock = threading.Lock()
        self._throttled: dict[tuple[str, str], IOLimit] = {}
        """(cgroup, device) -> the limit written there (never the empty one)."""
        self._weighted: dict[str, int] = {}
        """cgroup -> the weight written there."""
        self._seen: dict[str, dict[str, IOStat]] = {}
        self._last_measure: float | None = None
        self._totals: dict[tuple[str, str], list[int]] = {}
        self._logged: dict[str, str] = {}
        self.latest: IOPeriod | None = None
        """The last period (None before the first)."""
        self.writes: Counter[tuple[str, str]] = Counter()
        """(setting, outcome) -> count: setting ``throttle`` or ``weight``, outcome
        ``changed``, ``unchanged`` or ``failed``."""
        self.supported: dict[str, bool | None] = {"throttle": None, "weight": None}
        """Per feature, whether the host offers it: None until the loop has tried."""

    @property
    def config(self) -> IOConfig:
        """The settings in force (a :meth:`configure` takes effect at the next period)."""
        with self._pending_lock:
            return self._pending or self._config

    def configure(self, config: IOConfig) -> None:
        """New settings from the next period on (the dynamic configuration's hook;
        safe from any thread). The period's own sleep already running keeps its
        length; the next one is the new ``period_s``."""
        with self._pending_lock:
            self._pending = config

    def usage(self) -> dict[tuple[str, str], tuple[int, int, int, int]]:
        """Cumulative IO per (QoS level, device): read bytes, write bytes, read and
        write operations, since the loop started (never decreasing)."""
        with self._data_lock:
            return {key: (v[0], v[1], v[2], v[3]) for key, v in self._totals.items()}

    def write_counts(self) -> dict[tuple[str, str], int]:
        """A copy of :attr:`writes`, safe to read while a period runs."""
        with self._data_lock:
            return dict(self.writes)

    def status(self) -> Mapping[str, object]:
        """The ``io`` part of the agent's ``/status``: devices and their limits, the
        mode and why, pressure against target, what each QoS level has done (JSON-ready;
        ``{"io": None}`` before the first period)."""
        period = self.latest
        if period is None:
            return {"io": None}
        decision = period.decision
        per_level: dict[str, dict[str, int]] = {}
        for (level, _device), values in sorted(self.usage().items()):
            acc = per_level.setdefault(level, dict.fromkeys(_COUNTERS, 0))
            for name, value in zip(_COUNTERS, values, strict=True):
                acc[name] += value
        config = self.config
        return {
            "io": {
                "enabled": config.enabled,
                "mode": decision.mode,
                "action": decision.action,
                "level": decision.level,
                "pressure": decision.pressure,
                "pressure_scope": period.pressure_scope,
                "pressure_target": decision.target,
                "safety_threshold": decision.safety_threshold,
                "cooldown_left": decision.cooldown_left,
                "stale_periods": decision.stale_periods,
                "reclaimed_cgroup": period.reclaimed_cgroup,
                "hierarchical": period.hierarchical,
                "throttled_cgroups": period.throttled_cgroups,
                "devices": [
                    {
                        "device": d.device,
                        "name": d.name,
                        "scheduler": d.scheduler,
                        "limit": (
                            {k: getattr(period.limits[d.device], k) for k in DIRECTIONS}
                            if d.device in period.limits
                            else None
                        ),
                    }
                    for d in period.devices
                ],
                "supported": dict(self.supported),
                "weights": {str(level): config.weights.for_level(str(level)) for level in QoSLevel},
                "usage": per_level,
                "duration_s": period.duration_s,
            }
        }

    async def run(self, stop: asyncio.Event) -> None:
        """One period every ``period_s`` until ``stop`` is set; beats the heartbeat after
        each period that completed."""
        while not stop.is_set():
            started = self._clock.monotonic()
            # The node's pod tables belong to the event loop: read them here, and
            # only the files in the worker thread.
            containers = list(self._containers())
            reclaimed = self._reclaimed()
            if self._offload:
                await asyncio.to_thread(self._locked_step, containers, reclaimed)
            else:
                self._locked_step(containers, reclaimed)
            if self._heartbeat is not None:
                self._heartbeat.beat(self._clock.monotonic())
            wait = self.config.period_s - (self._clock.monotonic() - started)
            await first_of(stop, self._clock.sleep(max(0.0, wait)))

    def step(self) -> IOPeriod:
        """One period: measure, decide, write (synchronous; see the module docstring)."""
        return self._locked_step(list(self._containers()), self._reclaimed())

    def _locked_step(self, containers: Sequence[ContainerRef], reclaimed: str | None) -> IOPeriod:
        with self._step_lock:
            return self._step(containers, reclaimed)

    def _step(self, containers: Sequence[ContainerRef], reclaimed: str | None) -> IOPeriod:
        started = time.perf_counter()
        with self._pending_lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            self._config = pending
            self._controller.reconfigure(self._config)
        config = self._config
        now = self._clock.monotonic()
        devices, missing = self._devices.data_devices(config.devices)
        self._note_missing(missing)
        rates = self._measure(containers, now)
        if not config.enabled:
            if self._throttled or self._weighted:
                log.info("io: isolation switched off: lifting every limit and weight it wrote")
            self._cleanup()
            self._controller.reset()
            decision = _disabled(config)
            period = IOPeriod(
                at=now,
                decision=decision,
                pressure_scope=None,
                reclaimed_cgroup=reclaimed,
                devices=tuple(devices),
                limits={},
                throttled_cgroups=0,
                hierarchical=self._hierarchical,
                duration_s=time.perf_counter() - started,
            )
            self._publish(period)
            return period
        if self._pressure is not None:
            reading = self._pressure()
        else:
            reading = services_pressure(self._driver, containers)
        previous = self.latest.decision.mode if self.latest is not None else "normal"
        decision = self._controller.step(
            IOSignal(
                pressure=reading.value if reading is not None else None,
                usage_level=_usage_level(config, rates, devices),
            )
        )
        if decision.mode != previous:
            log.warning(
                "io: %s mode (pressure %s, target %.1f %%); reclaimed IO level %.2f",
                decision.mode,
                "unknown" if decision.pressure is None else f"{decision.pressure:.1f} %",
                decision.target,
                decision.level,
            )
        limits, throttled = self._enforce_throttle(decision.limit, devices, reclaimed, config)
        self._enforce_weights(containers, reclaimed, config)
        period = IOPeriod(
            at=now,
            decision=decision,
            pressure_scope=reading.scope if reading is not None else None,
            reclaimed_cgroup=reclaimed,
            devices=tuple(devices),
            limits=limits,
            throttled_cgroups=throttled,
            hierarchical=self._hierarchical,
            duration_s=time.perf_counter() - started,
        )
        self._publish(period)
        return period

    def _publish(self, period: IOPeriod) -> None:
        self.latest = period

    # ---- measuring -----------------------------------------------------------------------

    def _measure(
        self, containers: Sequence[ContainerRef], now: float
    ) -> dict[tuple[str, str], float] | None:
        """Add each container's IO since the last period to the per-level counters;
        return the reclaimed tier's rate per (device, counter) over the period, None
        on the first period."""
        dt = None if self._last_measure is None else now - self._last_measure
        self._last_measure = now
        done: dict[tuple[str, str], int] = {}
        seen: dict[str, dict[str, IOStat]] = {}
        additions: dict[tuple[str, str], list[int]] = {}
        for ref in containers:
            if ref.cgroup in seen:
                continue
            try:
                stats = self._driver.io_stat(ref.cgroup)
            except CgroupError:
                continue  # gone (pod churn), or no IO accounting here
            before = self._seen.get(ref.cgroup)
            seen[ref.cgroup] = stats
            for device, stat in stats.items():
                old = before.get(device) if before is not None else None
                delta = [_delta(getattr(stat, c), getattr(old, c, None)) for c in _COUNTERS]
                acc = additions.setdefault((ref.qos_level, device), [0, 0, 0, 0])
                for i, value in enumerate(delta):
                    acc[i] += value
                if ref.qos_level == _RECLAIMED and old is not None:
                    for i, c in enumerate(_COUNTERS):
                        done[device, c] = done.get((device, c), 0) + delta[i]
        with self._data_lock:
            for key, values in additions.items():
                acc = self._totals.setdefault(key, [0, 0, 0, 0])
                for i, value in enumerate(values):
                    acc[i] += value
        self._seen = seen
        if dt is None or dt <= 0:
            return None
        return {key: value / dt for key, value in done.items()}

    # ---- throttle ------------------------------------------------------------------------

    def _enforce_throttle(
        self,
        limit: IOLimit,
        devices: Sequence[BlockDevice],
        reclaimed: str | None,
        config: IOConfig,
    ) -> tuple[dict[str, IOLimit], int]:
        desired: dict[tuple[str, str], IOLimit] = {}
        cgroups = 0
        if reclaimed is not None and config.throttles and devices:
            targets = self._throttle_targets(reclaimed, limit)
            cgroups = len(targets)
            desired = {(cg, d.device): lim for cg, lim in targets for d in devices}
        applied: dict[str, IOLimit] = {}
        refused: set[str] = set()
        failed: set[str] = set()
        for (cgroup, device), want in desired.items():
            if device in refused:
                continue
            outcome = self._write_limit(cgroup, device, want)
            if outcome == "refused":
                refused.add(device)
            elif outcome == "unsupported":
                break
            elif outcome == "failed":
                failed.add(device)
        if desired and limit != IOLimit() and self.supported["throttle"]:
            for d in devices:
                if d.device not in refused | failed:
                    applied[d.device] = limit
        for key in [k for k in self._throttled if k not in desired]:
            self._write_limit(*key, IOLimit())
        return applied, cgroups

    def _throttle_targets(self, reclaimed: str, limit: IOLimit) -> list[tuple[str, IOLimit]]:
        if self._hierarchical:
            return [(reclaimed, limit)]
        try:
            subtree = self._subtree(reclaimed)
        except CgroupError:
            return []  # the reclaimed parent went away meanwhile
        holders = 0
        for cgroup in subtree:
            try:
                holders += 1 if self._driver.procs(cgroup) else 0
            except CgroupError:
                continue
        share = _split(limit, max(1, holders))
        return [(cgroup, share) for cgroup in subtree]

    def _subtree(self, cgroup: str) -> list[str]:
        out = [cgroup]
        for name in self._driver.children(cgroup):
            try:
                out.extend(self._subtree(f"{cgroup}/{name}"))
            except CgroupNotFound:
                continue
        return out

    def _write_limit(self, cgroup: str, device: str, want: IOLimit) -> str:
        """Read-compare-write one (cgroup, device) limit; the outcome."""
        key = (cgroup, device)
        try:
            changed = self._driver.set_io_limit(cgroup, device, want)
        except CgroupNotFound:
            self._throttled.pop(key, None)
            return "gone"
        except CgroupUnsupported as exc:
            self._count("throttle", "failed")
            self._set_supported("throttle", False, str(exc))
            return "unsupported"
        except CgroupInvalidValue as exc:
            # The kernel refused the device (ENODEV: unplugged since the scan).
            self._throttled.pop(key, None)
            self._count("throttle", "failed")
            self._once(f"device:{device}", f"io: device {device} refused, skipped: {exc}")
            return "refused"
        except CgroupError as exc:
            self._count("throttle", "failed")
            self._once(f"throttle:{cgroup}", f"io: cannot throttle {cgroup!r}: {exc}")
            return "failed"
        self._logged.pop(f"device:{device}", None)
        self._logged.pop(f"throttle:{cgroup}", None)
        self._set_supported("throttle", True, "")
        self._count("throttle", "changed" if changed else "unchanged")
        if changed:
            log.info("io: %s on %s: %s", cgroup, device, _describe_limit(want))
        if want == IOLimit():
            self._throttled.pop(key, None)
        else:
            self._throttled[key] = want
        return "changed" if changed else "unchanged"

    # ---- weights -------------------------------------------------------------------------

    def _enforce_weights(
        self, containers: Sequence[ContainerRef], reclaimed: str | None, config: IOConfig
    ) -> None:
        desired: dict[str, int] = {}
        weights = config.weights
        for ref in containers:
            weight = weights.for_level(ref.qos_level)
            if weight is None:
                continue
            desired[ref.cgroup] = weight
            pod = posixpath.dirname(ref.cgroup)
            if pod and pod != reclaimed:
                # Weights count between siblings: the pod's cgroup competes with the
                # other pods. A pod of mixed levels keeps its first container's.
                desired.setdefault(pod, weight)
        if reclaimed is not None and weights.reclaimed_cores is not None:
            desired[reclaimed] = weights.reclaimed_cores
        written = 0
        unsupported: str | None = None
        for cgroup, weight in desired.items():
            outcome = self._write_weight(cgroup, weight)
            if outcome.startswith("unsupported"):
                unsupported = unsupported or outcome.partition(":")[2]
            elif outcome in ("changed", "unchanged"):
                written += 1
        if written:
            self._set_supported("weight", True, "")
        elif unsupported is not None:
            self._set_supported("weight", False, unsupported)
        for cgroup in [c for c in self._weighted if c not in desired]:
            self._write_weight(cgroup, DEFAULT_WEIGHT, restore=True)

    def _write_weight(self, cgroup: str, weight: int, *, restore: bool = False) -> str:
        try:
            changed = self._driver.set_io_weight(cgroup, weight)
        except CgroupNotFound:
            self._weighted.pop(cgroup, None)
            return "gone"
        except CgroupUnsupported as exc:
            self._weighted.pop(cgroup, None)
            return f"unsupported:{exc}"
        except CgroupError as exc:
            self._count("weight", "failed")
            self._once(f"weight:{cgroup}", f"io: cannot set the IO weight of {cgroup!r}: {exc}")
            return "failed"
        self._logged.pop(f"weight:{cgroup}", None)
        self._count("weight", "changed" if changed else "unchanged")
        if changed:
            log.info("io: weight of %s = %d", cgroup, weight)
        if restore:
            self._weighted.pop(cgroup, None)
        else:
            self._weighted[cgroup] = weight
        return "changed" if changed else "unchanged"

    # ---- cleanup -------------------------------------------------------------------------

    def cleanup(self) -> int:
        """Lift every throttle the loop wrote and give every cgroup it weighted the
        kernel's default weight back; returns how many settings it changed. For the
        agent's shutdown (after :meth:`run` returned) and the ``enabled: false`` switch.
        Cgroups that are gone are skipped."""
        with self._step_lock:
            return self._cleanup()

    def _cleanup(self) -> int:
        changed = 0
        for cgroup, device in list(self._throttled):
            if self._write_limit(cgroup, device, IOLimit()) == "changed":
                changed += 1
            self._throttled.pop((cgroup, device), None)
        for cgroup in list(self._weighted):
            if self._write_weight(cgroup, DEFAULT_WEIGHT, restore=True) == "changed":
                changed += 1
            self._weighted.pop(cgroup, None)
        return changed

    # ---- bookkeeping ---------------------------------------------------------------------

    def _count(self, setting: str, outcome: str) -> None:
        with self._data_lock:
            self.writes[setting, outcome] += 1

    def _set_supported(self, feature: str, value: bool, reason: str) -> None:
        if self.supported[feature] is value:
            return
        self.supported[feature] = value
        if value:
            log.info("io: %s is supported here", feature)
        elif feature == "weight":
            log.warning("io: per-QoS IO weights are not applied on this host: %s", reason)
        else:
            log.warning("io: the reclaimed IO throttle is not applied on this host: %s", reason)

    def _once(self, key: str, message: str) -> None:
        """Log ``message`` at warning once until ``key`` is cleared (by a success)."""
        if self._logged.get(key) != message:
            self._logged[key] = message
            log.warning("%s", message)

    def _note_missing(self, missing: Sequence[str]) -> None:
        for spec in missing:
            self._once(f"missing:{spec}", f"io: device {spec} is not on this host; skipped")
        gone = {f"missing:{s}" for s in missing}
        for key in [k for k in self._logged if k.startswith("missing:") and k not in gone]:
            log.info("io: device %s is back", key.removeprefix("missing:"))
            del self._logged[key]


def _delta(new: int, old: int | None) -> int:
    """Growth of a kernel counter; a counter that went back (the cgroup was made
    anew under the same name) counts from 0."""
    if old is None or new < old:
        return new
    return new - old


def _split(limit: IOLimit, parts: int) -> IOLimit:
    """Each field of ``limit`` divided among ``parts`` cgroups (at least 1 each)."""
    if parts <= 1:
        return limit
    values: dict[str, int | None] = {}
    for direction in DIRECTIONS:
        value: int | None = getattr(limit, direction)
        values[direction] = None if value is None else max(1, value // parts)
    return IOLimit(**values)


def _usage_level(
    config: IOConfig,
    rates: Mapping[tuple[str, str], float] | None,
    devices: Sequence[BlockDevice],
) -> float | None:
    """Where the reclaimed tier's busiest device and direction sits between its floor
    (0) and its ceiling (1); None without a rate or a direction with a ceiling."""
    if rates is None:
        return None
    best: float | None = None
    for direction in DIRECTIONS:
        low, high = config.floor(direction), config.ceiling(direction)
        if low is None or high is None or high <= low:
            continue
        for d in devices:
            rate = rates.get((d.device, _MEASURES[direction]), 0.0)
            level = min(1.0, max(0.0, (rate - low) / (high - low)))
            best = level if best is None else max(best, level)
    return best


def _describe_limit(limit: IOLimit) -> str:
    parts = [f"{d}={getattr(limit, d)}" for d in DIRECTIONS if getattr(limit, d) is not None]
    return " ".join(parts) or "unlimited"


def _disabled(config: IOConfig) -> ThrottleDecision:
    return ThrottleDecision(
        level=1.0,
        limit=IOLimit(),
        mode="disabled",
        action="hold",
        pressure=None,
        target=config.pressure_target,
        safety_threshold=config.pressure_target * config.safety_margin,
        error=None,
        cooldown_left=0,
        stale_periods=0,
    )
