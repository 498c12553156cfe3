"""What the controller writes, computed from what it read: pure, no I/O.

Every function here answers "what should this object hold?" and returns ``None``
when it holds it already: the controller writes only what differs (the
read-compare-write habit), so that a resync or a restart over an unchanged
cluster makes no write at all.

* :func:`valid_status`: a config's (or a KCC's) ``status`` with its ``Valid``
  condition. ``lastTransitionTime`` moves only when the condition's status flips
  (True/False), as ``meta.SetStatusCondition`` does; conditions of other types,
  and other status fields, are kept.
* :func:`cnc_status`: a CNC's status listing a node's configs.
* :func:`last_good_annotation` and :func:`read_last_good`: a config's last good
  version, kept on the config itself (the annotation
  ``config.katalyst.kubewharf.io/last-good``), so that a controller that starts
  cold (an upgrade, a restart of every replica) resolves exactly as the one before
  it did: a rejected config still stands on its last good version, and a named
  config's expiry clock keeps running from when its node names were last set.
* :func:`cnc_object`, :func:`cnr_object`: the objects created for a new node.
"""

from __future__ import annotations

import copy
import datetime
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from katalyst.dynconfig import (
    CNC_KIND,
    CNCEntry,
    Condition,
    ConfigRef,
    CustomNodeConfig,
    ParseError,
    TargetConfig,
    canonical_json,
    parse_cnc,
    parse_target,
    spec_hash,
)

__all__ = [
    "LAST_GOOD",
    "VALID",
    "LastGood",
    "Verdict",
    "annotated",
    "cnc_entries",
    "cnc_object",
    "cnc_status",
    "cnr_object",
    "last_good_annotation",
    "read_last_good",
    "rfc3339",
    "valid_status",
]

VALID = "Valid"
"""The one condition type the controller writes."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """A ``Valid`` condition to write: on a target config (from a
    :class:`katalyst.dynconfig.Condition`) or on a KCC."""

    valid: bool
    reason: str
    message: str = ""

    @property
    def status(self) -> str:
        return "True" if self.valid else "False"

    @classmethod
    def of(cls, condition: Condition) -> Verdict:
        return cls(condition.valid, condition.reason, condition.message)


def rfc3339(seconds: float) -> str:
    """A ``metav1.Time``: whole seconds, UTC, ``Z``."""
    moment = datetime.datetime.fromtimestamp(int(seconds), tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def valid_status(
    status: object, verdict: Verdict, *, generation: int, now: str
) -> dict[str, Any] | None:
    """The ``status`` an object with ``status`` (as read; anything not a mapping reads
    as none) should have to carry ``verdict`` for ``generation``; None when it does."""
    current: dict[str, Any] = copy.deepcopy(dict(status)) if isinstance(status, Mapping) else {}
    raw = current.get("conditions")
    conditions = [c for c in raw if isinstance(c, Mapping)] if isinstance(raw, list) else []
    old = next((c for c in conditions if c.get("type") == VALID), None)
    transition = now
    if old is not None and old.get("status") == verdict.status:
        previous = old.get("lastTransitionTime")
        if isinstance(previous, str) and previous:
            transition = previous
    condition = {
        "type": VALID,
        "status": verdict.status,
        "reason": verdict.reason,
        "message": verdict.message,
        "lastTransitionTime": transition,
        "observedGeneration": generation,
    }
    kept = [dict(c) for c in conditions if c.get("type") != VALID]
    desired = dict(current)
    desired["conditions"] = [*kept, condition] if old is None else _put(conditions, condition)
    desired["observedGeneration"] = generation
    return None if desired == current else desired


def _put(conditions: Sequence[Mapping[str, Any]], condition: dict[str, Any]) -> list[Any]:
    """``conditions`` with the ``Valid`` one replaced in place (the order kept)."""
    return [condition if c.get("type") == VALID else dict(c) for c in conditions]


def cnc_entries(obj: Mapping[str, Any] | None) -> tuple[CNCEntry, ...] | None:
    """The entries a CNC lists (none for a missing CNC); None when its status does not
    parse (it is then rewritten whole)."""
    if obj is None:
        return ()
    try:
        cnc: CustomNodeConfig = parse_cnc(dict(obj, kind=obj.get("kind") or CNC_KIND))
    except ParseError:
        return None
    return cnc.entries


def cnc_status(obj: Mapping[str, Any] | None, entries: Iterable[CNCEntry]) -> dict[str, Any] | None:
    """The ``status`` a CNC (as read) should have to list ``entries``; None when it lists
    them already (an absent list and an empty one are the same)."""
    wanted = tuple(entries)
    if obj is not None and cnc_entries(obj) == wanted:
        return None
    if obj is None and not wanted:
        return None
    status = obj.get("status") if obj is not None else None
    desired: dict[str, Any] = copy.deepcopy(dict(status)) if isinstance(status, Mapping) else {}
    desired["katalystCustomConfigList"] = [e.to_json() for e in wanted]
    return desired


def _owner(node: Mapping[str, Any]) -> list[dict[str, Any]]:
    meta = node.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    uid = meta.get("uid")
    if not isinstance(uid, str) or not uid:
        return []
    # The garbage collector deletes the object with its node even while no
    # controller runs; the controller deletes it too (and on servers without GC).
    return [{"apiVersion": "v1", "kind": "Node", "name": meta.get("name"), "uid": uid}]


def _new(api_version: str, kind: str, node: Mapping[str, Any]) -> dict[str, Any]:
    meta = node.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    metadata: dict[str, Any] = {"name": name}
    owners = _owner(node)
    if owners:
        metadata["ownerReferences"] = owners
    return {"apiVersion": api_version, "kind": kind, "metadata": metadata}


def cnc_object(node: Mapping[str, Any]) -> dict[str, Any]:
    """A new, empty ``CustomNodeConfig`` for ``node`` (named as the node, owned by it)."""
    return _new("config.katalyst.kubewharf.io/v1alpha1", CNC_KIND, node) | {"spec": {}}


def cnr_object(node: Mapping[str, Any]) -> dict[str, Any]:
    """A new ``CustomNodeResource`` for ``node``, with no status: the node's agent
    (its reporter) fills the status in."""
    return _new("node.katalyst.kubewharf.io/v1alpha1", "CustomNodeResource", node)


# ---- the last good version, on the config ---------------------------------------------

LAST_GOOD = "config.katalyst.kubewharf.io/last-good"
"""The annotation on a target config that keeps its last good version: JSON with the
``spec`` (the whole of it), its ``hash`` and ``generation``, and for a named-nodes
config ``nodeNames`` and ``namesSince`` (epoch seconds: when its expiry clock
started). Written by the controller when a version becomes the last good one, as
``kubectl`` keeps its last-applied configuration; read when a controller starts."""

MAX_ANNOTATION_BYTES = 128 * 1024
"""A spec larger than this is not kept (the API server allows 256 KiB of annotations
per object, all of them together)."""


@dataclass(frozen=True, slots=True)
class LastGood:
    """A config's last good version as read back from its annotation."""

    target: TargetConfig
    names_since: float | None = None
    """When the expiry clock of its node names started (named-nodes configs)."""


