"""The environments the cgroup driver contract runs in: the fake in v1, hybrid and
v2 layouts, and the real kernel of this machine (marker ``kernel``)."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from katalyst.cgroup import CgroupDriver, open_driver
from katalyst.cgroup.fake import FakeCgroupFS
from tests.support.kernel import (
    Processes,
    check_kernel_ready,
    kernel_driver,
    loop_device,
)


@dataclass
class DriverEnv:
    """A driver with a fresh, empty base cgroup, and a way to start processes in it."""

    name: str
    driver: CgroupDriver
    spawn: Callable[[str], int]
    """Start an idle process inside the given cgroup; returns its pid."""
    block_device: Callable[[], str]
    """A block device's ``major:minor`` the test may throttle."""
    alive: Callable[[int], bool]
    """Whether the process still runs."""
    fake: FakeCgroupFS | None = None
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    @property
    def is_kernel(self) -> bool:
        return self.fake is None


def _fake_env(name: str, fs: FakeCgroupFS) -> DriverEnv:
    driver = open_driver(fs, base="kqos-test", below_own_cgroup=True)
    driver.create("")
    pids = itertools.count(1000)

    def spawn(cgroup: str) -> int:
        pid = next(pids)
        fs.add_process(pid)
        driver.attach(cgroup, pid)
        return pid

    return DriverEnv(name, driver, spawn, lambda: "7:0", lambda pid: pid in fs.processes, fake=fs)


@pytest.fixture(
    params=[
        "fake-v1",
        "fake-hybrid",
        "fake-v2",
        pytest.param("kernel", marks=pytest.mark.kernel),
    ]
)
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DriverEnv]:
    """Each contract test runs once per environment."""
    if request.param == "fake-v1":
        yield _fake_env("fake-v1", FakeCgroupFS.v1(cpus="0-3", own_cgroup={"memory": "/sandbox"}))
        return
    if request.param == "fake-hybrid":
        yield _fake_env("fake-hybrid", FakeCgroupFS.hybrid(cpus="0-3"))
        return
    if request.param == "fake-v2":
        yield _fake_env("fake-v2", FakeCgroupFS.v2(cpus="0-3"))
        return
    check_kernel_ready(["cpu", "cpuacct", "cpuset", "memory", "blkio", "pids"])
    with contextlib.ExitStack() as stack:
        driver = stack.enter_context(kernel_driver())
        # Devices are detached only after the processes using them are gone.
        device_stack = stack.enter_context(contextlib.ExitStack())
        procs = Processes()
        stack.callback(procs.kill_all)  # runs before the driver removes the cgroups

        def spawn(cgroup: str) -> int:
            return procs.start_in(driver, cgroup, ["sleep", "600"]).pid

        devices: list[str] = []

        def block_device() -> str:
            if not devices:
                devices.append(device_stack.enter_context(loop_device(tmp_path))[1])
            return devices[0]

        def alive(pid: int) -> bool:
            return psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE

        yield DriverEnv("kernel", driver, spawn, block_device, alive)
