"""The agent's nftables table, through a stand-in ``nft`` command.

:class:`tests.support.isolation_fakes.NftBinary` writes a small Python program
that answers as nftables 1.0.6 does (that module's docstring lists the output
shapes it reproduces); the ruleset lives in a JSON file the test can edit, as
another program on the host would change the kernel's.
"""

from __future__ import annotations

import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.isolation.nft import (
    CHAIN,
    FAMILY,
    MANGLE_PRIORITY,
    TABLE,
    CgroupV2Rule,
    ClassifyRule,
    NftError,
    NftTable,
    Rule,
)
from agent.isolation.tc import classid
from tests.support.isolation_fakes import RULES, NftBinary


@pytest.fixture
def nft(tmp_path: Path) -> NftBinary:
    return NftBinary(tmp_path / "bin")


def listed(rules: list[Rule]) -> list[list[dict[str, Any]]]:
    """The expressions as nft 1.0.6 lists them: a cgroupv2 match without its level."""
    out = []
    for rule in rules:
        expr = rule.expr()
        left = expr[0]["match"]["left"]
        if "socket" in left:
            left["socket"].pop("level")
        out.append(expr)
    return out


# ---- the rules --------------------------------------------------------------------------


def test_a_net_cls_rule_matches_the_classid_and_sets_the_priority() -> None:
    rule = ClassifyRule(0x6B710020)
    assert rule.text() == "meta cgroup 1802567712 counter meta priority set 6b71:20"
    assert rule.expr() == [
        {"match": {"op": "==", "left": {"meta": {"key": "cgroup"}}, "right": 0x6B710020}},
        {"counter": None},
        {"mangle": {"key": {"meta": {"key": "priority"}}, "value": "6b71:20"}},
    ]


def test_a_cgroupv2_rule_matches_the_path_at_its_level() -> None:
    rule = CgroupV2Rule("kubepods/pod1/app", 3, classid(0x30))
    assert rule.text() == (
        'socket cgroupv2 level 3 "kubepods/pod1/app" counter meta priority set 6b71:30'
    )
    assert rule.expr() == [
        {
            "match": {
                "op": "==",
                "left": {"socket": {"key": "cgroupv2", "level": 3}},
                "right": "kubepods/pod1/app",
            }
        },
        {"counter": None},
        {"mangle": {"key": {"meta": {"key": "priority"}}, "value": "6b71:30"}},
    ]


@pytest.mark.parametrize(
    ("path", "level"),
    [("", 1), ('a"b', 1), ("a\\b", 1), ("a\nb", 1), ("a;b", 1), ("a{b", 1), ("a}b", 1), ("a", 0)],
)
def test_a_cgroupv2_rule_refuses_what_nft_cannot_match(path: str, level: int) -> None:
    with pytest.raises(ValueError, match="not a cgroup path nft can match"):
        CgroupV2Rule(path, level, classid(0x30))


def test_where_names_the_table_and_namespace() -> None:
    assert NftTable().where == "nft table inet katalyst_qos"
    assert NftTable(netns="pods").where == "nft table inet katalyst_qos (netns pods)"


# ---- ensure ---------------------------------------------------------------------------


def test_ensure_writes_the_table_on_the_first_call(nft: NftBinary) -> None:
    table = NftTable(nft=str(nft.path))
    assert table.ensure(RULES) is True
    held = nft.table()
    assert held is not None
    assert held["chains"] == [
        {
            "name": CHAIN,
            "handle": 1,
            "type": "filter",
            "hook": "output",
            "prio": MANGLE_PRIORITY,
            "policy": "accept",
        }
    ]
    assert nft.rules() == listed(RULES)
    assert nft.writes() == 1


def test_ensure_does_not_rewrite_an_unchanged_table(nft: NftBinary) -> None:
    table = NftTable(nft=str(nft.path))
    table.ensure(RULES)
    nft.count(1, packets=10, nbytes=15000)  # traffic is not a change
    assert table.ensure(RULES) is False
    assert table.ensure(RULES) is False
    assert nft.writes() == 1


def test_ensure_rewrites_a_deleted_table(nft: NftBinary) -> None:
    table = NftTable(nft=str(nft.path))
    table.ensure(RULES)
    nft.delete_table()
    assert table.ensure(RULES) is True
    assert nft.rules() == listed(RULES)
    assert nft.writes() == 2


