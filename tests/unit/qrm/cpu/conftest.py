"""Machines shared by the CPU policy tests (read once per session: they never change)."""

from __future__ import annotations

import pytest

from katalyst.topology import CPUTopology
from tests.unit.qrm.cpu.machines import flat_two_cpus, two_numa


@pytest.fixture(scope="session")
def numa2(tmp_path_factory: pytest.TempPathFactory) -> CPUTopology:
    """Two NUMA nodes x 4 cores x 2 threads (CPUs 0-7 and 8-15)."""
    return two_numa(tmp_path_factory.mktemp("numa2"))


@pytest.fixture(scope="session")
def flat2(tmp_path_factory: pytest.TempPathFactory) -> CPUTopology:
    """Two CPUs, one node, no SMT."""
    return flat_two_cpus(tmp_path_factory.mktemp("flat2"))
