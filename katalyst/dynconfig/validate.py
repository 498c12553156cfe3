"""Semantic validation of a target config: what may apply before any node sees it.

A config that parses (:mod:`katalyst.dynconfig.model`) may still be wrong; these
checks say why, each message naming the field path from ``spec``:

* **where it applies**: ``nodeLabelSelector`` and ``ephemeralSelector.nodeNames``
  are exclusive; ``nodeNames`` needs ``lastDuration`` (a named-nodes config
  expires) and ``lastDuration`` needs ``nodeNames``; ``priority`` other than 0
  needs a selector; every key of the selector must be allowed by the KCC at the
  config's priority, and the priority must be listed there.
* **what it sets** (``spec.config``): only the sections :data:`DYNAMIC_SECTIONS`;
  not the static, node-local keys :data:`STATIC_KEYS` (the NICs a node shapes);
  each section, merged over the agent's defaults, must pass the agent's own
  section: :meth:`AdvisorConfig.from_mapping`, :meth:`EvictionConfig.from_mapping`,
  :meth:`NetworkConfig.from_mapping`, :meth:`IOConfig.from_mapping`, and
  ``reclaim: {enabled: bool}`` (:class:`ReclaimConfig`). Same rules, same
  messages as the agent's file, with the path from ``spec.config``
  (``spec.config.sysadvisor.indicators.cpu_usage_ratio.target: must be > 0``).
* **service overrides**: known indicator names (:data:`INDICATORS`), only
  ``target`` overridden, valid by the sysadvisor's rule for that indicator.

The merge semantics are :mod:`katalyst.dynconfig.merge`'s: a ``null`` removes a
key (the layer below shows), so it is never a value to check.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from katalyst.config.eviction import EvictionConfig
from katalyst.config.io import IOConfig
from katalyst.config.network import NetworkConfig
from katalyst.config.sysadvisor import INDICATORS, AdvisorConfig
from katalyst.dynconfig.merge import merge, strip_nulls
from katalyst.dynconfig.model import KCC, ServiceOverride, TargetConfig
from katalyst.settings import ConfigError, Section, SettingError, boolean, setting

__all__ = [
    "DYNAMIC_SECTIONS",
    "INDICATORS",
    "STATIC_KEYS",
    "DynamicConfigError",
    "Memo",
    "ReclaimConfig",
    "ReclaimConfigError",
    "Sections",
    "build_sections",
    "validate_config",
    "validate_service_overrides",
    "validate_target",
]

DYNAMIC_SECTIONS: Final = ("reclaim", "sysadvisor", "eviction", "network", "io")
"""The sections a dynamic config may set, in the order they are checked."""

STATIC_KEYS: Final[Mapping[str, tuple[str, ...]]] = {"network": ("interfaces",)}
"""Keys of a section that only the agent's file sets: they describe the node itself
(its NICs), differ from node to node, and change nothing without a restart."""

OVERRIDABLE: Final = ("target",)
"""What a service override may set per indicator."""


class DynamicConfigError(ConfigError):
    """A dynamic config broke a rule; the message names the field path."""


class ReclaimConfigError(SettingError):
    """A ``reclaim`` setting broke its rule."""


@dataclass(frozen=True, slots=True)
class ReclaimConfig(Section):
    """``spec.config.reclaim``: whether the node lends anything at all."""

    error = ReclaimConfigError
    where = "reclaim"

    enabled: bool = setting(True, boolean())
    """Whether reclaimed resources are lent. Default true; false: the advisor lends
    nothing (its floor is 0) and the reclaimed pods get no CPU beyond the floor."""


@dataclass(frozen=True, slots=True)
class Sections:
    """Every dynamically configurable section, built and checked."""

    reclaim: ReclaimConfig
    sysadvisor: AdvisorConfig
    eviction: EvictionConfig
    network: NetworkConfig
    io: IOConfig


def _rename(message: str, section: str, where: str) -> str:
    """A section's message with its bare path (``io.min_read_bps``, as its cross-field
    rules write it) put below ``where``."""
    if where == section:
        return message
    return re.sub(rf"(?<![\w.]){re.escape(section)}\.", f"{where}.", message)


def _too_large(value: object, where: str, depth: int = 0) -> str | None:
    """The path of the first integer beyond 64 bits in ``value``: the sections convert
    numbers to floats, which raises OverflowError on such an integer."""
    if depth > 64:
        return f"{where}: nested too deep"
    if isinstance(value, int) and not isinstance(value, bool):
        if value.bit_length() > 63:
            return f"{where}: must fit in 64 bits, got an integer of {value.bit_length()} bits"
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            found = _too_large(item, f"{where}.{key}", depth + 1)
            if found:
                return found
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = _too_large(item, f"{where}[{i}]", depth + 1)
            if found:
                return found
    return None


def _build(name: str, raw: object, where: str) -> object:
    """Section ``name`` from ``raw`` (its nulls already removed); DynamicConfigError."""
    path = f"{where}.{name}"
    too_large = _too_large(raw, path)
    if too_large:
        raise DynamicConfigError(too_large)
    try:
        if not isinstance(raw, Mapping):
            raise DynamicConfigError(f"{path}: must be a mapping, got {type(raw).__name__}")
        if name == "reclaim":
            return ReclaimConfig.from_mapping(raw, where=path)
        if name == "sysadvisor":
            return AdvisorConfig.from_mapping(raw, where=path)
        if name == "eviction":
            return EvictionConfig.from_mapping(raw, where=path)
        if name == "network":
            return NetworkConfig.from_mapping(raw, where=path)
        if name == "io":
            return IOConfig.from_mapping(raw, where=path)
    except DynamicConfigError:
        raise
    except (ArithmeticError, TypeError, ValueError) as exc:
        # ConfigError (a ValueError) is the sections' answer; the others are kept from
        # escaping whatever a section does with odd input: nothing an SRE writes may
        # crash the controller or an agent.
        raise DynamicConfigError(_rename(str(exc), name, path)) from None
    raise DynamicConfigError(  # pragma: no cover - callers pass known names
        f"{path}: unknown section"
    )


def _section_problems(config: Mapping[str, object], where: str) -> list[str]:
    problems: list[str] = []
    for key in sorted(k for k in config if k not in DYNAMIC_SECTIONS):
        problems.append(
            f"{where}.{key}: unknown section (known: {', '.join(sorted(DYNAMIC_SECTIONS))})"
        )
    for name, keys in STATIC_KEYS.items():
        section = config.get(name)
        if isinstance(section, Mapping):
            problems.extend(
                f"{where}.{name}.{key}: not allowed in a dynamic config (static and "
                "node-local: set it in the agent's file)"
                for key in keys
                if key in section
            )
    return problems


Memo = dict[tuple[str, str, str], str | None]
"""Results of building sections, by (section, path, the section's JSON as written):
a fleet's configs repeat the same sections, and building one costs about a
millisecond. ``1`` and ``1.0`` are different keys: an integer setting refuses the
second. A :class:`~katalyst.dynconfig.resolve.Resolver` keeps one."""

_MEMO_SIZE: Final = 4096


def _section_problem(name: str, raw: object, where: str, memo: Memo | None) -> str | None:
    key = None
    if memo is not None:
        try:
            key = (name, where, json.dumps(raw, sort_keys=True, separators=(",", ":")))
        except (TypeError, ValueError):
            key = None
        if key is not None and key in memo:
            return memo[key]
    try:
        _build(name, raw, where)
        problem = None
    except DynamicConfigError as exc:
        problem = str(exc)
    if memo is not None and key is not None:
        if len(memo) >= _MEMO_SIZE:
            memo.clear()
        memo[key] = problem
    return problem


def validate_config(
    config: Mapping[str, object],
    *,
    where: str = "spec.config",
    sections: Iterable[str] | None = None,
    memo: Memo | None = None,
) -> tuple[str, ...]:
    """What is wrong with ``config`` (a partial ``spec.config``, or several merged):
    one message per broken section (its first broken field), empty when it is good.
    With ``sections``, only those sections are built (the others are known good);
    with ``memo``, results are remembered there."""
    problems = _section_problems(config, where)
    names = (
        DYNAMIC_SECTIONS
        if sections is None
        else [n for n in DYNAMIC_SECTIONS if n in set(sections)]
    )
    for name in names:
        raw = config.get(name)
        if raw is None:
            continue
        if name in STATIC_KEYS and isinstance(raw, Mapping):
            raw = {k: v for k, v in raw.items() if k not in STATIC_KEYS[name]}
        problem = _section_problem(name, strip_nulls(raw), where, memo)
        if problem is not None:
            problems.append(problem)
    return tuple(problems)


def build_sections(
    config: Mapping[str, object],
    *,
    base: Mapping[str, object] | None = None,
    where: str = "spec.config",
) -> Sections:
    """Every section: ``base`` (the agent's file, by section name; it may hold the
    static keys) with ``config`` (the merged dynamic layers) merged over it, built by
    the agent's own sections. Raises :class:`DynamicConfigError` naming the first
    broken field (by its path below ``where``)."""
    problems = _section_problems(config, where)
    if problems:
        raise DynamicConfigError(problems[0])
    built: dict[str, object] = {}
    for name in DYNAMIC_SECTIONS:
        below = base.get(name) if base is not None else None
        above = config.get(name)
        if below is not None and not isinstance(below, Mapping):
            raise DynamicConfigError(f"{name}: must be a mapping, got {type(below).__name__}")
        if above is not None and not isinstance(above, Mapping):
            raise DynamicConfigError(
                f"{where}.{name}: must be a mapping, got {type(above).__name__}"
            )
        raw = merge(below or {}, above or {})
        built[name] = _build(name, raw, where)
    return Sections(**built)  # type: ignore[arg-type]


def validate_service_overrides(
    overrides: Sequence[ServiceOverride], *, where: str = "spec.serviceOverrides"
) -> tuple[str, ...]:
    """What is wrong with the overrides: unknown indicators, fields other than
    ``target``, targets the sysadvisor would refuse."""
    problems: list[str] = []
    for i, override in enumerate(overrides):
        path = f"{where}[{i}]"
        if not override.indicators:
            problems.append(f"{path}.indicators: must override at least one indicator")
        for name, spec in override.indicators.items():
            spec_path = f"{path}.indicators.{name}"
            if name not in INDICATORS:
                problems.append(f"{spec_path}: unknown indicator (known: {', '.join(INDICATORS)})")
                continue
            extra = sorted(k for k in spec if k not in OVERRIDABLE)
            if extra:
                problems.append(
                    f"{spec_path}.{extra[0]}: cannot be overridden per service "
                    f"(only {', '.join(OVERRIDABLE)})"
                )
                continue
            if spec.get("target") is None:
                problems.append(f"{spec_path}.target: is required")
                continue
            too_large = _too_large(spec["target"], f"{spec_path}.target")
            if too_large:
                problems.append(too_large)
                continue
            try:
                AdvisorConfig.from_mapping(
                    {"indicators": {name: {"target": spec["target"]}}}, where=path
                )
            except (ArithmeticError, TypeError, ValueError) as exc:
                problems.append(str(exc))
    return tuple(problems)


def _placement_problems(kcc: KCC, target: TargetConfig) -> list[str]:
    problems: list[str] = []
    selector = target.node_selector
    if selector is not None and target.node_names:
        problems.append(
            "spec: nodeLabelSelector and ephemeralSelector.nodeNames cannot both be set "
            "(a config applies to a node pool or to named nodes)"
        )
    if target.node_names and target.last_duration is None:
        problems.append(
            "spec.ephemeralSelector.lastDuration: required with nodeNames "
            "(a named-nodes config expires)"
        )
    if target.last_duration is not None and not target.node_names:
        problems.append("spec.ephemeralSelector.nodeNames: required with lastDuration")
    if selector is None and target.priority != 0:
        problems.append(
            f"spec.priority: only with nodeLabelSelector (got {target.priority} without one)"
        )
    if selector is not None:
        allowed = kcc.keys_at(target.priority)
        if allowed is None:
            listed = ", ".join(str(p) for p in kcc.priorities) or "none"
            problems.append(
                f"spec.priority: {target.priority} is not listed in the "
                f"nodeLabelSelectorAllowedKeyList of KatalystCustomConfig "
                f"{kcc.namespace}/{kcc.name} (listed: {listed})"
            )
        else:
            anywhere = frozenset().union(*(e.keys for e in kcc.allowed_keys))
            for key in sorted(selector.keys - allowed):
                why = "" if key in anywhere else "; it is allowed at no priority"
                problems.append(
                    f"spec.nodeLabelSelector: key {key!r} is not allowed at priority "
                    f"{target.priority} by KatalystCustomConfig {kcc.namespace}/{kcc.name} "
                    f"(allowed: {', '.join(sorted(allowed)) or 'none'}){why}"
                )
    return problems


def validate_target(kcc: KCC, target: TargetConfig, *, memo: Memo | None = None) -> tuple[str, ...]:
    """Every problem of ``target`` under ``kcc``: where it applies, what it sets, its
    service overrides. Empty: it may apply."""
    problems = _placement_problems(kcc, target)
    problems.extend(validate_config(target.config, memo=memo))
    problems.extend(validate_service_overrides(target.service_overrides))
    return tuple(problems)