def test_ensure_rewrites_a_rule_someone_changed(nft: NftBinary) -> None:
    table = NftTable(nft=str(nft.path))
    table.ensure(RULES)
    nft.edit(1, ClassifyRule(classid(0x99)).expr())
    assert table.ensure(RULES) is True
    assert nft.rules() == listed(RULES)
    assert table.ensure(RULES) is False


def test_ensure_rewrites_when_the_rules_change(nft: NftBinary) -> None:
    table = NftTable(nft=str(nft.path))
    table.ensure(RULES)
    assert table.ensure(RULES[:2]) is True
    assert nft.rules() == listed(RULES[:2])
    assert table.ensure(RULES[:2]) is False
    assert table.ensure([]) is True  # no rule at all is a table too
    assert nft.rules() == []
    assert table.ensure([]) is False
    assert nft.writes() == 3


def test_a_new_table_object_rewrites_what_an_earlier_run_left(nft: NftBinary) -> None:
    NftTable(nft=str(nft.path)).ensure(RULES)
    # After a restart the agent does not know what the kernel holds is its own write.
    assert NftTable(nft=str(nft.path)).ensure(RULES) is True
    assert nft.writes() == 2


def test_the_batch_replaces_the_table_atomically(nft: NftBinary) -> None:
    table = NftTable(nft=str(nft.path))
    table.write(RULES)
    table.write(RULES[:1])  # add, delete, add: valid whether or not the table existed
    assert nft.rules() == listed(RULES[:1])


def test_cgroupv2_rules(nft: NftBinary) -> None:
    for path in ("kubepods/pod1/app", "kubepods/pod2/app"):
        (nft.cgroup_base / path).mkdir(parents=True)
    rules: list[Rule] = [
        CgroupV2Rule("kubepods/pod1/app", 3, classid(0x20)),
        CgroupV2Rule("kubepods/pod2/app", 3, classid(0x30)),
    ]
    table = NftTable(nft=str(nft.path))
    assert table.ensure(rules) is True
    assert nft.rules() == listed(rules)
    assert table.ensure(rules) is False  # the listing spells them otherwise: still equal
    # The container moved to another cgroup: a new rule.
    (nft.cgroup_base / "kubepods/pod3/app").mkdir(parents=True)
    moved = [rules[0], CgroupV2Rule("kubepods/pod3/app", 3, classid(0x30))]
    assert table.ensure(moved) is True
    assert nft.writes() == 2


def test_a_removed_or_recreated_cgroup_changes_the_listing(nft: NftBinary) -> None:
    app = nft.cgroup_base / "kubepods/pod1/app"
    app.mkdir(parents=True)
    rules: list[Rule] = [CgroupV2Rule("kubepods/pod1/app", 3, classid(0x30))]
    table = NftTable(nft=str(nft.path))
    table.ensure(rules)
    # The same path, another cgroup (the old one still exists meanwhile, so that the
    # new directory cannot reuse its inode): the rule still matches the old one's id.
    app.rename(app.with_name("old"))
    app.mkdir()
    app.with_name("old").rmdir()
    assert table.ensure(rules) is True
    assert table.ensure(rules) is False
    app.rmdir()
    # The container is gone: the rule for it cannot be loaded any more...
    with pytest.raises(NftError, match="cgroupv2 path fails"):
        table.ensure(rules)
    # ...and the table without it is written.
    assert table.ensure([]) is True
    assert nft.rules() == []


def test_a_cgroupv2_path_that_does_not_exist(nft: NftBinary) -> None:
    table = NftTable(nft=str(nft.path))
    table.ensure(RULES)
    with pytest.raises(NftError, match="cgroupv2 path fails: No such file or directory"):
        table.ensure([CgroupV2Rule("kubepods/gone", 2, classid(0x30))])
    assert nft.rules() == listed(RULES)  # the batch failed as a whole


# ---- counters -------------------------------------------------------------------------


def test_counters_by_classid(nft: NftBinary) -> None:
    table = NftTable(nft=str(nft.path))
    assert table.counters() == {}  # no table
    table.ensure(RULES)
    assert table.counters() == {classid(0x10): 0, classid(0x20): 0, classid(0x30): 0}
    nft.count(1, packets=3, nbytes=4500)
    nft.count(2, packets=1, nbytes=60)
    assert table.counters() == {classid(0x10): 0, classid(0x20): 4500, classid(0x30): 60}


