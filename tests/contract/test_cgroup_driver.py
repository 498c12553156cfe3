"""The cgroup driver contract: the same behaviour on the fake (v1, hybrid, v2) and
on the real kernel. A difference between the fake and the kernel fails here."""

from __future__ import annotations

import pytest

from katalyst.cgroup import (
    CgroupDriver,
    CgroupInvalidValue,
    CgroupNotFound,
    CgroupUnsupported,
    IOLimit,
    shares_to_weight,
    weight_to_shares,
)
from katalyst.cpuset import CPUSet
from tests.contract.conftest import DriverEnv

MiB = 1024 * 1024


def test_create_is_idempotent_and_nested(env: DriverEnv) -> None:
    d = env.driver
    assert not d.exists("pod/app")
    assert d.create("pod/app") is True
    assert d.exists("pod") and d.exists("pod/app")
    assert d.create("pod/app") is False
    assert d.children("") == ["pod"]
    assert d.children("pod") == ["app"]


def test_remove_moves_tasks_to_the_parent_and_removes_the_subtree(env: DriverEnv) -> None:
    d = env.driver
    d.create("pod/app")
    d.create("pod/sidecar")
    pid = env.spawn("pod/app")
    assert d.procs("pod/app") == [pid]
    assert d.remove("pod") is True
    assert not d.exists("pod")
    assert env.alive(pid), "the task was moved out, not killed"
    if d.version == 1:
        assert pid in d.procs(""), "v1: the task went to the parent"
    assert d.remove("pod") is False, "removing a missing cgroup is not an error"


def test_attach_moves_a_process_between_cgroups(env: DriverEnv) -> None:
    d = env.driver
    d.create("a")
    d.create("b")
    pid = env.spawn("a")
    d.attach("b", pid)
    assert d.procs("a") == []
    assert d.procs("b") == [pid]


@pytest.mark.parametrize(
    "bad",
    [
        "../escape",
        "/abs",
        "a//b",
        "a/./b",
        "a b",
        "x/..",
        "\n",
        "a\n",
        "pod\u0661",
        "cpu.shares",
        "tasks",
    ],
)
def test_paths_that_could_escape_the_base_are_refused(env: DriverEnv, bad: str) -> None:
    with pytest.raises(CgroupInvalidValue, match="cgroup path"):
        env.driver.create(bad)
    assert env.driver.children("") == [], "nothing was created in any hierarchy"


def test_cpu_quota_read_compare_write(env: DriverEnv) -> None:
    d = env.driver
    d.create("c")
    assert d.cpu_quota("c") == (None, 100_000)
    assert d.set_cpu_quota("c", quota_us=20_000) is True
    assert d.set_cpu_quota("c", quota_us=20_000) is False, "an unchanged value is not written"
    assert d.cpu_quota("c") == (20_000, 100_000)
    assert d.set_cpu_quota("c", quota_us=50_000, period_us=200_000) is True
    assert d.cpu_quota("c") == (50_000, 200_000)
    assert d.set_cpu_quota("c", quota_us=None, period_us=200_000) is True
    assert d.cpu_quota("c") == (None, 200_000)


@pytest.mark.parametrize(
    ("quota", "period"), [(500, 100_000), (20_000, 999), (20_000, 2_000_000), (2**44, 100_000)]
)
def test_cpu_quota_out_of_range_is_refused(env: DriverEnv, quota: int, period: int) -> None:
    env.driver.create("c")
    with pytest.raises(CgroupInvalidValue):
        env.driver.set_cpu_quota("c", quota_us=quota, period_us=period)
    assert env.driver.cpu_quota("c") == (None, 100_000), "nothing was written"


def _as_read(d: CgroupDriver, shares: int) -> int:
    """What cpu_shares() reads back for ``shares`` (v2 stores a coarser weight)."""
    return shares if d.version == 1 else weight_to_shares(shares_to_weight(shares))


