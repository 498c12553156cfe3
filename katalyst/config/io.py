"""Settings of block IO isolation (the ``io:`` section of the agent's file).

Two mechanisms, both per block device:

* **weights**: every container's cgroup (and its pod's) gets the proportional IO
  weight of its QoS level, so that under contention the services' requests are
  served before the batch's (it needs an IO scheduler that honours weights: BFQ,
  or iocost on cgroup v2);
* **a dynamic throttle of the reclaimed pods**: a bytes- and operations-per-second
  limit on the reclaimed tier, between a floor (``min_*``) and a ceiling
  (``max_*``), tightened at once when the services' IO pressure rises above
  :attr:`IOConfig.pressure_target` and relaxed step by step when it falls.

:meth:`IOConfig.from_mapping` builds the section from decoded YAML/JSON and
refuses anything else with an :class:`IOConfigError` whose message names the key
and the rule (``io.min_write_bps: must be <= io.max_write_bps (1048576), got
2097152``). Keys left out keep their defaults; unknown keys are errors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from katalyst.cgroup.driver import BYTES_MAX, IOPS_MAX
from katalyst.settings import (
    Check,
    Section,
    SettingError,
    boolean,
    describe,
    integer,
    number,
    optional,
    setting,
)

__all__ = [
    "DIRECTIONS",
    "IOConfig",
    "IOConfigError",
    "IOWeightsConfig",
    "MiB",
]

MiB = 1024 * 1024

DIRECTIONS: tuple[str, ...] = ("read_bps", "write_bps", "read_iops", "write_iops")
"""The four throttled quantities, named as :class:`katalyst.cgroup.IOLimit`'s fields."""

_DEVICE_SPEC = re.compile(r"[0-9]+:[0-9]+|/dev/[A-Za-z0-9_.:@+/-]+", re.ASCII)


class IOConfigError(SettingError):
    """An ``io`` setting broke a rule; the message names the key and the rule."""


class _IOSection(Section):
    __slots__ = ()
    error = IOConfigError
    where = "io"


def _devices() -> Check:
    """A list of block devices, each ``MAJ:MIN`` or ``/dev/NAME``, no repeats."""
    rule = 'a block device as "MAJ:MIN" (e.g. "8:0") or "/dev/NAME"'

    def check(where: str, value: object) -> object:
        if not isinstance(value, list | tuple):
            raise SettingError(f"{where}: must be a list of block devices, got {describe(value)}")
        seen: set[str] = set()
        for i, item in enumerate(value):
            if not isinstance(item, str) or _DEVICE_SPEC.fullmatch(item) is None:
                raise SettingError(f"{where}[{i}]: must be {rule}, got {describe(item)}")
            if ".." in item.split("/"):
                raise SettingError(f"{where}[{i}]: must not contain '..', got {item!r}")
            if item in seen:
                raise SettingError(f"{where}[{i}]: {item!r} is listed twice")
            seen.add(item)
        return tuple(value)

    return check


def _bps() -> Check:
    return optional(integer(1, BYTES_MAX))


def _iops() -> Check:
    return optional(integer(1, IOPS_MAX))


def _weight(default: int | None) -> Any:
    return setting(default, optional(integer(1, 10000)))


@dataclass(frozen=True, slots=True)
class IOWeightsConfig(_IOSection):
    """Proportional IO weight per QoS level, in cgroup v2 ``io.weight`` units [1, 10000]
    (100 is the kernel's default). On cgroup v1 the driver writes ``blkio.bfq.weight``
    (or CFQ's ``blkio.weight``), clamped to that file's range [1 or 10, 1000]. Null
    leaves the level's cgroups at whatever weight they have.

    Weights count between siblings only, so the weight goes on each container's
    cgroup and on its pod's cgroup (and the reclaimed level's on the reclaimed pods'
    common parent), the levels at which pods compete with each other."""

    system_cores: int | None = _weight(1000)
    """Node daemons: the largest share. Default 1000."""
    dedicated_cores: int | None = _weight(500)
    """Latency-critical services with exclusive CPUs. Default 500."""
    shared_cores: int | None = _weight(100)
    """Services of the shared pool: the kernel's default weight. Default 100."""
    reclaimed_cores: int | None = _weight(10)
    """Batch on lent capacity: a tenth of a service. Default 10 (v1's ``blkio.weight``
    minimum; BFQ accepts it as is)."""

    def for_level(self, level: str) -> int | None:
        """The weight of a QoS level by its annotation value; None for an unknown level."""
        if level in ("system_cores", "dedicated_cores", "shared_cores", "reclaimed_cores"):
            value: int | None = getattr(self, level)
            return value
        return None


