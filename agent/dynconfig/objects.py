"""``AdminQoSConfiguration`` and ``KatalystCustomConfig`` objects read from YAML, and
the resolution of one node's layers from them (the standalone agent resolves for
itself what the controller writes into a cluster node's ``CustomNodeConfig``).

Levels, lowest precedence first: the **cluster-wide** config (no selector), the
**node-pool** config whose ``nodeLabelSelector`` matches the node's labels (the
highest ``priority`` wins), the **named-nodes** config whose
``ephemeralSelector.nodeNames`` names the node, until ``lastDuration`` after its
``creationTimestamp`` (or, without one, after its file last changed). A paused
config is ignored. Two cluster-wide configs, two matching pool configs at one
priority, or two named configs naming the node are a conflict: refused, naming
both. With a ``KatalystCustomConfig`` for the kind in the folder, a pool config's
selector may use only the label keys it allows at that priority.

The label-selector and duration parsers here are small and local; the shared
ones are ``katalyst.dynconfig``'s.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from agent.config import AgentConfig
from agent.dynconfig.settings import (
    DynamicConfigError,
    DynamicSettings,
    Layer,
    canonical_hash,
    from_layers,
)
from katalyst.settings import describe

__all__ = [
    "API_VERSION",
    "KCC_KIND",
    "KIND",
    "AllowedKeys",
    "Requirement",
    "Resolution",
    "TargetConfig",
    "parse_document",
    "parse_duration",
    "parse_selector",
    "resolve",
]

GROUP = "config.katalyst.kubewharf.io"
API_VERSION = f"{GROUP}/v1alpha1"
KIND = "AdminQoSConfiguration"
KCC_KIND = "KatalystCustomConfig"
RESOURCE = "adminqosconfigurations"

_SPEC_KEYS = (
    "nodeLabelSelector",
    "priority",
    "ephemeralSelector",
    "paused",
    "config",
    "serviceOverrides",
)
_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
_LABEL_NAME = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
_LABEL_PREFIX = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


# ---- label selectors and durations ---------------------------------------------------


def label_key_problem(key: str) -> str | None:
    """Why ``key`` is not a Kubernetes label key (``[prefix/]name``), or None."""
    prefix, slash, name = key.rpartition("/")
    if slash and (len(prefix) > 253 or not _LABEL_PREFIX.fullmatch(prefix)):
        return f"the prefix of {key!r} is not a DNS subdomain"
    if not name or len(name) > 63 or not _LABEL_NAME.fullmatch(name):
        return f"{key!r} is not a label key (1-63 of A-Z a-z 0-9 - _ ., alphanumeric at the ends)"
    return None


def label_value_problem(value: str) -> str | None:
    """Why ``value`` is not a Kubernetes label value (may be empty), or None."""
    if len(value) > 63 or not _LABEL_NAME.fullmatch(value):
        return (
            f"{value!r} is not a label value (0-63 of A-Z a-z 0-9 - _ ., alphanumeric at the ends)"
        )
    return None


@dataclass(frozen=True, slots=True)
class Requirement:
    """One term of a label selector: ``key``, ``!key``, ``key=v``, ``key!=v``,
    ``key in (a,b)``, ``key notin (a,b)``."""

    key: str
    operator: str
    """``exists``, ``!exists``, ``in`` or ``notin`` (``=`` is ``in`` one value)."""
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` satisfy this term (Kubernetes' semantics: ``notin`` and
        ``!=`` hold for a node without the key)."""
        if self.operator == "exists":
            return self.key in labels
        if self.operator == "!exists":
            return self.key not in labels
        if self.operator == "in":
            return labels.get(self.key) in self.values
        return labels.get(self.key) not in self.values


_KEY = r"[^\s=!(),]+"
_TERMS = (
    (re.compile(rf"!\s*(?P<key>{_KEY})"), "!exists"),
    (re.compile(rf"(?P<key>{_KEY})\s*(?P<op>==|=|!=)\s*(?P<values>[^\s=!(),]*)"), None),
    (re.compile(rf"(?P<key>{_KEY})\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)"), None),
    (re.compile(rf"(?P<key>{_KEY})"), "exists"),
)


def _split_terms(text: str) -> list[str]:
    """``text`` split at the commas outside parentheses."""
    terms, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    terms.append(current)
    return terms


def _match_term(term: str) -> tuple[re.Match[str], str | None]:
    for pattern, operator in _TERMS:
        match = pattern.fullmatch(term)
        if match is not None:
            return match, operator
    raise ValueError(f"cannot parse the term {term!r}")