def test_cpu_shares_and_idle(env: DriverEnv) -> None:
    d = env.driver
    d.create("c")
    assert d.set_cpu_shares("c", 2048) is True
    assert d.set_cpu_shares("c", 2048) is False
    assert d.cpu_shares("c") == _as_read(d, 2048)
    with pytest.raises(CgroupInvalidValue):
        d.set_cpu_shares("c", 1)
    assert d.set_cpu_idle("c", True) is True
    assert d.set_cpu_idle("c", True) is False
    # While idle the kernel gives the group the idle weight (shares 3, weight 1)...
    assert d.cpu_shares("c") == (3 if d.version == 1 else weight_to_shares(1))
    # ...and refuses a weight (EINVAL): clear idle first.
    with pytest.raises(CgroupInvalidValue):
        d.set_cpu_shares("c", 512)
    assert d.set_cpu_idle("c", False) is True
    # Clearing idle resets the weight to the default, not to what was set before.
    assert d.cpu_shares("c") == (1024 if d.version == 1 else weight_to_shares(100))
    assert d.set_cpu_shares("c", 512) is True


def test_cpu_burst_needs_a_quota_at_least_as_large(env: DriverEnv) -> None:
    d = env.driver
    d.create("c")
    d.set_cpu_quota("c", quota_us=20_000)
    assert d.set_cpu_burst("c", 10_000) is True
    assert d.set_cpu_burst("c", 10_000) is False
    with pytest.raises(CgroupInvalidValue):
        d.set_cpu_burst("c", 30_000)
    with pytest.raises(CgroupInvalidValue):
        d.set_cpu_burst("c", 2**44)
    # Lowering the quota below the burst lowers the burst with it.
    assert d.set_cpu_quota("c", quota_us=5_000) is True
    assert d.cpu_quota("c") == (5_000, 100_000)


def test_cpu_quota_changes_never_pass_through_an_invalid_state(env: DriverEnv) -> None:
    """v1 refuses a child whose quota/period exceeds its parent's, also for the
    state between the period and the quota write; the driver orders the writes."""
    d = env.driver
    d.create("parent/child")
    d.set_cpu_quota("parent", quota_us=50_000, period_us=100_000)
    assert d.set_cpu_quota("parent/child", quota_us=40_000, period_us=200_000) is True
    # Period first would pass through 40000/50000 = 0.8 > 0.5: quota goes first.
    assert d.set_cpu_quota("parent/child", quota_us=25_000, period_us=50_000) is True
    assert d.cpu_quota("parent/child") == (25_000, 50_000)
    # Quota first would pass through 50000/50000 = 1.0: period goes first.
    assert d.set_cpu_quota("parent/child", quota_us=50_000, period_us=100_000) is True
    assert d.set_cpu_quota("parent/child", quota_us=None, period_us=20_000) is True
    if d.version == 1:
        with pytest.raises(CgroupInvalidValue):
            d.set_cpu_quota("parent/child", quota_us=60_000, period_us=100_000)
    else:  # v2 has no such rule: the child is capped by the parent's cpu.max anyway
        assert d.set_cpu_quota("parent/child", quota_us=60_000, period_us=100_000) is True


def test_cpuset_pinning_within_the_parent(env: DriverEnv) -> None:
    d = env.driver
    d.create("c")
    all_cpus, mems = d.cpuset("")
    assert len(all_cpus) >= 1 and len(mems) >= 1
    assert d.cpuset("c") == (all_cpus, mems), "a new cgroup inherits its parent's set"
    first = CPUSet.of([min(all_cpus)])
    assert d.set_cpuset("c", cpus=first) is True
    assert d.set_cpuset("c", cpus=first) is False
    assert d.cpuset("c")[0] == first
    pid = env.spawn("c")
    assert d.procs("c") == [pid]
    with pytest.raises(CgroupInvalidValue):
        d.set_cpuset("c", cpus=CPUSet.of([4095]))  # a CPU the machine does not have
    with pytest.raises(CgroupInvalidValue):
        d.set_cpuset("c", cpus=CPUSet.of([]))


