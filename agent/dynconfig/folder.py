"""The standalone agent's dynamic configuration: a folder of YAML objects, resolved
for this node and applied without a restart.

``katalyst-agent --standalone PODS --dynamic-config DIR --node-labels k=v,...``:
``DIR`` holds ``AdminQoSConfiguration`` objects (and optionally one
``KatalystCustomConfig``), one or more YAML documents per ``*.yaml``/``*.yml``/
``*.json`` file (hidden files, such as an editor's, are skipped). The agent resolves
its own layers from them (:func:`agent.dynconfig.objects.resolve`), merges them
over its ``--config`` file's sections, and hands the result to the running loops.

**Reloading** is by polling: every period (the sysadvisor's, within 0.1 s and 5 s)
the folder's files are ``stat``-ed, and any change of a name, size, mtime or inode
reloads the whole folder. Polling needs nothing from the kernel and sees a change
of any kind (an edit in place, an atomic rename, a ConfigMap's symlink swap);
``inotify`` would react sooner, which dynamic settings do not need. Write files
by renaming a finished file into place: a half-written file is refused like a
bad one (and read again when it changes).

**The folder is taken whole or not at all.** A file that is not valid YAML, an
object that breaks a rule (its ``spec.config`` merged over the agent's own
settings must pass the same checks as the file), a conflict between configs, or a
set the running agent cannot take (a change of a start-up setting) refuses the
folder's new content: a log line naming the file and the field, one count of
``katalyst_dynamic_config_refusals_total`` per problem, the message on
``/status``; the settings in force stay until the folder changes again. Named
configs are also re-resolved every period, so that one stops applying when its
``lastDuration`` has passed.

Every accepted set of layers is checkpointed (:class:`LayerCheckpoint`); at start
the checkpoint is applied first, so a folder that is broken at start leaves the
node as it was before the restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from agent.dynconfig.applier import SettingsApplier
from agent.dynconfig.checkpoint import LayerCheckpoint
from agent.dynconfig.objects import AllowedKeys, TargetConfig, parse_document, resolve
from agent.dynconfig.record import DynamicConfigRecord
from agent.dynconfig.settings import DynamicConfigError, Layer, from_layers
from katalyst.clock import Clock, first_of

__all__ = ["FolderSource"]

log = logging.getLogger(__name__)

_SUFFIXES = (".yaml", ".yml", ".json")
MIN_POLL_S = 0.1
MAX_POLL_S = 5.0

_Signature = tuple[tuple[str, int, int, int], ...]


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
        self._node = node_name
        self._labels = dict(labels)
        self._clock = clock
        self._checkpoint = checkpoint
        self.record = record or DynamicConfigRecord(f"folder {folder}", applier.current)
        self._signature: _Signature | None = None
        self._objects: list[TargetConfig | AllowedKeys] = []
        self._bad: tuple[_Signature, list[str]] | None = None
        self._applied: tuple[Layer, ...] | None = None
        self._reported: dict[str, list[str]] = {}
        self._warned: set[str] = set()
        self._started = False

    @property
    def layers(self) -> tuple[Layer, ...]:
        """The layers in force (empty before any was applied)."""
        return self._applied or ()

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
        if self._checkpoint is None:
            return False
        loaded = await asyncio.to_thread(self._checkpoint.load)
        if loaded is None:
            return False
        layers, applied_at = loaded
        try:
            settings = from_layers(self._applier.base, [layer.config for layer in layers])
            changed = self._applier.apply(settings)
        except DynamicConfigError as exc:
            log.warning(
                "dynamic config: the checkpoint's layers no longer apply over the agent's "
                "configuration (%s); starting from that configuration",
                exc,
            )
            return False
        self._applied = tuple(layers)
        self.record.applied(layers, settings, changed, at=applied_at, origin="checkpoint")
        log.info(
            "dynamic config: restored %d layer(s) from the checkpoint: %s",
            len(layers),
            ", ".join(f"{x.name}@{x.hash}" for x in layers) or "none",
        )
        return True

    async def poll(self) -> bool:
        """One look at the folder; whether a new set of layers was applied."""
        now = self._clock.wall()
        signature, file_problems = self._scan()
        if signature is None:
            pass  # the folder cannot be read: its last good content stays
        elif self._bad is not None and signature == self._bad[0]:
            file_problems = self._bad[1]  # still the content that was refused
        elif signature != self._signature:
            objects, file_problems = self._load(signature)
            if file_problems:
                self._bad = (signature, file_problems)
            else:
                self._signature, self._objects, self._bad = signature, objects, None
        self._report("files", file_problems, now)
        if self._signature is None:
            return False  # never read whole: what is in force (checkpoint, base) stays
        # The last good objects go on resolving (a named config expires even while
        # a broken file is refused).
        try:
            resolution = resolve(self._objects, node_name=self._node, labels=self._labels, now=now)
            self._note_expired(resolution.expired)
            layers = resolution.layers
            if layers != self._applied:
                settings = from_layers(self._applier.base, [layer.config for layer in layers])
                changed = self._applier.apply(settings)
        except DynamicConfigError as exc:
            self._report("layers", [str(exc)], now)
            return False
        self._report("layers", [], now)
        if not file_problems:
            self.record.clear_error()
        if layers == self._applied:
            return False
        self._applied = layers
        if self._checkpoint is not None:
            try:
                await asyncio.to_thread(self._checkpoint.save, layers, applied_at=now)
            except (OSError, ValueError) as exc:
                # Applied all the same: the loops run with it; a restart would start
                # from the previous checkpoint until the next change saves again.
                log.error("dynamic config: cannot checkpoint the applied layers: %s", exc)
        self.record.applied(layers, settings, changed, at=now, origin="folder")
        log.info(
            "dynamic config: layers %s applied (%s)",
            ", ".join(f"{x.level} {x.name}@{x.hash}" for x in layers) or "none",
            "; ".join(changed) or "no setting changed",
        )
        return True

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

    def _load(self, signature: _Signature) -> tuple[list[TargetConfig | AllowedKeys], list[str]]:
        """Every object of the folder's files; the problems, one per bad file."""
        objects: list[TargetConfig | AllowedKeys] = []
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
                    parsed = parse_document(
                        document, source=source, base=self._applier.base, mtime=mtime_ns / 1e9
                    )
                    if parsed is not None:
                        objects.append(parsed)
                        self._warn_overrides(parsed)
            except DynamicConfigError as exc:
                problems.append(str(exc))
        return objects, problems

    def _report(self, kind: str, problems: Sequence[str], now: float) -> None:
        """Log and count ``problems`` of ``kind`` once for as long as they last."""
        if list(problems) == self._reported.get(kind, []):
            return
        self._reported[kind] = list(problems)
        for problem in problems:
            log.error("dynamic config refused, the settings in force stay: %s", problem)
        if problems:
            self.record.refused(problems, at=now)

    def _note_expired(self, keys: Sequence[str]) -> None:
        for key in keys:
            if f"expired {key}" not in self._warned:
                self._warned.add(f"expired {key}")
                log.warning("dynamic config: named-node config %s has expired", key)
        self.record.note_expired(keys)

    def _warn_overrides(self, parsed: TargetConfig | AllowedKeys) -> None:
        if not isinstance(parsed, TargetConfig) or not parsed.service_overrides:
            return
        key = f"overrides {parsed.key}@{parsed.hash}"
        if key not in self._warned:
            self._warned.add(key)
            log.warning(
                "dynamic config: %s has %d serviceOverrides; this agent does not apply "
                "service-level overrides yet (they are ignored)",
                parsed.key,
                parsed.service_overrides,
            )
