"""Helpers for tests that touch the real kernel.

Everything is created below the test process's own cgroup in each hierarchy (as
``/proc/self/cgroup`` lists it), under a parent named ``kqos-test-<pid>-<n>``, and
removed afterwards even when the test fails. Processes are stopped by their own
pid, never by name.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from agent.standalone.runtime import spawn_in_cgroup
from katalyst.cgroup import (
    CgroupDriver,
    CgroupError,
    CgroupMode,
    HostCgroupFS,
    detect_layout,
    open_driver,
)

log = logging.getLogger(__name__)
STRICT_ENV = "KATALYST_STRICT_TESTS"
_counter = itertools.count()


def kernel_unavailable(reason: str) -> None:
    """Skip with ``reason``, or fail when CI demands the kernel tests run."""
    if os.environ.get(STRICT_ENV) == "1":
        pytest.fail(f"kernel tests are required here ({STRICT_ENV}=1) but: {reason}")
    pytest.skip(reason)


def check_kernel_ready(controllers: Sequence[str]) -> None:
    """Skip (or fail under CI) unless we are root on a host with these controllers."""
    if os.geteuid() != 0:
        kernel_unavailable("kernel cgroup tests need root")
    try:
        layout = detect_layout(HostCgroupFS())
    except CgroupError as exc:
        kernel_unavailable(f"no cgroup filesystem: {exc}")
        return
    missing = [c for c in controllers if not layout.has(c)]
    if missing:
        kernel_unavailable(f"kernel lacks cgroup controllers {missing} ({layout.mode} layout)")
    if layout.mode is CgroupMode.V2:
        # Our own v2 cgroup holds this process, so the no-internal-process rule
        # forbids delegating controllers below it; the tests never write above it.
        kernel_unavailable(
            "on a cgroup v2 host the kernel tests need pytest started in a delegated "
            "subtree (e.g. systemd-run --scope -p Delegate=yes); the fake covers v2"
        )


@contextlib.contextmanager
def kernel_driver() -> Iterator[CgroupDriver]:
    """A driver whose base is a fresh test parent below our own cgroups; removed on exit."""
    base = f"kqos-test-{os.getpid()}-{next(_counter)}"
    driver = open_driver(HostCgroupFS(), base=base, below_own_cgroup=True)
    failed = False
    try:
        driver.create("")
        yield driver
    except BaseException:
        failed = True
        raise
    finally:
        try:
            driver.remove("")
        except CgroupError:
            # Never hide the test's own failure behind a cleanup error.
            if not failed:
                raise
            log.exception("cleanup of %s failed after a test failure", base)


class Processes:
    """Processes a test started; every one is killed by pid at the end."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []

    def start_in(
        self, driver: CgroupDriver, cgroup: str, argv: Sequence[str]
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` already inside ``cgroup`` (the agent's own spawning)."""
        proc = spawn_in_cgroup(driver, cgroup, argv, stderr=subprocess.PIPE)
        self._procs.append(proc)
        return proc

    def kill_all(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait()
            if proc.stderr is not None:
                proc.stderr.close()


BUSY_LOOP = ["/bin/sh", "-c", "while :; do :; done"]


@contextlib.contextmanager
def loop_device(directory: Path, size_mib: int = 64) -> Iterator[tuple[str, str]]:
    """A loop device over a sparse file in ``directory``: yields (/dev/loopN, "major:minor")."""
    if shutil.which("losetup") is None:
        kernel_unavailable("losetup (util-linux) is not installed")
    backing = directory / "loop.img"
    with backing.open("wb") as f:
        f.truncate(size_mib * 1024 * 1024)
    try:
        dev = subprocess.run(
            ["losetup", "--find", "--show", str(backing)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except subprocess.CalledProcessError as exc:
        kernel_unavailable(f"cannot create a loop device: {exc.stderr.strip()}")
        raise
    try:
        rdev = os.stat(dev).st_rdev
        yield dev, f"{os.major(rdev)}:{os.minor(rdev)}"
    finally:
        subprocess.run(["losetup", "--detach", dev], check=False)
