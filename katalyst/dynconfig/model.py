"""The dynamic-configuration objects, parsed from the JSON the API server returns.

Four kinds (all ``v1alpha1``, field names as katalyst-api has them):

* ``KatalystCustomConfig`` (KCC, namespaced): names a target kind (by group,
  version and resource) and the node label keys a target config may select on,
  per priority. Parsed into :class:`KCC`.
* ``AdminQoSConfiguration`` (namespaced), or any other target kind with the common
  spec: a partial agent configuration and where it applies (cluster-wide, a node
  pool by label selector and priority, named nodes for a while, and per service).
  Parsed into :class:`TargetConfig`.
* ``CustomNodeConfig`` (CNC, cluster-scoped, one per node, named as the node): the
  configs that apply to the node and the hash of each. Parsed into
  :class:`CustomNodeConfig`; :func:`cnc_config_list` writes its status list.
* ``CustomNodeResource`` (CNR, cluster-scoped): the reporter's object; only its
  names are here.

Everything parses dicts as the API server returns them (JSON-decoded; YAML-decoded
for the standalone folder) and refuses anything else with a :class:`ParseError`
whose message names the field path (``spec.ephemeralSelector.lastDuration: ...``).
Parsing raises nothing else, whatever the input. Semantic rules (keys the KCC
allows, values the agent accepts, one level per config) are
:mod:`katalyst.dynconfig.validate`'s; a config that parses may still be rejected
there.

Pure: no I/O, no ``kubernetes`` import.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Final, Literal, TypedDict

from katalyst.dynconfig.merge import spec_hash

__all__ = [
    "ADMIN_QOS_GVR",
    "ADMIN_QOS_KIND",
    "CNC_GVR",
    "CNC_KIND",
    "CNR_GVR",
    "CNR_KIND",
    "CONFIG_GROUP",
    "KCC",
    "KCC_GVR",
    "KCC_KIND",
    "NODE_GROUP",
    "VERSION",
    "AllowedKeys",
    "CNCEntry",
    "CNCEntryJSON",
    "ConfigRef",
    "CustomNodeConfig",
    "GroupVersionResource",
    "GroupVersionResourceJSON",
    "InvalidTarget",
    "Level",
    "Node",
    "Operator",
    "ParseError",
    "Requirement",
    "Selector",
    "ServiceOverride",
    "TargetConfig",
    "cnc_config_list",
    "load_target",
    "parse_cnc",
    "parse_duration",
    "parse_kcc",
    "parse_label_selector",
    "parse_node",
    "parse_selector",
    "parse_target",
    "parse_timestamp",
]


# ---- constants -------------------------------------------------------------------------

CONFIG_GROUP: Final = "config.katalyst.kubewharf.io"
"""The group of KCC, AdminQoSConfiguration and CNC."""
NODE_GROUP: Final = "node.katalyst.kubewharf.io"
"""The group of CNR."""
VERSION: Final = "v1alpha1"
"""The one version of every kind here."""

KCC_KIND: Final = "KatalystCustomConfig"
ADMIN_QOS_KIND: Final = "AdminQoSConfiguration"
CNC_KIND: Final = "CustomNodeConfig"
CNR_KIND: Final = "CustomNodeResource"


@dataclass(frozen=True, slots=True, order=True)
class GroupVersionResource:
    """A resource as the API names it (``metav1.GroupVersionResource``)."""

    group: str
    version: str
    resource: str
    """The plural, e.g. ``adminqosconfigurations``."""

    @property
    def api_version(self) -> str:
        """``group/version`` (``v1`` for the core group)."""
        return f"{self.group}/{self.version}" if self.group else self.version

    def to_json(self) -> GroupVersionResourceJSON:
        return {"group": self.group, "version": self.version, "resource": self.resource}


class GroupVersionResourceJSON(TypedDict):
    group: str
    version: str
    resource: str


KCC_GVR: Final = GroupVersionResource(CONFIG_GROUP, VERSION, "katalystcustomconfigs")
ADMIN_QOS_GVR: Final = GroupVersionResource(CONFIG_GROUP, VERSION, "adminqosconfigurations")
CNC_GVR: Final = GroupVersionResource(CONFIG_GROUP, VERSION, "customnodeconfigs")
"""Cluster-scoped, with the status subresource."""
CNR_GVR: Final = GroupVersionResource(NODE_GROUP, VERSION, "customnoderesources")
"""Cluster-scoped, with the status subresource."""

Level = Literal["cluster", "pool", "named"]
"""Where a target config applies: every node, the nodes its label selector matches,
or the nodes it names. Lowest precedence first."""

# Kubernetes integers are int64 (JSON numbers the API server accepts for an
# ``integer`` field); a larger one cannot come from the API server, and Python's
# float conversions raise OverflowError on it, so it is refused here.
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_MAX_DEPTH = 32
"""Deeper nesting than any config has; refused so that no input can exhaust the stack."""


# ---- errors ----------------------------------------------------------------------------


class ParseError(ValueError):
    """An object does not have the shape of its kind; the message names the field path.

    ``path`` is the field (``spec.ephemeralSelector.lastDuration``), ``problem`` what
    is wrong with it; ``str(error)`` is ``"<path>: <problem>"``. ``ref`` is the object
    when its metadata could be read (so that a condition can be written on it)."""

    def __init__(self, path: str, problem: str, *, ref: ConfigRef | None = None) -> None:
        super().__init__(f"{path}: {problem}" if path else problem)
        self.path = path
        self.problem = problem
        self.ref = ref


def _describe(value: object) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ParseError(where, f"must be a mapping, got {_describe(value)}")
    for key in value:
        if not isinstance(key, str):
            raise ParseError(where, f"keys must be strings, got {_describe(key)}")
    return value


def _optional_mapping(value: object, where: str) -> Mapping[str, Any]:
    return {} if value is None else _mapping(value, where)


def _string(value: object, where: str, *, required: bool = False) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise ParseError(where, f"must be a string, got {_describe(value)}")
    if required and not value:
        raise ParseError(where, "must not be empty")
    return value


def _integer(value: object, where: str, *, default: int, minimum: int | None = None) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParseError(where, f"must be an integer, got {_describe(value)}")
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ParseError(where, "must fit in 64 bits")
    if minimum is not None and value < minimum:
        raise ParseError(where, f"must be >= {minimum}, got {value}")
    return value


def _boolean(value: object, where: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ParseError(where, f"must be true or false, got {_describe(value)}")
    return value


def _strings(value: object, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise ParseError(where, f"must be a list of strings, got {_describe(value)}")
    return tuple(_string(item, f"{where}[{i}]", required=True) for i, item in enumerate(value))


def _unknown(raw: Mapping[str, Any], known: Iterable[str], where: str) -> None:
    names = set(known)
    extra = sorted(k for k in raw if k not in names)
    if extra:
        prefix = f"{where}." if where else ""
        raise ParseError(
            f"{prefix}{extra[0]}", f"unknown field (known: {', '.join(sorted(names))})"
        )


def _plain(value: object, where: str, depth: int = 0) -> object:
    """``value`` as plain JSON data (dicts with string keys, lists, str, int, float,
    bool, None), copied so that the caller's later changes do not reach a parsed
    object; anything else is a :class:`ParseError` naming where it is."""
    if depth > _MAX_DEPTH:
        raise ParseError(where, f"nested deeper than {_MAX_DEPTH} levels")
    if value is None or isinstance(value, str | bool | float):
        return value
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise ParseError(where, "integer out of range (a Kubernetes integer has 64 bits)")
        return value
    if isinstance(value, Mapping):
        out: dict[str, object] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ParseError(where, f"keys must be strings, got {_describe(key)}")
            out[key] = _plain(item, f"{where}.{key}", depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [_plain(item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value)]
    raise ParseError(where, f"must be JSON data, got {_describe(value)}")


# ---- names -----------------------------------------------------------------------------

_NAME_PART = r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
_LABEL_NAME = re.compile(_NAME_PART, re.ASCII)
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def _label_key_problem(key: str) -> str | None:
    """Why ``key`` is not a label key (``[prefix/]name``), or None."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return f"the prefix of label key {key!r} must be a DNS subdomain"
    if not name or len(name) > 63 or not _LABEL_NAME.fullmatch(name):
        return (
            f"{key!r} is not a label key (a name of at most 63 of A-Z a-z 0-9 - _ ., "
            "starting and ending alphanumeric, optionally after a DNS prefix and /)"
        )
    return None