def test_cpus_outside_the_parents_set(env: DriverEnv) -> None:
    """v1 refuses them (EACCES, reported as an invalid value); v2 accepts them and
    makes the effective set what the parent allows."""
    d = env.driver
    all_cpus, _ = d.cpuset("")
    if len(all_cpus) < 2:
        pytest.skip("needs two CPUs")
    first, last = CPUSet.of([min(all_cpus)]), CPUSet.of([max(all_cpus)])
    d.create("p/c")
    d.set_cpuset("p/c", cpus=first)
    d.set_cpuset("p", cpus=first)
    if d.version == 1:
        with pytest.raises(CgroupInvalidValue, match="not within the parent"):
            d.set_cpuset("p/c", cpus=last)
        assert d.cpuset("p/c")[0] == first
    else:
        d.set_cpuset("p/c", cpus=first.union(last))
        assert d.cpuset("p/c")[0] == first


def test_a_raw_cpuset_cgroup_refuses_tasks_on_v1_only(env: DriverEnv) -> None:
    """cgroup v1 leaves a new cpuset empty and refuses tasks in it (ENOSPC), which
    is why the driver's ``create`` fills it from the parent; a v2 cpuset with an
    empty ``cpuset.cpus`` uses its parent's effective set and accepts tasks."""
    d = env.driver
    d.create("c")
    raw = d.path("cpuset", "c/raw")
    d.fs.mkdir(raw)
    pid = env.spawn("c")
    if d.version == 1:
        with pytest.raises(CgroupInvalidValue, match="No space left"):
            d.fs.write_text(f"{raw}/cgroup.procs", str(pid))
    else:
        d.fs.write_text(f"{raw}/cgroup.procs", str(pid))
        assert d.procs("c/raw") == [pid]
    d.remove("c/raw")


def test_memory_limit_reads_back_page_rounded(env: DriverEnv) -> None:
    d = env.driver
    d.create("m")
    assert d.memory_limit("m") is None
    assert d.set_memory_limit("m", 100 * MiB + 5) is True
    assert d.set_memory_limit("m", 100 * MiB + 5) is False, "page rounding is not a change"
    assert d.memory_limit("m") == 100 * MiB
    assert d.set_memory_limit("m", None) is True
    assert d.memory_limit("m") is None
    with pytest.raises(CgroupInvalidValue):
        d.set_memory_limit("m", -1)


def test_memory_protection_interfaces_by_version(env: DriverEnv) -> None:
    d = env.driver
    d.create("m")
    if d.version == 1:
        assert d.set_memory_soft_limit("m", 64 * MiB) is True
        assert d.set_memory_soft_limit("m", 64 * MiB) is False
        for setter in (d.set_memory_high, d.set_memory_low, d.set_memory_min):
            with pytest.raises(CgroupUnsupported, match="v2"):
                setter("m", 64 * MiB)
    else:
        assert d.set_memory_high("m", 64 * MiB) is True
        assert d.set_memory_low("m", 32 * MiB) is True
        assert d.set_memory_min("m", 16 * MiB) is True
        assert d.set_memory_min("m", 16 * MiB) is False
        with pytest.raises(CgroupUnsupported, match="v1"):
            d.set_memory_soft_limit("m", 64 * MiB)


def test_swap_allowance_survives_memory_limit_changes(env: DriverEnv) -> None:
    d = env.driver
    d.create("m")
    if env.is_kernel and not d.fs.exists(d.path("memory", "m", "memory.memsw.limit_in_bytes")):
        with pytest.raises(CgroupUnsupported, match="swap accounting"):
            d.set_swap_limit("m", 0)
        return
    d.set_memory_limit("m", 64 * MiB)
    assert d.set_swap_limit("m", 32 * MiB) is True
    assert d.set_swap_limit("m", 32 * MiB) is False
    assert d.swap_limit("m") == 32 * MiB
    for limit in (128 * MiB, 16 * MiB):  # growing, then shrinking the memory limit
        assert d.set_memory_limit("m", limit) is True
        assert d.memory_limit("m") == limit
        assert d.swap_limit("m") == 32 * MiB, "the swap allowance is kept"
    assert d.set_swap_limit("m", 0) is True
    assert d.swap_limit("m") == 0
    assert d.set_memory_limit("m", None) is True
    assert d.memory_limit("m") is None
    if d.version == 1:
        # v1 limits memory+swap together: no memory limit means no swap limit.
        assert d.swap_limit("m") is None
        with pytest.raises(CgroupInvalidValue, match="needs a memory limit"):
            d.set_swap_limit("m", 0)
    else:
        assert d.swap_limit("m") == 0
        assert d.set_swap_limit("m", None) is True
        assert d.swap_limit("m") is None


