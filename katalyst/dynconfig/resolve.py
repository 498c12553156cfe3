"""Resolution: which configs apply to each node, and what each node ends up with.

Pure and synchronous: :func:`resolve` takes one KCC, its target configs, the
nodes, the time and the previous pass's :class:`History`, and returns a
:class:`Resolution`; :class:`Resolver` gives the same answers incrementally, as
configs and nodes come and go, recomputing only the nodes a change can affect.

**Levels.** A config with ``ephemeralSelector.nodeNames`` applies to those nodes
(*named*); one with ``nodeLabelSelector`` to the nodes it matches at its
``priority`` (*pool*); one with neither to every node (*cluster*). A node's layers
are, lowest precedence first, the cluster-wide config, the matching pool config of
the highest priority, and the named config naming it (those present); its
effective config is :func:`katalyst.dynconfig.merge.merge_layers` of their
``spec.config``. Service overrides sit above all three: each layer's
``serviceOverrides`` reach the pods they select on the node, the named layer's
first (:func:`service_targets`).

**A pass**, in order:

1. *Validity.* Each config is checked on its own
   (:func:`katalyst.dynconfig.validate.validate_target`; an
   :class:`~katalyst.dynconfig.model.InvalidTarget` failed to parse). A rejected
   config is treated as *not changed*, never as removed: its *last good version*
   (``History.last_good[ref]``, the latest version that was valid and free of
   conflicts in an earlier pass) stands in for it; with none, it is absent.
2. *Paused and expired.* A paused version is absent (not an error). A named
   version expires ``lastDuration`` after its start: the time its node names were
   first seen for this config (``History.names_since``), which is the object's
   ``creationTimestamp`` on the first sight of the config (or the pass's time when
   it has none, as in a standalone file), and the pass's time when a known config
   gets new node names (editing the names restarts the clock). A version expires
   when ``now >= start + lastDuration``; an expired version is absent, and a
   config whose current, valid version expired is listed in
   :attr:`Resolution.expired` (the controller deletes it).
3. *Conflicts*, among the versions in effect: two or more cluster-wide configs
   (all of them rejected); two pool configs at the same priority whose selectors
   both match one node of the current node set (both rejected); two named configs
   naming the same node, existing or not (both rejected). A rejected config falls
   back to its last good version, or drops out without one, and the check runs
   again; when no config of a conflict can fall back any further (each is at its
   last good version already), they all drop out. So a new or edited config that
   clashes with an established one is rejected and the established one stays;
   both carry a ``Conflict`` condition naming the other.
4. *Nodes.* Each node's layers, merged. A layer whose config, merged over the
   layers below it, fails the agent's checks (each config is valid alone, but two
   can clash: a floor above a ceiling) is left out on that node, and its config
   gets a ``MergeInvalid`` condition naming the field and a node.
5. *History.* ``last_good`` becomes the current version of every config that is
   valid and not in conflict, and the previous last good of the others (deleted
   configs are forgotten); ``names_since`` keeps the start of every named version
   looked at in this pass; ``known`` the configs present.

**Passing the previous pass.** ``resolve(..., previous=res.history)`` (or
``previous=res``) with the :class:`Resolution` of the pass before is what carries
the last good versions and the named configs' clocks from pass to pass; a
:class:`Resolver` keeps them itself, each mutation being one pass. Without it
(the first pass, or a controller that restarted and kept nothing), every config
stands on its current version, and named configs count from their
``creationTimestamp``. A controller that persists last good specs builds a
:class:`History` from them.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from katalyst.dynconfig.merge import merge
from katalyst.dynconfig.model import (
    KCC,
    ConfigRef,
    InvalidTarget,
    Level,
    Node,
    Selector,
    ServiceOverride,
    TargetConfig,
)
from katalyst.dynconfig.validate import Memo, validate_config, validate_target

__all__ = [
    "EMPTY",
    "Condition",
    "History",
    "Layer",
    "NodeResolution",
    "Reason",
    "Resolution",
    "Resolver",
    "resolve",
    "service_targets",
]

Reason = Literal["Valid", "Paused", "Expired", "Invalid", "Conflict", "MergeInvalid"]
"""Why a config's condition is what it is."""


