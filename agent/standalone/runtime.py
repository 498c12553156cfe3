"""Container processes of the standalone node, each started inside its cgroup.

A process is started as ``/bin/sh -c 'read _ && exec "$@"'``: the shell waits on
its stdin until it has been attached to the container's cgroup, then execs the
command, so not one instruction of the command runs outside the cgroup. (A
``preexec_fn`` that writes the cgroup itself would do the same, but it is unsafe
in a process that runs gRPC threads.) Processes are stopped by their own pid:
SIGTERM, a grace period, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from katalyst.cgroup import CgroupDriver, CgroupNotFound

log = logging.getLogger(__name__)
_WAIT_THEN_EXEC = ["/bin/sh", "-c", 'read _ && exec "$@"', "sh"]


def spawn_in_cgroup(
    driver: CgroupDriver,
    cgroup: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    stdout: IO[bytes] | int | None = subprocess.DEVNULL,
    stderr: IO[bytes] | int | None = subprocess.STDOUT,
    cwd: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` inside ``cgroup`` (see the module docstring for how).

    If attaching fails, the waiting shell is killed and the error raised.
    """
    proc = subprocess.Popen(
        [*_WAIT_THEN_EXEC, *argv],
        stdin=subprocess.PIPE,
        stdout=stdout,
        stderr=stderr,
        env=None if env is None else {**os.environ, **env},
        cwd=cwd,
        start_new_session=True,  # its own process group: a stop reaches its children too
    )
    try:
        driver.attach(cgroup, proc.pid)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    assert proc.stdin is not None
    proc.stdin.write(b"go\n")
    proc.stdin.close()
    return proc


def stop_processes(procs: Sequence[subprocess.Popen[bytes]], *, grace_s: float = 2.0) -> list[int]:
    """SIGTERM every process's group, wait up to ``grace_s`` for all of them together,
    then SIGKILL the rest; return their exit statuses."""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        time.sleep(0.02)
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    return [proc.wait() for proc in procs]


def stop_process(proc: subprocess.Popen[bytes], *, grace_s: float = 2.0) -> int:
    """SIGTERM the process's group, wait up to ``grace_s``, then SIGKILL; return its status."""
    return stop_processes([proc], grace_s=grace_s)[0]


def kill_cgroup_tasks(driver: CgroupDriver, cgroup: str, *, attempts: int = 50) -> int:
    """SIGKILL every task left in ``cgroup`` (a container's children that outlived
    its main process), by pid, until it is empty; return how many were killed.

    A task that forks meanwhile is caught by the next attempt; a cgroup that is
    gone is empty.
    """
    killed = 0
    for _ in range(attempts):
        try:
            pids = driver.procs(cgroup)
        except CgroupNotFound:
            return killed
        if not pids:
            return killed
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
        time.sleep(0.01)
    log.warning("cgroup %s still holds tasks after %d rounds of SIGKILL", cgroup, attempts)
    return killed


class ContainerLogs:
    """Where each container's output goes: ``<dir>/<namespace>_<pod>_<container>.log``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def open(self, *, namespace: str, pod: str, container: str) -> IO[bytes]:
        """Append to the container's log (names were validated as Kubernetes names)."""
        path = self.directory / f"{namespace}_{pod}_{container}.log"
        return path.open("ab")