def last_good_annotation(target: TargetConfig, names_since: float | None) -> str | None:
    """The annotation's value for ``target`` (canonical JSON: equal content, equal text);
    None when it is too large to keep."""
    body: dict[str, object] = {
        "generation": target.generation,
        "hash": target.hash,
        "spec": dict(target.spec),
    }
    if target.node_names and names_since is not None:
        body["nodeNames"] = sorted(target.node_names)
        body["namesSince"] = names_since
    text = canonical_json(body)
    return None if len(text.encode()) > MAX_ANNOTATION_BYTES else text


def _annotations(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    notes = meta.get("annotations") if isinstance(meta, Mapping) else None
    return notes if isinstance(notes, Mapping) else {}


def annotated(obj: Mapping[str, Any], key: str, value: str) -> dict[str, Any] | None:
    """``obj`` with annotation ``key`` set to ``value``; None when it has it already."""
    if _annotations(obj).get(key) == value:
        return None
    new = copy.deepcopy(dict(obj))
    meta = new.setdefault("metadata", {})
    notes = meta.get("annotations")
    meta["annotations"] = {**(notes if isinstance(notes, Mapping) else {}), key: value}
    return new


def read_last_good(obj: Mapping[str, Any], ref: ConfigRef) -> LastGood | None:
    """The last good version an object's annotation keeps, with the object's identity;
    None when it has none, or one that does not read back (a hand edit: ignored)."""
    text = _annotations(obj).get(LAST_GOOD)
    if not isinstance(text, str):
        return None
    try:
        body = json.loads(text)
    except ValueError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("spec"), dict):
        return None
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    generation = body.get("generation")
    stand_in = {
        "metadata": {
            "name": ref.name,
            "namespace": ref.namespace,
            "uid": meta.get("uid"),
            "generation": generation if isinstance(generation, int) else 0,
            "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": body["spec"],
    }
    try:
        target = parse_target(stand_in, kind=ref.kind)
    except ParseError:
        return None
    if target.hash != body.get("hash") or target.hash != spec_hash(body["spec"]):
        return None
    since = body.get("namesSince")
    names = body.get("nodeNames")
    if (
        isinstance(since, int | float)
        and not isinstance(since, bool)
        and isinstance(names, list)
        and frozenset(names) == target.node_names
    ):
        return LastGood(target, float(since))
    return LastGood(target)
