"""The settings the dynamic configuration changes at run time, and how partial
layers become one validated set of them.

An SRE's ``AdminQoSConfiguration`` carries a *partial* ``spec.config``::

    reclaim: {enabled: false}
    sysadvisor: {indicators: {cpu_usage_ratio: {target: 0.5}}}

The node's layers (cluster-wide, node pool, named nodes: lowest precedence first)
are merged field by field (:func:`merge_layers`), and the result over the agent's
own ``--config`` sections gives one :class:`DynamicSettings`, validated by the same
section checks as the file (:func:`from_layers`): a bad value raises
:class:`DynamicConfigError` whose message names the field as the SRE wrote it
(``spec.config.sysadvisor.indicators.cpu_usage_ratio.target: must be > 0``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from agent.config import AgentConfig
from katalyst.config.eviction import EvictionConfig
from katalyst.config.io import IOConfig
from katalyst.config.network import NetworkConfig
from katalyst.config.sysadvisor import AdvisorConfig
from katalyst.settings import ConfigError, describe

__all__ = [
    "CONFIG_KEYS",
    "SECTIONS",
    "DynamicConfigError",
    "DynamicSettings",
    "Layer",
    "canonical_hash",
    "changes",
    "from_layers",
    "merge_layers",
    "to_mapping",
]

SECTIONS: tuple[str, ...] = ("sysadvisor", "eviction", "network", "io")
"""The agent's ``--config`` sections a dynamic config may change."""
CONFIG_KEYS: tuple[str, ...] = ("reclaim", *SECTIONS)
"""The keys of ``spec.config``."""
WHERE = "spec.config"
"""The path of a layer in its object, the prefix of every message."""


class DynamicConfigError(ConfigError):
    """A dynamic config was refused; the message names the input and the rule."""


@dataclass(frozen=True, slots=True)
class DynamicSettings:
    """One complete set of what the agent's loops take at run time."""

    sysadvisor: AdvisorConfig
    """The headroom loop (targets, gains, dead bands, limits, reserves, memory)."""
    eviction: EvictionConfig
    """The eviction plugins' thresholds and the rate limit."""
    network: NetworkConfig
    """The network cap's settings (its start-up fields cannot change)."""
    io: IOConfig
    """Block IO isolation."""
    reclaim_enabled: bool = True
    """``reclaim.enabled``: false lends nothing to reclaimed pods. Default true."""

    @classmethod
    def of(cls, config: AgentConfig) -> DynamicSettings:
        """The agent's own sections (its ``--config`` file), reclaim on."""
        return cls(
            sysadvisor=config.sysadvisor,
            eviction=config.eviction,
            network=config.network,
            io=config.io,
        )

    def to_mapping(self) -> dict[str, object]:
        """The whole set as ``spec.config`` would write it (JSON-ready)."""
        out: dict[str, object] = {"reclaim": {"enabled": self.reclaim_enabled}}
        for name in SECTIONS:
            out[name] = to_mapping(getattr(self, name))
        return out

    @property
    def hash(self) -> str:
        """:func:`canonical_hash` of :meth:`to_mapping`: equal settings, equal hashes."""
        return canonical_hash(self.to_mapping())


@dataclass(frozen=True, slots=True)
class Layer:
    """One applied config: where it came from and its partial ``spec.config``."""

    name: str
    """``namespace/name`` of the object."""
    level: str
    """``cluster``, ``pool`` or ``named``."""
    hash: str
    """The hash of the object's spec (:func:`canonical_hash`)."""
    config: Mapping[str, object]
    """The object's ``spec.config`` as written (partial)."""
    source: str = ""
    """Where it was read (a file), for messages; empty when not known."""