def parse_selector(text: str) -> tuple[Requirement, ...]:
    """A label selector string in Kubernetes' syntax (``node-pool=batch,zone in (a,b)``);
    ValueError naming the term that is not one. Empty: matches every node."""
    if not text.strip():
        return ()
    terms: list[Requirement] = []
    for raw in _split_terms(text):
        term = raw.strip()
        match, fixed = _match_term(term)
        key = match.group("key")
        problem = label_key_problem(key)
        if problem is not None:
            raise ValueError(problem)
        values: list[str] = []
        operator = fixed or match.group("op")
        if operator in ("=", "==", "!="):
            values = [match.group("values")]
            operator = "notin" if operator == "!=" else "in"
        elif operator in ("in", "notin"):
            if not match.group("values").strip():
                raise ValueError(f"{term!r}: {operator} needs at least one value")
            values = [v.strip() for v in match.group("values").split(",")]
        for value in values:
            problem = label_value_problem(value)
            if problem is not None:
                raise ValueError(problem)
        terms.append(Requirement(key, operator, frozenset(values)))
    return tuple(terms)


def parse_duration(text: str) -> float:
    """A Go duration (``90s``, ``1h30m``, ``1.5h``) in seconds, > 0; ValueError else."""
    value = text.strip()
    if not value:
        raise ValueError("empty duration")
    total = 0.0
    position = 0
    for match in _DURATION_PART.finditer(value):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if position != len(value):
        raise ValueError(f"{text!r} is not a duration such as 90s, 30m or 1h30m")
    if total <= 0:
        raise ValueError(f"{text!r}: must be longer than 0")
    return total


# ---- objects -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TargetConfig:
    """One ``AdminQoSConfiguration``, checked."""

    namespace: str
    name: str
    source: str
    """The file (and document) it was read from."""
    hash: str
    """:func:`canonical_hash` of its spec."""
    config: Mapping[str, object]
    """``spec.config`` (partial)."""
    selector_text: str | None = None
    selector: tuple[Requirement, ...] = ()
    priority: int = 0
    node_names: tuple[str, ...] = ()
    last_duration_s: float = 0.0
    created: float | None = None
    """``metadata.creationTimestamp`` (wall seconds), or the file's mtime."""
    paused: bool = False
    service_overrides: int = 0
    """How many ``serviceOverrides`` it has (not applied by the agent yet)."""

    @property
    def key(self) -> str:
        """``namespace/name``."""
        return f"{self.namespace}/{self.name}"

    @property
    def level(self) -> str:
        """``named``, ``pool`` or ``cluster``."""
        if self.node_names:
            return "named"
        if self.selector_text:
            return "pool"
        return "cluster"

    def expires(self) -> float | None:
        """When a named config stops applying (wall seconds); None for the others."""
        if not self.node_names or self.created is None:
            return None
        return self.created + self.last_duration_s

    def layer(self) -> Layer:
        """This config as a node's layer."""
        return Layer(
            name=self.key, level=self.level, hash=self.hash, config=self.config, source=self.source
        )


@dataclass(frozen=True, slots=True)
class AllowedKeys:
    """A ``KatalystCustomConfig``: the label keys a pool config may select on, per priority."""

    name: str
    source: str
    keys: Mapping[int, frozenset[str]]


class _Refuse(DynamicConfigError):
    pass