@dataclass(frozen=True, slots=True)
class Condition:
    """A target config's ``Valid`` condition."""

    valid: bool
    reason: Reason
    message: str = ""

    @property
    def status(self) -> Literal["True", "False"]:
        """The condition's ``status`` as Kubernetes writes it."""
        return "True" if self.valid else "False"


@dataclass(frozen=True, slots=True)
class Layer:
    """One config applied to a node. Compared by level, ref and version only: the
    metadata of :attr:`target` (generation, resourceVersion) may be of an earlier
    parse of the same version."""

    level: Level
    ref: ConfigRef
    hash: str
    uid: str
    target: TargetConfig = field(compare=False, repr=False)

    @classmethod
    def of(cls, target: TargetConfig) -> Layer:
        return cls(target.level, target.ref, target.hash, target.uid, target)


@dataclass(frozen=True, slots=True)
class NodeResolution:
    """What applies to one node. Nodes with the same layers share one instance."""

    layers: tuple[Layer, ...] = ()
    """The configs applied, lowest precedence first (cluster, pool, named)."""
    config: Mapping[str, object] = field(default_factory=dict)
    """Their ``spec.config`` merged in that order (plain JSON data; do not mutate)."""
    service_overrides: tuple[ServiceOverride, ...] = ()
    """Every applied layer's overrides, highest precedence first."""
    skipped: tuple[tuple[Layer, str], ...] = ()
    """Layers left out because they do not merge over the ones below, with why."""

    @property
    def entries(self) -> tuple[tuple[ConfigRef, str], ...]:
        """``(ref, hash)`` of each applied layer, lowest first: the node's CNC list
        (:func:`katalyst.dynconfig.model.cnc_config_list`)."""
        return tuple((layer.ref, layer.hash) for layer in self.layers)

    key: tuple[tuple[ConfigRef, str, str], ...] = field(init=False, compare=False, repr=False)
    """What the result depends on: the layers looked at (applied or skipped), sorted."""

    def __post_init__(self) -> None:
        looked_at = (*self.layers, *(s[0] for s in self.skipped))
        key = tuple(sorted((layer.ref, layer.uid, layer.hash) for layer in looked_at))
        object.__setattr__(self, "key", key)


EMPTY: Final = NodeResolution()
"""A node no config applies to."""


@dataclass(frozen=True, slots=True)
class History:
    """What one pass hands the next (see the module's docstring)."""

    last_good: Mapping[ConfigRef, TargetConfig] = field(default_factory=dict)
    """Per config, its latest version that was valid and free of conflicts."""
    names_since: Mapping[tuple[ConfigRef, frozenset[str]], float] = field(default_factory=dict)
    """Per named version (config, node names), when its expiry clock started (epoch s)."""
    known: frozenset[ConfigRef] = frozenset()
    """The configs present in the pass."""


@dataclass(frozen=True, slots=True)
class Resolution:
    """The outcome of a pass."""

    nodes: Mapping[str, NodeResolution]
    """Every node's result (shared instances for identical results)."""
    conditions: Mapping[ConfigRef, Condition]
    """Every config's condition."""
    expired: tuple[ConfigRef, ...]
    """Named configs whose current version has expired (sorted): to delete."""
    in_effect: Mapping[ConfigRef, TargetConfig]
    """The version of each config that applies (its current or its last good one)."""
    deadlines: Mapping[ConfigRef, float]
    """When each named config in effect expires (epoch s)."""
    history: History
    """To pass as ``previous`` to the next pass."""

    @property
    def next_expiry(self) -> float | None:
        """The earliest deadline: when a pass is next due without any other change."""
        return min(self.deadlines.values(), default=None)


