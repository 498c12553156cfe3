"""The agent's nftables table: packets of a pod's sockets get their QoS class.

One table (``inet katalyst_qos``) in the network namespace of the shaped
interface, one chain on the ``output`` hook at the mangle priority, one rule per
QoS class: a socket whose cgroup carries the class's ``net_cls.classid`` has its
packets' ``skb->priority`` set to that class id, which the agent's HTB qdisc maps
to the class directly (the kernel here has no ``cls_cgroup`` tc filter; the
``meta cgroup`` match reads the same classid). Each rule counts what it matched.

The ``nft`` command: the table is written in nft's own syntax (nft 1.0's JSON input
has no ``socket cgroupv2 level``) and read back with JSON output (``nft -j``), so
that it is compared as data, never parsed from text. The table is replaced in one transaction
(add, delete, add: atomic, and valid whether or not it existed), so there is no
instant without the rules; :meth:`NftTable.ensure` compares the kernel's listing
with the one the last write produced and rewrites only when someone changed it.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

TABLE = "katalyst_qos"
FAMILY = "inet"
CHAIN = "classify"
MANGLE_PRIORITY = -150
_TIMEOUT_S = 10.0


class NftError(Exception):
    """``nft`` is missing or failed; the message names the table and says why."""


@dataclass(frozen=True, slots=True)
class ClassifyRule:
    """cgroup v1: packets of sockets in cgroups with ``classid`` (``net_cls.classid``)
    get ``skb->priority = classid``."""

    classid: int

    def text(self) -> str:
        return f"meta cgroup {self.classid} counter {_priority_text(self.classid)}"

    def expr(self) -> list[dict[str, Any]]:
        return [
            {"match": {"op": "==", "left": {"meta": {"key": "cgroup"}}, "right": self.classid}},
            {"counter": None},
            _set_priority(self.classid),
        ]


@dataclass(frozen=True, slots=True)
class CgroupV2Rule:
    """cgroup v2: packets of sockets whose cgroup is ``path`` or below it get
    ``skb->priority = classid``.

    ``path`` is what nft resolves below ``/sys/fs/cgroup`` (``kubepods/pod1/c``; on a
    hybrid host ``unified/...``); ``level`` is its depth in the cgroup2 hierarchy.
    nft turns the path into the cgroup's id when the rule is loaded, so the rules are
    rewritten as containers come and go."""

    path: str
    level: int
    classid: int

    def __post_init__(self) -> None:
        if not self.path or any(c in self.path for c in '"\\\n;{}') or self.level < 1:
            raise ValueError(f"not a cgroup path nft can match: {self.path!r} level {self.level}")

    def text(self) -> str:
        return (
            f'socket cgroupv2 level {self.level} "{self.path}" counter '
            f"{_priority_text(self.classid)}"
        )

    def expr(self) -> list[dict[str, Any]]:
        return [
            {
                "match": {
                    "op": "==",
                    "left": {"socket": {"key": "cgroupv2", "level": self.level}},
                    "right": self.path,
                }
            },
            {"counter": None},
            _set_priority(self.classid),
        ]


Rule = ClassifyRule | CgroupV2Rule


def _priority_text(classid: int) -> str:
    return f"meta priority set {classid >> 16:x}:{classid & 0xFFFF:x}"


def _set_priority(classid: int) -> dict[str, Any]:
    major, minor = classid >> 16, classid & 0xFFFF
    return {"mangle": {"key": {"meta": {"key": "priority"}}, "value": f"{major:x}:{minor:x}"}}


def _parse_priority(value: object) -> int | None:
    """``"6b71:30"`` -> 0x6b710030; None for anything else."""
    if not isinstance(value, str) or value.count(":") != 1:
        return None
    major, minor = value.split(":")
    try:
        return (int(major, 16) << 16) | int(minor, 16)
    except ValueError:
        return None


def _strip_counters(expr: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [{"counter": None} if "counter" in e else e for e in expr]


class NftTable:
    """The agent's table in one network namespace (None: the agent's own)."""

    def __init__(
        self, *, netns: str | None = None, nft: str = "nft", run_dir: str = "/run/netns"
    ) -> None:
        self.netns = netns
        self._nft = nft
        self._run_dir = run_dir
        self._written: list[list[Mapping[str, Any]]] | None = None
        """The rules' expressions as the kernel listed them after our last write."""
        self._last_want: list[list[dict[str, Any]]] | None = None
        """The rules of the last write, as built (the listing may spell them otherwise)."""

    @property
    def where(self) -> str:
        return f"nft table {FAMILY} {TABLE}" + (f" (netns {self.netns})" if self.netns else "")

    def available(self) -> bool:
        """Whether the ``nft`` command (and, for a namespace, ``nsenter``) can be found."""
        return shutil.which(self._nft) is not None and (
            self.netns is None or shutil.which("nsenter") is not None
        )

    def _run(
        self, args: Sequence[str], stdin: str | None = None, *, json_output: bool = True
    ) -> str:
        if shutil.which(self._nft) is None:
            raise NftError(
                f"{self.where}: the {self._nft} command is not installed (package nftables)"
            )
        cmd = [self._nft, *(["-j"] if json_output else []), *args]
        if self.netns is not None:
            # nsenter, not `ip netns exec`: that one also remounts /sys, and nft must
            # see the cgroup2 mount below /sys/fs/cgroup to resolve cgroupv2 paths.
            cmd = ["nsenter", f"--net={self._run_dir}/{self.netns}", *cmd]
        try:
            done = subprocess.run(
                cmd, input=stdin, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False
            )
        except FileNotFoundError as exc:
            raise NftError(f"{self.where}: {exc.filename} is not installed") from exc
        except subprocess.TimeoutExpired as exc:
            raise NftError(f"{self.where}: nft did not answer in {_TIMEOUT_S:g} s") from exc
        if done.returncode != 0:
            raise NftError(f"{self.where}: {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def _listing(self) -> list[dict[str, Any]] | None:
        """The table's objects as ``nft -j list table`` gives them; None when absent."""
        try:
            out = self._run(["list", "table", FAMILY, TABLE])
        except NftError as exc:
            if "No such file or directory" in str(exc):
                return None
            raise
        try:
            doc = json.loads(out)
        except json.JSONDecodeError as exc:
            raise NftError(f"{self.where}: nft printed something that is not JSON") from exc
        items = doc.get("nftables", []) if isinstance(doc, dict) else []
        return [i for i in items if isinstance(i, dict)]

    def _rules(self, listing: Sequence[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
        return [
            _strip_counters(i["rule"].get("expr", []))
            for i in listing
            if "rule" in i and i["rule"].get("chain") == CHAIN
        ]

    def write(self, rules: Sequence[Rule]) -> None:
        """Replace the table with ``rules`` in one transaction.

        In nft's own syntax rather than JSON: nft 1.0's JSON parser has no
        ``socket cgroupv2 level``. The listing is read back as JSON."""
        lines = [
            f"add table {FAMILY} {TABLE}",
            f"delete table {FAMILY} {TABLE}",
            f"table {FAMILY} {TABLE} {{",
            f"  chain {CHAIN} {{",
            f"    type filter hook output priority {MANGLE_PRIORITY}; policy accept;",
            *(f"    {rule.text()}" for rule in rules),
            "  }",
            "}",
        ]
        self._run(["-f", "-"], stdin="\n".join(lines) + "\n", json_output=False)
        listing = self._listing()
        self._written = self._rules(listing or [])
        self._last_want = [r.expr() for r in rules]

    def ensure(self, rules: Sequence[Rule]) -> bool:
        """Write the table unless the kernel holds what the last write left; True
        when it was written (first time, rules changed, or someone changed it)."""
        listing = self._listing()
        want = [r.expr() for r in rules]
        if (
            listing is not None
            and self._written is not None
            and self._rules(listing) == self._written
            and len(self._written) == len(want)
            and self._last_want == want
        ):
            return False
        self.write(rules)
        return True

    def counters(self) -> dict[int, int]:
        """Bytes each rule matched, by the classid it matches; empty when absent."""
        out: dict[int, int] = {}
        for item in self._listing() or []:
            rule = item.get("rule")
            if not isinstance(rule, dict) or rule.get("chain") != CHAIN:
                continue
            cls: int | None = None
            count = 0
            for e in rule.get("expr", []):
                match = e.get("match") if isinstance(e, dict) else None
                if isinstance(match, dict) and match.get("left") == {"meta": {"key": "cgroup"}}:
                    right = match.get("right")
                    cls = right if isinstance(right, int) else None
                mangle = e.get("mangle") if isinstance(e, dict) else None
                if cls is None and isinstance(mangle, dict):
                    cls = _parse_priority(mangle.get("value"))
                counter = e.get("counter") if isinstance(e, dict) else None
                if isinstance(counter, dict):
                    count = int(counter.get("bytes", 0))
            if cls is not None:
                out[cls] = out.get(cls, 0) + count
        return out

    def remove(self) -> bool:
        """Delete the table; False when it was not there."""
        if self._listing() is None:
            return False
        self._run(["delete", "table", FAMILY, TABLE])
        self._written = None
        return True