def _mapping(value: object, where: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise _Refuse(f"{where}: must be a mapping, got {describe(value)}")
    return value


def _or_empty(value: object) -> object:
    """``{}`` for a key left empty in YAML (``spec:``), else ``value``."""
    return {} if value is None else value


def _timestamp(value: object, where: str) -> float:
    if isinstance(value, datetime):
        stamp = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return stamp.timestamp()
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    raise _Refuse(f"{where}: must be an RFC 3339 time such as 2024-05-01T10:00:00Z")


def parse_document(
    document: object, *, source: str, base: AgentConfig | DynamicSettings, mtime: float
) -> TargetConfig | AllowedKeys | None:
    """One YAML document: an ``AdminQoSConfiguration``, a ``KatalystCustomConfig``, or
    None for an empty document. Raises :class:`DynamicConfigError` naming
    ``source`` and the field for anything else, including a ``spec.config`` that
    does not pass the agent's checks merged over ``base``."""
    if document is None:
        return None
    try:
        return _parse(document, source=source, base=base, mtime=mtime)
    except DynamicConfigError as exc:
        raise DynamicConfigError(f"{source}: {exc}") from None


def _parse(
    document: object, *, source: str, base: AgentConfig | DynamicSettings, mtime: float
) -> TargetConfig | AllowedKeys:
    obj = _mapping(document, "the document")
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if api_version != API_VERSION:
        raise _Refuse(f"apiVersion: must be {API_VERSION}, got {describe(api_version)}")
    if kind not in (KIND, KCC_KIND):
        raise _Refuse(f"kind: must be {KIND} or {KCC_KIND}, got {describe(kind)}")
    metadata = _mapping(obj.get("metadata"), "metadata")
    name = metadata.get("name")
    if not isinstance(name, str) or len(name) > 253 or not _NAME.fullmatch(name):
        raise _Refuse(f"metadata.name: must be a DNS subdomain, got {describe(name)}")
    namespace = metadata.get("namespace", "default")
    if not isinstance(namespace, str) or not _NAME.fullmatch(namespace):
        raise _Refuse(f"metadata.namespace: must be a DNS label, got {describe(namespace)}")
    spec = _mapping(_or_empty(obj.get("spec")), "spec")
    where = f"{kind} {namespace}/{name}"
    try:
        if kind == KCC_KIND:
            return _kcc(spec, name=f"{namespace}/{name}", source=source)
        return _target(
            spec,
            namespace=namespace,
            name=name,
            source=source,
            base=base,
            created=(
                _timestamp(metadata["creationTimestamp"], "metadata.creationTimestamp")
                if "creationTimestamp" in metadata
                else mtime
            ),
        )
    except DynamicConfigError as exc:
        raise DynamicConfigError(f"{where}: {exc}") from None


def _kcc(spec: Mapping[str, object], *, name: str, source: str) -> AllowedKeys:
    target = _mapping(spec.get("targetType"), "spec.targetType")
    if target.get("resource") != RESOURCE or target.get("group", GROUP) != GROUP:
        raise _Refuse(
            f"spec.targetType: this agent reads {RESOURCE}.{GROUP} only, got "
            f"{describe(dict(target))}"
        )
    raw = spec.get("nodeLabelSelectorAllowedKeyList", [])
    if not isinstance(raw, list):
        raise _Refuse(f"spec.nodeLabelSelectorAllowedKeyList: must be a list, got {describe(raw)}")
    keys: dict[int, frozenset[str]] = {}
    for i, item in enumerate(raw):
        where = f"spec.nodeLabelSelectorAllowedKeyList[{i}]"
        entry = _mapping(item, where)
        priority, key_list = entry.get("priority", 0), entry.get("keyList", [])
        if not isinstance(priority, int) or isinstance(priority, bool) or priority < 0:
            raise _Refuse(f"{where}.priority: must be an integer >= 0, got {describe(priority)}")
        if priority in keys:
            raise _Refuse(f"{where}.priority: {priority} is listed twice")
        if not isinstance(key_list, list) or not all(isinstance(k, str) for k in key_list):
            raise _Refuse(f"{where}.keyList: must be a list of label keys")
        for k in key_list:
            problem = label_key_problem(k)
            if problem is not None:
                raise _Refuse(f"{where}.keyList: {problem}")
        keys[priority] = frozenset(key_list)
    return AllowedKeys(name=name, source=source, keys=keys)


def _target(
    spec: Mapping[str, object],
    *,
    namespace: str,
    name: str,
    source: str,
    base: AgentConfig | DynamicSettings,
    created: float,
) -> TargetConfig:
    unknown = sorted(str(k) for k in spec if k not in _SPEC_KEYS)
    if unknown:
        raise _Refuse(f"spec: unknown key {unknown[0]!r} (known: {', '.join(_SPEC_KEYS)})")
    selector_text = spec.get("nodeLabelSelector")
    if selector_text is not None and not isinstance(selector_text, str):
        raise _Refuse(
            "spec.nodeLabelSelector: must be a label selector string, got "
            + describe(selector_text)
        )
    try:
        selector = parse_selector(selector_text or "")
    except ValueError as exc:
        raise _Refuse(f"spec.nodeLabelSelector: {exc}") from None
    priority = spec.get("priority", 0)
    if not isinstance(priority, int) or isinstance(priority, bool) or priority < 0:
        raise _Refuse(f"spec.priority: must be an integer >= 0, got {describe(priority)}")
    if priority and not selector_text:
        raise _Refuse("spec.priority: only a config with a nodeLabelSelector has a priority")
    names: tuple[str, ...] = ()
    duration = 0.0
    if "ephemeralSelector" in spec:
        ephemeral = _mapping(spec["ephemeralSelector"], "spec.ephemeralSelector")
        extra = sorted(str(k) for k in ephemeral if k not in ("nodeNames", "lastDuration"))
        if extra:
            raise _Refuse(f"spec.ephemeralSelector: unknown key {extra[0]!r}")
        raw_names = ephemeral.get("nodeNames", [])
        if not isinstance(raw_names, list) or not all(isinstance(n, str) for n in raw_names):
            raise _Refuse("spec.ephemeralSelector.nodeNames: must be a list of node names")
        names = tuple(raw_names)
        if names:
            if "lastDuration" not in ephemeral:
                raise _Refuse(
                    "spec.ephemeralSelector.lastDuration: required with nodeNames "
                    "(a named-nodes config expires)"
                )
            last = ephemeral["lastDuration"]
            if not isinstance(last, str):
                raise _Refuse(
                    "spec.ephemeralSelector.lastDuration: must be a duration string such as "
                    f"1h, got {describe(last)}"
                )
            try:
                duration = parse_duration(last)
            except ValueError as exc:
                raise _Refuse(f"spec.ephemeralSelector.lastDuration: {exc}") from None
    if names and selector_text:
        raise _Refuse(
            "spec: a config has either a nodeLabelSelector or ephemeralSelector.nodeNames, not both"
        )
    paused = spec.get("paused", False)
    if not isinstance(paused, bool):
        raise _Refuse(f"spec.paused: must be true or false, got {describe(paused)}")
    overrides = spec.get("serviceOverrides", [])
    if not isinstance(overrides, list):
        raise _Refuse(f"spec.serviceOverrides: must be a list, got {describe(overrides)}")
    config = _mapping(_or_empty(spec.get("config")), "spec.config")
    # The same checks as the controller's: the partial config over the agent's own.
    from_layers(base, [config])
    return TargetConfig(
        namespace=namespace,
        name=name,
        source=source,
        hash=canonical_hash(_plain(spec)),
        config=dict(config),
        selector_text=selector_text or None,
        selector=selector,
        priority=priority,
        node_names=names,
        last_duration_s=duration,
        created=created,
        paused=paused,
        service_overrides=len(overrides),
    )


def _plain(value: object) -> object:
    """``value`` with YAML's timestamps as strings, for the canonical JSON."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


# ---- resolution ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Resolution:
    """One node's layers, lowest precedence first, and what was left out."""

    layers: tuple[Layer, ...]
    expired: tuple[str, ...] = ()
    """Named configs naming the node whose ``lastDuration`` has passed."""


def resolve(
    objects: Sequence[TargetConfig | AllowedKeys],
    *,
    node_name: str,
    labels: Mapping[str, str],
    now: float,
) -> Resolution:
    """The node's layers: [cluster, pool, named] (those that apply). Raises
    :class:`DynamicConfigError` naming the objects for a conflict, or a selector key
    the ``KatalystCustomConfig`` does not allow."""
    kccs = [o for o in objects if isinstance(o, AllowedKeys)]
    if len(kccs) > 1:
        raise DynamicConfigError(
            f"{KCC_KIND}: {len(kccs)} for {RESOURCE} "
            f"({', '.join(f'{k.name} in {k.source}' for k in kccs)}); keep one"
        )
    targets = [o for o in objects if isinstance(o, TargetConfig) and not o.paused]
    seen: dict[str, str] = {}
    for o in (o for o in objects if isinstance(o, TargetConfig)):
        if o.key in seen:
            raise DynamicConfigError(f"{KIND} {o.key}: defined twice ({seen[o.key]}, {o.source})")
        seen[o.key] = o.source
    if kccs:
        allowed = kccs[0].keys
        for o in targets:
            if o.level != "pool":
                continue
            keys = {r.key for r in o.selector}
            bad = sorted(keys - allowed.get(o.priority, frozenset()))
            if bad:
                raise DynamicConfigError(
                    f"{o.source}: {KIND} {o.key}: spec.nodeLabelSelector: key {bad[0]!r} is not "
                    f"allowed at priority {o.priority} by {KCC_KIND} {kccs[0].name} (allowed: "
                    f"{', '.join(sorted(allowed.get(o.priority, ()))) or 'none'})"
                )

    def one(level: str, candidates: list[TargetConfig]) -> TargetConfig | None:
        if len(candidates) > 1:
            raise DynamicConfigError(
                f"{level} configs conflict: "
                + ", ".join(f"{KIND} {c.key} ({c.source})" for c in candidates)
                + "; neither applies until one goes"
            )
        return candidates[0] if candidates else None

    cluster = one("cluster-wide", [o for o in targets if o.level == "cluster"])
    pools = [o for o in targets if o.level == "pool" and all(r.matches(labels) for r in o.selector)]
    top = max((o.priority for o in pools), default=0)
    pool = one(
        f"node-pool (priority {top}, matching this node)", [o for o in pools if o.priority == top]
    )
    naming = [o for o in targets if o.level == "named" and node_name in o.node_names]
    expired = [o for o in naming if (o.expires() or now) < now]
    named = one("named-node (naming this node)", [o for o in naming if o not in expired])
    layers = tuple(o.layer() for o in (cluster, pool, named) if o is not None)
    return Resolution(layers=layers, expired=tuple(o.key for o in expired))
