"""Building the isolation pieces from the settings, and ``--cleanup``.

Nothing here touches the host: NICs come from sysfs trees in a temporary
directory, cgroups from :class:`katalyst.cgroup.fake.FakeCgroupFS` or the
temp-directory tree of :mod:`tests.support.isolation_fakes`, and the only ``nft``
on ``PATH`` is that module's stand-in (or none at all). Network loops are never
stepped with their real shapers: those are replaced by its stand-ins.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from agent.isolation.io_loop import IOLoop
from agent.isolation.netcls import NetClsClassifier, NetClsError
from agent.isolation.network import (
    MINOR,
    RECLAIMED,
    SHARED,
    SYSTEM,
    NetworkConfig,
    NetworkLoop,
    ShapedInterface,
)
from agent.isolation.nft import CgroupV2Rule, ClassifyRule, NftTable
from agent.isolation.setup import (
    IsolationSetupError,
    SupportedCollector,
    build_network_policy,
    cgroupv2_match,
    cleanup,
    isolation_loops,
    network_nics,
)
from agent.isolation.tc import ShaperError, classid
from agent.metaserver.metrics import ContainerRef
from agent.observability import Heartbeat
from agent.qrm.network import NIC, NetworkPolicy
from katalyst.cgroup import CgroupDriver, IOLimit, open_driver
from katalyst.cgroup.fake import FakeCgroupFS
from katalyst.checkpoint import CheckpointStore
from katalyst.clock import FakeClock
from katalyst.config.io import IOConfig
from tests.support.isolation_fakes import RULES, FakeShaper, FakeTable, NftBinary, make_host
from tests.unit.qrm.network.machines import request, write_nic

# ---- the NIC inventory ------------------------------------------------------------------


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    """eth0 and eth1 (PCI, 10 and 25 Gbit/s), a veth of unknown speed, and lo."""
    root = tmp_path / "sys"
    (root / "class" / "net").mkdir(parents=True)
    write_nic(root, "eth0", speed="10000", numa="0", pci="0000:3b:00.0")
    write_nic(root, "eth1", speed="25000", numa="1", pci="0000:af:00.0")
    write_nic(root, "veth0", speed="-1")
    write_nic(root, "lo")
    return root


def config(*interfaces: dict[str, object], **settings: object) -> NetworkConfig:
    return NetworkConfig.from_mapping({"interfaces": list(interfaces), **settings})


def test_without_interfaces_every_physical_nic(sysfs: Path) -> None:
    assert network_nics(NetworkConfig(), str(sysfs)) == [
        NIC("eth0", 10000, 0, pci_address="0000:3b:00.0"),
        NIC("eth1", 25000, 1, pci_address="0000:af:00.0"),
    ]


def test_a_host_interface_by_name_with_a_speed(sysfs: Path) -> None:
    nics = network_nics(
        config({"name": "veth0", "speed_mbit": 500}, {"name": "eth1", "speed_mbit": 9500}),
        str(sysfs),
    )
    assert nics == [
        NIC("veth0", 500, None),
        NIC("eth1", 9500, 1, pci_address="0000:af:00.0"),  # the setting wins
    ]


def test_a_host_interface_by_name_with_its_sysfs_speed(sysfs: Path) -> None:
    nics = network_nics(config({"name": "eth1"}), str(sysfs))
    assert nics == [NIC("eth1", 25000, 1, pci_address="0000:af:00.0")]


def test_an_interface_in_a_namespace_needs_a_speed(sysfs: Path) -> None:
    with pytest.raises(IsolationSetupError) as info:
        network_nics(config({"name": "eth0"}, {"name": "veth1", "netns": "pods"}), str(sysfs))
    message = str(info.value)
    assert message.startswith("network.interfaces: veth1 (netns pods) needs speed_mbit")


def test_an_interface_in_a_namespace_with_a_speed(sysfs: Path) -> None:
    nics = network_nics(
        config({"name": "veth1", "netns": "pods", "speed_mbit": 1000}, {"name": "eth0"}),
        str(sysfs),
    )
    assert nics == [
        NIC("eth0", 10000, 0, pci_address="0000:3b:00.0"),
        NIC("veth1", 1000, None, netns="pods"),  # not in this sysfs: from the settings
    ]


def test_only_namespaced_interfaces_do_not_read_the_hosts_nics(tmp_path: Path) -> None:
    nics = network_nics(
        config({"name": "veth1", "netns": "pods", "speed_mbit": 1000}), str(tmp_path / "none")
    )
    assert nics == [NIC("veth1", 1000, None, netns="pods")]


def test_a_missing_interface_is_named(sysfs: Path) -> None:
    with pytest.raises(IsolationSetupError, match=r"network\.interfaces: .*'eth9'.* not found"):
        network_nics(config({"name": "eth0"}, {"name": "eth9"}), str(sysfs))


def test_a_host_interface_of_unknown_speed_is_left_out(
    sysfs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert network_nics(config({"name": "veth0"}), str(sysfs)) == []
    assert "veth0 left out: speed unknown; set network.interfaces[].speed_mbit" in caplog.text


def test_the_network_policy_fresh_then_restored(sysfs: Path, tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "state")
    policy, nics = build_network_policy(
        config({"name": "eth0"}, reserved_ratio=0.1), store=store, sysfs=str(sysfs)
    )
    assert [n.name for n in nics] == ["eth0"]
    assert policy.reserved_ratio == 0.1
    assert policy.allocatable_mbit("eth0") == 9000.0
    policy.allocate(request("web", 300))
    store.save("qrm_network_plugin", policy.to_state())
    again, _ = build_network_policy(
        config({"name": "eth0"}, reserved_ratio=0.1), store=store, sysfs=str(sysfs)
    )
    assert again.class_rates() == policy.class_rates()
    assert again.class_rates()["eth0"][SHARED] == 300.0


# ---- the supported family ---------------------------------------------------------------


def supported(collector: SupportedCollector) -> dict[tuple[str, str], float]:
    (family,) = list(collector.collect())
    assert family.name == "katalyst_isolation_supported"
    return {(s.labels["resource"], s.labels["feature"]): s.value for s in family.samples}


@pytest.fixture
def fake_fs() -> FakeCgroupFS:
    return FakeCgroupFS.v1()


@pytest.fixture
def driver(fake_fs: FakeCgroupFS) -> CgroupDriver:
    return open_driver(fake_fs, base="kubepods")


def stand_in_network_loop(loop: NetworkLoop) -> tuple[FakeShaper, FakeTable]:
    (state,) = loop.interfaces
    shaper, table = FakeShaper(state.iface.name), FakeTable()
    state.shaper, state.nft = shaper, table
    return shaper, table


def make_io_loop(driver: CgroupDriver, sysfs: Path) -> IOLoop:
    return IOLoop(
        IOConfig(),
        driver=driver,
        containers=list,
        reclaimed_cgroup=lambda: None,
        clock=FakeClock(),
        sysfs=str(sysfs),
    )


def test_supported_of_nothing() -> None:
    assert supported(SupportedCollector(network=None, io=None)) == {}


def step_loop(classifier: Callable[[], NetClsClassifier] | None) -> tuple[NetworkLoop, FakeShaper]:
    loop = NetworkLoop(
        NetworkConfig(),
        interfaces=[ShapedInterface("eth0", 1000.0)],
        guaranteed=dict,
        containers=list,
        classifier=classifier,
        clock=FakeClock(),
    )
    shaper, _ = stand_in_network_loop(loop)
    return loop, shaper


def test_supported_network_features(tmp_path: Path) -> None:
    host = make_host(tmp_path)
    loop, shaper = step_loop(host.classifier)
    net = SupportedCollector(network=loop, io=None)
    assert supported(net) == {}  # no pass yet: not known
    loop.step()
    assert supported(net) == {("network", "shaping"): 1.0, ("network", "classification"): 1.0}
    shaper.error = ShaperError("eth0: no such interface")
    loop.step()
    assert supported(net) == {("network", "shaping"): 0.0, ("network", "classification"): 1.0}


def test_supported_classification_failure() -> None:
    def unmounted() -> NetClsClassifier:
        raise NetClsError("net_cls is not mounted and network.mount_net_cls is false")

    loop, _ = step_loop(unmounted)
    loop.step()
    assert supported(SupportedCollector(network=loop, io=None)) == {
        ("network", "shaping"): 1.0,
        ("network", "classification"): 0.0,
    }


def test_supported_without_interfaces() -> None:
    loop = NetworkLoop(
        NetworkConfig(),
        interfaces=[],
        guaranteed=dict,
        containers=list,
        classifier=None,
        clock=FakeClock(),
    )
    loop.step()
    assert supported(SupportedCollector(network=loop, io=None)) == {
        ("network", "shaping"): 0.0,
        ("network", "classification"): 1.0,
    }


def test_supported_io_features(driver: CgroupDriver, tmp_path: Path) -> None:
    io = make_io_loop(driver, tmp_path / "sys")
    collector = SupportedCollector(network=None, io=io)
    assert supported(collector) == {}  # not tried yet
    io.supported["throttle"] = True
    assert supported(collector) == {("io", "throttle"): 1.0}
    io.supported["weight"] = False
    assert supported(collector) == {("io", "throttle"): 1.0, ("io", "weight"): 0.0}


@pytest.fixture
def tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PATH holds only this folder: no host command (nft) can run."""
    folder = tmp_path / "tools"
    folder.mkdir()
    monkeypatch.setenv("PATH", str(folder))
    return folder