def _label_value_problem(value: str) -> str | None:
    if value and (len(value) > 63 or not _LABEL_NAME.fullmatch(value)):
        return (
            f"{value!r} is not a label value (empty, or at most 63 of A-Z a-z 0-9 - _ ., "
            "starting and ending alphanumeric)"
        )
    return None


# ---- label selectors -------------------------------------------------------------------

Operator = Literal["=", "!=", "in", "notin", "exists", "!"]
"""A requirement's operator, normalized: ``==`` reads as ``=``; ``exists`` is a bare
key; ``!`` is ``!key`` (the label is absent)."""


@dataclass(frozen=True, slots=True, order=True)
class Requirement:
    """One requirement of a label selector."""

    key: str
    operator: Operator
    values: frozenset[str] = frozenset()
    """One value for ``=``/``!=``, one or more for ``in``/``notin``, none otherwise."""

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Kubernetes' semantics: ``!=`` and ``notin`` also match a node without the key."""
        value = labels.get(self.key)
        op = self.operator
        if op in {"=", "in"}:
            return value is not None and value in self.values
        if op in {"!=", "notin"}:
            return value is None or value not in self.values
        if op == "exists":
            return value is not None
        return value is None

    def __str__(self) -> str:
        values = sorted(self.values)
        if self.operator == "exists":
            return self.key
        if self.operator == "!":
            return f"!{self.key}"
        if self.operator in ("in", "notin"):
            return f"{self.key} {self.operator} ({','.join(values)})"
        return f"{self.key}{self.operator}{values[0]}"


