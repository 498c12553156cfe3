"""Crash-safe JSON checkpoints: state that must survive a restart or a kill.

The agent's plugins keep their allocations here (which pod got which CPUs), and
the dynamic config keeps the last good target config, so that a restart, or an
API-server outage, changes nothing on the node.

A checkpoint is one file, ``<directory>/<name>``, holding a JSON envelope::

    {"checksum": "sha256:<hex>", "data": {...}, "format_version": 1}

where the checksum is over the canonical JSON of ``data`` (sorted keys, no
whitespace, ASCII). A write never modifies the file in place: it writes a
temporary file beside it, fsyncs it, renames it over the old one (rename(2) is
atomic within a filesystem, so a reader sees the old or the new file, never a
mixture) and fsyncs the directory (so the rename itself survives a power
cut). A kill at any instant therefore leaves either the previous checkpoint or
the new one, plus perhaps a stray temporary file that the next open or save
removes.

A file that is nonetheless damaged (truncated by a full disk, edited by hand,
written by an incompatible version) is never trusted and never deleted: load
reports it as corrupt, logs a warning and renames it to
``<name>.corrupt-<timestamp>`` for a person to inspect; the caller then starts
from scratch as if it were missing.

One process, and one store per directory within it, is expected to write a
given checkpoint; saves within a store are serialised by a lock.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import hashlib
import json
import logging
import math
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar, TypeAlias

__all__ = [
    "FORMAT_VERSION",
    "CheckpointCorrupt",
    "CheckpointLoaded",
    "CheckpointMissing",
    "CheckpointStore",
    "JSONInput",
    "JSONValue",
    "LoadResult",
    "LoadStatus",
    "validate_name",
]

_log = logging.getLogger(__name__)

#: Version of the envelope layout. A file with any other version is corrupt.
FORMAT_VERSION = 1

#: What load returns: JSON as the json module parses it.
JSONValue: TypeAlias = "bool | int | float | str | list[JSONValue] | dict[str, JSONValue] | None"
#: What save accepts: JSON-shaped data built from read-only container types too.
JSONInput: TypeAlias = (
    "bool | int | float | str | Sequence[JSONInput] | Mapping[str, JSONInput] | None"
)

_CHECKSUM_PREFIX = "sha256:"
_CORRUPT_MARKER = ".corrupt-"
_TMP_SUFFIX = ".tmp"
_LOCK_FILE = ".lock"
#: A checkpoint larger than this is not read (a runaway file must not exhaust memory).
MAX_CHECKPOINT_BYTES = 64 * 1024 * 1024
# Every temporary file is ".<name>.<16 hex digits>.tmp": the leading dot keeps
# it out of the checkpoint namespace (names cannot start with a dot) and the
# fixed-width random part keeps ".a.b.<hex>.tmp" (name "a.b") from being
# mistaken for a temporary file of name "a".
_TMP_RANDOM_HEX = 16
_NAME_CHARS = re.compile(r"[A-Za-z0-9_.-]+")
# Leaves room for ".corrupt-<timestamp>" and the temporary-file affixes
# within NAME_MAX (255 bytes on Linux filesystems).
_NAME_MAX = 200


def validate_name(name: str) -> str:
    """Return ``name`` if it is a safe checkpoint name, else raise ValueError.

    A name is one plain file name in the store's directory: ASCII letters,
    digits, ``_``, ``-`` and ``.``; not empty, at most 200 characters, not
    starting with ``.`` (which rules out ``.``, ``..``, hidden files and the
    store's temporary files) and not containing ``.corrupt-`` (reserved for
    set-aside files). This allow-list excludes path separators, control
    characters and whitespace, so a name can never reach outside the
    directory.
    """
    if not isinstance(name, str):
        raise TypeError(f"checkpoint name must be a str, not {type(name).__name__}: {name!r}")
    if not name:
        rule = "it is empty"
    elif len(name) > _NAME_MAX:
        rule = f"it is longer than {_NAME_MAX} characters"
    elif _NAME_CHARS.fullmatch(name) is None:
        rule = "only ASCII letters, digits, '_', '-' and '.' are allowed (no path separators)"
    elif name.startswith("."):
        rule = "it must not start with '.'"
    elif _CORRUPT_MARKER in name:
        rule = f"{_CORRUPT_MARKER!r} is reserved for set-aside corrupt files"
    else:
        return name
    raise ValueError(f"invalid checkpoint name {name!r}: {rule}")


class LoadStatus(enum.Enum):
    """The three outcomes of CheckpointStore.load."""

    MISSING = "missing"
    OK = "ok"
    CORRUPT = "corrupt"


@dataclass(frozen=True)
class CheckpointMissing:
    """No checkpoint by that name: a first start (or one after a corrupt file was set aside)."""

    status: ClassVar[LoadStatus] = LoadStatus.MISSING
    name: str
    """The checkpoint name asked for."""
    path: Path
    """Where the checkpoint would be."""


@dataclass(frozen=True)
class CheckpointLoaded:
    """The checkpoint was read and its checksum matched."""

    status: ClassVar[LoadStatus] = LoadStatus.OK
    name: str
    """The checkpoint name asked for."""
    path: Path
    """The file it was read from."""
    data: dict[str, JSONValue]
    """The mapping that was saved, as JSON parses it (tuples come back as lists)."""


@dataclass(frozen=True)
class CheckpointCorrupt:
    """The checkpoint file was unusable; it has been renamed aside, not deleted."""

    status: ClassVar[LoadStatus] = LoadStatus.CORRUPT
    name: str
    """The checkpoint name asked for."""
    path: Path
    """Where the file was; nothing is there now."""
    reason: str
    """Why it was rejected, e.g. ``checksum mismatch``."""
    moved_to: Path
    """The ``<name>.corrupt-<timestamp>`` file it now is."""


#: What load returns; match on the class, or compare ``result.status``.
LoadResult: TypeAlias = CheckpointMissing | CheckpointLoaded | CheckpointCorrupt


class _Corrupt(Exception):
    """Internal: the file's bytes are not a valid checkpoint; the message says why."""