# ---- isolation_loops --------------------------------------------------------------------

StatusParts = dict[str, Callable[[], Mapping[str, object]]]


class Wiring:
    """What isolation_loops is given to fill in."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.heartbeats: list[Heartbeat] = []
        self.status_parts: StatusParts = {}

    def build(
        self,
        network: NetworkConfig,
        *,
        io: IOConfig | None = None,
        driver: CgroupDriver,
        nics: Sequence[NIC] = (),
        sysfs: Path,
        containers: Sequence[ContainerRef] = (),
        policy: NetworkPolicy | None = None,
    ) -> list[NetworkLoop | IOLoop]:
        return isolation_loops(
            network=network,
            io=io or IOConfig(enabled=False),
            nics=nics,
            policy=policy or NetworkPolicy(nics),
            driver=driver,
            containers=lambda: list(containers),
            reclaimed_cgroup=lambda: None,
            registry=self.registry,
            heartbeats=self.heartbeats,
            status_parts=self.status_parts,
            clock=FakeClock(),
            sysfs=str(sysfs),
        )

    def scrape(self) -> str:
        return generate_latest(self.registry).decode()


def network_loop(loops: Sequence[NetworkLoop | IOLoop]) -> NetworkLoop:
    (loop,) = [x for x in loops if isinstance(x, NetworkLoop)]
    return loop


def test_nothing_to_run_still_serves_the_supported_family(
    driver: CgroupDriver, tmp_path: Path
) -> None:
    wiring = Wiring()
    assert wiring.build(NetworkConfig(), driver=driver, sysfs=tmp_path) == []
    assert wiring.heartbeats == []
    assert wiring.status_parts == {}
    text = wiring.scrape()
    assert "# TYPE katalyst_isolation_supported gauge" in text
    assert "katalyst_network_" not in text
    assert "katalyst_io_" not in text


def test_the_io_loop(driver: CgroupDriver, tmp_path: Path) -> None:
    wiring = Wiring()
    loops = wiring.build(NetworkConfig(), io=IOConfig(period_s=5.0), driver=driver, sysfs=tmp_path)
    assert [type(x) for x in loops] == [IOLoop]
    assert [(h.name, h.max_age) for h in wiring.heartbeats] == [("io", 50.0)]
    assert set(wiring.status_parts) == {"io"}
    assert wiring.scrape().count("# TYPE katalyst_isolation_supported gauge") == 1


def test_the_network_loop(driver: CgroupDriver, tmp_path: Path) -> None:
    wiring = Wiring()
    nics = [NIC("eth0", 10000, 0), NIC("eth1", 25000, 1)]
    network = config({"name": "eth0"}, {"name": "eth1", "speed_mbit": 9500}, period_s=0.5)
    loops = wiring.build(network, driver=driver, nics=nics, sysfs=tmp_path)
    loop = network_loop(loops)
    assert len(loops) == 1
    assert [(s.iface.name, s.iface.link_mbit, s.iface.netns) for s in loop.interfaces] == [
        ("eth0", 10000.0, None),  # the NIC's speed
        ("eth1", 9500.0, None),  # the setting
    ]
    assert [(h.name, h.max_age) for h in wiring.heartbeats] == [("network", 30.0)]
    assert set(wiring.status_parts) == {"network"}
    assert wiring.status_parts["network"]() == loop.status()
    text = wiring.scrape()
    assert 'katalyst_network_link_mbit{interface="eth1"} 9500.0' in text


def test_an_interface_without_a_known_speed(driver: CgroupDriver, tmp_path: Path) -> None:
    with pytest.raises(IsolationSetupError, match="no speed known for veth0; set speed_mbit"):
        Wiring().build(
            config({"name": "eth0"}, {"name": "veth0"}),
            driver=driver,
            nics=[NIC("eth0", 10000, 0)],
            sysfs=tmp_path,
        )


@pytest.mark.usefixtures("tools")
def test_the_loop_classifies_in_the_mounted_net_cls(tmp_path: Path) -> None:
    host = make_host(tmp_path)
    host.container("kubepods/pod1/app", 100)
    containers = [ContainerRef("default", "pod1", "app", "shared_cores", "kubepods/pod1/app")]
    nics = [NIC("eth0", 1000, None)]
    policy = NetworkPolicy(nics)
    policy.allocate(request("web", 300))
    loops = Wiring().build(
        config({"name": "eth0"}, net_cls_mountpoint=str(tmp_path / "unused")),
        driver=host.driver,
        nics=nics,
        sysfs=tmp_path,
        containers=containers,
        policy=policy,
    )
    loop = network_loop(loops)
    shaper, _ = stand_in_network_loop(loop)
    loop.step()
    assert loop.classify_error is None
    assert host.fs.classid(f"{host.net_cls}/kubepods/pod1/app") == classid(MINOR[SHARED])
    # The guarantees are the plugin's allocations.
    rates = {c.minor: c.rate_mbit for c in shaper.ensured[-1][1]}
    assert rates == {MINOR[SYSTEM]: 10.0, MINOR[SHARED]: 300.0, MINOR[RECLAIMED]: 10.0}


def test_without_net_cls_and_not_allowed_to_mount_it(tmp_path: Path) -> None:
    host = make_host(tmp_path, net_cls=None)
    loops = Wiring().build(
        config({"name": "eth0", "speed_mbit": 1000}, mount_net_cls=False),
        driver=host.driver,
        sysfs=tmp_path,
    )
    loop = network_loop(loops)
    stand_in_network_loop(loop)
    loop.step()
    assert loop.classify_error == (
        "cannot classify traffic by cgroup: net_cls is not mounted and "
        "network.mount_net_cls is false"
    )


# ---- classification on cgroup v2 ----------------------------------------------------------


def test_cgroupv2_match_on_a_v2_host() -> None:
    driver = open_driver(FakeCgroupFS.v2(), base="kubepods")
    driver.create("pod1/app")
    match = cgroupv2_match(driver)
    assert match("pod1/app") == ("kubepods/pod1/app", 3)
    assert match("pod1") == ("kubepods/pod1", 2)
    assert match("pod2/app") is None  # no cgroup (yet)
    assert match("../escape") is None  # not a cgroup path


def test_cgroupv2_match_of_a_deeper_base() -> None:
    fs = FakeCgroupFS.v2()
    open_driver(fs, base="kubepods").create("burstable")
    driver = open_driver(fs, base="kubepods/burstable")
    driver.create("pod1/app")
    assert cgroupv2_match(driver)("pod1/app") == ("kubepods/burstable/pod1/app", 4)


def test_cgroupv2_match_on_a_hybrid_host_uses_the_unified_mirror() -> None:
    driver = open_driver(FakeCgroupFS.hybrid(), base="kubepods")
    driver.create("pod1/app")
    assert cgroupv2_match(driver)("pod1/app") == ("unified/kubepods/pod1/app", 3)


def test_cgroupv2_match_without_a_usable_cgroup2_hierarchy() -> None:
    v1 = open_driver(FakeCgroupFS.v1(), base="kubepods")
    v1.create("pod1/app")
    assert cgroupv2_match(v1)("pod1/app") is None
    elsewhere = open_driver(FakeCgroupFS.v2(mount="/cgroup2"), base="kubepods")
    elsewhere.create("pod1/app")
    assert cgroupv2_match(elsewhere)("pod1/app") is None  # nft looks below /sys/fs/cgroup


def shared_pod(driver: CgroupDriver) -> list[ContainerRef]:
    driver.create("pod1/app")
    return [ContainerRef("default", "pod1", "app", "shared_cores", "pod1/app")]


def test_a_v2_host_classifies_with_cgroupv2_rules(tmp_path: Path) -> None:
    driver = open_driver(FakeCgroupFS.v2(), base="kubepods")
    containers = shared_pod(driver)
    loops = Wiring().build(
        config({"name": "eth0", "speed_mbit": 1000}),
        driver=driver,
        sysfs=tmp_path,
        containers=containers,
    )
    loop = network_loop(loops)
    _, table = stand_in_network_loop(loop)
    loop.step()
    assert table.held == [CgroupV2Rule("kubepods/pod1/app", 3, classid(MINOR[SHARED]))]
    assert loop.classified == 1
    assert loop.supported is True


def test_net_cls_may_be_chosen_on_a_v2_host(tmp_path: Path) -> None:
    driver = open_driver(FakeCgroupFS.v2(), base="kubepods")
    containers = shared_pod(driver)
    loops = Wiring().build(
        config({"name": "eth0", "speed_mbit": 1000}, classify="net_cls", mount_net_cls=False),
        driver=driver,
        sysfs=tmp_path,
        containers=containers,
    )
    loop = network_loop(loops)
    _, table = stand_in_network_loop(loop)
    loop.step()
    assert table.held == [ClassifyRule(classid(MINOR[c])) for c in (SYSTEM, SHARED, RECLAIMED)]
    assert loop.classify_error is not None
    assert "net_cls is not mounted" in loop.classify_error


def test_cgroupv2_may_be_chosen_on_a_hybrid_host(tmp_path: Path) -> None:
    driver = open_driver(FakeCgroupFS.hybrid(), base="kubepods")
    containers = shared_pod(driver)
    loops = Wiring().build(
        config({"name": "eth0", "speed_mbit": 1000}, classify="cgroupv2"),
        driver=driver,
        sysfs=tmp_path,
        containers=containers,
    )
    loop = network_loop(loops)
    _, table = stand_in_network_loop(loop)
    loop.step()
    assert table.held == [CgroupV2Rule("unified/kubepods/pod1/app", 3, classid(MINOR[SHARED]))]


def test_cgroupv2_classification_where_there_is_no_cgroup2_hierarchy(tmp_path: Path) -> None:
    # BUG: with classify: cgroupv2 on a host without a cgroup2 hierarchy (or with one
    # that is not below /sys/fs/cgroup), cgroupv2_match answers None for every
    # container: no container is ever classified, yet the loop reports itself
    # supported and katalyst_isolation_supported{feature="classification"} is 1.
    # A setting the user chose that cannot work must be refused (at start-up, naming
    # network.classify) or at least reported.
    driver = open_driver(FakeCgroupFS.v1(), base="kubepods")
    containers = shared_pod(driver)
    wiring = Wiring()
    refused: str | None = None
    try:
        loops = wiring.build(
            config({"name": "eth0", "speed_mbit": 1000}, classify="cgroupv2"),
            driver=driver,
            sysfs=tmp_path,
            containers=containers,
        )
    except IsolationSetupError as exc:
        refused = str(exc)
    if refused is not None:
        assert "network.classify" in refused
        return
    loop = network_loop(loops)
    stand_in_network_loop(loop)
    loop.step()
    assert loop.supported is False
    assert 'feature="classification"} 0.0' in wiring.scrape()


# ---- cleanup ------------------------------------------------------------------------------


def test_cleanup_with_nothing_to_clean(driver: CgroupDriver, tools: Path) -> None:
    assert cleanup(NetworkConfig(), driver=driver, reclaimed=[]) == []


def test_cleanup_removes_a_table_left_in_the_agents_namespace(
    driver: CgroupDriver, tools: Path
) -> None:
    nft = NftBinary(tools)  # the nft on PATH
    NftTable(nft=str(nft.path)).ensure(RULES)
    assert cleanup(NetworkConfig(), driver=driver, reclaimed=[]) == [
        "removed nft table inet katalyst_qos"
    ]
    assert nft.table() is None
    assert cleanup(NetworkConfig(), driver=driver, reclaimed=[]) == []


def test_cleanup_resets_the_agents_classids(tmp_path: Path, tools: Path) -> None:
    host = make_host(tmp_path)
    fs, net = host.fs, host.net_cls
    for path, value in (
        (f"{net}/a", classid(0x20)),
        (f"{net}/a/b", classid(0x30)),
        (f"{net}/c", 0x100001),
    ):
        fs.make(path)
        fs.write_text(f"{path}/net_cls.classid", str(value))
    assert cleanup(NetworkConfig(), driver=host.driver, reclaimed=[]) == [
        f"reset 2 net_cls classid(s) below {net}"
    ]
    assert fs.classid(f"{net}/c") == 0x100001


def test_cleanup_lifts_the_io_throttles_of_reclaimed_cgroups(
    driver: CgroupDriver, tools: Path
) -> None:
    limit = IOLimit(read_bps=10 << 20, write_iops=100)
    for cgroup in ("reclaimed", "reclaimed/pod1", "reclaimed/pod1/app", "shared"):
        driver.create(cgroup)
    driver.set_io_limit("reclaimed/pod1", "8:0", limit)
    driver.set_io_limit("reclaimed/pod1/app", "8:0", limit)
    driver.set_io_limit("reclaimed/pod1/app", "7:0", limit)
    driver.set_io_limit("shared", "8:0", limit)
    assert cleanup(NetworkConfig(), driver=driver, reclaimed=["reclaimed", "gone"]) == [
        "lifted 3 IO throttle(s) of reclaimed cgroups"
    ]
    assert driver.io_limited_devices("reclaimed/pod1/app") == []
    assert driver.io_limited_devices("reclaimed/pod1") == []
    assert driver.io_limit("shared", "8:0") == limit  # not a reclaimed cgroup