def canonical_hash(value: object) -> str:
    """The first 16 hex digits of the sha256 of ``value``'s canonical JSON (sorted
    keys, no whitespace, ASCII): the hash of a config's spec."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:16]


def merge_layers(layers: Sequence[Mapping[str, object]]) -> dict[str, object]:
    """Field-level deep merge, lowest precedence first: mappings merge key by key,
    any other value (a list too) replaces what is below it, and ``null`` removes the
    key, so that the level below shows through.

    The one place that defines the merge (``katalyst.dynconfig`` will hold the
    shared one; swap it in here).
    """

    def merge(lower: Mapping[str, object], upper: Mapping[str, object]) -> dict[str, object]:
        out = dict(lower)
        for key, value in upper.items():
            below = out.get(key)
            if value is None:
                out.pop(key, None)
            elif isinstance(value, Mapping) and isinstance(below, Mapping):
                out[key] = merge(below, value)
            elif isinstance(value, Mapping):
                out[key] = merge({}, value)  # drops the nulls of a new mapping
            else:
                out[key] = value
        return out

    merged: dict[str, object] = {}
    for layer in layers:
        merged = merge(merged, layer)
    return merged


def to_mapping(section: object) -> dict[str, object]:
    """A settings section (a frozen dataclass) as the plain mapping its
    ``from_mapping`` reads back: nested sections as mappings, tuples as lists."""

    def plain(value: object) -> object:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        return value

    out = plain(section)
    assert isinstance(out, dict)
    return out


_LOADERS: Mapping[str, Callable[[Mapping[str, object], str], object]] = {
    "sysadvisor": lambda m, where: AdvisorConfig.from_mapping(m, where=where),
    "eviction": lambda m, where: EvictionConfig.from_mapping(m, where=where),
    "network": lambda m, where: NetworkConfig.from_mapping(m, where=where),
    "io": lambda m, where: IOConfig.from_mapping(m, where=where),
}


def from_layers(
    base: AgentConfig | DynamicSettings,
    layers: Sequence[Mapping[str, object]],
    *,
    where: str = WHERE,
) -> DynamicSettings:
    """The settings of ``layers`` (partial ``spec.config`` mappings, lowest
    precedence first) merged over ``base``'s sections, validated by the sections'
    own checks. ``reclaim.enabled`` defaults to true. Raises
    :class:`DynamicConfigError` naming the field (``where`` is the prefix of its
    path) for an unknown key or a bad value."""
    start = base if isinstance(base, DynamicSettings) else DynamicSettings.of(base)
    overlay = merge_layers(layers)
    unknown = sorted(str(k) for k in overlay if k not in CONFIG_KEYS)
    if unknown:
        raise DynamicConfigError(
            f"{where}: unknown key {unknown[0]!r} (known: {', '.join(CONFIG_KEYS)})"
        )
    for key, value in overlay.items():
        if not isinstance(value, Mapping):
            raise DynamicConfigError(f"{where}.{key}: must be a mapping, got {describe(value)}")
    reclaim = overlay.get("reclaim", {})
    assert isinstance(reclaim, Mapping)
    extra = sorted(str(k) for k in reclaim if k != "enabled")
    if extra:
        raise DynamicConfigError(f"{where}.reclaim: unknown key {extra[0]!r} (known: enabled)")
    enabled = reclaim.get("enabled", start.reclaim_enabled)
    if not isinstance(enabled, bool):
        raise DynamicConfigError(
            f"{where}.reclaim.enabled: must be true or false, got {describe(enabled)}"
        )
    sections: dict[str, object] = {}
    for name in SECTIONS:
        partial = overlay.get(name, {})
        assert isinstance(partial, Mapping)
        raw = merge_layers([to_mapping(getattr(start, name)), partial])
        try:
            sections[name] = _LOADERS[name](raw, f"{where}.{name}")
        except ValueError as exc:
            raise DynamicConfigError(str(exc)) from None
    return DynamicSettings(reclaim_enabled=enabled, **sections)  # type: ignore[arg-type]


def changes(old: DynamicSettings, new: DynamicSettings) -> list[str]:
    """One line per setting that differs, ``sysadvisor.period_s: 1.0 -> 2.0``, in
    the order of the sections and their fields."""
    out: list[str] = []

    def walk(path: str, a: object, b: object) -> None:
        if a == b:
            return
        if dataclasses.is_dataclass(a) and not isinstance(a, type) and type(a) is type(b):
            for f in dataclasses.fields(a):
                walk(f"{path}.{f.name}", getattr(a, f.name), getattr(b, f.name))
            return
        out.append(f"{path}: {_show(a)} -> {_show(b)}")

    walk("reclaim.enabled", old.reclaim_enabled, new.reclaim_enabled)
    for name in SECTIONS:
        walk(name, getattr(old, name), getattr(new, name))
    return out


def _show(value: object) -> str:
    plain = to_mapping(value) if dataclasses.is_dataclass(value) else value
    if isinstance(plain, tuple):
        plain = [to_mapping(v) if dataclasses.is_dataclass(v) else v for v in plain]
    return json.dumps(plain, sort_keys=True, default=str)
