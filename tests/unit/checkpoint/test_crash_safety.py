"""A checkpoint survives its writer being killed at any instant, and truncation is caught.

The kill test runs a real writer process and SIGKILLs it at random instants;
after every kill a fresh store (a restarted agent) must load a checkpoint the
writer had completely written. SIGKILL cannot be caught, so this exercises the
atomic-replace protocol itself, not any cleanup code.
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import katalyst
from katalyst.checkpoint import (
    CheckpointCorrupt,
    CheckpointLoaded,
    CheckpointMissing,
    CheckpointStore,
    JSONValue,
)

_NAME = "state"
# The payload is a 200 KB string: large enough that writing and fsyncing it
# is a sizeable part of each save, so many kills land while the temporary
# file is being written or renamed (about a third of them here), and small
# enough that a save takes a few milliseconds, so most rounds complete some.
_REPEATS = 25_000
# Rounds run until enough kills landed mid-write and enough rounds loaded a
# checkpoint (so the test cannot pass without exercising the protocol), up to
# a cap that fails the test instead of looping forever on a strange machine.
_MIN_MID_WRITE_KILLS = 5
_MIN_LOADED_ROUNDS = 10
_MAX_ROUNDS = 150

# The writer: saves counter, counter+1, ... and after each completed save
# prints the counter, so the parent knows what was certainly on disk. It stops
# by itself after a while in case the parent dies before killing it.
_WRITER = f"""
import sys, time
from pathlib import Path
from katalyst.checkpoint import CheckpointStore

store = CheckpointStore(Path(sys.argv[1]))
start = int(sys.argv[2])
deadline = time.monotonic() + 30
print("ready", flush=True)
for counter in range(start, start + 100_000):
    if time.monotonic() > deadline:
        break
    blob = f"{{counter:08d}}" * {_REPEATS}
    store.save({_NAME!r}, {{"counter": counter, "blob": blob}})
    print(counter, flush=True)
"""


def _counter_of(data: dict[str, JSONValue], *, context: str) -> int:
    """The counter in a loaded payload, after checking the payload matches it."""
    counter = data["counter"]
    assert isinstance(counter, int), context
    # The whole payload must come from one save: the blob repeats this same
    # counter, in full.
    assert data["blob"] == f"{counter:08d}" * _REPEATS, context
    return counter


def _completed_saves(stdout: bytes) -> list[int]:
    # Only whole lines: the kill may cut the last one short.
    return [int(line) for line in stdout.split(b"\n")[1:-1] if line.strip()]


def test_a_killed_writer_leaves_a_complete_checkpoint(tmp_path: Path) -> None:
    directory = tmp_path / "checkpoints"
    repo_root = Path(katalyst.__file__).resolve().parents[1]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(repo_root), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    # Not for security: a seed reported in every failure message, so a failing
    # schedule of kill delays can be replayed.
    seed = secrets.randbits(32)
    rng = random.Random(seed)  # noqa: S311
    loaded_counter = 0  # 0: nothing has ever been loaded
    ever_saved = False
    mid_write_kills = 0
    loaded_rounds = 0

    for round_ in range(_MAX_ROUNDS):
        if mid_write_kills >= _MIN_MID_WRITE_KILLS and loaded_rounds >= _MIN_LOADED_ROUNDS:
            break
        context = f"seed {seed}, round {round_}"
        writer = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(directory), str(loaded_counter + 1)],
            stdout=subprocess.PIPE,
            env=env,
        )
        try:
            assert writer.stdout is not None
            assert writer.stdout.readline() == b"ready\n", context
            time.sleep(rng.uniform(0.001, 0.050))
            writer.send_signal(signal.SIGKILL)
            stdout, _ = writer.communicate(timeout=30)
        finally:
            if writer.poll() is None:
                writer.kill()
                writer.wait()
        assert writer.returncode == -signal.SIGKILL, context
        saved = _completed_saves(b"ready\n" + stdout)
        ever_saved = ever_saved or bool(saved)
        # A temporary file left behind means the kill landed inside a save.
        if any(p.name.endswith(".tmp") for p in directory.iterdir()):
            mid_write_kills += 1

        result = CheckpointStore(directory).load(_NAME)

        assert not isinstance(result, CheckpointCorrupt), f"{context}: {result}"
        if isinstance(result, CheckpointMissing):
            # Only possible while the very first save has not yet completed.
            assert not ever_saved, f"{context}: missing after a completed save"
            assert loaded_counter == 0, context
            continue
        assert isinstance(result, CheckpointLoaded), context
        loaded_rounds += 1
        counter = _counter_of(result.data, context=context)
        # What the file holds is the last save reported complete, or the one
        # after it, which may have landed just before the kill. Never older:
        # a completed save is never lost, nor a checkpoint rolled back.
        last_done = saved[-1] if saved else loaded_counter
        assert counter in (last_done, last_done + 1), f"{context}: {counter=}, {saved[-3:]=}"
        assert counter >= max(loaded_counter, 1), context
        loaded_counter = counter
        # Opening the store removed any half-written temporary file, and
        # nothing was ever set aside as corrupt.
        assert sorted(p.name for p in directory.iterdir()) == [".lock", _NAME], context

    assert ever_saved, f"seed {seed}: no save ever completed"
    assert mid_write_kills >= _MIN_MID_WRITE_KILLS, (
        f"seed {seed}: only {mid_write_kills} kills landed inside a save"
    )
    assert loaded_rounds >= _MIN_LOADED_ROUNDS, f"seed {seed}: only {loaded_rounds} loads"


def test_truncation_at_any_offset_is_caught(tmp_path: Path) -> None:
    ticks = iter(range(1_000))
    store = CheckpointStore(
        tmp_path, clock=lambda: datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=next(ticks))
    )
    data: dict[str, JSONValue] = {
        "pods": {f"uid-{i}": {"cpuset": f"{i}-{i + 1}", "quantity": i * 0.5} for i in range(50)},
        "text": "naïve \u2603",
    }
    store.save(_NAME, data)
    path = store.path(_NAME)
    full = path.read_bytes()
    # The file ends with a newline; cutting only that leaves valid JSON. Every
    # shorter prefix of the object must be rejected.
    body = len(full.rstrip(b"\n"))
    rng = random.Random(1)  # noqa: S311 - reproducible offsets, not security
    offsets = sorted({0, 1, body - 1, *rng.sample(range(body), 40)})
    set_aside: list[Path] = []

    for offset in offsets:
        os.truncate(path, offset)
        result = store.load(_NAME)
        assert isinstance(result, CheckpointCorrupt), f"offset {offset}: {result}"
        assert not path.exists()
        assert result.moved_to.read_bytes() == full[:offset]
        set_aside.append(result.moved_to)

        store.save(_NAME, data)
        again = store.load(_NAME)
        assert isinstance(again, CheckpointLoaded), f"offset {offset}: {again}"
        assert again.data == data

    # Every bad file was kept, none overwritten.
    assert len(set(set_aside)) == len(offsets)
    assert all(p.exists() for p in set_aside)