def test_counters_of_cgroupv2_rules_add_up_by_class(nft: NftBinary) -> None:
    for path in ("a", "b", "c"):
        (nft.cgroup_base / path).mkdir(parents=True)
    table = NftTable(nft=str(nft.path))
    table.ensure(
        [
            CgroupV2Rule("a", 1, classid(0x30)),
            CgroupV2Rule("b", 1, classid(0x30)),
            CgroupV2Rule("c", 1, classid(0x20)),
        ]
    )
    nft.count(0, packets=1, nbytes=100)
    nft.count(1, packets=2, nbytes=250)
    nft.count(2, packets=3, nbytes=7)
    assert table.counters() == {classid(0x30): 350, classid(0x20): 7}


# ---- remove ---------------------------------------------------------------------------


def test_remove(nft: NftBinary) -> None:
    table = NftTable(nft=str(nft.path))
    assert table.remove() is False  # absent: only listed, nothing deleted
    assert nft.calls() == [["-j", "list", "table", FAMILY, TABLE]]
    table.ensure(RULES)
    assert table.remove() is True
    assert nft.table() is None
    assert table.remove() is False
    # The table is written again on the next ensure.
    assert table.ensure(RULES) is True


# ---- errors ---------------------------------------------------------------------------


def test_a_missing_binary_is_named(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-nft")
    table = NftTable(nft=missing)
    assert table.available() is False
    for call in (lambda: table.ensure(RULES), table.remove, table.counters):
        with pytest.raises(NftError, match="no-such-nft") as info:
            call()
        assert "nft table inet katalyst_qos" in str(info.value)
        assert "not installed" in str(info.value)


def test_a_failing_command_gives_its_stderr(nft: NftBinary) -> None:
    table = NftTable(nft=str(nft.path))
    assert table.available() is True
    nft.fail("-f -", "Could not process rule: Operation not permitted")
    with pytest.raises(NftError) as info:
        table.ensure(RULES)
    message = str(info.value)
    assert message.startswith("nft table inet katalyst_qos: -f -: ")
    assert "Could not process rule: Operation not permitted" in message
    assert nft.table() is None


def test_a_failing_listing_is_an_error_not_an_absent_table(nft: NftBinary) -> None:
    table = NftTable(nft=str(nft.path))
    nft.fail(f"list table {FAMILY} {TABLE}", "Operation not permitted")
    with pytest.raises(NftError, match="list table inet katalyst_qos: Error: Operation not"):
        table.ensure(RULES)
    with pytest.raises(NftError, match="Operation not permitted"):
        table.remove()
    assert nft.writes() == 0


def test_output_that_is_not_json(nft: NftBinary) -> None:
    table = NftTable(nft=str(nft.path))
    table.ensure(RULES)
    nft.print_garbage("table inet katalyst_qos {")
    with pytest.raises(NftError, match="not JSON"):
        table.ensure(RULES)


# ---- a namespace ----------------------------------------------------------------------

NSENTER = """\
#!{python}
import os
import sys

with open({log!r}, "a") as f:
    f.write(sys.argv[1] + "\\n")
os.execv(sys.argv[2], sys.argv[2:])
"""


def test_a_namespace_runs_nft_through_nsenter(
    tmp_path: Path, nft: NftBinary, monkeypatch: pytest.MonkeyPatch
) -> None:
    tools = tmp_path / "tools"
    tools.mkdir()
    nsenter = tools / "nsenter"
    nsenter.write_text(NSENTER.format(python=sys.executable, log=str(tmp_path / "nsenter.log")))
    nsenter.chmod(nsenter.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(tools))  # only the stand-in nsenter
    run_dir = tmp_path / "netns"
    table = NftTable(netns="pods", nft=str(nft.path), run_dir=str(run_dir))
    assert table.available() is True
    assert table.ensure(RULES) is True
    calls = (tmp_path / "nsenter.log").read_text().splitlines()
    assert calls and set(calls) == {f"--net={run_dir}/pods"}
    assert nft.rules() == listed(RULES)


def test_a_namespace_without_nsenter(
    tmp_path: Path, nft: NftBinary, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    table = NftTable(netns="pods", nft=str(nft.path))
    assert table.available() is False
    with pytest.raises(NftError, match="nsenter is not installed"):
        table.ensure(RULES)
