"""The eviction manager's configuration: frozen dataclasses, one docstring per field.

Each field's docstring gives its unit and default. :meth:`EvictionConfig.from_mapping`
builds the whole tree from decoded YAML/JSON (the ``eviction:`` section of the
agent's file, or a dynamic config) and refuses anything else with an
:class:`EvictionConfigError` whose message names the field (``eviction.memory_pressure.
consecutive_samples: must be an integer >= 1, got 0``). Keys left out keep their
defaults; unknown keys are errors, so that a misspelt threshold is not silently
ignored.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar

from agent.errors import ConfigError

__all__ = [
    "CPUSuppressionConfig",
    "EvictionConfig",
    "EvictionConfigError",
    "MemoryPressureConfig",
    "RateLimitConfig",
    "ReclaimedOvercommitConfig",
]


class EvictionConfigError(ConfigError):
    """A configuration value broke a rule; the message names the field and the rule."""


_Check = Callable[[str, object], object]
_T = TypeVar("_T")


def _describe(value: object) -> str:
    return f"{value!r} ({type(value).__name__})"


def _boolean() -> _Check:
    def check(where: str, value: object) -> object:
        if not isinstance(value, bool):
            raise EvictionConfigError(f"{where}: must be true or false, got {_describe(value)}")
        return value

    return check


def _integer(minimum: int) -> _Check:
    def check(where: str, value: object) -> object:
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise EvictionConfigError(
                f"{where}: must be an integer >= {minimum}, got {_describe(value)}"
            )
        return value

    return check


def _number(
    *, above: float | None = None, at_least: float | None = None, at_most: float | None = None
) -> _Check:
    rules = []
    if above is not None:
        rules.append(f"> {above:g}")
    if at_least is not None:
        rules.append(f">= {at_least:g}")
    if at_most is not None:
        rules.append(f"<= {at_most:g}")
    rule = "a finite number" + (" " + " and ".join(rules) if rules else "")

    def within(number: float) -> bool:
        return (
            math.isfinite(number)
            and (above is None or number > above)
            and (at_least is None or number >= at_least)
            and (at_most is None or number <= at_most)
        )

    def check(where: str, value: object) -> object:
        if not isinstance(value, int | float) or isinstance(value, bool) or not within(value):
            raise EvictionConfigError(f"{where}: must be {rule}, got {_describe(value)}")
        return float(value)

    return check


def _optional(inner: _Check) -> _Check:
    def check(where: str, value: object) -> object:
        return None if value is None else inner(where, value)

    return check


def _setting(default: Any, check: _Check) -> Any:
    """A field with its default and the check :meth:`from_mapping` applies to it."""
    return field(default=default, metadata={"check": check})


def _load(cls: type[_T], raw: object, where: str) -> _T:
    if not isinstance(raw, Mapping):
        raise EvictionConfigError(f"{where}: must be a mapping, got {_describe(raw)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(str(k) for k in raw if k not in fields)
    if unknown:
        raise EvictionConfigError(
            f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(fields))})"
        )
    values: dict[str, object] = {}
    for name, value in raw.items():
        meta = fields[name].metadata
        path = f"{where}.{name}"
        if "section" in meta:
            values[name] = _load(meta["section"], value, path)
        else:
            values[name] = meta["check"](path, value)
    return cls(**values)


class _FromMapping:
    __slots__ = ()

    def __post_init__(self) -> None:
        # A section built in code is held to the same rules as one read from a file.
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            check = f.metadata.get("check")
            if check is not None:
                check(f"{type(self).__name__}.{f.name}", getattr(self, f.name))

    @classmethod
    def from_mapping(cls, raw: Mapping[str, object], *, where: str = "eviction") -> Self:
        """This section from decoded YAML/JSON; :class:`EvictionConfigError` naming the
        field (``where`` is the prefix of its path) on the first bad value."""
        return _load(cls, raw, where)


@dataclass(frozen=True, slots=True)
class MemoryPressureConfig(_FromMapping):
    """Plugin ``memory_pressure``: the node is short of memory."""

    enabled: bool = _setting(True, _boolean())
    """Whether the plugin runs. Default true."""
    consecutive_samples: int = _setting(3, _integer(1))
    """Bad samples in a row before it asks for victims (and again after it asked).
    Default 3."""
    watermark_bytes: int = _setting(0, _integer(0))
    """MemAvailable below this many bytes is pressure. Default 0 (off); the larger
    of this and :attr:`watermark_ratio` of MemTotal applies."""
    watermark_ratio: float = _setting(0.05, _number(at_least=0.0, at_most=1.0))
    """MemAvailable below this fraction of MemTotal is pressure. Default 0.05."""
    psi_some_avg10: float | None = _setting(10.0, _optional(_number(at_least=0.0, at_most=100.0)))
    """Memory PSI ``some avg10`` above this percentage is pressure. Default 10;
    null: PSI ``some`` is not looked at."""
    psi_full_avg10: float | None = _setting(None, _optional(_number(at_least=0.0, at_most=100.0)))
    """Memory PSI ``full avg10`` above this percentage is pressure. Default null (off)."""
    min_pod_usage_ratio: float = _setting(0.5, _number(at_least=0.0, at_most=1.0))
    """Pods' summed memory usage below this fraction of the node's used memory
    (MemTotal - MemAvailable) means the pressure does not come from pods, and no pod
    is evicted for it. Default 0.5; 0 turns the rule off."""
    evict_shared_cores: bool = _setting(False, _boolean())
    """Whether ``shared_cores`` pods may be victims once no ``reclaimed_cores`` pod is
    left to cover the deficit. Default false."""
    evict_dedicated_cores: bool = _setting(False, _boolean())
    """Whether ``dedicated_cores`` pods may be victims after ``shared_cores``. Default false."""


@dataclass(frozen=True, slots=True)
class ReclaimedOvercommitConfig(_FromMapping):
    """Plugin ``reclaimed_overcommit``: reclaimed pods request more than the node lends."""

    enabled: bool = _setting(True, _boolean())
    """Whether the plugin runs. Default true."""
    consecutive_samples: int = _setting(60, _integer(1))
    """Over-committed samples in a row before it asks for victims. Default 60 (a
    minute at the default period): the lend drops to the floor at once when a
    service surges (the sysadvisor's safety layer), and a surge that passes must
    not cost the batch pods their progress."""
    cpu_rate: float | None = _setting(1.0, _optional(_number(above=0.0)))
    """Over-commit when the reclaimed pods' ``reclaimed_millicpu`` requests exceed
    this multiple of the reported reclaimed allocatable CPU. Default 1.0; null: CPU
    is not checked."""
    memory_rate: float | None = _setting(1.0, _optional(_number(above=0.0)))
    """The same for ``reclaimed_memory``. Default 1.0; null: memory is not checked."""


@dataclass(frozen=True, slots=True)
class CPUSuppressionConfig(_FromMapping):
    """Plugin ``cpu_suppression``: a reclaimed pod gets far less CPU than it asked for."""

    enabled: bool = _setting(True, _boolean())
    """Whether the plugin runs. Default true."""
    min_duration_s: float = _setting(300.0, _number(at_least=0.0))
    """How long, in seconds, a pod's suppression must stay above its
    ``suppression_tolerance_rate`` before it is evicted (strictly longer).
    Default 300 (Katalyst's ``MinSuppressionToleranceDuration``)."""


@dataclass(frozen=True, slots=True)
class RateLimitConfig(_FromMapping):
    """How fast the node may evict, all plugins together (a token bucket)."""

    per_minute: float = _setting(6.0, _number(above=0.0))
    """Evictions per minute in the long run (the bucket's refill rate). Default 6."""
    burst: int = _setting(2, _integer(1))
    """Evictions allowed at once after a quiet spell (the bucket's size). Default 2."""


@dataclass(frozen=True, slots=True)
class EvictionConfig(_FromMapping):
    """The eviction manager and its plugins."""

    memory_pressure: MemoryPressureConfig = field(
        default_factory=MemoryPressureConfig, metadata={"section": MemoryPressureConfig}
    )
    """Plugin ``memory_pressure``; defaults as documented on each field."""
    reclaimed_overcommit: ReclaimedOvercommitConfig = field(
        default_factory=ReclaimedOvercommitConfig, metadata={"section": ReclaimedOvercommitConfig}
    )
    """Plugin ``reclaimed_overcommit``."""
    cpu_suppression: CPUSuppressionConfig = field(
        default_factory=CPUSuppressionConfig, metadata={"section": CPUSuppressionConfig}
    )
    """Plugin ``cpu_suppression``."""
    rate_limit: RateLimitConfig = field(
        default_factory=RateLimitConfig, metadata={"section": RateLimitConfig}
    )
    """The token bucket shared by every plugin."""
    evicting_grace_s: float = _setting(120.0, _number(above=0.0))
    """Seconds a pod whose eviction was accepted is not picked again (it is
    terminating: its grace period, then the kubelet's cleanup). Default 120."""
    retry_after_s: float = _setting(30.0, _number(above=0.0))
    """Seconds before a pod whose eviction was refused (429: a PodDisruptionBudget)
    or failed may be picked again. Default 30."""
    pod_grace_period_s: int | None = _setting(None, _optional(_integer(0)))
    """``deleteOptions.gracePeriodSeconds`` of the Eviction; null (default): the pod's
    own ``terminationGracePeriodSeconds``."""
