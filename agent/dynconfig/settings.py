"""The settings the dynamic configuration changes at run time, and how partial
layers become one validated set of them.

An SRE's ``AdminQoSConfiguration`` carries a *partial* ``spec.config``::

    reclaim: {enabled: false}
    sysadvisor: {indicators: {cpu_usage_ratio: {target: 0.5}}}

The node's layers (cluster-wide, node pool, named nodes: lowest precedence first)
are merged field by field and built over the agent's own ``--config`` sections by
the library (:func:`katalyst.dynconfig.merge_layers`,
:func:`katalyst.dynconfig.build_sections`: the controller validates with the very
same code), giving one :class:`DynamicSettings` (:func:`from_layers`): a bad value
raises :class:`~katalyst.dynconfig.DynamicConfigError` whose message names the
field as the SRE wrote it
(``spec.config.sysadvisor.indicators.cpu_usage_ratio.target: must be > 0``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from agent.config import AgentConfig
from katalyst.config.eviction import EvictionConfig
from katalyst.config.io import IOConfig
from katalyst.config.network import NetworkConfig
from katalyst.config.sysadvisor import AdvisorConfig
from katalyst.dynconfig import DynamicConfigError, build_sections, merge_layers, spec_hash

__all__ = [
    "SECTIONS",
    "DynamicConfigError",
    "DynamicSettings",
    "Layer",
    "changes",
    "from_layers",
    "raw_overrides",
    "to_mapping",
]

SECTIONS: tuple[str, ...] = ("sysadvisor", "eviction", "network", "io")
"""The agent's ``--config`` sections a dynamic config may change (besides ``reclaim``)."""
WHERE = "spec.config"
"""The path of a layer in its object, the prefix of every message."""


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
        """:func:`katalyst.dynconfig.spec_hash` of :meth:`to_mapping`: equal settings,
        equal hashes (the same function hashes a config's spec everywhere)."""
        return spec_hash(self.to_mapping())


@dataclass(frozen=True, slots=True)
class Layer:
    """One applied config: where it came from and its partial ``spec.config``."""

    name: str
    """``namespace/name`` of the object."""
    level: str
    """``cluster``, ``pool`` or ``named``."""
    hash: str
    """The hash of the object's spec (:func:`katalyst.dynconfig.spec_hash`: what the
    node's CustomNodeConfig lists)."""
    config: Mapping[str, object]
    """The object's ``spec.config`` as written (partial)."""
    source: str = ""
    """Where it was read: a file, or the object's API path; empty when not known."""
    service_overrides: tuple[Mapping[str, object], ...] = ()
    """The object's ``spec.serviceOverrides`` as written (already validated)."""


def raw_overrides(spec: Mapping[str, object]) -> tuple[Mapping[str, object], ...]:
    """``spec.serviceOverrides`` as written, for a layer (and its checkpoint)."""
    raw = spec.get("serviceOverrides")
    if not isinstance(raw, list):
        return ()
    return tuple(item for item in raw if isinstance(item, Mapping))


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


def from_layers(
    base: AgentConfig | DynamicSettings,
    layers: Sequence[Mapping[str, object]],
    *,
    where: str = WHERE,
) -> DynamicSettings:
    """The settings of ``layers`` (partial ``spec.config`` mappings, lowest
    precedence first) merged over ``base``'s sections
    (:func:`katalyst.dynconfig.merge_layers`, then
    :func:`katalyst.dynconfig.build_sections` with ``base`` below), validated by the
    sections' own checks. ``reclaim.enabled`` is ``base``'s unless a layer sets it.
    Raises :class:`DynamicConfigError` naming the field (``where`` is the prefix of
    its path) for an unknown section or key, a static key, or a bad value."""
    start = base if isinstance(base, DynamicSettings) else DynamicSettings.of(base)
    built = build_sections(merge_layers(layers), base=start.to_mapping(), where=where)
    return DynamicSettings(
        sysadvisor=built.sysadvisor,
        eviction=built.eviction,
        network=built.network,
        io=built.io,
        reclaim_enabled=built.reclaim.enabled,
    )


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