@dataclass(frozen=True, slots=True)
class Selector:
    """A label selector: every requirement must hold (an empty one matches everything).

    Built from a selector string (:func:`parse_selector`, the syntax of ``kubectl
    -l`` and of ``nodeLabelSelector``) or a ``metav1.LabelSelector`` mapping
    (:func:`parse_label_selector`). Requirements are kept sorted by key, so that two
    selectors that say the same thing in another order compare (and print) equal."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    @property
    def keys(self) -> frozenset[str]:
        """Every label key the selector looks at."""
        return frozenset(r.key for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


_SPECIAL = "=!(),<>"


def _tokens(text: str) -> list[tuple[str, str]]:
    """``(kind, text)`` tokens as Kubernetes' selector lexer makes them: kinds
    ``id``, ``in``, ``notin``, and the operators and punctuation themselves."""
    out: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if ch in _SPECIAL:
            two = text[i : i + 2]
            if two in ("==", "!=", ">=", "<="):
                out.append((two, two))
                i += 2
            else:
                out.append((ch, ch))
                i += 1
            continue
        j = i
        while j < n and not text[j].isspace() and text[j] not in _SPECIAL:
            j += 1
        word = text[i:j]
        out.append((word if word in ("in", "notin") else "id", word))
        i = j
    return out


def parse_selector(text: str, *, where: str = "selector") -> Selector:
    """A selector string in Kubernetes' syntax: requirements separated by commas,
    each ``key=value``, ``key==value``, ``key!=value``, ``key in (a,b)``, ``key notin
    (a,b)``, ``key`` (exists) or ``!key`` (does not exist). An empty string is the
    empty selector (it matches everything). The set-based ``<``/``>`` operators of
    node affinity are not label-selector syntax and are refused."""
    if not isinstance(text, str):
        raise ParseError(where, f"must be a string, got {_describe(text)}")
    tokens = _tokens(text)
    requirements: list[Requirement] = []
    pos = 0

    def fail(problem: str) -> ParseError:
        return ParseError(where, f"{problem} in {text!r}")

    def peek() -> tuple[str, str] | None:
        return tokens[pos] if pos < len(tokens) else None

    def key_at(tok: tuple[str, str] | None) -> str:
        if tok is None or tok[0] != "id":
            found = "the end" if tok is None else repr(tok[1])
            raise fail(f"expected a label key, found {found}")
        problem = _label_key_problem(tok[1])
        if problem:
            raise fail(problem)
        return tok[1]

    def value_at(tok: tuple[str, str]) -> str:
        problem = _label_value_problem(tok[1])
        if problem:
            raise fail(problem)
        return tok[1]

    while True:
        tok = peek()
        if tok is None:
            if requirements or tokens:
                raise fail("expected a requirement after ','")
            break
        if tok[0] == "!":
            pos += 1
            key = key_at(peek())
            pos += 1
            requirements.append(Requirement(key, "!"))
        else:
            key = key_at(tok)
            pos += 1
            op_tok = peek()
            if op_tok is None or op_tok[0] == ",":
                requirements.append(Requirement(key, "exists"))
            elif op_tok[0] in ("=", "==", "!="):
                pos += 1
                value_tok = peek()
                if value_tok is None or value_tok[0] == ",":
                    value = ""
                elif value_tok[0] in ("id", "in", "notin"):
                    value = value_at(value_tok)
                    pos += 1
                else:
                    raise fail(f"expected a value after {op_tok[1]!r}, found {value_tok[1]!r}")
                requirements.append(
                    Requirement(key, "!=" if op_tok[0] == "!=" else "=", frozenset({value}))
                )
            elif op_tok[0] in ("in", "notin"):
                pos += 1
                if peek() is None or peek() != ("(", "("):
                    raise fail(f"expected '(' after {op_tok[1]!r}")
                pos += 1
                values: set[str] = set()
                expect_value = True
                while True:
                    item = peek()
                    if item is None:
                        raise fail("expected ')'")
                    pos += 1
                    if item[0] == ")":
                        if expect_value and values:
                            values.add("")
                        break
                    if item[0] == ",":
                        if expect_value:
                            values.add("")
                        expect_value = True
                        continue
                    if item[0] not in ("id", "in", "notin") or not expect_value:
                        raise fail(f"expected a value or ')', found {item[1]!r}")
                    values.add(value_at(item))
                    expect_value = False
                if not values:
                    raise fail(f"{op_tok[1]!r} needs at least one value")
                requirements.append(Requirement(key, op_tok[0], frozenset(values)))  # type: ignore[arg-type]
            else:
                raise fail(
                    f"unknown operator {op_tok[1]!r} after {key!r} "
                    "(=, ==, !=, in, notin, or none for exists)"
                )
        tok = peek()
        if tok is None:
            break
        if tok[0] != ",":
            raise fail(f"expected ',' or the end, found {tok[1]!r}")
        pos += 1
    return Selector(tuple(sorted(requirements)))


_LABEL_SELECTOR_OPERATORS: Final[Mapping[str, Operator]] = {
    "In": "in",
    "NotIn": "notin",
    "Exists": "exists",
    "DoesNotExist": "!",
}


def parse_label_selector(raw: object, *, where: str = "selector") -> Selector:
    """A ``metav1.LabelSelector`` mapping: ``matchLabels`` (key to value, each an
    equality) and ``matchExpressions`` (``{key, operator: In|NotIn|Exists|
    DoesNotExist, values}``: In and NotIn need values, Exists and DoesNotExist take
    none), all ANDed. ``{}`` matches everything."""
    body = _mapping(raw, where)
    _unknown(body, ("matchLabels", "matchExpressions"), where)
    requirements: list[Requirement] = []
    labels = _optional_mapping(body.get("matchLabels"), f"{where}.matchLabels")
    for key, value in labels.items():
        path = f"{where}.matchLabels.{key}"
        problem = _label_key_problem(key)
        if problem:
            raise ParseError(path, problem)
        text = _string(value, path, required=False) if value is not None else None
        if text is None:
            raise ParseError(path, "must be a string, got None (NoneType)")
        problem = _label_value_problem(text)
        if problem:
            raise ParseError(path, problem)
        requirements.append(Requirement(key, "=", frozenset({text})))
    expressions = body.get("matchExpressions")
    if expressions is not None and not isinstance(expressions, list | tuple):
        raise ParseError(
            f"{where}.matchExpressions", f"must be a list, got {_describe(expressions)}"
        )
    for i, expr in enumerate(expressions or ()):
        path = f"{where}.matchExpressions[{i}]"
        item = _mapping(expr, path)
        _unknown(item, ("key", "operator", "values"), path)
        key = _string(item.get("key"), f"{path}.key", required=True)
        problem = _label_key_problem(key)
        if problem:
            raise ParseError(f"{path}.key", problem)
        op_name = item.get("operator")
        if not isinstance(op_name, str) or op_name not in _LABEL_SELECTOR_OPERATORS:
            raise ParseError(
                f"{path}.operator",
                f"must be one of In, NotIn, Exists, DoesNotExist, got {_describe(op_name)}",
            )
        op = _LABEL_SELECTOR_OPERATORS[op_name]
        values = _strings(item.get("values"), f"{path}.values") if "values" in item else ()
        for j, value in enumerate(values):
            problem = _label_value_problem(value)
            if problem:
                raise ParseError(f"{path}.values[{j}]", problem)
        if op in ("in", "notin") and not values:
            raise ParseError(f"{path}.values", f"{op_name} needs at least one value")
        if op in ("exists", "!") and values:
            raise ParseError(f"{path}.values", f"{op_name} takes no values")
        requirements.append(Requirement(key, op, frozenset(values)))
    return Selector(tuple(sorted(requirements)))


# ---- durations and times ---------------------------------------------------------------

_UNITS: Final[Mapping[str, int]] = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # U+00B5 micro sign
    "μs": 1_000,  # U+03BC greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_DURATION_PART = re.compile(r"([0-9]*)(?:\.([0-9]*))?([^0-9.]+)")


def parse_duration(text: object, *, where: str = "duration") -> float:
    """Seconds in a Go duration string (``time.ParseDuration``): a signed sequence of
    decimal numbers, each with a unit (``ns``, ``us``/``µs``, ``ms``, ``s``, ``m``,
    ``h``), e.g. ``90s``, ``1h30m``, ``500ms``, ``1.5h``; ``0`` alone. Go's range
    (about 292 years) applies."""
    if not isinstance(text, str):
        raise ParseError(where, f"must be a duration string such as '90s', got {_describe(text)}")
    rest = text
    negative = False
    if rest[:1] in ("+", "-"):
        negative = rest[0] == "-"
        rest = rest[1:]
    if rest == "0":
        return 0.0
    if not rest:
        raise ParseError(where, f"invalid duration {text!r}")
    total = Fraction(0)
    pos = 0
    while pos < len(rest):
        match = _DURATION_PART.match(rest, pos)
        if match is None:
            raise ParseError(where, f"invalid duration {text!r} (a number and a unit: 90s, 1h30m)")
        whole, frac, unit = match.group(1), match.group(2), match.group(3)
        if not whole and not frac:
            raise ParseError(where, f"invalid duration {text!r}")
        if unit not in _UNITS:
            raise ParseError(
                where, f"unknown unit {unit!r} in duration {text!r} (ns, us, ms, s, m, h)"
            )
        number = Fraction(int(whole or "0"))
        if frac:
            number += Fraction(int(frac), 10 ** len(frac))
        total += number * _UNITS[unit]
        pos = match.end()
    if total > _INT64_MAX:
        raise ParseError(where, f"invalid duration {text!r} (out of range)")
    nanoseconds = int(total)
    return (-nanoseconds if negative else nanoseconds) / 1e9


def parse_timestamp(text: object, *, where: str = "timestamp") -> float:
    """Seconds since the Unix epoch of an RFC 3339 time (``2024-05-01T10:00:00Z``,
    as ``metav1.Time`` is written); a time without a zone is refused."""
    if not isinstance(text, str):
        raise ParseError(where, f"must be an RFC 3339 time string, got {_describe(text)}")
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ParseError(where, f"must be an RFC 3339 time, got {text!r}") from None
    if moment.tzinfo is None:
        raise ParseError(where, f"must be an RFC 3339 time with a zone (Z), got {text!r}")
    return moment.timestamp()


# ---- references and metadata -----------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class ConfigRef:
    """A target config object: its kind, namespace and name."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class _Meta:
    name: str
    namespace: str
    uid: str
    generation: int
    resource_version: str
    creation_timestamp: float | None


