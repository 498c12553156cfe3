"""The applier on the real kernel: a running process gets its cpuset, memory limit
and oom_score_adj."""

from __future__ import annotations

import pytest

from agent.enforcement.applier import Applier, ContainerTarget
from katalyst.cpuset import CPUSet
from tests.support.kernel import Processes, check_kernel_ready, kernel_driver

pytestmark = pytest.mark.kernel
MiB = 1024 * 1024


def test_a_running_container_gets_its_target() -> None:
    check_kernel_ready(["cpu", "cpuset", "memory"])
    with kernel_driver() as driver:
        procs = Processes()
        try:
            driver.create("pod/app")
            proc = procs.start_in(driver, "pod/app", ["sleep", "600"])
            last = CPUSet.of([max(driver.cpuset("")[0])])
            target = ContainerTarget(
                cgroup="pod/app",
                cpus=last,
                cpu_shares=2,
                memory_limit=128 * MiB,
                memory_protection=64 * MiB,
                oom_score_adj=333,
            )
            applier = Applier(driver)
            assert "oom_score_adj" in applier.apply(target).changed
            with open(f"/proc/{proc.pid}/oom_score_adj", encoding="ascii") as f:
                assert f.read().strip() == "333"
            with open(f"/proc/{proc.pid}/status", encoding="ascii") as f:
                allowed = next(x for x in f if x.startswith("Cpus_allowed_list:"))
            assert CPUSet.parse(allowed.split(":", 1)[1]) == last
            assert driver.memory_limit("pod/app") == 128 * MiB
            assert driver.cpu_shares("pod/app") == 2
            assert applier.apply(target).changed == ()
        finally:
            procs.kill_all()