@dataclass(frozen=True, slots=True)
class IOConfig(_IOSection):
    """Block IO isolation: per-QoS weights and the reclaimed pods' dynamic throttle.

    The throttle's state is a *level* between 0 (every direction at its ``min_*``
    floor) and 1 (every direction at its ``max_*`` ceiling, or unthrottled where
    the ceiling is null); the limit of a direction is ``min + level * (max - min)``.
    A direction whose ``min_*`` is null is never throttled. A direction with a floor
    but no ceiling is unthrottled at level 1 and at its floor below 1: set a ceiling
    for a throttle proportional to the level. See ``agent.isolation.io`` for the
    control law.
    """

    enabled: bool = setting(True, boolean())
    """Whether the IO loop writes anything. Default true. Turning it off lifts every
    limit and restores every weight it wrote."""
    devices: tuple[str, ...] = setting((), _devices())
    """The data devices to throttle, each ``"MAJ:MIN"`` or ``"/dev/NAME"`` (a
    partition stands for its whole disk: blk-throttle takes whole disks only).
    Default empty: every whole disk in ``/sys/block`` backed by hardware (with a
    ``device`` link), that is not loop, ram, zram or device-mapper devices, whose
    IO reaches one of those disks anyway."""
    period_s: float = setting(1.0, number(at_least=0.01, at_most=3600.0))
    """The control period, seconds (0.01 to 3600). Default 1.0."""

    max_read_bps: int | None = setting(None, _bps())
    """The reclaimed tier's read ceiling per device when relaxed, bytes/s. Default
    null: no read limit once fully relaxed."""
    max_write_bps: int | None = setting(None, _bps())
    """The write ceiling per device when relaxed, bytes/s. Default null: none."""
    min_read_bps: int | None = setting(10 * MiB, _bps())
    """The read floor per device when fully tightened, bytes/s (> 0: the batch keeps
    making progress). Default 10 MiB/s; null: reads are never throttled."""
    min_write_bps: int | None = setting(10 * MiB, _bps())
    """The write floor per device when fully tightened, bytes/s. Default 10 MiB/s;
    null: writes are never throttled. On cgroup v1 only direct writes are throttled:
    buffered writes reach the disk from the kernel's writeback threads, in the root
    cgroup."""
    max_read_iops: int | None = setting(None, _iops())
    """The read ceiling per device in operations/s. Default null."""
    max_write_iops: int | None = setting(None, _iops())
    """The write ceiling per device in operations/s. Default null."""
    min_read_iops: int | None = setting(None, _iops())
    """The read floor per device in operations/s. Default null: no iops throttle."""
    min_write_iops: int | None = setting(None, _iops())
    """The write floor per device in operations/s. Default null: no iops throttle."""

    pressure_target: float = setting(10.0, number(above=0.0, at_most=100.0))
    """The services' IO pressure the throttle steers to: PSI ``some avg10``, percent
    of wall time in which some task of a service waited for IO. Default 10."""
    dead_band: float = setting(0.1, number(at_least=0.0, at_most=1.0))
    """Pressure within ``target * e**(+-dead_band)`` holds the throttle where it is
    (log units: 0.1 is about +-10 %). Default 0.1."""
    cut_gain: float = setting(1.0, number(above=0.0, at_most=10.0))
    """Tightening: the level is multiplied by ``(target / pressure) ** cut_gain``
    (1.0: pressure 50 % over target cuts the level by a third). Default 1.0."""
    safety_margin: float = setting(2.0, number(above=1.0))
    """Pressure above ``target * safety_margin`` drops the throttle to the floor at
    once and holds it there :attr:`cooldown_periods` more periods. Default 2.0."""
    cooldown_periods: int = setting(10, integer(0))
    """Periods the floor is held after the last safety breach. Default 10."""
    step_up_ratio: float = setting(0.1, number(above=0.0, at_most=1.0))
    """Relaxing: the level rises at most this much per period while pressure is
    under target (0.1: each ceiling is reached from the floor in 10 periods).
    Default 0.1."""
    stale_periods: int = setting(3, integer(1))
    """Periods in a row without a pressure reading after which the throttle drops to
    the floor (degraded); fewer hold it. Default 3."""

    weights: IOWeightsConfig = field(
        default_factory=IOWeightsConfig, metadata={"section": IOWeightsConfig}
    )
    """Proportional weight per QoS level."""

    def __post_init__(self) -> None:
        super(IOConfig, self).__post_init__()
        for direction in DIRECTIONS:
            low: int | None = getattr(self, f"min_{direction}")
            high: int | None = getattr(self, f"max_{direction}")
            if high is None:
                continue
            if low is None:
                raise IOConfigError(
                    f"{self.where}.min_{direction}: must be set when "
                    f"{self.where}.max_{direction} is ({high}): the floor of a throttle, > 0"
                )
            if low > high:
                raise IOConfigError(
                    f"{self.where}.min_{direction}: must be <= {self.where}.max_{direction} "
                    f"({high}), got {low}"
                )

    def floor(self, direction: str) -> int | None:
        """The floor of ``direction`` (``read_bps`` ...), None when it is not throttled."""
        value: int | None = getattr(self, f"min_{direction}")
        return value

    def ceiling(self, direction: str) -> int | None:
        """The ceiling of ``direction``, None when relaxed means unthrottled."""
        value: int | None = getattr(self, f"max_{direction}")
        return value

    @property
    def throttles(self) -> bool:
        """Whether any direction is throttled at all."""
        return any(self.floor(d) is not None for d in DIRECTIONS)