def _metadata(obj: object, *, namespaced: bool) -> _Meta:
    body = _mapping(obj, "")
    meta = _mapping(body.get("metadata"), "metadata")
    name = _string(meta.get("name"), "metadata.name", required=True)
    namespace = (
        _string(meta.get("namespace"), "metadata.namespace", required=True) if namespaced else ""
    )
    uid = _string(meta.get("uid"), "metadata.uid")
    generation = _integer(meta.get("generation"), "metadata.generation", default=0)
    version = _string(meta.get("resourceVersion"), "metadata.resourceVersion")
    created = meta.get("creationTimestamp")
    timestamp = (
        None if created is None else parse_timestamp(created, where="metadata.creationTimestamp")
    )
    return _Meta(name, namespace, uid, generation, version, timestamp)


def _check_kind(body: Mapping[str, Any], kind: str) -> None:
    found = body.get("kind")
    if found is not None and found != kind:
        raise ParseError("kind", f"must be {kind!r}, got {_describe(found)}")


def _gvr(raw: object, where: str) -> GroupVersionResource:
    body = _mapping(raw, where)
    return GroupVersionResource(
        group=_string(body.get("group"), f"{where}.group"),
        version=_string(body.get("version"), f"{where}.version", required=True),
        resource=_string(body.get("resource"), f"{where}.resource", required=True),
    )