def service_targets(
    overrides: Sequence[ServiceOverride], namespace: str, labels: Mapping[str, str]
) -> dict[str, float]:
    """The indicator targets overridden for a pod (in ``namespace`` with ``labels``),
    from a node's :attr:`NodeResolution.service_overrides`: per indicator, the first
    matching override that sets it (the highest layer's; in a config, the first in
    its list)."""
    out: dict[str, float] = {}
    for override in overrides:
        if override.matches(namespace, labels):
            for name, target in override.targets.items():
                out.setdefault(name, target)
    return out


def _history(previous: Resolution | History | None) -> History:
    if previous is None:
        return History()
    if isinstance(previous, Resolution):
        return previous.history
    return previous


def _iso(seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return moment.isoformat().replace("+00:00", "Z")


_LayerKey = tuple[ConfigRef, str, str] | None
_ComboKey = tuple[_LayerKey, _LayerKey, _LayerKey]


def _layer_key(target: TargetConfig | None) -> _LayerKey:
    return None if target is None else (target.ref, target.uid, target.hash)


class Resolver:
    """Resolution kept up to date as configs and nodes change.

    Each mutation is one pass (see the module's docstring) and returns the names of
    the nodes whose result changed (a removed node counts): the layers it shows, or
    their versions. Only the nodes a change can affect are recomputed: for a pool
    config, those its selector matched before and matches after; for a named one,
    the nodes named before and after; for a cluster-wide one, all; for a node, that
    node (plus, each time, the nodes of any config whose version in effect changed
    as a consequence: a new overlap, a fallback). :meth:`resolve_all` recomputes
    everything from scratch; after any sequence of mutations the result equals
    :func:`resolve` given the same inputs and the same previous history.
    """

    def __init__(
        self, kcc: KCC, *, now: float, previous: Resolution | History | None = None
    ) -> None:
        self._kcc = kcc
        self._now = now
        self._history = _history(previous)
        self._targets: dict[ConfigRef, TargetConfig | InvalidTarget] = {}
        self._nodes: dict[str, Node] = {}
        # label key -> value -> node names: the candidates of a selector.
        self._by_label: dict[str, dict[str, set[str]]] = {}
        self._matches: dict[Selector, set[str]] = {}
        self._problems: dict[tuple[ConfigRef, str, str], tuple[str, ...]] = {}
        self._combos: dict[_ComboKey, NodeResolution] = {}
        self._memo: Memo = {}
        # Outputs of the last pass.
        self._in_effect: dict[ConfigRef, TargetConfig] = {}
        self._named_of: dict[str, TargetConfig] = {}
        self._conflicts: dict[ConfigRef, str] = {}
        self._expired: set[ConfigRef] = set()
        self._deadlines: dict[ConfigRef, float] = {}
        self._results: dict[str, NodeResolution] = {}
        self._skipped_on: dict[ConfigRef, dict[str, str]] = {}
        self._conditions: dict[ConfigRef, Condition] = {}

    # ---- reading -------------------------------------------------------------------

    @property
    def now(self) -> float:
        return self._now

    @property
    def kcc(self) -> KCC:
        return self._kcc

    def node(self, name: str) -> NodeResolution | None:
        """The result of one node; None for an unknown node."""
        return self._results.get(name)

    def condition(self, ref: ConfigRef) -> Condition | None:
        return self._conditions.get(ref)

    @property
    def history(self) -> History:
        return self._history

    def next_expiry(self) -> float | None:
        """The earliest deadline of a named config in effect."""
        return min(self._deadlines.values(), default=None)

    def resolution(self) -> Resolution:
        """A snapshot of the current outcome."""
        return Resolution(
            nodes=dict(self._results),
            conditions=dict(self._conditions),
            expired=tuple(sorted(self._expired)),
            in_effect=dict(self._in_effect),
            deadlines=dict(self._deadlines),
            history=self._history,
        )

    # ---- mutations -----------------------------------------------------------------

    def set_kcc(self, kcc: KCC) -> set[str]:
        """A new version of the KCC: every config is checked again."""
        self._kcc = kcc
        self._problems.clear()
        return self._pass(set())

    def set_target(self, target: TargetConfig | InvalidTarget) -> set[str]:
        """A config added or changed."""
        self._targets[target.ref] = target
        return self._pass(set())

    def remove_target(self, ref: ConfigRef) -> set[str]:
        """A config deleted."""
        self._targets.pop(ref, None)
        return self._pass(set())

    def set_node(self, node: Node) -> set[str]:
        """A node added, or its labels changed."""
        self._put_node(node)
        return self._pass({node.name})

    def remove_node(self, name: str) -> set[str]:
        """A node deleted."""
        self._drop_node(name)
        return self._pass({name})

    def set_time(self, now: float) -> set[str]:
        """The clock moved: named configs may have expired."""
        self._now = now
        return self._pass(set())

    def resolve_all(self) -> set[str]:
        """One pass recomputing everything from scratch (no cache kept)."""
        self._problems.clear()
        self._combos.clear()
        self._matches.clear()
        self._memo.clear()
        return self._pass(set(self._nodes) | set(self._results), full=True)

    def load(self, targets: Iterable[TargetConfig | InvalidTarget], nodes: Iterable[Node]) -> None:
        """Add configs and nodes without a pass (follow with :meth:`resolve_all`)."""
        for target in targets:
            self._targets[target.ref] = target
        for node in nodes:
            self._put_node(node)

    # ---- nodes and selectors -------------------------------------------------------

    def _put_node(self, node: Node) -> None:
        self._drop_node(node.name)
        self._nodes[node.name] = node
        for key, value in node.labels.items():
            self._by_label.setdefault(key, {}).setdefault(value, set()).add(node.name)
        for selector, names in self._matches.items():
            if selector.matches(node.labels):
                names.add(node.name)

    def _drop_node(self, name: str) -> None:
        old = self._nodes.pop(name, None)
        if old is None:
            return
        for key, value in old.labels.items():
            values = self._by_label[key]
            values[value].discard(name)
            if not values[value]:
                del values[value]
            if not values:
                del self._by_label[key]
        for names in self._matches.values():
            names.discard(name)

    def _match(self, selector: Selector) -> set[str]:
        """The names of the nodes ``selector`` matches (cached, kept up to date)."""
        found = self._matches.get(selector)
        if found is not None:
            return found
        candidates: Iterable[str] | None = None
        size = len(self._nodes) + 1
        for req in selector.requirements:
            values = self._by_label.get(req.key, {})
            if req.operator in ("=", "in"):
                pool = [values.get(v, set()) for v in req.values]
            elif req.operator == "exists":
                pool = list(values.values())
            else:
                continue
            count = sum(len(p) for p in pool)
            if count < size:
                size = count
                candidates = (name for names in pool for name in names)
        if candidates is None:
            candidates = self._nodes
        nodes = self._nodes
        found = {n for n in candidates if selector.matches(nodes[n].labels)}
        self._matches[selector] = found
        return found

    def _coverage(self, target: TargetConfig) -> set[str] | None:
        """The nodes ``target`` reaches; None for all of them."""
        level = target.level
        if level == "cluster":
            return None
        if level == "named":
            return {n for n in target.node_names if n in self._nodes}
        assert target.node_selector is not None
        return set(self._match(target.node_selector))

    # ---- the pass ------------------------------------------------------------------

    def _check(self, target: TargetConfig | InvalidTarget) -> tuple[str, ...]:
        if isinstance(target, InvalidTarget):
            return (target.error,)
        key = (target.ref, target.uid, target.hash)
        found = self._problems.get(key)
        if found is None:
            found = self._problems[key] = validate_target(self._kcc, target, memo=self._memo)
        return found

    def _pass(self, touched: set[str], *, full: bool = False) -> set[str]:
        before = self._in_effect
        self._global()
        after = self._in_effect
        affected: set[str] | None = set(touched)
        for ref in before.keys() | after.keys():
            old, new = before.get(ref), after.get(ref)
            if old is not None and new is not None and old.version == new.version:
                continue
            for version in (old, new):
                if version is None or affected is None:
                    continue
                reach = self._coverage(version)
                if reach is None:
                    affected = None
                else:
                    affected |= reach
        if full or affected is None:
            affected = set(self._nodes) | set(self._results)
        changed = self._recompute(affected)
        self._conditions = self._compute_conditions()
        self._prune()
        return changed

    def _global(self) -> None:
        """Steps 1-3 and 5 of a pass: the versions in effect and the history."""
        history = self._history
        now = self._now
        names_since: dict[tuple[ConfigRef, frozenset[str]], float] = {}
        expired: set[ConfigRef] = set()
        deadlines: dict[ConfigRef, float] = {}

        def deadline(ref: ConfigRef, version: TargetConfig) -> float:
            key = (ref, version.node_names)
            start = names_since.get(key)
            if start is None:
                start = history.names_since.get(key)
            if start is None:
                if ref in history.known or version.creation_timestamp is None:
                    start = now
                else:
                    start = version.creation_timestamp
            names_since[key] = start
            assert version.last_duration is not None
            return start + version.last_duration

        def admit(ref: ConfigRef, version: TargetConfig | None) -> TargetConfig | None:
            if version is None or version.paused:
                return None
            if version.level == "named":
                due = deadline(ref, version)
                if due <= now:
                    return None
                deadlines[ref] = due
            else:
                deadlines.pop(ref, None)
            return version

        valid: dict[ConfigRef, TargetConfig] = {}
        in_effect: dict[ConfigRef, TargetConfig] = {}
        for ref in sorted(self._targets):
            current = self._targets[ref]
            if isinstance(current, TargetConfig) and not self._check(current):
                valid[ref] = current
                candidate: TargetConfig | None = current
                if current.level == "named" and deadline(ref, current) <= now:
                    expired.add(ref)
            else:
                candidate = history.last_good.get(ref)
            admitted = admit(ref, candidate)
            if admitted is not None:
                in_effect[ref] = admitted

        conflicts: dict[ConfigRef, str] = {}
        while True:
            found = self._find_conflicts(in_effect)
            if not found:
                break
            for ref, message in found.items():
                conflicts.setdefault(ref, message)
            moved = False
            for ref in sorted(found):
                version = in_effect[ref]
                good = history.last_good.get(ref)
                if good is not None and good.version == version.version:
                    continue
                moved = True
                fallback = admit(ref, good)
                if fallback is None:
                    del in_effect[ref]
                    deadlines.pop(ref, None)
                else:
                    in_effect[ref] = fallback
            if not moved:
                for ref in found:
                    del in_effect[ref]
                    deadlines.pop(ref, None)
                break
        for ref in list(deadlines):
            if ref not in in_effect:
                del deadlines[ref]

        last_good: dict[ConfigRef, TargetConfig] = {}
        for ref in self._targets:
            if ref in valid and ref not in conflicts:
                last_good[ref] = valid[ref]
            elif ref in history.last_good:
                last_good[ref] = history.last_good[ref]
        self._history = History(
            last_good=last_good, names_since=names_since, known=frozenset(self._targets)
        )
        self._in_effect = in_effect
        self._conflicts = conflicts
        self._expired = expired
        self._deadlines = deadlines
        self._named_of = {
            name: target
            for target in in_effect.values()
            if target.level == "named"
            for name in target.node_names
        }

    def _find_conflicts(self, in_effect: Mapping[ConfigRef, TargetConfig]) -> dict[ConfigRef, str]:
        found: dict[ConfigRef, str] = {}
        clusters = sorted(ref for ref, t in in_effect.items() if t.level == "cluster")
        if len(clusters) > 1:
            for ref in clusters:
                others = ", ".join(str(r) for r in clusters if r != ref)
                found[ref] = (
                    f"spec: another cluster-wide config applies as well ({others}); at most "
                    "one config may have neither nodeLabelSelector nor nodeNames"
                )
        by_priority: dict[int, list[TargetConfig]] = {}
        for ref in sorted(in_effect):
            target = in_effect[ref]
            if target.level == "pool":
                by_priority.setdefault(target.priority, []).append(target)
        for priority, targets in sorted(by_priority.items()):
            if len(targets) < 2:
                continue
            matched = [self._match(t.node_selector) for t in targets]  # type: ignore[arg-type]
            if sum(len(m) for m in matched) == len(set().union(*matched)):
                continue  # disjoint (the common case, checked at C speed)
            owner: dict[str, ConfigRef] = {}
            for target in targets:
                assert target.node_selector is not None
                for name in self._match(target.node_selector):
                    first = owner.setdefault(name, target.ref)
                    if first == target.ref:
                        continue
                    for ref, other in ((first, target.ref), (target.ref, first)):
                        found.setdefault(
                            ref,
                            f"spec.nodeLabelSelector: overlaps {other} at priority {priority} "
                            f"(both match node {name}); selectors at one priority must not "
                            "match a node in common",
                        )
        named: dict[str, ConfigRef] = {}
        for ref in sorted(in_effect):
            target = in_effect[ref]
            if target.level != "named":
                continue
            for name in sorted(target.node_names):
                first = named.setdefault(name, ref)
                if first == ref:
                    continue
                for mine, other in ((first, ref), (ref, first)):
                    found.setdefault(
                        mine,
                        f"spec.ephemeralSelector.nodeNames: node {name} is also named by "
                        f"{other}; a node may be named by one config only",
                    )
        return found

    def _recompute(self, names: set[str]) -> set[str]:
        """Step 4 for ``names``: their results; the names whose result changed."""
        cluster: TargetConfig | None = None
        pools: list[TargetConfig] = []
        for target in self._in_effect.values():
            if target.level == "cluster":
                cluster = target
            elif target.level == "pool":
                pools.append(target)
        pools.sort(key=lambda t: (t.priority, t.ref))
        live = [n for n in names if n in self._nodes]
        best: dict[str, TargetConfig] = {}
        sizes = [len(self._match(t.node_selector)) for t in pools]  # type: ignore[arg-type]
        if len(live) * len(pools) > sum(sizes):
            wanted = set(live) if len(live) < len(self._nodes) else None
            for target in pools:  # ascending priority: the highest one wins
                assert target.node_selector is not None
                for name in self._match(target.node_selector):
                    if wanted is None or name in wanted:
                        best[name] = target
        else:
            descending = [(t, self._match(t.node_selector)) for t in reversed(pools)]  # type: ignore[arg-type]
            for name in live:
                for target, matched in descending:
                    if name in matched:
                        best[name] = target
                        break
        cluster_key = _layer_key(cluster)
        changed: set[str] = set()
        for name in names:
            old = self._results.get(name)
            if name not in self._nodes:
                if old is not None:
                    del self._results[name]
                    self._note_skipped(name, old, None)
                    changed.add(name)
                continue
            pool = best.get(name)
            named = self._named_of.get(name)
            key: _ComboKey = (cluster_key, _layer_key(pool), _layer_key(named))
            result = self._combos.get(key)
            if result is None:
                result = self._combos[key] = self._combine(cluster, pool, named)
            if old is not result and (old is None or old.key != result.key):
                changed.add(name)
                self._note_skipped(name, old, result)
            self._results[name] = result
        return changed

    def _combine(
        self, cluster: TargetConfig | None, pool: TargetConfig | None, named: TargetConfig | None
    ) -> NodeResolution:
        applied: list[Layer] = []
        skipped: list[tuple[Layer, str]] = []
        merged: dict[str, object] = {}
        for target in (cluster, pool, named):
            if target is None:
                continue
            layer = Layer.of(target)
            candidate = merge(merged, target.config)
            if applied and target.config:
                # Each layer is valid alone, so only the sections this one touches can
                # break by merging it.
                problems = validate_config(candidate, sections=target.config, memo=self._memo)
                if problems:
                    below = ", ".join(str(a.ref) for a in applied)
                    skipped.append((layer, f"{problems[0]} (merged over {below})"))
                    continue
            merged = candidate
            applied.append(layer)
        overrides = tuple(o for layer in reversed(applied) for o in layer.target.service_overrides)
        if not applied and not skipped:
            return EMPTY
        return NodeResolution(tuple(applied), merged, overrides, tuple(skipped))

    def _note_skipped(
        self, name: str, old: NodeResolution | None, new: NodeResolution | None
    ) -> None:
        if old is not None:
            for layer, _ in old.skipped:
                on = self._skipped_on.get(layer.ref)
                if on is not None:
                    on.pop(name, None)
                    if not on:
                        del self._skipped_on[layer.ref]
        if new is not None:
            for layer, problem in new.skipped:
                self._skipped_on.setdefault(layer.ref, {})[name] = problem

    def _compute_conditions(self) -> dict[ConfigRef, Condition]:
        out: dict[ConfigRef, Condition] = {}
        for ref, current in self._targets.items():
            effect = self._in_effect.get(ref)
            if effect is None:
                tail = "; no version of it applies"
            elif isinstance(current, TargetConfig) and effect.version == current.version:
                tail = "; this version stays in effect (it applied before)"
            else:
                tail = f"; generation {effect.generation}, its last good version, stays in effect"
            problems = self._check(current)
            if problems:
                out[ref] = Condition(False, "Invalid", "; ".join(problems) + tail)
                continue
            assert isinstance(current, TargetConfig)
            if ref in self._conflicts:
                out[ref] = Condition(False, "Conflict", self._conflicts[ref] + tail)
            elif ref in self._expired:
                start = self._history.names_since.get((ref, current.node_names), self._now)
                assert current.last_duration is not None
                out[ref] = Condition(
                    True, "Expired", f"expired at {_iso(start + current.last_duration)}"
                )
            elif current.paused:
                out[ref] = Condition(True, "Paused", "paused: applies to no node")
            elif ref in self._skipped_on:
                nodes = self._skipped_on[ref]
                first = min(nodes)
                out[ref] = Condition(
                    False,
                    "MergeInvalid",
                    f"{nodes[first]} on node {first} ({len(nodes)} node(s) in all); "
                    "left out on those nodes",
                )
            else:
                out[ref] = Condition(True, "Valid")
        return out

    def _prune(self) -> None:
        """Forget cached match sets and checks of versions no longer around."""
        selectors: set[Selector] = set()
        versions: set[tuple[ConfigRef, str, str]] = set()
        for target in (*self._targets.values(), *self._history.last_good.values()):
            if isinstance(target, TargetConfig):
                versions.add((target.ref, target.uid, target.hash))
                if target.node_selector is not None:
                    selectors.add(target.node_selector)
        for selector in [s for s in self._matches if s not in selectors]:
            del self._matches[selector]
        for key in [k for k in self._problems if k not in versions]:
            del self._problems[key]
        if len(self._combos) > 4 * len(self._in_effect) + 64:
            in_use = {id(r) for r in self._results.values()}
            self._combos = {k: v for k, v in self._combos.items() if id(v) in in_use}


def resolve(
    kcc: KCC,
    targets: Iterable[TargetConfig | InvalidTarget],
    nodes: Iterable[Node],
    *,
    now: float,
    previous: Resolution | History | None = None,
) -> Resolution:
    """One full pass over ``targets`` (of ``kcc``'s kind) and ``nodes`` at ``now``
    (epoch seconds), continuing ``previous`` (see the module's docstring)."""
    resolver = Resolver(kcc, now=now, previous=previous)
    resolver.load(targets, nodes)
    resolver.resolve_all()
    return resolver.resolution()