def _fsync_path(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _check_json(value: object, *, where: str) -> None:
    """Raise ValueError naming ``where`` if ``value`` is not plain JSON data.

    json.dumps would silently turn integer keys into strings (so the loaded
    data would differ from the saved), and its own errors do not say where in
    a large structure the bad value is.
    """
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} is {value!r}, which JSON cannot represent")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(
                    f"{where} has the key {key!r} of type {type(key).__name__}; "
                    "JSON object keys must be str"
                )
            _check_json(item, where=f"{where}[{key!r}]")
        return
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        for index, item in enumerate(value):
            _check_json(item, where=f"{where}[{index}]")
        return
    raise ValueError(f"{where} is of type {type(value).__name__}, which is not JSON data")


def _canonical(value: object) -> bytes:
    """The canonical JSON encoding that the checksum is computed over.

    Sorted keys and fixed separators make it independent of dict order;
    ASCII-only output makes it independent of how text is encoded (a lone
    surrogate, for one, survives as an escape). Floats use repr, which
    round-trips exactly, so parsing and re-encoding gives the same bytes.
    """
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def _checksum(canonical: bytes) -> str:
    return _CHECKSUM_PREFIX + hashlib.sha256(canonical).hexdigest()


def _decode(raw: bytes) -> dict[str, JSONValue]:
    """Parse and verify an envelope; raise _Corrupt saying what is wrong."""
    try:
        envelope = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise _Corrupt(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        kind = "empty file" if not raw.strip() else f"not valid JSON ({exc})"
        raise _Corrupt(kind) from exc
    except RecursionError as exc:
        raise _Corrupt("JSON nested too deeply") from exc
    except ValueError as exc:
        # e.g. an integer literal beyond Python's int-from-text digit limit.
        raise _Corrupt(f"not loadable JSON ({exc})") from exc
    if not isinstance(envelope, dict):
        raise _Corrupt(f"envelope is a JSON {type(envelope).__name__}, not an object")
    missing = sorted({"format_version", "checksum", "data"} - envelope.keys())
    if missing:
        raise _Corrupt(f"envelope lacks {', '.join(missing)}")
    version = envelope["format_version"]
    # bool is an int in Python; "format_version": true is not version 1.
    if isinstance(version, bool) or version != FORMAT_VERSION:
        raise _Corrupt(f"format version {version!r}, expected {FORMAT_VERSION}")
    data = envelope["data"]
    if not isinstance(data, dict):
        raise _Corrupt(f"data is a JSON {type(data).__name__}, not an object")
    recorded = envelope["checksum"]
    try:
        actual = _checksum(_canonical(data))
    except (ValueError, RecursionError) as exc:
        # json.loads accepts NaN and Infinity, which the canonical form
        # refuses: such a file was not written by save.
        raise _Corrupt(f"data cannot be re-encoded canonically ({exc})") from exc
    if recorded != actual:
        raise _Corrupt(f"checksum mismatch: recorded {recorded!r}, computed {actual!r}")
    return data


class CheckpointStore:
    """Named JSON checkpoints in one directory, written atomically.

    Opening a store creates the directory (mode 0700, so other users cannot
    read node state or plant files) if it is missing, and removes temporary
    files that a killed writer left behind.
    """

    def __init__(
        self,
        directory: Path,
        *,
        clock: Callable[[], datetime] = _utc_now,
        max_bytes: int = MAX_CHECKPOINT_BYTES,
    ) -> None:
        """Open the store at ``directory``.

        ``clock`` gives the time stamped into the names of set-aside corrupt
        files; inject one in tests to get predictable names. A file larger than
        ``max_bytes`` is reported corrupt without being read.
        """
        self._directory = Path(directory)
        self._clock = clock
        self._max_bytes = max_bytes
        if not self._directory.is_dir():
            self._directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Persist the new directory's entry too, or a power cut on first
            # start can lose the directory with everything written into it.
            _fsync_path(self._directory.parent)
        with self._locked():
            self._remove_temporaries(name=None)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive access to the directory, across threads and processes.

        Every save, load and temp-file clean-up holds an flock on ``.lock``: a
        second store on the same directory (another plugin, or the old agent
        still running during a DaemonSet rollout) then waits instead of
        deleting a temporary file that a writer is about to rename. flock locks
        belong to the open file description, so two threads conflict as well.
        """
        fd = os.open(self._directory / _LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    @property
    def directory(self) -> Path:
        """The directory that holds the checkpoint files."""
        return self._directory

    def path(self, name: str) -> Path:
        """The file that holds checkpoint ``name``; ValueError if the name is unsafe."""
        return self._directory / validate_name(name)

    def save(self, name: str, data: Mapping[str, JSONInput]) -> None:
        """Write ``data`` as checkpoint ``name``, replacing any previous one atomically.

        Raises ValueError (naming the offending item) if ``data`` is not plain
        JSON data or the name is unsafe, and OSError if the disk refuses the
        write; in either case the previous checkpoint is left as it was. (If only
        the final fsync of the directory fails, the new checkpoint is already in
        place and the OSError says that its rename may not yet be durable.)
        """
        path = self.path(name)
        if not isinstance(data, Mapping):
            raise ValueError(
                f"checkpoint {name!r}: data must be a mapping, not {type(data).__name__}"
            )
        try:
            _check_json(data, where=f"checkpoint {name!r} data")
        except RecursionError as exc:
            raise ValueError(
                f"checkpoint {name!r}: data is nested too deeply or refers to itself"
            ) from exc
        try:
            canonical = _canonical(data)
        except ValueError as exc:  # an integer too large to print as JSON, say
            raise ValueError(f"checkpoint {name!r}: data cannot be encoded: {exc}") from exc
        envelope = {
            "format_version": FORMAT_VERSION,
            "checksum": _checksum(canonical),
            "data": data,
        }
        payload = _canonical(envelope) + b"\n"
        with self._locked():
            self._remove_temporaries(name=name)
            self._write_atomically(path, payload)

    def load(self, name: str) -> LoadResult:
        """Read checkpoint ``name``: missing, loaded, or corrupt and set aside.

        A corrupt file is logged as a warning and renamed to
        ``<name>.corrupt-<timestamp>``; a following save writes a fresh one.
        Raises ValueError if the name is unsafe, and OSError only if the
        directory cannot be read or the corrupt file cannot be moved.
        """
        path = self.path(name)
        # Under the lock: otherwise a concurrent save could replace a corrupt
        # file with a good one just before this load renames "it" aside.
        with self._locked():
            try:
                # O_NOFOLLOW: the directory is ours alone; a symlink in it was
                # not written by save and is not followed to wherever it points.
                # O_NONBLOCK: opening a FIFO would otherwise wait for a writer;
                # it changes nothing for a regular file.
                flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
                fd = os.open(path, flags)
            except FileNotFoundError:
                return CheckpointMissing(name=name, path=path)
            except OSError as exc:
                if not path.is_symlink():
                    raise
                reason = f"a symbolic link ({exc.strerror})"
            else:
                try:
                    raw = self._read_regular_file(fd)
                except _Corrupt as exc:
                    raw, too_large = None, str(exc)
                else:
                    too_large = ""
                if raw is None:
                    reason = too_large or "not a regular file"
                else:
                    try:
                        data = _decode(raw)
                    except _Corrupt as exc:
                        reason = str(exc)
                    else:
                        return CheckpointLoaded(name=name, path=path, data=data)
            return self._set_aside(name=name, path=path, reason=reason)

    def _read_regular_file(self, fd: int) -> bytes | None:
        """Read and close ``fd``; None (without reading) if it is not a regular file.

        A directory opens fine read-only on Linux, and a FIFO or device could
        hang or never end, so look before reading.
        """
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            with os.fdopen(fd, "rb", closefd=False) as file:
                raw = file.read(self._max_bytes + 1)
            if len(raw) > self._max_bytes:
                raise _Corrupt(f"larger than {self._max_bytes} bytes")
            return raw
        finally:
            os.close(fd)

    def discard(self, name: str, *, reason: str) -> CheckpointCorrupt | CheckpointMissing:
        """Set checkpoint ``name`` aside although it is intact.

        For a checkpoint whose *content* the caller cannot use (state that no
        longer fits the machine, say): it is kept for inspection as
        ``<name>.corrupt-<timestamp>``, logged with ``reason``, and never loaded again.
        """
        path = self.path(name)
        with self._locked():
            if not path.exists() and not path.is_symlink():
                return CheckpointMissing(name=name, path=path)
            return self._set_aside(name=name, path=path, reason=reason)

    def _set_aside(self, *, name: str, path: Path, reason: str) -> CheckpointCorrupt:
        """Rename a bad checkpoint out of the way, keeping it for inspection."""
        stamp = self._clock().astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        moved_to = self._directory / f"{name}{_CORRUPT_MARKER}{stamp}"
        # Two set-asides within one clock tick (a coarse or fake clock) must
        # not overwrite the first one's evidence.
        suffix = 0
        while moved_to.exists() or moved_to.is_symlink():
            suffix += 1
            moved_to = self._directory / f"{name}{_CORRUPT_MARKER}{stamp}-{suffix}"
        os.replace(path, moved_to)
        self._fsync_directory()
        _log.warning(
            "checkpoint %r at %s is corrupt (%s); moved it to %s and starting without it",
            name,
            path,
            reason,
            moved_to,
        )
        return CheckpointCorrupt(name=name, path=path, reason=reason, moved_to=moved_to)

    def _write_atomically(self, path: Path, payload: bytes) -> None:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(_TMP_RANDOM_HEX // 2)}{_TMP_SUFFIX}")
        # O_EXCL: never write through a file (or symlink) someone else put
        # there. 0600: node state is for root only (umask can only narrow it).
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(payload)
                file.flush()
                # The data must be on disk before the rename makes it the
                # checkpoint; otherwise a power cut can leave the new name
                # pointing at an empty file (the classic ext4 delayed-alloc
                # zero-length-file problem).
                os.fsync(file.fileno())
            os.replace(tmp, path)
        except BaseException:
            # Includes KeyboardInterrupt: leave no temporary file behind when
            # the process survives; a SIGKILL is handled by the next open.
            tmp.unlink(missing_ok=True)
            raise
        # Persist the rename (the directory entry) too.
        self._fsync_directory()

    def _fsync_directory(self) -> None:
        _fsync_path(self._directory)

    def _remove_temporaries(self, *, name: str | None) -> None:
        """Remove temporary files left by a killed writer: all, or those of ``name``."""
        stem = _NAME_CHARS.pattern if name is None else re.escape(name)
        pattern = re.compile(rf"\.{stem}\.[0-9a-f]{{{_TMP_RANDOM_HEX}}}{re.escape(_TMP_SUFFIX)}")
        with os.scandir(self._directory) as entries:
            leftovers = [
                entry.path
                for entry in entries
                if pattern.fullmatch(entry.name) and entry.is_file(follow_symlinks=False)
            ]
        for leftover in leftovers:
            _log.info("removing %s, left by an interrupted checkpoint write", leftover)
            Path(leftover).unlink(missing_ok=True)
