"""Fixtures: a real :class:`PluginServer` on a unix socket and a kubelet emulator.

The server runs with a :class:`FakeClock`, so its socket watchdog only runs when
a test advances the clock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.qrm.server import PluginServer
from katalyst.clock import FakeClock
from tests.integration.fake_policy import FakePolicy
from tests.support.kubelet import KubeletEmulator

WATCHDOG_PERIOD = 5.0


@pytest.fixture
def socket_dir(tmp_path: Path) -> Path:
    # Short: a unix socket path must fit in 106 bytes (gRPC), and tmp_path is long.
    return tmp_path / "p"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def policy() -> FakePolicy:
    return FakePolicy()


@pytest.fixture
async def server(
    policy: FakePolicy, socket_dir: Path, clock: FakeClock
) -> AsyncIterator[PluginServer]:
    async with PluginServer(
        policy, socket_dir=socket_dir, clock=clock, watchdog_period=WATCHDOG_PERIOD
    ) as srv:
        yield srv


@pytest.fixture
async def kubelet(server: PluginServer, socket_dir: Path) -> AsyncIterator[KubeletEmulator]:
    async with KubeletEmulator(numa_nodes=(0, 1)) as emulator:
        await emulator.discover(socket_dir)
        yield emulator