# ---- KatalystCustomConfig --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AllowedKeys:
    """The node label keys a target config at ``priority`` may select on."""

    priority: int
    keys: frozenset[str]


@dataclass(frozen=True, slots=True)
class KCC:
    """A ``KatalystCustomConfig``: the target kind and the label keys allowed per priority."""

    name: str
    namespace: str
    target: GroupVersionResource
    """The target config resource (``spec.targetType``)."""
    allowed_keys: tuple[AllowedKeys, ...] = ()
    """``spec.nodeLabelSelectorAllowedKeyList``, by ascending priority; one entry per priority."""
    uid: str = ""
    generation: int = 0

    @property
    def ref(self) -> ConfigRef:
        return ConfigRef(KCC_KIND, self.namespace, self.name)

    def keys_at(self, priority: int) -> frozenset[str] | None:
        """The keys allowed at ``priority``; None when the priority is not listed."""
        for entry in self.allowed_keys:
            if entry.priority == priority:
                return entry.keys
        return None

    @property
    def priorities(self) -> tuple[int, ...]:
        return tuple(entry.priority for entry in self.allowed_keys)


def parse_kcc(obj: object) -> KCC:
    """A ``KatalystCustomConfig`` object; :class:`ParseError` naming the field."""
    meta = _metadata(obj, namespaced=True)
    body = _mapping(obj, "")
    _check_kind(body, KCC_KIND)
    spec = _mapping(body.get("spec"), "spec")
    target = _gvr(spec.get("targetType"), "spec.targetType")
    listed = spec.get("nodeLabelSelectorAllowedKeyList")
    where = "spec.nodeLabelSelectorAllowedKeyList"
    if listed is not None and not isinstance(listed, list | tuple):
        raise ParseError(where, f"must be a list, got {_describe(listed)}")
    entries: dict[int, AllowedKeys] = {}
    for i, item in enumerate(listed or ()):
        path = f"{where}[{i}]"
        entry = _mapping(item, path)
        priority = _integer(entry.get("priority"), f"{path}.priority", default=0, minimum=0)
        if priority in entries:
            raise ParseError(f"{path}.priority", f"{priority} is listed twice")
        keys = _strings(entry.get("keyList"), f"{path}.keyList")
        for j, key in enumerate(keys):
            problem = _label_key_problem(key)
            if problem:
                raise ParseError(f"{path}.keyList[{j}]", problem)
        entries[priority] = AllowedKeys(priority, frozenset(keys))
    return KCC(
        name=meta.name,
        namespace=meta.namespace,
        target=target,
        allowed_keys=tuple(entries[p] for p in sorted(entries)),
        uid=meta.uid,
        generation=meta.generation,
    )


