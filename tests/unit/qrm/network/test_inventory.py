"""The NIC inventory, read from sysfs trees laid out as the kernel does."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from agent.qrm.network.inventory import NIC, NICInventoryError, read_nics
from tests.unit.qrm.network.machines import write_nic

RULE = "speed unknown; set network.interfaces[].speed_mbit"


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    root = tmp_path / "sys"
    (root / "class" / "net").mkdir(parents=True)
    return root


def test_physical_nics_with_speed_numa_and_pci_address(sysfs: Path) -> None:
    write_nic(sysfs, "eth1", speed="25000", numa="1", pci="0000:af:00.1")
    write_nic(sysfs, "eth0", speed="10000", numa="0", pci="0000:3b:00.0")
    inventory = read_nics(sysfs)
    assert inventory.nics == (
        NIC(name="eth0", speed_mbit=10000, numa_node=0, pci_address="0000:3b:00.0"),
        NIC(name="eth1", speed_mbit=25000, numa_node=1, pci_address="0000:af:00.1"),
    )
    assert inventory.warnings == ()


def test_virtual_interfaces_have_no_device_link_and_are_skipped(sysfs: Path) -> None:
    write_nic(sysfs, "eth0", speed="10000", numa="0", pci="0000:3b:00.0")
    write_nic(sysfs, "lo")
    write_nic(sysfs, "veth1a2b", speed="10000")
    write_nic(sysfs, "cni0", speed="-1")
    inventory = read_nics(sysfs)
    assert [nic.name for nic in inventory.nics] == ["eth0"]
    assert inventory.warnings == ()


def test_numa_node_minus_one_or_missing_is_unknown(sysfs: Path) -> None:
    write_nic(sysfs, "eth0", speed="1000", numa="-1", pci="0000:01:00.0")
    write_nic(sysfs, "eth1", speed="1000", pci="0000:02:00.0")
    write_nic(sysfs, "eth2", speed="1000", numa="garbage", pci="0000:03:00.0")
    assert [nic.numa_node for nic in read_nics(sysfs).nics] == [None, None, None]


def test_a_device_that_is_not_pci_has_no_pci_address(sysfs: Path) -> None:
    # virtio-net: class/net/eth0/device -> ../../../virtio2
    iface = sysfs / "devices" / "pci0000:00" / "0000:00:03.0" / "virtio2" / "net" / "eth0"
    iface.mkdir(parents=True)
    (iface / "device").symlink_to("../../../virtio2")
    (iface / "speed").write_text("-1\n")
    (sysfs / "class" / "net" / "eth0").symlink_to(os.path.relpath(iface, sysfs / "class/net"))
    inventory = read_nics(sysfs, speeds={"eth0": 1000})
    assert inventory.nics == (NIC(name="eth0", speed_mbit=1000, numa_node=None),)


@pytest.mark.parametrize("speed", ["-1", "0", "", "fast", "1e4", "99999999999999999999999"])
def test_unknown_speed_leaves_the_nic_out_with_one_warning(
    sysfs: Path, speed: str, caplog: pytest.LogCaptureFixture
) -> None:
    write_nic(sysfs, "eth0", speed=speed, numa="0", pci="0000:3b:00.0")
    write_nic(sysfs, "eth1", speed="10000", numa="0", pci="0000:3b:00.1")
    with caplog.at_level(logging.WARNING, logger="agent.qrm.network.inventory"):
        inventory = read_nics(sysfs)
    assert [nic.name for nic in inventory.nics] == ["eth1"]
    assert inventory.warnings == (f"NIC eth0 left out: {RULE}",)
    assert [r.getMessage() for r in caplog.records] == [f"NIC eth0 left out: {RULE}"]


def test_unreadable_speed_without_and_with_a_configured_speed(sysfs: Path) -> None:
    write_nic(sysfs, "eth0", unreadable_speed=True, numa="1", pci="0000:3b:00.0")
    write_nic(sysfs, "eth1", numa="1", pci="0000:3b:00.1")  # no speed file at all
    left_out = read_nics(sysfs)
    assert left_out.nics == ()
    assert left_out.warnings == (f"NIC eth0 left out: {RULE}", f"NIC eth1 left out: {RULE}")
    configured = read_nics(sysfs, speeds={"eth0": 40000, "eth1": 100})
    assert configured.nics == (
        NIC(name="eth0", speed_mbit=40000, numa_node=1, pci_address="0000:3b:00.0"),
        NIC(name="eth1", speed_mbit=100, numa_node=1, pci_address="0000:3b:00.1"),
    )
    assert configured.warnings == ()


def test_a_configured_speed_wins_over_the_link_speed(sysfs: Path) -> None:
    write_nic(sysfs, "eth0", speed="25000", numa="0", pci="0000:3b:00.0")
    assert read_nics(sysfs, speeds={"eth0": 10000}).nics[0].speed_mbit == 10000


def test_named_interfaces_of_any_kind_in_the_given_order(sysfs: Path) -> None:
    write_nic(sysfs, "eth0", speed="10000", numa="0", pci="0000:3b:00.0")
    write_nic(sysfs, "veth-b", speed="10000")
    write_nic(sysfs, "veth-a", speed="-1")
    inventory = read_nics(sysfs, interfaces=["veth-b", "veth-a"], speeds={"veth-a": 500})
    assert inventory.nics == (
        NIC(name="veth-b", speed_mbit=10000, numa_node=None),
        NIC(name="veth-a", speed_mbit=500, numa_node=None),
    )


def test_a_missing_named_interface_is_an_error_naming_it(sysfs: Path) -> None:
    write_nic(sysfs, "eth0", speed="10000", numa="0", pci="0000:3b:00.0")
    with pytest.raises(NICInventoryError, match=r"\['eth9'\] not found in .*present: eth0"):
        read_nics(sysfs, interfaces=["eth0", "eth9"])


def test_bad_configuration_is_refused_naming_the_field(sysfs: Path) -> None:
    with pytest.raises(ValueError, match="'eth0': speed_mbit 0 must be a positive integer"):
        read_nics(sysfs, speeds={"eth0": 0})
    with pytest.raises(ValueError, match=r"'\.\./etc' is not a valid interface name"):
        read_nics(sysfs, interfaces=["../etc"])
    with pytest.raises(ValueError, match=r"\['eth0'\] are listed more than once"):
        read_nics(sysfs, interfaces=["eth0", "eth0"])


def test_a_speed_for_an_absent_nic_is_a_warning(sysfs: Path) -> None:
    write_nic(sysfs, "eth0", speed="10000", pci="0000:3b:00.0")
    inventory = read_nics(sysfs, speeds={"eth7": 1000})
    assert [nic.name for nic in inventory.nics] == ["eth0"]
    assert inventory.warnings == ("speed_mbit configured for ['eth7'], which are not NICs here",)


def test_no_class_net_directory_is_an_empty_inventory(tmp_path: Path) -> None:
    inventory = read_nics(tmp_path / "nowhere")
    assert inventory.nics == ()
    assert len(inventory.warnings) == 1 and "cannot list" in inventory.warnings[0]


def test_netns_is_recorded_on_every_nic_of_that_sysfs(sysfs: Path) -> None:
    write_nic(sysfs, "eth0", speed="10000", pci="0000:3b:00.0")
    assert read_nics(sysfs, netns="tenant").nics[0].netns == "tenant"


def test_odd_entries_do_not_crash(sysfs: Path) -> None:
    write_nic(sysfs, "eth0", speed="10000", pci="0000:3b:00.0")
    (sysfs / "class" / "net" / "dangling").symlink_to("../../devices/gone")
    (sysfs / "class" / "net" / "plainfile").write_text("x")
    loop = sysfs / "devices" / "virtual" / "net" / "loopy"
    loop.mkdir(parents=True)
    (loop / "device").symlink_to("device")  # a link to itself
    (loop / "speed").write_bytes(b"\xff\xfe")
    (sysfs / "class" / "net" / "loopy").symlink_to(os.path.relpath(loop, sysfs / "class/net"))
    inventory = read_nics(sysfs)
    assert [nic.name for nic in inventory.nics] == ["eth0"]
    assert inventory.warnings == (f"NIC loopy left out: {RULE}",)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "", "speed_mbit": 1, "numa_node": None}, "not an interface name"),
        ({"name": "a" * 16, "speed_mbit": 1, "numa_node": None}, "not an interface name"),
        ({"name": "eth0", "speed_mbit": 0, "numa_node": None}, "must be positive"),
        ({"name": "eth0", "speed_mbit": 1, "numa_node": -1}, "must be >= 0 or None"),
        ({"name": "eth0", "speed_mbit": 1, "numa_node": 0, "netns": ""}, "netns must be"),
    ],
)
def test_nic_validates_its_fields(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NIC(**kwargs)  # type: ignore[arg-type]


def test_the_real_machine_never_lists_loopback() -> None:
    inventory = read_nics("/sys")
    assert "lo" not in [nic.name for nic in inventory.nics]
    assert not any("NIC lo " in warning for warning in inventory.warnings)
    # Named explicitly, lo is taken, with the speed the kernel cannot tell (EINVAL).
    named = read_nics("/sys", interfaces=["lo"], speeds={"lo": 1000})
    assert named.nics == (NIC(name="lo", speed_mbit=1000, numa_node=None),)
    assert read_nics("/sys", interfaces=["lo"]).warnings == (f"NIC lo left out: {RULE}",)
