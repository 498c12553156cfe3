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

from dataclasses import dataclass, field

from katalyst.settings import Section, SettingError, boolean, integer, number, optional, setting

__all__ = [
    "CPUSuppressionConfig",
    "EvictionConfig",
    "EvictionConfigError",
    "MemoryPressureConfig",
    "RateLimitConfig",
    "ReclaimedOvercommitConfig",
]


class EvictionConfigError(SettingError):
    """A configuration value broke a rule; the message names the field and the rule."""


class _FromMapping(Section):
    __slots__ = ()
    error = EvictionConfigError
    where = "eviction"


@dataclass(frozen=True, slots=True)
class MemoryPressureConfig(_FromMapping):
    """Plugin ``memory_pressure``: the node is short of memory."""

    enabled: bool = setting(True, boolean())
    """Whether the plugin runs. Default true."""
    consecutive_samples: int = setting(3, integer(1))
    """Bad samples in a row before it asks for victims (and again after it asked).
    Default 3."""
    watermark_bytes: int = setting(0, integer(0))
    """MemAvailable below this many bytes is pressure. Default 0 (off); the larger
    of this and :attr:`watermark_ratio` of MemTotal applies."""
    watermark_ratio: float = setting(0.05, number(at_least=0.0, at_most=1.0))
    """MemAvailable below this fraction of MemTotal is pressure. Default 0.05."""
    psi_some_avg10: float | None = setting(10.0, optional(number(at_least=0.0, at_most=100.0)))
    """Memory PSI ``some avg10`` above this percentage is pressure. Default 10;
    null: PSI ``some`` is not looked at."""
    psi_full_avg10: float | None = setting(None, optional(number(at_least=0.0, at_most=100.0)))
    """Memory PSI ``full avg10`` above this percentage is pressure. Default null (off)."""
    min_pod_usage_ratio: float = setting(0.5, number(at_least=0.0, at_most=1.0))
    """Pods' summed memory usage below this fraction of the node's used memory
    (MemTotal - MemAvailable) means the pressure does not come from pods, and no pod
    is evicted for it. Default 0.5; 0 turns the rule off."""
    evict_shared_cores: bool = setting(False, boolean())
    """Whether ``shared_cores`` pods may be victims once no ``reclaimed_cores`` pod is
    left to cover the deficit. Default false."""
    evict_dedicated_cores: bool = setting(False, boolean())
    """Whether ``dedicated_cores`` pods may be victims after ``shared_cores``. Default false."""


@dataclass(frozen=True, slots=True)
class ReclaimedOvercommitConfig(_FromMapping):
    """Plugin ``reclaimed_overcommit``: reclaimed pods request more than the node lends."""

    enabled: bool = setting(True, boolean())
    """Whether the plugin runs. Default true."""
    consecutive_samples: int = setting(60, integer(1))
    """Over-committed samples in a row before it asks for victims. Default 60 (a
    minute at the default period): the lend drops to the floor at once when a
    service surges (the sysadvisor's safety layer), and a surge that passes must
    not cost the batch pods their progress."""
    cpu_rate: float | None = setting(1.0, optional(number(above=0.0)))
    """Over-commit when the reclaimed pods' ``reclaimed_millicpu`` requests exceed
    this multiple of the reported reclaimed allocatable CPU. Default 1.0; null: CPU
    is not checked."""
    memory_rate: float | None = setting(1.0, optional(number(above=0.0)))
    """The same for ``reclaimed_memory``. Default 1.0; null: memory is not checked."""


@dataclass(frozen=True, slots=True)
class CPUSuppressionConfig(_FromMapping):
    """Plugin ``cpu_suppression``: a reclaimed pod gets far less CPU than it asked for."""

    enabled: bool = setting(True, boolean())
    """Whether the plugin runs. Default true."""
    min_duration_s: float = setting(300.0, number(at_least=0.0))
    """How long, in seconds, a pod's suppression must stay above its
    ``suppression_tolerance_rate`` before it is evicted (strictly longer).
    Default 300 (Katalyst's ``MinSuppressionToleranceDuration``)."""


@dataclass(frozen=True, slots=True)
class RateLimitConfig(_FromMapping):
    """How fast the node may evict, all plugins together (a token bucket)."""

    per_minute: float = setting(6.0, number(above=0.0))
    """Evictions per minute in the long run (the bucket's refill rate). Default 6."""
    burst: int = setting(2, integer(1))
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
    evicting_grace_s: float = setting(120.0, number(above=0.0))
    """Seconds a pod whose eviction was accepted is not picked again (it is
    terminating: its grace period, then the kubelet's cleanup). Default 120."""
    retry_after_s: float = setting(30.0, number(above=0.0))
    """Seconds before a pod whose eviction was refused (429: a PodDisruptionBudget)
    or failed may be picked again. Default 30."""
    pod_grace_period_s: int | None = setting(None, optional(integer(0)))
    """``deleteOptions.gracePeriodSeconds`` of the Eviction; null (default): the pod's
    own ``terminationGracePeriodSeconds``."""
