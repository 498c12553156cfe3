"""The reporter's settings: what it publishes, how it smooths, when it writes.

One frozen dataclass, one docstring per field with its unit and default.
:meth:`ReporterConfig.from_mapping` builds it from the ``reporter`` section of the
agent's configuration file and validates it: a bad value raises
:class:`ReporterConfigError` (an :class:`agent.errors.ConfigError`) whose message names
the field and the rule, e.g. ``reporter.window_s: must be a finite number >= 0, got
-1 (int)``. Missing keys keep their defaults; unknown keys are errors, so that a
misspelt threshold is never silently ignored. Why the defaults are what they are is
in ``docs/reporter.md``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from katalyst.settings import ConfigError

__all__ = ["ROOT", "ReporterConfig", "ReporterConfigError"]

ROOT: Final = "reporter"
"""The name of the section, the first part of every field path in an error message."""

MIB: Final = 1024 * 1024


class ReporterConfigError(ConfigError):
    """A reporter setting broke a rule; the message names the field and the rule."""


def _describe(value: object) -> str:
    return f"{value!r} ({type(value).__name__})"


@dataclass(frozen=True, slots=True)
class ReporterConfig:
    """How reclaimed capacity is published (node extended resources and the CNR)."""

    node_resources: bool = True
    """Write ``reclaimed_millicpu``/``reclaimed_memory`` into the Node's
    ``status.capacity`` and ``status.allocatable`` (what the stock kube-scheduler fits
    reclaimed pods against). Default true."""
    cnr: bool = True
    """Write the node's CustomNodeResource status (``status.resources`` and per-NUMA
    ``status.topologyZone``), creating the CNR when it is missing. Default true."""
    window_s: float = 60.0
    """The smoothing window (seconds): the value reported is the minimum of the
    sysadvisor's lends over the last ``window_s`` seconds, so a drop is reported at
    once and a rise only once it has lasted the whole window. 0: the latest value
    only. Default 60."""
    min_step_millicpu: int = 100
    """A CPU change smaller than this is not written (milli-cores); applies to drops
    and rises, per total and per NUMA zone. A drop to 0 is always written. Default 100."""
    min_step_memory_bytes: int = 64 * MIB
    """The same for memory (bytes). Default 64 MiB."""
    min_step_ratio: float = 0.05
    """A rise is written only when it is also at least this fraction of the value last
    written (0 to 1); drops are not held to it: over-reporting lets the scheduler place
    pods the node cannot hold. Default 0.05."""
    min_interval_s: float = 10.0
    """A rise is written no sooner than this after the last successful write to the
    target (seconds); it waits meanwhile. Drops are written at once. The kubelet's own
    node status update period. Default 10."""
    resync_s: float = 600.0
    """Rewrite the current value this long after the last successful write even when
    nothing changed (seconds): a kubelet that re-registered its node zeroes every
    extended resource, and another writer may have edited the CNR. Default 600."""
    backoff_initial_s: float = 1.0
    """The first retry delay after a failed write (seconds), doubled per failure in a
    row, with jitter. Default 1."""
    backoff_max_s: float = 120.0
    """The cap of the retry delay (seconds). Default 120."""

    def __post_init__(self) -> None:
        # A config built in code is held to the same rules as one read from a file.
        _validate(type(self).__name__, {f.name: getattr(self, f.name) for f in _FIELDS})

    @classmethod
    def from_mapping(cls, raw: Mapping[str, object], *, where: str = ROOT) -> ReporterConfig:
        """The ``reporter`` section from decoded YAML/JSON; :class:`ReporterConfigError`
        naming the field (``where`` is the prefix of its path) on the first bad value."""
        if not isinstance(raw, Mapping):
            raise ReporterConfigError(f"{where}: must be a mapping, got {_describe(raw)}")
        known = {f.name for f in _FIELDS}
        unknown = sorted(str(k) for k in raw if k not in known)
        if unknown:
            raise ReporterConfigError(
                f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})"
            )
        default = cls()
        values = {f.name: raw.get(f.name, getattr(default, f.name)) for f in _FIELDS}
        _validate(where, values)
        for name in _FLOATS:
            values[name] = float(values[name])  # type: ignore[arg-type]
        return cls(**values)  # type: ignore[arg-type]


_FIELDS: Final = dataclasses.fields(ReporterConfig)
_FLOATS: Final = (
    "window_s",
    "min_step_ratio",
    "min_interval_s",
    "resync_s",
    "backoff_initial_s",
    "backoff_max_s",
)


def _validate(where: str, values: Mapping[str, object]) -> None:
    """Raise :class:`ReporterConfigError` naming the first field that breaks a rule."""
    for name in ("node_resources", "cnr"):
        value = values[name]
        if not isinstance(value, bool):
            raise ReporterConfigError(
                f"{where}.{name}: must be true or false, got {_describe(value)}"
            )
    for name in ("min_step_millicpu", "min_step_memory_bytes"):
        value = values[name]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ReporterConfigError(
                f"{where}.{name}: must be an integer >= 0, got {_describe(value)}"
            )
    _number(where, "window_s", values["window_s"], at_least=0.0)
    _number(where, "min_step_ratio", values["min_step_ratio"], at_least=0.0, at_most=1.0)
    _number(where, "min_interval_s", values["min_interval_s"], at_least=0.0)
    _number(where, "resync_s", values["resync_s"], above=0.0)
    _number(where, "backoff_initial_s", values["backoff_initial_s"], above=0.0)
    _number(where, "backoff_max_s", values["backoff_max_s"], above=0.0)
    initial, cap = values["backoff_initial_s"], values["backoff_max_s"]
    assert isinstance(initial, int | float) and isinstance(cap, int | float)
    if cap < initial:
        raise ReporterConfigError(
            f"{where}.backoff_max_s: must be >= backoff_initial_s ({initial:g}), got {cap:g}"
        )


def _number(
    where: str,
    name: str,
    value: object,
    *,
    above: float | None = None,
    at_least: float | None = None,
    at_most: float | None = None,
) -> None:
    ok = False
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
        ok = (
            math.isfinite(number)
            and (above is None or number > above)
            and (at_least is None or number >= at_least)
            and (at_most is None or number <= at_most)
        )
    if not ok:
        rules = [
            f"{op} {bound:g}"
            for op, bound in ((">", above), (">=", at_least), ("<=", at_most))
            if bound is not None
        ]
        rule = "a finite number" + (" " + " and ".join(rules) if rules else "")
        raise ReporterConfigError(f"{where}.{name}: must be {rule}, got {_describe(value)}")