# ---- target configs --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServiceOverride:
    """``spec.serviceOverrides[i]``: indicator targets for the regions of the pods a
    label selector picks in one namespace, on the nodes the config applies to."""

    namespace: str
    selector: Selector
    indicators: Mapping[str, Mapping[str, object]]
    """Indicator name to its overrides (``{"target": 0.5}``), as written; the names and
    values are checked by :func:`katalyst.dynconfig.validate.validate_service_overrides`."""

    def matches(self, namespace: str, labels: Mapping[str, str]) -> bool:
        """Whether a pod in ``namespace`` with ``labels`` is selected."""
        return namespace == self.namespace and self.selector.matches(labels)

    @property
    def targets(self) -> dict[str, float]:
        """Indicator name to its target (the numeric ones)."""
        out: dict[str, float] = {}
        for name, spec in self.indicators.items():
            value = spec.get("target")
            if isinstance(value, int | float) and not isinstance(value, bool):
                out[name] = float(value)
        return out


def parse_service_overrides(
    raw: object, *, where: str = "spec.serviceOverrides"
) -> tuple[ServiceOverride, ...]:
    """``spec.serviceOverrides`` as written (a list of mappings); :class:`ParseError`
    naming the field, never anything else."""
    try:
        return _service_overrides(raw, where=where)
    except ParseError:
        raise
    except (TypeError, ValueError) as exc:  # pragma: no cover - the parsers name fields
        raise ParseError(where, str(exc)) from None


def _service_overrides(
    raw: object, *, where: str = "spec.serviceOverrides"
) -> tuple[ServiceOverride, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list | tuple):
        raise ParseError(where, f"must be a list, got {_describe(raw)}")
    out: list[ServiceOverride] = []
    for i, item in enumerate(raw):
        path = f"{where}[{i}]"
        body = _mapping(item, path)
        _unknown(body, ("namespace", "selector", "indicators"), path)
        namespace = _string(body.get("namespace"), f"{path}.namespace", required=True)
        if len(namespace) > 63 or not _DNS_LABEL.fullmatch(namespace):
            raise ParseError(f"{path}.namespace", f"{namespace!r} is not a namespace name")
        if body.get("selector") is None:
            raise ParseError(f"{path}.selector", "is required ({} selects every pod)")
        selector = parse_label_selector(body.get("selector"), where=f"{path}.selector")
        indicators_raw = _mapping(body.get("indicators"), f"{path}.indicators")
        indicators: dict[str, Mapping[str, object]] = {}
        for name, spec in indicators_raw.items():
            spec_path = f"{path}.indicators.{name}"
            plain = _plain(_mapping(spec, spec_path), spec_path)
            assert isinstance(plain, dict)
            indicators[name] = plain
        out.append(ServiceOverride(namespace, selector, indicators))
    return tuple(out)


