"""The agent's nftables table: packets of a pod's sockets get their QoS class.

One table (``inet katalyst_qos``) in the network namespace of the shaped
interface, one chain on the ``output`` hook at the mangle priority, one rule per
QoS class: a socket whose cgroup carries the class's ``net_cls.classid`` has its
packets' ``skb->priority`` set to that class id, which the agent's HTB qdisc maps
to the class directly (the kernel here has no ``cls_cgroup`` tc filter; the
``meta cgroup`` match reads the same classid). Each rule counts what it matched.

The ``nft`` command with JSON input and output (``nft -j``) rather than text: the
ruleset is built and compared as data. The table is replaced in one transaction
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
    """Packets of sockets in cgroups with ``classid`` get ``skb->priority = classid``."""

    classid: int

    def expr(self) -> list[dict[str, Any]]:
        major, minor = self.classid >> 16, self.classid & 0xFFFF
        return [
            {"match": {"op": "==", "left": {"meta": {"key": "cgroup"}}, "right": self.classid}},
            {"counter": None},
            {"mangle": {"key": {"meta": {"key": "priority"}}, "value": f"{major:x}:{minor:x}"}},
        ]


def _strip_counters(expr: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [{"counter": None} if "counter" in e else e for e in expr]


class NftTable:
    """The agent's table in one network namespace (None: the agent's own)."""

    def __init__(self, *, netns: str | None = None, nft: str = "nft") -> None:
        self.netns = netns
        self._nft = nft
        self._written: list[list[Mapping[str, Any]]] | None = None
        """The rules' expressions as the kernel listed them after our last write."""
        self._last_want: list[list[dict[str, Any]]] | None = None
        """The rules of the last write, as built (the listing may spell them otherwise)."""

    @property
    def where(self) -> str:
        return f"nft table {FAMILY} {TABLE}" + (f" (netns {self.netns})" if self.netns else "")

    def available(self) -> bool:
        """Whether the ``nft`` command (and, for a namespace, ``ip``) can be found."""
        return shutil.which(self._nft) is not None and (
            self.netns is None or shutil.which("ip") is not None
        )

    def _run(self, args: Sequence[str], stdin: str | None = None) -> str:
        if shutil.which(self._nft) is None:
            raise NftError(
                f"{self.where}: the {self._nft} command is not installed (package nftables)"
            )
        cmd = [self._nft, "-j", *args]
        if self.netns is not None:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
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

    def write(self, rules: Sequence[ClassifyRule]) -> None:
        """Replace the table with ``rules`` in one transaction."""
        ident = {"family": FAMILY, "name": TABLE}
        ops: list[dict[str, Any]] = [
            {"add": {"table": dict(ident)}},
            {"delete": {"table": dict(ident)}},
            {"add": {"table": dict(ident)}},
            {
                "add": {
                    "chain": {
                        "family": FAMILY,
                        "table": TABLE,
                        "name": CHAIN,
                        "type": "filter",
                        "hook": "output",
                        "prio": MANGLE_PRIORITY,
                        "policy": "accept",
                    }
                }
            },
        ]
        for rule in rules:
            ops.append(
                {
                    "add": {
                        "rule": {
                            "family": FAMILY,
                            "table": TABLE,
                            "chain": CHAIN,
                            "expr": rule.expr(),
                        }
                    }
                }
            )
        self._run(["-f", "-"], stdin=json.dumps({"nftables": ops}))
        listing = self._listing()
        self._written = self._rules(listing or [])
        self._last_want = [r.expr() for r in rules]

    def ensure(self, rules: Sequence[ClassifyRule]) -> bool:
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
