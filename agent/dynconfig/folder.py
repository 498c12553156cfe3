"""The standalone agent's dynamic configuration: a folder of YAML objects, resolved
for this node and applied without a restart.

``katalyst-agent --standalone PODS --dynamic-config DIR --node-labels k=v,...``:
``DIR`` holds ``AdminQoSConfiguration`` objects (and optionally one
``KatalystCustomConfig`` for them), one or more YAML documents per
``*.yaml``/``*.yml``/``*.json`` file (hidden files, such as an editor's, are
skipped). The agent does for itself what the controller does for a cluster node,
with the same library: each object is parsed (:func:`katalyst.dynconfig.parse_target`,
:func:`~katalyst.dynconfig.parse_kcc`) and validated
(:func:`~katalyst.dynconfig.validate_target`), this node's layers are resolved
(:func:`katalyst.dynconfig.resolve`, the node being ``--node-name`` with its
``--node-labels``), merged over its ``--config`` file's sections, and handed to the
running loops.

Differences from a cluster, because a folder is not an API server: an object
without ``metadata.namespace`` is in ``default``; a named-nodes config without
``metadata.creationTimestamp`` counts its ``lastDuration`` from its file's last
change; without a ``KatalystCustomConfig`` in the folder, a pool config may select
on any label key (with one, only on those it allows at the config's priority).

**Reloading** is by polling: every period (the sysadvisor's, within 0.1 s and 5 s)
the folder's files are ``stat``-ed, and any change of a name, size, mtime or inode
reloads the whole folder. Polling needs nothing from the kernel and sees a change
of any kind (an edit in place, an atomic rename, a ConfigMap's symlink swap);
``inotify`` would react sooner, which dynamic settings do not need. Write files
by renaming a finished file into place: a half-written file is refused like a
bad one (and read again when it changes).

**The folder's objects are taken whole or not at all.** A file that is not valid
YAML, an object that breaks a rule (its ``spec.config`` merged over the agent's
own settings must pass the same checks as the file), two KCCs, or one object
defined twice refuses the folder's new content: a log line naming the file and
the field, one count of ``katalyst_dynamic_config_refusals_total`` per problem,
the message on ``/status``; the objects read last stay until the folder changes
again. Conflicts between valid configs are the resolution's business, as on a
cluster: a new config that clashes with an established one is left out (and
refused the same way) while the established one stays. A set the running agent
cannot take (a change of a start-up setting) is refused as a whole. Named configs
are re-resolved when due, so that one stops applying when its ``lastDuration``
has passed.

Every accepted set of layers is checkpointed (:class:`LayerCheckpoint`); at start
the checkpoint is applied first, so a folder that is broken at start leaves the
node as it was before the restart.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from agent.dynconfig.applier import SettingsApplier
from agent.dynconfig.checkpoint import LayerCheckpoint
from agent.dynconfig.record import DynamicConfigRecord
from agent.dynconfig.settings import DynamicConfigError, Layer, from_layers, raw_overrides
from agent.dynconfig.sink import LayerSink
from katalyst.clock import Clock, first_of
from katalyst.dynconfig import (
    ADMIN_QOS_GVR,
    ADMIN_QOS_KIND,
    CONFIG_GROUP,
    KCC,
    KCC_KIND,
    VERSION,
    AllowedKeys,
    ConfigRef,
    Node,
    ParseError,
    Resolution,
    ServiceOverride,
    TargetConfig,
    parse_kcc,
    parse_target,
    resolve,
    validate_target,
)
from katalyst.settings import describe

__all__ = ["API_VERSION", "FolderSource", "read_document"]

log = logging.getLogger(__name__)

API_VERSION = f"{CONFIG_GROUP}/{VERSION}"
"""The ``apiVersion`` of every object of the folder."""
_SUFFIXES = (".yaml", ".yml", ".json")
MIN_POLL_S = 0.1
MAX_POLL_S = 5.0

_Signature = tuple[tuple[str, int, int, int], ...]


def _json_data(value: object) -> object:
    """``value`` (as YAML decoded it) as JSON would have it: YAML's timestamps as
    RFC 3339 strings (a time without a zone is UTC, as YAML says), keys as given."""
    if isinstance(value, Mapping):
        return {k: _json_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_data(v) for v in value]
    if isinstance(value, datetime.datetime):
        stamp = value if value.tzinfo is not None else value.replace(tzinfo=datetime.UTC)
        return stamp.isoformat()
    if isinstance(value, datetime.date):
        return value.isoformat()
    return value


def _rfc3339(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat()


def read_document(document: object, *, source: str, mtime: float) -> KCC | TargetConfig | None:
    """One YAML document: a ``KatalystCustomConfig`` for AdminQoSConfigurations, an
    ``AdminQoSConfiguration``, or None for an empty document. ``mtime`` (epoch
    seconds) stands in for a missing ``creationTimestamp``. Raises
    :class:`DynamicConfigError` naming ``source``, the object and the field for
    anything else (the placement and values are :meth:`FolderSource`'s to check)."""
    if document is None:
        return None
    body = _json_data(document)
    if not isinstance(body, dict):
        raise DynamicConfigError(f"{source}: must be an object (a mapping), got {describe(body)}")
    api_version, kind = body.get("apiVersion"), body.get("kind")
    if api_version != API_VERSION:
        raise DynamicConfigError(
            f"{source}: apiVersion: must be {API_VERSION}, got {describe(api_version)}"
        )
    if kind not in (ADMIN_QOS_KIND, KCC_KIND):
        raise DynamicConfigError(
            f"{source}: kind: must be {ADMIN_QOS_KIND} or {KCC_KIND}, got {describe(kind)}"
        )
    meta = body.get("metadata")
    where = f"{source}: {kind}"
    if isinstance(meta, dict):
        meta.setdefault("namespace", "default")
        if kind == ADMIN_QOS_KIND:
            meta.setdefault("creationTimestamp", _rfc3339(mtime))
        where = f"{where} {meta['namespace']}/{meta.get('name')}"
    try:
        if kind == KCC_KIND:
            kcc = parse_kcc(body)
            if kcc.target != ADMIN_QOS_GVR:
                raise ParseError(
                    "spec.targetType",
                    f"this agent reads {ADMIN_QOS_GVR.resource}.{CONFIG_GROUP} only, got "
                    f"{kcc.target.resource}.{kcc.target.group}",
                )
            return kcc
        return parse_target(body)
    except ParseError as exc:
        raise DynamicConfigError(f"{where}: {exc}") from None


@dataclass(frozen=True, slots=True)
class _Objects:
    """The folder's content as last accepted."""

    kcc: KCC
    targets: tuple[TargetConfig, ...]
    sources: Mapping[ConfigRef, str]
    """Where each target was read (the file, and ``#N`` for a document of several)."""


def _key(ref: ConfigRef) -> str:
    return f"{ref.namespace}/{ref.name}"


def _open_kcc(targets: Sequence[TargetConfig]) -> KCC:
    """The KCC of a folder without one: every pool config's label keys allowed at
    its priority (a folder needs no KCC: its writer is the node's own operator)."""
    keys: dict[int, set[str]] = {}
    for target in targets:
        keys.setdefault(target.priority, set()).update(target.selector_keys)
    allowed = tuple(AllowedKeys(p, frozenset(keys[p])) for p in sorted(keys))
    return KCC(name="", namespace="", target=ADMIN_QOS_GVR, allowed_keys=allowed)


class FolderSource:
    """Polls ``folder`` and applies what it resolves to for this node; see the module
    docstring. ``record`` receives every application and refusal."""

    def __init__(
        self,
        folder: Path,
        *,
        applier: SettingsApplier,
        node_name: str,
        labels: Mapping[str, str],
        clock: Clock,
        checkpoint: LayerCheckpoint | None = None,
        record: DynamicConfigRecord | None = None,
    ) -> None:
        self._folder = folder
        self._applier = applier
        self._node = Node(node_name, dict(labels))
        self._clock = clock
        self.record = record or DynamicConfigRecord(f"folder {folder}", applier.current)
        self._sink = LayerSink(applier, record=self.record, checkpoint=checkpoint)
        self._signature: _Signature | None = None
        self._objects: _Objects | None = None
        self._bad: tuple[_Signature, list[str]] | None = None
        self._resolution: Resolution | None = None
        self._reported: dict[str, list[str]] = {}
        self._warned: set[str] = set()
        self._started = False

    @property
    def layers(self) -> tuple[Layer, ...]:
        """The layers in force (empty before any was applied)."""
        return self._sink.layers or ()

    @property
    def service_overrides(self) -> tuple[ServiceOverride, ...]:
        """The service-level overrides in force, the highest layer's first."""
        return self._sink.service_overrides

    async def start(self) -> None:
        """Restore the checkpoint, then read the folder once (before the loops start,
        so that their first period runs with the result)."""
        self._started = True
        await self.restore()
        await self.poll()

    async def run(self, stop: asyncio.Event) -> None:
        """Poll the folder every period until ``stop`` (after :meth:`start`, which it
        calls first if nobody did)."""
        if not self._started:
            await self.start()
        while not stop.is_set():
            period = self._applier.current.sysadvisor.period_s
            await first_of(stop, self._clock.sleep(min(MAX_POLL_S, max(MIN_POLL_S, period))))
            if not stop.is_set():
                await self.poll()

    async def restore(self) -> bool:
        """Apply the checkpoint's layers, if there is a usable one; whether it was."""
        return await self._sink.restore()

    async def poll(self) -> bool:
        """One look at the folder; whether a new set of layers was applied."""
        now = self._clock.wall()
        signature, file_problems = self._scan()
        changed_objects = False
        if signature is None:
            pass  # the folder cannot be read: its last good content stays
        elif self._bad is not None and signature == self._bad[0]:
            file_problems = self._bad[1]  # still the content that was refused
        elif signature != self._signature:
            objects, file_problems = self._load(signature)
            if objects is None:
                self._bad = (signature, file_problems)
            else:
                self._signature, self._objects, self._bad = signature, objects, None
                changed_objects = True
        self._report("files", file_problems, now)
        if self._objects is None:
            return False  # never read whole: what is in force (checkpoint, base) stays
        # The last good objects go on resolving (a named config expires even while
        # a broken file is refused).
        resolution = self._resolve(now, again=changed_objects)
        layers, problems = self._layers(resolution)
        self._report("resolution", problems, now)
        if layers == self._sink.layers:
            self._report("layers", [], now)
            if not file_problems and not problems:
                self.record.clear_error()
            return False
        try:
            await self._sink.apply(layers, now=now, origin="folder")
        except DynamicConfigError as exc:
            self._report("layers", [str(exc)], now)
            return False
        self._report("layers", [], now)
        if not file_problems and not problems:
            self.record.clear_error()
        return True

    def _resolve(self, now: float, *, again: bool) -> Resolution:
        """This node's resolution: a new pass when the objects changed or a named
        config is due, else the last one."""
        previous = self._resolution
        due = previous.next_expiry if previous is not None else None
        if previous is not None and not again and (due is None or now < due):
            return previous
        objects = self._objects
        assert objects is not None
        resolution = resolve(objects.kcc, objects.targets, [self._node], now=now, previous=previous)
        self._resolution = resolution
        mine = [
            _key(ref)
            for ref in resolution.expired
            if self._node.name in next(t.node_names for t in objects.targets if t.ref == ref)
        ]
        for key in mine:
            if f"expired {key}" not in self._warned:
                self._warned.add(f"expired {key}")
                log.warning("dynamic config: named-node config %s has expired", key)
        self.record.note_expired(mine)
        return resolution

    def _layers(self, resolution: Resolution) -> tuple[tuple[Layer, ...], list[str]]:
        """This node's layers, and the configs the resolution refused (conflicts,
        layers that do not merge), each named with its file."""
        objects = self._objects
        assert objects is not None
        node = resolution.nodes.get(self._node.name)
        layers = tuple(
            Layer(
                name=_key(layer.ref),
                level=layer.level,
                hash=layer.hash,
                config=layer.target.config,
                source=objects.sources.get(layer.ref, ""),
                service_overrides=raw_overrides(layer.target.spec),
            )
            for layer in (node.layers if node is not None else ())
        )
        problems = [
            f"{objects.sources.get(ref, '?')}: {ref.kind} {_key(ref)}: {condition.message}"
            for ref, condition in sorted(resolution.conditions.items())
            if not condition.valid
        ]
        return layers, problems

    def _scan(self) -> tuple[_Signature | None, list[str]]:
        """The folder's files (name, mtime, size, inode), or the problem reading it."""
        try:
            entries = sorted(os.scandir(self._folder), key=lambda e: e.name)
        except OSError as exc:
            return None, [f"{self._folder}: cannot read the folder: {exc.strerror}"]
        files = []
        for entry in entries:
            if entry.name.startswith(".") or not entry.name.endswith(_SUFFIXES):
                continue
            try:
                st = entry.stat()  # follows symlinks: a ConfigMap's files are links
            except OSError:
                continue  # gone since the listing: the next poll sees the folder as it is
            files.append((entry.name, st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(files), []

    def _load(self, signature: _Signature) -> tuple[_Objects | None, list[str]]:
        """Every object of the folder's files, checked; None and the problems (one
        per bad file or object) when anything is wrong."""
        read: list[tuple[str, KCC | TargetConfig]] = []
        problems: list[str] = []
        for name, mtime_ns, _, _ in signature:
            path = self._folder / name
            try:
                with open(path, encoding="utf-8") as f:
                    documents = list(yaml.safe_load_all(f))
            except OSError as exc:
                problems.append(f"{path}: cannot read: {exc.strerror}")
                continue
            except (yaml.YAMLError, UnicodeDecodeError) as exc:
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                problems.append(f"{path}: not valid YAML: {first}")
                continue
            try:
                for index, document in enumerate(documents):
                    source = str(path) if len(documents) == 1 else f"{path}#{index}"
                    parsed = read_document(document, source=source, mtime=mtime_ns / 1e9)
                    if parsed is not None:
                        read.append((source, parsed))
            except DynamicConfigError as exc:
                problems.append(str(exc))
        kccs = [(source, o) for source, o in read if isinstance(o, KCC)]
        targets: dict[ConfigRef, TargetConfig] = {}
        sources: dict[ConfigRef, str] = {}
        for source, obj in read:
            if not isinstance(obj, TargetConfig):
                continue
            if obj.ref in targets:
                problems.append(
                    f"{source}: {obj.ref.kind} {_key(obj.ref)}: defined twice "
                    f"({sources[obj.ref]}, {source})"
                )
                continue
            targets[obj.ref] = obj
            sources[obj.ref] = source
        if len(kccs) > 1:
            problems.append(
                f"{KCC_KIND}: {len(kccs)} for {ADMIN_QOS_GVR.resource} ("
                + ", ".join(f"{k.namespace}/{k.name} in {source}" for source, k in kccs)
                + "); keep one"
            )
        kcc = kccs[0][1] if kccs else _open_kcc(list(targets.values()))
        for ref, target in targets.items():
            problem = self._check(kcc, target)
            if problem:
                problems.append(f"{sources[ref]}: {ref.kind} {_key(ref)}: {problem}")
        if problems:
            return None, problems
        return _Objects(kcc, tuple(targets.values()), sources), []

    def _check(self, kcc: KCC, target: TargetConfig) -> str | None:
        """What is wrong with ``target``: the library's rules, then its config over
        the agent's own file (the same checks as the file's)."""
        problems = validate_target(kcc, target)
        if problems:
            return "; ".join(problems)
        try:
            from_layers(self._applier.base, [target.config])
        except DynamicConfigError as exc:
            return str(exc)
        return None

    def _report(self, kind: str, problems: Sequence[str], now: float) -> None:
        """Log and count ``problems`` of ``kind`` once for as long as they last."""
        if list(problems) == self._reported.get(kind, []):
            return
        new = [p for p in problems if p not in self._reported.get(kind, [])]
        self._reported[kind] = list(problems)
        for problem in new:
            log.error("dynamic config refused, the settings in force stay: %s", problem)
        if new:
            self.record.refused(problems, at=now, counted=len(new))
