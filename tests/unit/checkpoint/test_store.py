"""CheckpointStore outcomes through its public surface and the files it leaves."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from katalyst.checkpoint import (
    FORMAT_VERSION,
    CheckpointCorrupt,
    CheckpointLoaded,
    CheckpointMissing,
    CheckpointStore,
    JSONInput,
    LoadStatus,
    validate_name,
)

_T0 = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


def _ticking_clock() -> Callable[[], datetime]:
    """A fake clock that advances one second per reading."""
    ticks: Iterator[int] = iter(range(1_000_000))
    return lambda: _T0 + timedelta(seconds=next(ticks))


def _frozen_clock() -> datetime:
    return _T0


def _files(directory: Path) -> set[str]:
    # .lock is the store's own lock file, present once a store has been opened.
    return {entry.name for entry in directory.iterdir()} - {".lock"}


def _canonical_sha256(data: object) -> str:
    # Written out independently of the store's own helper.
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return "sha256:" + hashlib.sha256(text.encode("ascii")).hexdigest()


def _envelope(data: object, *, version: object = FORMAT_VERSION) -> bytes:
    return json.dumps(
        {"format_version": version, "checksum": _canonical_sha256(data), "data": data}
    ).encode()


@pytest.fixture
def store(tmp_path: Path) -> CheckpointStore:
    return CheckpointStore(tmp_path / "checkpoints", clock=_ticking_clock())


# --- MISSING and OK -------------------------------------------------------------------


def test_a_checkpoint_never_saved_is_missing(store: CheckpointStore) -> None:
    result = store.load("cpu")
    assert result == CheckpointMissing(name="cpu", path=store.directory / "cpu")
    assert result.status is LoadStatus.MISSING


def test_saved_data_loads_back_in_a_new_store(tmp_path: Path) -> None:
    data: dict[str, JSONInput] = {
        "pods": {"uid-1": {"main": {"cpuset": "0-3", "quantity": 4.0}}},
        "pools": ["share", "reclaim"],
        "pair": (1, 2),
        "flags": {"numa_binding": True, "limit": None, "ratio": -0.25},
        "text": "héllo \u2603 \ud800",
        "big": 2**70,
    }
    CheckpointStore(tmp_path).save("cpu", data)

    # A fresh store stands for a restarted agent.
    result = CheckpointStore(tmp_path).load("cpu")
    assert isinstance(result, CheckpointLoaded)
    assert result.status is LoadStatus.OK
    assert result.path == tmp_path / "cpu"
    assert result.data == {**data, "pair": [1, 2]}  # JSON has lists, not tuples


def test_a_save_replaces_the_previous_checkpoint(store: CheckpointStore) -> None:
    store.save("cpu", {"generation": 1})
    store.save("cpu", {"generation": 2})
    result = store.load("cpu")
    assert isinstance(result, CheckpointLoaded)
    assert result.data == {"generation": 2}
    assert _files(store.directory) == {"cpu"}


def test_checkpoints_are_independent(store: CheckpointStore) -> None:
    store.save("cpu", {"r": "cpu"})
    store.save("cpu.v2", {"r": "cpu.v2"})
    for name in ("cpu", "cpu.v2"):
        result = store.load(name)
        assert isinstance(result, CheckpointLoaded)
        assert result.data == {"r": name}


def test_file_format_is_a_checksummed_envelope(store: CheckpointStore) -> None:
    data: dict[str, JSONInput] = {"b": [1, 2.5, None], "a": {"z": "ü", "y": True}}
    store.save("memory", data)
    envelope = json.loads((store.directory / "memory").read_bytes())
    assert envelope == {
        "format_version": 1,
        "checksum": _canonical_sha256(data),
        "data": data,
    }


def test_directory_and_files_are_private(tmp_path: Path) -> None:
    directory = tmp_path / "var" / "lib" / "katalyst"
    store = CheckpointStore(directory)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    store.save("cpu", {"x": 1})
    assert stat.S_IMODE((directory / "cpu").stat().st_mode) == 0o600
    assert _files(directory) == {"cpu"}  # no temporary file left behind


# --- CORRUPT --------------------------------------------------------------------------

_GOOD = {"pods": {"uid-1": "0-3"}}

_CORRUPT_FILES = [
    pytest.param(b"", "empty file", id="empty"),
    pytest.param(b"\n  \n", "empty file", id="blank"),
    pytest.param(b"not json at all", "not valid JSON", id="not-json"),
    pytest.param(b"\xff\xfe{}", "not UTF-8", id="not-utf8"),
    pytest.param(b'{"data": ' + b"9" * 5000 + b"}", "not loadable JSON", id="huge-int"),
    pytest.param(_envelope(_GOOD)[:-7], "not valid JSON", id="truncated"),
    pytest.param(b"[1, 2]", "not an object", id="envelope-is-a-list"),
    pytest.param(
        json.dumps({"data": _GOOD}).encode(), "lacks checksum, format_version", id="no-keys"
    ),
    pytest.param(_envelope(_GOOD, version=2), "format version 2", id="newer-version"),
    pytest.param(_envelope(_GOOD, version="1"), "format version '1'", id="version-as-text"),
    pytest.param(_envelope(_GOOD, version=True), "format version True", id="version-as-bool"),
    pytest.param(_envelope(_GOOD).replace(b"0-3", b"0-7"), "checksum mismatch", id="data-edited"),
    pytest.param(
        json.dumps({"format_version": 1, "checksum": "sha256:00", "data": _GOOD}).encode(),
        "checksum mismatch",
        id="checksum-edited",
    ),
    pytest.param(_envelope(["a"]), "data is a JSON list", id="data-not-an-object"),
    pytest.param(
        b'{"format_version": 1, "checksum": "x", "data": {"a": NaN}}',
        "cannot be re-encoded",
        id="nan",
    ),
]


@pytest.mark.parametrize(("content", "reason"), _CORRUPT_FILES)
def test_a_bad_file_is_reported_set_aside_and_replaced(
    tmp_path: Path, content: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = CheckpointStore(tmp_path, clock=_frozen_clock)
    (tmp_path / "cpu").write_bytes(content)

    with caplog.at_level(logging.WARNING, logger="katalyst.checkpoint"):
        result = store.load("cpu")

    assert isinstance(result, CheckpointCorrupt)
    assert result.status is LoadStatus.CORRUPT
    assert reason in result.reason
    assert result.path == tmp_path / "cpu"
    assert result.moved_to == tmp_path / "cpu.corrupt-20240506T070809.123456Z"
    # Kept byte for byte for a person to look at; nothing left under the name.
    assert result.moved_to.read_bytes() == content
    assert not result.path.exists()
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "'cpu'" in record.getMessage()
    assert str(result.moved_to) in record.getMessage()
    assert reason in record.getMessage()

    # The caller starts afresh: missing now, and a new save works.
    assert isinstance(store.load("cpu"), CheckpointMissing)
    store.save("cpu", _GOOD)
    again = store.load("cpu")
    assert isinstance(again, CheckpointLoaded)
    assert again.data == _GOOD
    assert _files(tmp_path) == {"cpu", result.moved_to.name}


def test_set_aside_files_are_never_overwritten(tmp_path: Path) -> None:
    # A frozen clock gives every set-aside the same timestamp.
    store = CheckpointStore(tmp_path, clock=_frozen_clock)
    moved: list[Path] = []
    for attempt in range(3):
        (tmp_path / "cpu").write_bytes(f"garbage {attempt}".encode())
        result = store.load("cpu")
        assert isinstance(result, CheckpointCorrupt)
        moved.append(result.moved_to)
    assert [p.name for p in moved] == [
        "cpu.corrupt-20240506T070809.123456Z",
        "cpu.corrupt-20240506T070809.123456Z-1",
        "cpu.corrupt-20240506T070809.123456Z-2",
    ]
    assert [p.read_bytes() for p in moved] == [b"garbage 0", b"garbage 1", b"garbage 2"]


def test_a_symlink_is_not_followed_but_set_aside(tmp_path: Path) -> None:
    directory = tmp_path / "checkpoints"
    store = CheckpointStore(directory)
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_bytes(_envelope(_GOOD))
    (directory / "cpu").symlink_to(elsewhere)

    result = store.load("cpu")
    assert isinstance(result, CheckpointCorrupt)
    assert "symbolic link" in result.reason
    assert result.moved_to.is_symlink()
    assert elsewhere.read_bytes() == _envelope(_GOOD)  # the target is untouched


@pytest.mark.parametrize(
    "make",
    [pytest.param(os.mkdir, id="directory"), pytest.param(os.mkfifo, id="fifo")],
)
def test_something_else_in_the_way_is_set_aside(
    store: CheckpointStore, make: Callable[[Path], None]
) -> None:
    make(store.directory / "cpu")
    result = store.load("cpu")  # a FIFO must not block it
    assert isinstance(result, CheckpointCorrupt)
    assert result.reason == "not a regular file"
    assert result.moved_to.exists()
    store.save("cpu", _GOOD)
    assert isinstance(store.load("cpu"), CheckpointLoaded)


# --- names ----------------------------------------------------------------------------

_BAD_NAMES = [
    pytest.param("", "empty", id="empty"),
    pytest.param(".", "must not start with '.'", id="dot"),
    pytest.param("..", "must not start with '.'", id="dotdot"),
    pytest.param(".hidden", "must not start with '.'", id="hidden"),
    pytest.param("a/b", "path separators", id="slash"),
    pytest.param("../escape", "path separators", id="parent"),
    pytest.param("/etc/passwd", "path separators", id="absolute"),
    pytest.param("a\\b", "path separators", id="backslash"),
    pytest.param("a\x00b", "path separators", id="nul"),
    pytest.param("a\nb", "path separators", id="newline"),
    pytest.param("tab\there", "path separators", id="tab"),
    pytest.param("del\x7f", "path separators", id="del"),
    pytest.param("a b", "path separators", id="space"),
    pytest.param("caf\u00e9", "path separators", id="non-ascii"),
    pytest.param("x" * 201, "longer than 200", id="too-long"),
    pytest.param("cpu.corrupt-2024", "reserved", id="corrupt-marker"),
]


@pytest.mark.parametrize(("name", "rule"), _BAD_NAMES)
def test_unsafe_names_are_rejected_with_the_rule(tmp_path: Path, name: str, rule: str) -> None:
    directory = tmp_path / "checkpoints"
    store = CheckpointStore(directory)
    for call in (lambda: store.save(name, {"x": 1}), lambda: store.load(name)):
        with pytest.raises(ValueError, match="invalid checkpoint name") as raised:
            call()
        assert repr(name) in str(raised.value)
        assert rule in str(raised.value)
    # Nothing was written anywhere, inside the directory or out of it.
    assert _files(tmp_path) == {"checkpoints"}
    assert _files(directory) == set()


@pytest.mark.parametrize("name", ["cpu", "qrm_cpu_plugin", "a.b-c_1", "X" * 200, "0"])
def test_plain_names_are_accepted(store: CheckpointStore, name: str) -> None:
    assert validate_name(name) == name
    store.save(name, {"name": name})
    result = store.load(name)
    assert isinstance(result, CheckpointLoaded)
    assert result.data == {"name": name}


# --- data -----------------------------------------------------------------------------

_BAD_DATA = [
    pytest.param({"a": {1: "x"}}, "['a'] has the key 1 of type int", id="int-key"),
    pytest.param({"a": [0, float("nan")]}, "['a'][1] is nan", id="nan"),
    pytest.param({"a": float("inf")}, "['a'] is inf", id="inf"),
    pytest.param({"a": b"bytes"}, "['a'] is of type bytes", id="bytes"),
    pytest.param({"a": {1, 2}}, "['a'] is of type set", id="set"),
    pytest.param({"a": object()}, "['a'] is of type object", id="object"),
]


@pytest.mark.parametrize(("data", "where"), _BAD_DATA)
def test_data_that_is_not_json_is_rejected_naming_the_item(
    store: CheckpointStore, data: dict[str, object], where: str
) -> None:
    store.save("cpu", _GOOD)
    with pytest.raises(ValueError, match="checkpoint 'cpu'") as raised:
        store.save("cpu", data)  # type: ignore[arg-type]
    assert where in str(raised.value)
    # The previous checkpoint is untouched.
    result = store.load("cpu")
    assert isinstance(result, CheckpointLoaded)
    assert result.data == _GOOD
    assert _files(store.directory) == {"cpu"}


def test_data_that_refers_to_itself_is_rejected(store: CheckpointStore) -> None:
    looped: dict[str, JSONInput] = {}
    looped["self"] = looped
    with pytest.raises(ValueError, match="checkpoint 'cpu': data is nested too deeply"):
        store.save("cpu", looped)


def test_data_must_be_a_mapping(store: CheckpointStore) -> None:
    with pytest.raises(ValueError, match="data must be a mapping, not list"):
        store.save("cpu", [1, 2])  # type: ignore[arg-type]


# --- leftovers of a killed writer -----------------------------------------------------


def test_opening_removes_leftover_temporary_files_only(tmp_path: Path) -> None:
    leftovers = {".cpu.0123456789abcdef.tmp", ".memory.v2.fedcba9876543210.tmp"}
    unrelated = {"README", ".cpu.tmp", ".cpu.0123.tmp", "cpu.0123456789abcdef.tmp", "cpu"}
    for name in leftovers | unrelated:
        (tmp_path / name).write_bytes(b"partial")
    CheckpointStore(tmp_path)
    assert _files(tmp_path) == unrelated


def test_saving_removes_that_checkpoints_leftovers(store: CheckpointStore) -> None:
    mine = store.directory / ".cpu.0123456789abcdef.tmp"
    # "cpu.v2" is another checkpoint whose temporary name starts the same way.
    other = store.directory / ".cpu.v2.0123456789abcdef.tmp"
    for path in (mine, other):
        path.write_bytes(b"partial")
    store.save("cpu", _GOOD)
    assert _files(store.directory) == {"cpu", other.name}


def test_a_temporary_file_is_never_mistaken_for_the_checkpoint(store: CheckpointStore) -> None:
    (store.directory / ".cpu.0123456789abcdef.tmp").write_bytes(_envelope({"stale": True}))
    assert isinstance(store.load("cpu"), CheckpointMissing)


def test_existing_directory_is_used_as_is(tmp_path: Path) -> None:
    # Wider than the 0700 the store creates; an operator's choice is kept.
    os.chmod(tmp_path, 0o750)  # noqa: S103
    store = CheckpointStore(tmp_path)
    store.save("cpu", _GOOD)
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o750
    assert isinstance(store.load("cpu"), CheckpointLoaded)


def test_data_that_cannot_be_encoded_names_the_checkpoint(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    with pytest.raises(ValueError, match="checkpoint 'big'"):
        store.save("big", {"n": 10**5000})
    assert isinstance(store.load("big"), CheckpointMissing)


def test_a_second_store_on_the_same_directory_never_breaks_a_writer(tmp_path: Path) -> None:
    """Opening a store cleans temporary files; the directory lock keeps it from
    deleting one that another store is about to rename into place."""
    writer = CheckpointStore(tmp_path)
    errors: list[BaseException] = []
    stop = threading.Event()

    def keep_saving() -> None:
        try:
            for i in range(300):
                writer.save("state", {"i": i, "pad": "x" * 10_000})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            stop.set()

    thread = threading.Thread(target=keep_saving)
    thread.start()
    opened = 0
    while not stop.is_set():
        CheckpointStore(tmp_path)
        opened += 1
    thread.join()
    assert errors == []
    assert opened > 0
    loaded = writer.load("state")
    assert isinstance(loaded, CheckpointLoaded)
    assert loaded.data["i"] == 299


def test_an_oversized_file_is_not_read_into_memory(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, max_bytes=1024)
    store.save("state", {"pad": "x" * 4096})
    result = store.load("state")
    assert isinstance(result, CheckpointCorrupt)
    assert "larger than 1024 bytes" in result.reason


def test_an_intact_checkpoint_the_caller_cannot_use_is_set_aside(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, clock=_frozen_clock)
    store.save("cpu", {"cpus": "0-63"})
    result = store.discard("cpu", reason="CPUs 2-63 are not online")
    assert isinstance(result, CheckpointCorrupt)
    assert result.reason == "CPUs 2-63 are not online"
    assert result.moved_to.exists()
    assert isinstance(store.load("cpu"), CheckpointMissing)
    assert isinstance(store.discard("cpu", reason="again"), CheckpointMissing)