_SPEC_FIELDS: Final = (
    "nodeLabelSelector",
    "priority",
    "ephemeralSelector",
    "paused",
    "config",
    "serviceOverrides",
    # katalyst-api's GenericConfigSpec has it (how many old revisions to keep); kept
    # for compatibility, unused here.
    "revisionHistoryLimit",
)


@dataclass(frozen=True, slots=True)
class TargetConfig:
    """A target config object (``AdminQoSConfiguration``): where it applies and what.

    Parsed, not yet validated: :func:`katalyst.dynconfig.validate.validate_target`
    says whether it may apply."""

    ref: ConfigRef
    uid: str
    generation: int
    resource_version: str
    creation_timestamp: float | None
    """Seconds since the epoch; None when the object has none (a standalone file)."""
    node_selector: Selector | None
    """``spec.nodeLabelSelector``; None when absent or empty."""
    priority: int
    """``spec.priority`` (0 when absent)."""
    node_names: frozenset[str]
    """``spec.ephemeralSelector.nodeNames``."""
    last_duration: float | None
    """``spec.ephemeralSelector.lastDuration`` in seconds; None when absent."""
    paused: bool
    """``spec.paused``: a paused config is treated as absent."""
    config: Mapping[str, object]
    """``spec.config``: a partial agent configuration (plain JSON data)."""
    service_overrides: tuple[ServiceOverride, ...]
    hash: str
    """:func:`katalyst.dynconfig.merge.spec_hash` of the whole ``spec``: what the CNC lists."""
    selector_text: str = ""
    """``spec.nodeLabelSelector`` as written."""
    spec: Mapping[str, object] = field(default_factory=dict, compare=False, repr=False)
    """The whole ``spec`` (plain JSON data)."""

    @property
    def level(self) -> Level:
        """``named`` with node names, else ``pool`` with a selector, else ``cluster``."""
        if self.node_names:
            return "named"
        if self.node_selector is not None:
            return "pool"
        return "cluster"

    @property
    def selector_keys(self) -> frozenset[str]:
        """The label keys ``spec.nodeLabelSelector`` uses (none without one)."""
        return frozenset() if self.node_selector is None else self.node_selector.keys

    @property
    def version(self) -> tuple[str, str]:
        """``(uid, hash)``: two parses of the same object at the same spec share it."""
        return (self.uid, self.hash)


@dataclass(frozen=True, slots=True)
class InvalidTarget:
    """A target config whose metadata could be read but not its spec: it is rejected
    (a ``Valid=False`` condition with :attr:`error`) and its last good version, if
    any, stays in effect."""

    ref: ConfigRef
    uid: str
    generation: int
    error: str


def parse_target(obj: object, *, kind: str = ADMIN_QOS_KIND) -> TargetConfig:
    """A target config object of ``kind`` (its ``kind`` field, when present, must
    agree: items of a list may lack it); :class:`ParseError` naming the field."""
    meta = _metadata(obj, namespaced=True)
    ref = ConfigRef(kind, meta.namespace, meta.name)
    try:
        return _parse_target(obj, meta, ref, kind)
    except ParseError as exc:
        exc.ref = ref
        raise


def _parse_target(obj: object, meta: _Meta, ref: ConfigRef, kind: str) -> TargetConfig:
    body = _mapping(obj, "")
    _check_kind(body, kind)
    raw_spec = body.get("spec")
    spec = _plain(_optional_mapping(raw_spec, "spec"), "spec")
    assert isinstance(spec, dict)
    _unknown(spec, _SPEC_FIELDS, "spec")
    selector_text = _string(spec.get("nodeLabelSelector"), "spec.nodeLabelSelector")
    selector = (
        parse_selector(selector_text, where="spec.nodeLabelSelector")
        if selector_text.strip()
        else None
    )
    priority = _integer(spec.get("priority"), "spec.priority", default=0, minimum=0)
    ephemeral = _optional_mapping(spec.get("ephemeralSelector"), "spec.ephemeralSelector")
    _unknown(ephemeral, ("nodeNames", "lastDuration"), "spec.ephemeralSelector")
    names = _strings(ephemeral.get("nodeNames"), "spec.ephemeralSelector.nodeNames")
    duration_raw = ephemeral.get("lastDuration")
    duration = None
    if duration_raw is not None:
        where = "spec.ephemeralSelector.lastDuration"
        duration = parse_duration(duration_raw, where=where)
        if duration <= 0:
            raise ParseError(where, f"must be a positive duration, got {duration_raw!r}")
    paused = _boolean(spec.get("paused"), "spec.paused")
    _integer(spec.get("revisionHistoryLimit"), "spec.revisionHistoryLimit", default=0, minimum=0)
    config = _optional_mapping(spec.get("config"), "spec.config")
    overrides = _service_overrides(spec.get("serviceOverrides"))
    return TargetConfig(
        ref=ref,
        uid=meta.uid,
        generation=meta.generation,
        resource_version=meta.resource_version,
        creation_timestamp=meta.creation_timestamp,
        node_selector=selector,
        priority=priority,
        node_names=frozenset(names),
        last_duration=duration,
        paused=paused,
        config=config,
        service_overrides=overrides,
        hash=spec_hash(spec),
        selector_text=selector_text,
        spec=spec,
    )