def test_io_throttle_per_device(env: DriverEnv) -> None:
    d = env.driver
    dev = env.block_device()
    d.create("io")
    limit = IOLimit(write_bps=2 * MiB, read_iops=500)
    assert d.set_io_limit("io", dev, limit) is True
    assert d.set_io_limit("io", dev, limit) is False
    assert d.io_limit("io", dev) == limit
    assert d.io_limited_devices("io") == [dev]
    assert d.set_io_limit("io", dev, IOLimit()) is True
    assert d.io_limit("io", dev) == IOLimit()
    assert d.io_limited_devices("io") == []
    with pytest.raises(CgroupInvalidValue):
        d.set_io_limit("io", "sda", limit)
    with pytest.raises(CgroupInvalidValue, match="does not exist"):
        d.set_io_limit("io", "7:999999", limit)
    # blk-throttle keeps iops in 32 bits: more would be silently cut, so it is refused.
    with pytest.raises(CgroupInvalidValue):
        d.set_io_limit("io", dev, IOLimit(write_iops=2**32))
    assert d.io_limit("io", dev) == IOLimit()


def test_pids_limit(env: DriverEnv) -> None:
    d = env.driver
    d.create("p")
    assert d.set_pids_max("p", 64) is True
    assert d.set_pids_max("p", 64) is False
    assert d.set_pids_max("p", None) is True
    with pytest.raises(CgroupInvalidValue):
        d.set_pids_max("p", 4 * 1024 * 1024 + 1)


def test_usage_readers(env: DriverEnv) -> None:
    d = env.driver
    d.create("u")
    env.spawn("u")
    assert d.cpu_usage_ns("u") >= 0
    stat = d.cpu_stat("u")
    assert stat.nr_throttled >= 0 and stat.throttled_ns >= 0
    assert d.memory_usage("u") >= 0
    assert isinstance(d.memory_stat("u"), dict)
    assert isinstance(d.io_stat("u"), dict)
    psi = d.pressure("u", "cpu")
    expected_scope = "node" if d.layout.unified is None else "cgroup"
    assert psi.scope == expected_scope
    assert 0.0 <= psi.some.avg10 <= 100.0
    assert d.node_pressure("memory").scope == "node"


def test_a_vanished_cgroup_is_cgroup_not_found(env: DriverEnv) -> None:
    """Pod churn, never "unsupported" and never node-wide numbers."""
    d = env.driver
    d.create("gone")
    d.create("alive")
    pid = env.spawn("alive")
    assert d.remove("gone") is True
    with pytest.raises(CgroupNotFound):
        d.set_cpu_shares("gone", 512)
    with pytest.raises(CgroupNotFound):
        d.set_cpu_idle("gone", True)
    with pytest.raises(CgroupNotFound):
        d.set_cpu_burst("gone", 1000)
    with pytest.raises(CgroupNotFound):
        d.memory_usage("gone")
    with pytest.raises(CgroupNotFound):
        d.pressure("gone", "cpu")
    with pytest.raises(CgroupNotFound):
        d.attach("gone", pid)


def test_change_hook_sees_only_changes(env: DriverEnv) -> None:
    seen: list[tuple[str, str]] = []
    d = env.driver
    d.create("h")
    d._on_change = lambda path, value: seen.append((path, value))
    d.set_cpu_shares("h", 300)
    d.set_cpu_shares("h", 300)
    assert len(seen) == 1
    assert seen[0][0].endswith(("cpu.shares", "cpu.weight"))
