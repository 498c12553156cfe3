"""Katalyst's QoS enhancement annotations, parsed into frozen dataclasses.

Each enhancement annotation (``katalyst.kubewharf.io/{memory,cpu,network}_enhancement``)
holds a JSON object of string to string, e.g.::

    katalyst.kubewharf.io/memory_enhancement: '{"numa_binding": "true", "oom_priority": "150"}'

Rules shared by all three:

* The value must be a JSON object whose values are all strings. Invalid JSON, a list, a
  number, ``null``, a non-string value or a duplicated key is an error. (Katalyst
  decodes with Go's ``json.Unmarshal`` into ``map[string]string``, which takes the last
  of duplicated keys and reads ``null`` as empty; both hide mistakes, so we refuse them.)
* Booleans are exactly ``"true"`` or ``"false"``. Go's ``strconv.ParseBool`` spellings
  (``"1"``, ``"t"``, ``"True"``, ``"TRUE"``...) are refused: Katalyst compares several of
  these fields with ``== "true"``, so there ``"True"`` silently means false; refusing it
  makes the mistake visible instead of picking one of two behaviours.
* Keys this version does not know are kept in ``extra`` and otherwise ignored, so a pod
  written for a newer Katalyst (e.g. ``numa_affinity``, ``cpu_burst_threshold``) is
  still admitted.
* An absent annotation gives the defaults documented on each field.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Final, TypeVar

from katalyst.qos.errors import QoSValidationError
from katalyst.qos.model import (
    CPU_ENHANCEMENT_ANNOTATION,
    MEMORY_ENHANCEMENT_ANNOTATION,
    NETWORK_ENHANCEMENT_ANNOTATION,
    OOM_PRIORITY_IGNORE,
    OOM_PRIORITY_TOP,
    QoSLevel,
    oom_priority_range,
)

__all__ = [
    "CPUBurstPolicy",
    "CPUEnhancement",
    "Enhancements",
    "MemoryEnhancement",
    "NetworkEnhancement",
    "NetworkNamespaceType",
    "parse_cpu_enhancement",
    "parse_enhancements",
    "parse_memory_enhancement",
    "parse_network_enhancement",
]

_EnumT = TypeVar("_EnumT", bound=StrEnum)


def _empty() -> Mapping[str, str]:
    return MappingProxyType({})


class CPUBurstPolicy(StrEnum):
    """``cpu_burst_policy`` in the CPU enhancement (Katalyst's CPU burst plugin)."""

    DEFAULT = "default"
    """Leave the cgroup's burst value as it is."""
    CLOSED = "closed"
    """Burst is always 0."""
    STATIC = "static"
    """Burst is ``cpu_burst_percent`` of the quota, always."""
    DYNAMIC = "dynamic"
    """Burst is enabled only while the pod's CPU utilisation is under a threshold."""


class NetworkNamespaceType(StrEnum):
    """``namespace_type`` in the network enhancement: where the pod's NIC may live.

    Values from katalyst-api ``PodAnnotationNetworkEnhancementNamespaceType*``.
    """

    HOST_NS = "host_ns"
    """Only a NIC in the host network namespace; admission fails otherwise."""
    HOST_NS_PREFERRED = "host_ns_preferred"
    """Prefer a NIC in the host namespace, accept another."""
    ANTI_HOST_NS = "anti_host_ns"
    """Only a NIC outside the host namespace; admission fails otherwise."""
    ANTI_HOST_NS_PREFERRED = "anti_host_ns_preferred"
    """Prefer a NIC outside the host namespace, accept the host's."""


@dataclass(frozen=True, slots=True)
class MemoryEnhancement:
    """``katalyst.kubewharf.io/memory_enhancement``."""

    numa_binding: bool = False
    """``numa_binding``: bind the pod's memory (and CPUs) to NUMA nodes. Default false."""
    numa_exclusive: bool = False
    """``numa_exclusive``: the bound NUMA nodes serve this pod alone; requires
    ``numa_binding``. Default false."""
    rss_overuse_threshold: float | None = None
    """``rss_overuse_threshold``: evict when RSS exceeds the memory request times this
    ratio (finite, > 0). ``None``: no such eviction."""
    oom_priority: int | None = None
    """``oom_priority``: within the level's range (see ``oom_priority_range``), or -300
    (ignore) or 300 (top). ``None``: the level's default."""
    extra: Mapping[str, str] = field(default_factory=_empty, hash=False)
    """Keys this version does not know, kept verbatim and ignored."""


@dataclass(frozen=True, slots=True)
class CPUEnhancement:
    """``katalyst.kubewharf.io/cpu_enhancement``."""

    cpuset_pool: str | None = None
    """``cpuset_pool``: the named shared cpuset pool (a DNS label, at most 63 characters).
    ``None``: the ``share`` pool."""
    numa_share: bool = True
    """``numa_share``: whether the pod may share NUMA nodes with pods of another pool or
    level. Default true."""
    suppression_tolerance_rate: float | None = None
    """``suppression_tolerance_rate``: evict a reclaimed pod whose CPU is suppressed
    beyond this ratio (finite, > 0). ``None``: no such eviction."""
    cpu_burst_policy: CPUBurstPolicy | None = None
    """``cpu_burst_policy``: ``None`` when unset (the node's configuration decides)."""
    cpu_burst_percent: int | None = None
    """``cpu_burst_percent``: burst as a percentage of the CFS quota, 0 to 100."""
    extra: Mapping[str, str] = field(default_factory=_empty, hash=False)
    """Keys this version does not know, kept verbatim and ignored."""


@dataclass(frozen=True, slots=True)
class NetworkEnhancement:
    """``katalyst.kubewharf.io/network_enhancement``."""

    namespace_type: NetworkNamespaceType | None = None
    """``namespace_type``: where the NIC may live; ``None``: anywhere."""
    topology_affinity_restricted: bool = False
    """``topology_affinity_restricted``: the NIC must be on the pod's NUMA nodes, or
    admission fails. Default false."""
    extra: Mapping[str, str] = field(default_factory=_empty, hash=False)
    """Keys this version does not know, kept verbatim and ignored."""


@dataclass(frozen=True, slots=True)
class Enhancements:
    """All three enhancements of a pod."""

    memory: MemoryEnhancement = field(default_factory=MemoryEnhancement)
    """The memory enhancement (defaults when the annotation is absent)."""
    cpu: CPUEnhancement = field(default_factory=CPUEnhancement)
    """The CPU enhancement (defaults when the annotation is absent)."""
    network: NetworkEnhancement = field(default_factory=NetworkEnhancement)
    """The network enhancement (defaults when the annotation is absent)."""


# Field names, as Katalyst spells them.
_NUMA_BINDING: Final = "numa_binding"
_NUMA_EXCLUSIVE: Final = "numa_exclusive"
_RSS_OVERUSE_THRESHOLD: Final = "rss_overuse_threshold"
_OOM_PRIORITY: Final = "oom_priority"
_CPUSET_POOL: Final = "cpuset_pool"
_NUMA_SHARE: Final = "numa_share"
_SUPPRESSION_TOLERANCE_RATE: Final = "suppression_tolerance_rate"
_CPU_BURST_POLICY: Final = "cpu_burst_policy"
_CPU_BURST_PERCENT: Final = "cpu_burst_percent"
_NAMESPACE_TYPE: Final = "namespace_type"
_TOPOLOGY_AFFINITY_RESTRICTED: Final = "topology_affinity_restricted"

_MEMORY_KEYS: Final = frozenset(
    {_NUMA_BINDING, _NUMA_EXCLUSIVE, _RSS_OVERUSE_THRESHOLD, _OOM_PRIORITY}
)
_CPU_KEYS: Final = frozenset(
    {_CPUSET_POOL, _NUMA_SHARE, _SUPPRESSION_TOLERANCE_RATE, _CPU_BURST_POLICY, _CPU_BURST_PERCENT}
)
_NETWORK_KEYS: Final = frozenset({_NAMESPACE_TYPE, _TOPOLOGY_AFFINITY_RESTRICTED})

# ASCII only: [0-9] rather than \d (which also matches non-ASCII digits); no "inf",
# "nan", hex floats or "_" separators, which Python's float()/int() or Go's ParseFloat
# would otherwise accept.
_INT_RE: Final = re.compile(r"[+-]?[0-9]+")
# Unambiguous on purpose: "[0-9]+\.?[0-9]*" would backtrack quadratically on a long
# run of digits that fails to match (annotations may hold 256 KiB).
_FLOAT_RE: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# A DNS-1123 label, like the pool names Katalyst's QRM CPU plugin creates.
_POOL_RE: Final = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
_MAX_INT_DIGITS: Final = 19  # int64 has 19 digits; longer is out of range anyway


class _DuplicateKeyError(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _reject_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(key)
        result[key] = value
    return result


def _decode_object(raw: str, *, annotation: str) -> dict[str, str]:
    """Decode an enhancement annotation into a str -> str dict, or raise."""
    if not isinstance(raw, str):
        raise QoSValidationError(key=annotation, value=raw, rule="must be a string")
    try:
        decoded = json.loads(raw, object_pairs_hook=_reject_duplicates)
    except _DuplicateKeyError as err:
        raise QoSValidationError(
            key=annotation, value=raw, rule=f'must not repeat the key "{err.key}"'
        ) from None
    except (ValueError, RecursionError) as err:
        # JSONDecodeError is a ValueError; so is CPython's refusal of integer literals
        # over 4300 digits. Deeply nested arrays raise RecursionError.
        detail = f" ({err.msg})" if isinstance(err, json.JSONDecodeError) else ""
        raise QoSValidationError(
            key=annotation, value=raw, rule=f"must be a JSON object of string to string{detail}"
        ) from None
    if not isinstance(decoded, dict):
        raise QoSValidationError(
            key=annotation,
            value=raw,
            rule=f"must be a JSON object of string to string, not {_json_type(decoded)}",
        )
    for key, value in decoded.items():
        if not isinstance(value, str):
            raise QoSValidationError(
                key=annotation,
                field=key,
                value=value,
                rule=f"must be a JSON string, not {_json_type(value)}",
            )
    return decoded


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "a string"


class _Fields:
    """Typed access to the decoded fields of one annotation, with errors naming them."""

    def __init__(self, fields: dict[str, str], *, annotation: str) -> None:
        self._fields = fields
        self._annotation = annotation

    def error(self, name: str, rule: str) -> QoSValidationError:
        return QoSValidationError(
            key=self._annotation, field=name, value=self._fields[name], rule=rule
        )

    def unknown(self, known: frozenset[str]) -> Mapping[str, str]:
        return MappingProxyType({k: v for k, v in self._fields.items() if k not in known})

    def text(self, name: str) -> str | None:
        return self._fields.get(name)

    def bool(self, name: str, *, default: bool) -> bool:
        raw = self._fields.get(name)
        if raw is None:
            return default
        if raw == "true":
            return True
        if raw == "false":
            return False
        raise self.error(name, 'must be "true" or "false"')

    def positive_ratio(self, name: str) -> float | None:
        raw = self._fields.get(name)
        if raw is None:
            return None
        rule = "must be a finite decimal number greater than 0"
        if _FLOAT_RE.fullmatch(raw) is None:
            raise self.error(name, rule)
        value = float(raw)  # cannot fail: the regexp admits only float() syntax
        if not math.isfinite(value) or value <= 0:
            raise self.error(name, rule)
        return value

    def integer(self, name: str, *, rule: str) -> int | None:
        raw = self._fields.get(name)
        if raw is None:
            return None
        if _INT_RE.fullmatch(raw) is None:
            raise self.error(name, rule)
        # Strip leading zeros before int(): CPython refuses str->int conversion of more
        # than 4300 digits, and "000...0150" is still 150.
        digits = raw.lstrip("+-").lstrip("0") or "0"
        if len(digits) > _MAX_INT_DIGITS:
            raise self.error(name, rule)
        return -int(digits) if raw.startswith("-") else int(digits)

    def choice(self, name: str, enum: Callable[[str], _EnumT], names: str) -> _EnumT | None:
        raw = self._fields.get(name)
        if raw is None:
            return None
        try:
            return enum(raw)
        except ValueError:
            raise self.error(name, f"must be one of {names}") from None


def _names(enum: type[StrEnum]) -> str:
    return ", ".join(member.value for member in enum)


def parse_memory_enhancement(raw: str | None, *, level: QoSLevel) -> MemoryEnhancement:
    """Parse the memory enhancement annotation value of a pod of QoS ``level``.

    ``raw`` is the annotation's value, or ``None`` when the pod does not have it.
    ``level`` bounds ``oom_priority`` (see :func:`katalyst.qos.oom_priority_range`).
    """
    if raw is None:
        return MemoryEnhancement()
    fields = _Fields(
        _decode_object(raw, annotation=MEMORY_ENHANCEMENT_ANNOTATION),
        annotation=MEMORY_ENHANCEMENT_ANNOTATION,
    )
    numa_binding = fields.bool(_NUMA_BINDING, default=False)
    numa_exclusive = fields.bool(_NUMA_EXCLUSIVE, default=False)
    if numa_exclusive and not numa_binding:
        # Katalyst only honours numa_exclusive on a NUMA-bound pod; alone it would be
        # silently ignored.
        raise fields.error(_NUMA_EXCLUSIVE, 'requires "numa_binding": "true"')
    allowed = oom_priority_range(level)
    oom_rule = (
        f"must be an integer in [{allowed.start}, {allowed.stop}) for {level.value}, "
        f"or {OOM_PRIORITY_IGNORE} (ignore) or {OOM_PRIORITY_TOP} (top)"
    )
    oom_priority = fields.integer(_OOM_PRIORITY, rule=oom_rule)
    if (
        oom_priority is not None
        and oom_priority not in allowed
        and oom_priority not in (OOM_PRIORITY_IGNORE, OOM_PRIORITY_TOP)
    ):
        # Katalyst clamps an out-of-range value into the level's range
        # (AlignOOMPriority); we refuse it so the pod's author learns their value was
        # not what took effect.
        raise fields.error(_OOM_PRIORITY, oom_rule)
    return MemoryEnhancement(
        numa_binding=numa_binding,
        numa_exclusive=numa_exclusive,
        rss_overuse_threshold=fields.positive_ratio(_RSS_OVERUSE_THRESHOLD),
        oom_priority=oom_priority,
        extra=fields.unknown(_MEMORY_KEYS),
    )


def parse_cpu_enhancement(raw: str | None) -> CPUEnhancement:
    """Parse the CPU enhancement annotation value (``None`` when absent)."""
    if raw is None:
        return CPUEnhancement()
    fields = _Fields(
        _decode_object(raw, annotation=CPU_ENHANCEMENT_ANNOTATION),
        annotation=CPU_ENHANCEMENT_ANNOTATION,
    )
    pool = fields.text(_CPUSET_POOL)
    if pool is not None and _POOL_RE.fullmatch(pool) is None:
        raise fields.error(
            _CPUSET_POOL,
            "must be a pool name: lowercase letters, digits and '-', starting and ending "
            "with a letter or digit, at most 63 characters",
        )
    return CPUEnhancement(
        cpuset_pool=pool,
        numa_share=fields.bool(_NUMA_SHARE, default=True),
        suppression_tolerance_rate=fields.positive_ratio(_SUPPRESSION_TOLERANCE_RATE),
        cpu_burst_policy=fields.choice(_CPU_BURST_POLICY, CPUBurstPolicy, _names(CPUBurstPolicy)),
        cpu_burst_percent=_percent(fields),
        extra=fields.unknown(_CPU_KEYS),
    )


def _percent(fields: _Fields) -> int | None:
    rule = "must be an integer from 0 to 100"
    percent = fields.integer(_CPU_BURST_PERCENT, rule=rule)
    if percent is not None and not 0 <= percent <= 100:
        raise fields.error(_CPU_BURST_PERCENT, rule)
    return percent


def parse_network_enhancement(raw: str | None) -> NetworkEnhancement:
    """Parse the network enhancement annotation value (``None`` when absent)."""
    if raw is None:
        return NetworkEnhancement()
    fields = _Fields(
        _decode_object(raw, annotation=NETWORK_ENHANCEMENT_ANNOTATION),
        annotation=NETWORK_ENHANCEMENT_ANNOTATION,
    )
    return NetworkEnhancement(
        namespace_type=fields.choice(
            _NAMESPACE_TYPE, NetworkNamespaceType, _names(NetworkNamespaceType)
        ),
        topology_affinity_restricted=fields.bool(_TOPOLOGY_AFFINITY_RESTRICTED, default=False),
        extra=fields.unknown(_NETWORK_KEYS),
    )


def parse_enhancements(annotations: Mapping[str, str], level: QoSLevel) -> Enhancements:
    """Parse all three enhancement annotations of a pod of QoS ``level``.

    This is what the agent's ``Allocate`` path calls with the annotations of a QRM
    request. Absent annotations give defaults; any bad one raises
    :class:`QoSValidationError` naming the annotation and, where it applies, the field.
    """
    return Enhancements(
        memory=parse_memory_enhancement(
            annotations.get(MEMORY_ENHANCEMENT_ANNOTATION), level=level
        ),
        cpu=parse_cpu_enhancement(annotations.get(CPU_ENHANCEMENT_ANNOTATION)),
        network=parse_network_enhancement(annotations.get(NETWORK_ENHANCEMENT_ANNOTATION)),
    )