def load_target(obj: object, *, kind: str = ADMIN_QOS_KIND) -> TargetConfig | InvalidTarget:
    """:func:`parse_target`, with a spec that does not parse returned as an
    :class:`InvalidTarget` (to be rejected with a condition). Raises
    :class:`ParseError` only when even the metadata cannot be read."""
    try:
        return parse_target(obj, kind=kind)
    except ParseError as exc:
        if exc.ref is None:
            raise
        meta = _metadata(obj, namespaced=True)
        return InvalidTarget(exc.ref, meta.uid, meta.generation, str(exc))


# ---- nodes -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Node:
    """A node as resolution sees it: its name and labels."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)


def parse_node(obj: object) -> Node:
    """A ``Node`` object (only ``metadata.name`` and ``metadata.labels`` are read)."""
    meta = _metadata(obj, namespaced=False)
    body = _mapping(obj, "")
    labels_raw = _optional_mapping(
        _mapping(body.get("metadata"), "metadata").get("labels"), "metadata.labels"
    )
    labels: dict[str, str] = {}
    for key, value in labels_raw.items():
        labels[key] = _string(value, f"metadata.labels.{key}", required=False)
        if value is None:
            raise ParseError(f"metadata.labels.{key}", "must be a string, got None (NoneType)")
    return Node(meta.name, labels)


# ---- CustomNodeConfig ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CNCEntry:
    """One config that applies to a node, as its CNC lists it."""

    config_type: GroupVersionResource
    namespace: str
    name: str
    hash: str

    def to_json(self) -> CNCEntryJSON:
        return {
            "configType": self.config_type.to_json(),
            "configNamespace": self.namespace,
            "configName": self.name,
            "hash": self.hash,
        }


class CNCEntryJSON(TypedDict):
    configType: GroupVersionResourceJSON
    configNamespace: str
    configName: str
    hash: str


@dataclass(frozen=True, slots=True)
class CustomNodeConfig:
    """A ``CustomNodeConfig``: the node it belongs to and the configs that apply,
    lowest precedence first (cluster, pool, named)."""

    name: str
    entries: tuple[CNCEntry, ...] = ()
    resource_version: str = ""


def parse_cnc(obj: object) -> CustomNodeConfig:
    """A ``CustomNodeConfig`` object; :class:`ParseError` naming the field."""
    meta = _metadata(obj, namespaced=False)
    body = _mapping(obj, "")
    _check_kind(body, CNC_KIND)
    status = _optional_mapping(body.get("status"), "status")
    listed = status.get("katalystCustomConfigList")
    where = "status.katalystCustomConfigList"
    if listed is not None and not isinstance(listed, list | tuple):
        raise ParseError(where, f"must be a list, got {_describe(listed)}")
    entries: list[CNCEntry] = []
    for i, item in enumerate(listed or ()):
        path = f"{where}[{i}]"
        entry = _mapping(item, path)
        entries.append(
            CNCEntry(
                config_type=_gvr(entry.get("configType"), f"{path}.configType"),
                namespace=_string(
                    entry.get("configNamespace"), f"{path}.configNamespace", required=True
                ),
                name=_string(entry.get("configName"), f"{path}.configName", required=True),
                hash=_string(entry.get("hash"), f"{path}.hash", required=True),
            )
        )
    return CustomNodeConfig(meta.name, tuple(entries), meta.resource_version)


def cnc_config_list(
    target: GroupVersionResource, entries: Iterable[tuple[ConfigRef, str]]
) -> list[CNCEntryJSON]:
    """``status.katalystCustomConfigList`` of a CNC: one item per ``(ref, hash)``, in
    the order given (lowest precedence first), each of the KCC's ``target`` type."""
    return [CNCEntry(target, ref.namespace, ref.name, digest).to_json() for ref, digest in entries]
