"""Socket hygiene and the watchdog: modes, stale and live sockets, kubelet restarts."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from agent.qrm.server import PluginServer, PluginServerError, SocketInUseError
from katalyst.clock import FakeClock
from tests.integration.conftest import WATCHDOG_PERIOD
from tests.integration.fake_policy import FakePolicy
from tests.support.kubelet import Container, KubeletEmulator, Pod
from tests.support.wait import eventually

UID = "0e8f5d2c-4b7a-4f0e-8c1d-3a9b6e2f7c41"
POD = Pod(uid=UID, name="web-0", containers=(Container("app", {"cpu": 1.0}),))


def _stale_socket(path: Path) -> None:
    """A socket file nobody listens on: what a killed process leaves behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))


@contextmanager
def _live_socket(path: Path) -> Iterator[None]:
    """Another process's listening socket at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))
        sock.listen(1)
        yield


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _inode(path: Path) -> int:
    return os.lstat(path).st_ino


async def test_socket_is_0600_and_a_created_directory_0700(tmp_path: Path) -> None:
    socket_dir = tmp_path / "a" / "b"
    async with PluginServer(FakePolicy(), socket_dir=socket_dir) as server:
        assert stat.S_ISSOCK(os.lstat(server.socket_path).st_mode)
        assert _mode(server.socket_path) == 0o600
        assert _mode(socket_dir) == 0o700
        # Only the public name is left in the directory (no temporary socket).
        assert os.listdir(socket_dir) == ["qrm_fake_cpu.sock"]


async def test_an_existing_directory_keeps_its_mode(tmp_path: Path) -> None:
    socket_dir = tmp_path / "p"
    socket_dir.mkdir()
    socket_dir.chmod(0o750)
    async with PluginServer(FakePolicy(), socket_dir=socket_dir):
        assert _mode(socket_dir) == 0o750


async def test_a_stale_socket_is_replaced_at_start(socket_dir: Path) -> None:
    path = socket_dir / "qrm_fake_cpu.sock"
    _stale_socket(path)
    stale = _inode(path)
    async with (
        PluginServer(FakePolicy(), socket_dir=socket_dir),
        KubeletEmulator() as kubelet,
    ):
        assert _inode(path) != stale
        await kubelet.discover(socket_dir)
        await kubelet.admit(POD)


async def test_a_stale_temporary_socket_is_cleaned_up(socket_dir: Path) -> None:
    leftover = socket_dir / ".qrm_fake_cpu.0badf00d.tmp"
    _stale_socket(leftover)
    async with PluginServer(FakePolicy(), socket_dir=socket_dir):
        assert not leftover.exists()


async def test_refuses_to_start_over_a_live_socket(
    server: PluginServer, kubelet: KubeletEmulator, socket_dir: Path
) -> None:
    before = _inode(server.socket_path)
    intruder = PluginServer(FakePolicy(), socket_dir=socket_dir)
    with pytest.raises(SocketInUseError, match="refusing to take over a live socket"):
        await intruder.start()
    assert not intruder.serving
    await intruder.stop(0)  # a no-op: it must not remove the live socket
    assert _inode(server.socket_path) == before
    assert os.listdir(socket_dir) == ["qrm_fake_cpu.sock"]
    await kubelet.admit(POD)  # the first server still serves


async def test_refuses_a_live_socket_of_another_program(socket_dir: Path) -> None:
    path = socket_dir / "qrm_fake_cpu.sock"
    with _live_socket(path):
        before = _inode(path)
        with pytest.raises(SocketInUseError):
            await PluginServer(FakePolicy(), socket_dir=socket_dir).start()
        assert _inode(path) == before


async def test_refuses_to_remove_a_file_that_is_not_a_socket(socket_dir: Path) -> None:
    socket_dir.mkdir()
    path = socket_dir / "qrm_fake_cpu.sock"
    path.write_text("not mine")
    with pytest.raises(PluginServerError, match="is not a socket"):
        await PluginServer(FakePolicy(), socket_dir=socket_dir).start()
    assert path.read_text() == "not mine"


async def test_a_socket_path_too_long_for_af_unix_is_refused(tmp_path: Path) -> None:
    socket_dir = tmp_path / ("d" * 100)
    with pytest.raises(PluginServerError, match="longer than the 106 bytes"):
        await PluginServer(FakePolicy(), socket_dir=socket_dir).start()


@pytest.mark.parametrize("name", ["../evil", ".hidden", "a/b", ""])
def test_a_plugin_name_that_is_not_a_plain_file_name_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="plain file name"):
        PluginServer(FakePolicy(plugin_name=name), socket_dir=tmp_path)


async def test_stop_removes_the_socket(socket_dir: Path) -> None:
    server = PluginServer(FakePolicy(), socket_dir=socket_dir)
    await server.start()
    assert server.socket_path.exists()
    await server.stop(grace=0)
    assert not server.socket_path.exists()
    assert not server.serving
    await server.stop(grace=0)  # idempotent


async def test_run_until_serves_until_the_event_and_cleans_up(socket_dir: Path) -> None:
    server = PluginServer(FakePolicy(), socket_dir=socket_dir)
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        group.create_task(server.run_until(stop, grace=0))
        await eventually(lambda: server.serving)
        async with KubeletEmulator() as kubelet:
            await kubelet.discover(socket_dir)
            await kubelet.admit(POD)
        stop.set()
    assert not server.socket_path.exists()


async def test_run_until_cleans_up_when_cancelled(socket_dir: Path) -> None:
    server = PluginServer(FakePolicy(), socket_dir=socket_dir)
    task = asyncio.create_task(server.run_until(asyncio.Event(), grace=0))
    await eventually(lambda: server.serving)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not server.serving
    assert not server.socket_path.exists()


async def test_check_socket_does_nothing_while_the_socket_is_in_place(
    server: PluginServer,
) -> None:
    before = _inode(server.socket_path)
    assert not await server.check_socket()
    assert _inode(server.socket_path) == before
    assert server.rebinds == 0


async def test_the_watchdog_recreates_a_deleted_socket(
    policy: FakePolicy,
    server: PluginServer,
    kubelet: KubeletEmulator,
    socket_dir: Path,
    clock: FakeClock,
) -> None:
    await kubelet.admit(POD)
    os.unlink(server.socket_path)  # e.g. a restarting kubelet cleaning its directory

    await clock.advance(WATCHDOG_PERIOD)
    await eventually(lambda: server.rebinds == 1)
    assert stat.S_ISSOCK(os.lstat(server.socket_path).st_mode)
    assert _mode(server.socket_path) == 0o600
    assert not server.registered  # until the kubelet registers the new socket

    # The restarted kubelet's plugin watcher finds it; the policy's state survived.
    async with KubeletEmulator() as restarted:
        await restarted.discover(socket_dir)
        assert server.registered
        assert set((await restarted.reconcile())["cpu"]) == {UID}
        await restarted.remove(UID)
    assert policy.removed == [UID]

    # Nothing to do on the next period.
    await clock.advance(WATCHDOG_PERIOD)
    assert server.rebinds == 1


async def test_the_watchdog_recreates_a_wiped_directory(
    server: PluginServer, socket_dir: Path, clock: FakeClock
) -> None:
    shutil.rmtree(socket_dir)
    await clock.advance(WATCHDOG_PERIOD)
    await eventually(lambda: server.rebinds == 1)
    async with KubeletEmulator() as kubelet:
        await kubelet.discover(socket_dir)
        await kubelet.admit(POD)


async def test_the_watchdog_replaces_a_dead_socket_but_never_a_live_one(
    server: PluginServer, kubelet: KubeletEmulator
) -> None:
    path = server.socket_path
    os.unlink(path)
    with _live_socket(path):
        intruder = _inode(path)
        with pytest.raises(SocketInUseError):
            await server.check_socket()
        assert _inode(path) == intruder
    # The intruder exited and left its socket file behind: now it is ours again.
    assert await server.check_socket()
    assert _inode(path) != intruder
    await kubelet.admit(POD)  # the kubelet's channel reconnects by path


async def test_the_watchdog_keeps_going_after_a_failed_rebind(
    server: PluginServer, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    path = server.socket_path
    os.unlink(path)
    with _live_socket(path):
        await clock.advance(WATCHDOG_PERIOD)
        await eventually(lambda: any(r.exc_info for r in caplog.records))
        assert server.rebinds == 0
    await clock.advance(WATCHDOG_PERIOD)
    await eventually(lambda: server.rebinds == 1)
