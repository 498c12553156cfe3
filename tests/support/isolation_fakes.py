"""Stand-ins for the kernel that several isolation unit tests share.

Each keeps the state the kernel would keep, in memory or in a temporary
directory, so that a test can drive the agent and then look at what it left.
Nothing here touches the host.

:class:`TreeCgroupFS` (with :class:`Mount`, :class:`Host` and :func:`make_host`)
    The ``katalyst.cgroup.fs.CgroupFS`` seam over plain directories below a base
    directory, laid out as cgroup v1 hierarchies. It exists because
    :class:`katalyst.cgroup.fake.FakeCgroupFS` cannot model ``net_cls``: a
    hierarchy carrying it gets only the core files (no ``net_cls.classid``), and
    its mountinfo lists every hierarchy at root ``/``. It follows the kernel's
    rules where the net_cls classifier depends on them:

    * a pid is in exactly one cgroup per hierarchy, and writing it to
      ``cgroup.procs`` moves it there (``0`` means the writer, pid 1 here); a pid
      that has exited gives ESRCH, a non-number EINVAL;
    * a new ``net_cls`` cgroup starts with its parent's ``classid``
      (``cgrp_css_online()``), and ``net_cls.classid`` holds a u32;
    * a cgroup with tasks or child cgroups, or a hierarchy's root, cannot be
      removed (EBUSY); cgroup files cannot be created by writing (ENOENT), and a
      directory cannot be written (EISDIR);
    * mountinfo is a file, with each mount's root (``/kubepods`` for a bind mount
      of a subtree), so that a fake ``mount`` command can add to it;
    * nothing outside the base directory is ever changed (EACCES): never the
      host's ``/sys/fs/cgroup``.

    Errors go through ``katalyst.cgroup.errors.translate_oserror``, as the real
    ``HostCgroupFS``'s do. :class:`Host` is a host with a ``cpu`` hierarchy (where
    containers live) and, unless left out, a ``net_cls`` one.

:class:`NftBinary`
    A stand-in ``nft`` command: a small Python program that answers as nftables
    1.0.6 does (its output shapes were taken from the real command's):

    * ``-f -`` applies a batch in nft's own syntax atomically: the grammar the
      agent writes (``add table``, ``delete table``, ``table ... { chain ... {
      type ... hook ... priority ...; policy ...; <rules> } }``), refusing
      anything else with ``<input>:<line>: Error: syntax error``; a ``socket
      cgroupv2`` path that does not exist below the cgroup mount fails with
      "cgroupv2 path fails: No such file or directory", as nft resolves it when
      the rule is loaded (the kernel then holds the cgroup's id, and the listing
      shows the bare id once that directory is gone or recreated);
    * ``-j list table`` prints ``metainfo`` (version 1.0.6, json_schema_version
      1), the table, the chain and the rules with their handles, each anonymous
      counter as ``{"packets": N, "bytes": M}`` and a ``socket cgroupv2`` match
      without its level, as 1.0.6 lists it; it fails with "Error: No such file or
      directory" when the table is absent;
    * ``-j delete table`` fails the same way when the table is absent.

    The ruleset lives in a JSON file the test can edit, as another program on
    the host would change the kernel's; every call is logged. :data:`RULES` is a
    ruleset of three net_cls rules.

:class:`FakeShaper` and :class:`FakeTable`
    The agent's HTB tree and nftables table as the kernel would hold them, for
    the network loop: the classes last ensured with their byte counters (which
    start at 0 when a class is created and vanish when the root qdisc is
    deleted), and the rules last ensured. Either can be made to fail.
"""

from __future__ import annotations

import errno
import json
import os
import posixpath
import stat
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.isolation.netcls import NetClsClassifier, find_net_cls
from agent.isolation.network import MINOR, SYSTEM
from agent.isolation.nft import FAMILY, TABLE, ClassifyRule, NftError, NftTable, Rule
from agent.isolation.tc import ClassSpec, ClassStats, HTBShaper, ShaperError, classid
from katalyst.cgroup import CgroupDriver, CgroupInvalidValue, Hierarchy, open_driver
from katalyst.cgroup.errors import translate_oserror

# ---- a cgroup v1 host in a temporary directory ----------------------------------------


@dataclass(frozen=True)
class Mount:
    """A v1 hierarchy: where it is mounted, which controllers, and the root of the
    hierarchy that the mount shows (``/kubepods`` for a bind mount of a subtree)."""

    mountpoint: str
    controllers: tuple[str, ...]
    root: str = "/"


def _oserror(code: int) -> OSError:
    return OSError(code, os.strerror(code))


class TreeCgroupFS:
    """:class:`katalyst.cgroup.fs.CgroupFS` over plain directories below ``base``."""

    def __init__(self, base: Path, mounts: Iterable[Mount] = ()) -> None:
        self.base = base
        self.page_size = 4096
        self.mountinfo_path = base / "mountinfo"
        self.processes: set[int] = {1}
        self.writes: list[tuple[str, str]] = []
        """Every successful write: (path, value)."""
        base.mkdir(parents=True, exist_ok=True)
        self.mountinfo_path.write_text("")
        for m in mounts:
            self.add_mount(m)

    # ---- test helpers -----------------------------------------------------------

    def add_mount(self, m: Mount) -> None:
        """Mount a hierarchy (as ``mount -t cgroup`` would)."""
        os.makedirs(m.mountpoint, exist_ok=True)
        procs = "".join(f"{p}\n" for p in sorted(self.processes))
        Path(m.mountpoint, "cgroup.procs").write_text(procs)
        if "net_cls" in m.controllers:
            Path(m.mountpoint, "net_cls.classid").write_text("0\n")
        n = len(self._mounts()) + 30
        with self.mountinfo_path.open("a") as f:
            f.write(
                f"{n} 25 0:{n} {m.root} {m.mountpoint} rw,nosuid,nodev,noexec,relatime "
                f"shared:{n} - cgroup cgroup rw,{','.join(m.controllers)}\n"
            )

    def add_process(self, pid: int) -> None:
        """``pid`` exists, in the root cgroup of every hierarchy."""
        self.processes.add(pid)
        for m in self._mounts():
            self._set_procs(m.mountpoint, [*self.procs(m.mountpoint), pid])

    def exit_process(self, pid: int) -> None:
        """``pid`` exits: it leaves every cgroup."""
        self.processes.discard(pid)
        for m in self._mounts():
            for d in self._cgroups(m.mountpoint):
                self._set_procs(d, [p for p in self.procs(d) if p != pid])

    def procs(self, cgroup_dir: str) -> list[int]:
        return [int(x) for x in Path(cgroup_dir, "cgroup.procs").read_text().split()]

    def classid(self, cgroup_dir: str) -> int:
        return int(Path(cgroup_dir, "net_cls.classid").read_text())

    def make(self, path: str, *pids: int) -> None:
        """Create the cgroup ``path`` and its missing parents, with ``pids`` in it."""
        missing: list[str] = []
        at = path
        while not os.path.isdir(at):
            missing.append(at)
            at = posixpath.dirname(at)
        for p in reversed(missing):
            self.mkdir(p)
        for pid in pids:
            if pid not in self.processes:
                self.add_process(pid)
            self.write_text(posixpath.join(path, "cgroup.procs"), str(pid))

    # ---- CgroupFS ---------------------------------------------------------------

    def proc_path(self, relative: str) -> str:
        return str(self.base / "proc" / relative)

    def read_text(self, path: str) -> str:
        try:
            with open(path, encoding="ascii") as f:
                return f.read()
        except OSError as exc:
            raise translate_oserror(exc, path=path, action="read") from exc

    def write_text(self, path: str, value: str) -> None:
        action = f"write {value.strip()!r} to"
        self._inside(path, action)
        try:
            if os.path.isdir(path):
                raise _oserror(errno.EISDIR)
            if not os.path.isfile(path):
                raise _oserror(errno.ENOENT)  # cgroup files cannot be created by writing
            name = posixpath.basename(path)
            if name == "cgroup.procs":
                self._attach(posixpath.dirname(path), value)
            elif name == "net_cls.classid":
                v = value.strip()
                if not v.isdigit():
                    raise _oserror(errno.EINVAL)
                Path(path).write_text(f"{int(v) & 0xFFFFFFFF}\n")  # a u32 in the kernel
            else:
                Path(path).write_text(value)
        except OSError as exc:
            raise translate_oserror(exc, path=path, action=action) from exc
        self.writes.append((path, value))

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(path)

    def listdir(self, path: str) -> list[str]:
        try:
            return sorted(os.listdir(path))
        except OSError as exc:
            raise translate_oserror(exc, path=path, action="list") from exc

    def mkdir(self, path: str) -> None:
        self._inside(path, "create cgroup")
        if os.path.isdir(path):
            return
        if os.path.exists(path):
            raise CgroupInvalidValue(f"create cgroup {path}: the name is taken", path=path)
        try:
            os.mkdir(path)
        except OSError as exc:
            raise translate_oserror(exc, path=path, action="create cgroup") from exc
        m = self._mount_of(path)
        if m is None:
            return  # a plain directory (a mountpoint to be)
        Path(path, "cgroup.procs").write_text("")
        if "net_cls" in m.controllers:
            # cgrp_css_online(): a new cgroup starts with its parent's classid.
            parent = self.classid(posixpath.dirname(path))
            Path(path, "net_cls.classid").write_text(f"{parent}\n")

    def rmdir(self, path: str) -> None:
        action = "remove cgroup"
        self._inside(path, action)
        try:
            if not os.path.isdir(path):
                raise _oserror(errno.ENOENT)
            m = self._mount_of(path)
            if m is not None and (
                path == m.mountpoint
                or self.procs(path)
                or any(os.path.isdir(os.path.join(path, n)) for n in os.listdir(path))
            ):
                raise _oserror(errno.EBUSY)
            for n in os.listdir(path):
                os.unlink(os.path.join(path, n))
            os.rmdir(path)
        except OSError as exc:
            raise translate_oserror(exc, path=path, action=action) from exc

    def mountinfo(self) -> str:
        return self.mountinfo_path.read_text()

    def proc_self_cgroup(self) -> str:
        return "".join(
            f"{i + 1}:{','.join(m.controllers)}:/\n" for i, m in enumerate(self._mounts())
        )

    # ---- internals ----------------------------------------------------------------

    def _inside(self, path: str, action: str) -> None:
        """Nothing outside ``base`` is ever changed: not the host's /sys/fs/cgroup."""
        norm = posixpath.normpath(path)
        if not norm.startswith(str(self.base) + "/"):
            raise translate_oserror(_oserror(errno.EACCES), path=path, action=action)

    def _mounts(self) -> list[Mount]:
        out: list[Mount] = []
        for line in self.mountinfo_path.read_text().splitlines():
            fields = line.split()
            sep = fields.index("-")
            ctrls = tuple(o for o in fields[sep + 3].split(",") if o != "rw")
            out.append(Mount(fields[4], ctrls, fields[3]))
        return out

    def _mount_of(self, path: str) -> Mount | None:
        norm = posixpath.normpath(path)
        for m in sorted(self._mounts(), key=lambda m: -len(m.mountpoint)):
            if norm == m.mountpoint or norm.startswith(m.mountpoint + "/"):
                return m
        return None

    def _cgroups(self, top: str) -> list[str]:
        return [top] + [
            d for d, _, _ in os.walk(top) if d != top and os.path.isfile(d + "/cgroup.procs")
        ]

    def _set_procs(self, cgroup_dir: str, pids: Iterable[int]) -> None:
        Path(cgroup_dir, "cgroup.procs").write_text("".join(f"{p}\n" for p in sorted(set(pids))))

    def _attach(self, cgroup_dir: str, value: str) -> None:
        v = value.strip()
        if not v.isdigit():
            raise _oserror(errno.EINVAL)
        pid = int(v) or 1
        if pid not in self.processes:
            raise _oserror(errno.ESRCH)
        m = self._mount_of(cgroup_dir)
        assert m is not None
        for d in self._cgroups(m.mountpoint):
            self._set_procs(d, [p for p in self.procs(d) if p != pid])
        self._set_procs(cgroup_dir, [*self.procs(cgroup_dir), pid])


@dataclass
class Host:
    """A host with a ``cpu`` hierarchy (where containers live) and ``net_cls``."""

    fs: TreeCgroupFS
    driver: CgroupDriver
    cpu: str
    """The cpu hierarchy's mountpoint."""
    net_cls: str
    """The net_cls hierarchy's mountpoint."""

    @property
    def hier(self) -> Hierarchy:
        found = find_net_cls(self.fs)
        assert found is not None
        return found

    def container(self, cgroup: str, *pids: int) -> None:
        """A container's cgroup in the cpu hierarchy (relative to the driver's base)."""
        self.fs.make(self.driver.path("cpu", cgroup), *pids)

    def remove_container(self, cgroup: str, *pids: int) -> None:
        """The container's ``pids`` exit and its cpu cgroup is removed (a task left
        in it is moved to the root first, as if it had been moved away)."""
        for pid in pids:
            self.fs.exit_process(pid)
        path = self.driver.path("cpu", cgroup)
        for pid in self.fs.procs(path):
            self.fs.write_text(f"{self.cpu}/cgroup.procs", str(pid))
        self.fs.rmdir(path)

    def remove_pod(self, pod: str, *pids: int) -> None:
        """Every container of ``pod`` ends (``pids`` exit) and its cpu cgroups go."""
        for pid in pids:
            self.fs.exit_process(pid)
        top = self.driver.path("cpu", pod)
        for d, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
            for pid in self.fs.procs(d):
                self.fs.write_text(f"{self.cpu}/cgroup.procs", str(pid))
            self.fs.rmdir(d)

    def classifier(self) -> NetClsClassifier:
        return NetClsClassifier(self.driver, self.hier)


def make_host(
    base: Path,
    *,
    cpu_root: str = "/",
    net_cls_root: str = "/",
    net_cls: tuple[str, ...] | None = ("net_cls",),
    driver_base: str = "",
) -> Host:
    """A v1 host below ``base``; ``net_cls=None`` leaves net_cls unmounted."""
    cpu = str(base / "cgroup" / "cpu")
    net = str(base / "cgroup" / "net_cls")
    mounts = [Mount(cpu, ("cpu",), cpu_root)]
    if net_cls is not None:
        mounts.append(Mount(net, net_cls, net_cls_root))
    fs = TreeCgroupFS(base, mounts)
    if driver_base:
        fs.make(posixpath.join(cpu, driver_base))
    return Host(fs, open_driver(fs, base=driver_base), cpu, net)


# ---- nft ------------------------------------------------------------------------------

NFT_SCRIPT = '''\
#!{python}
"""nft, as far as the agent uses it, over a JSON state file."""
import copy
import json
import os
import re
import sys

STATE = {state!r}
LOG = {log!r}
CGROUP_BASE = {cgroup_base!r}


def fail(message, command="", where=""):
    # As nft: "[<input>:<line>:<columns>: ]Error: <why>", then the offending line.
    prefix = where + ": " if where else ""
    sys.stderr.write(prefix + "Error: " + message + "\\n" + command + "\\n")
    sys.exit(1)


def listing(state, key):
    table = state["tables"][key]
    family, name = key.split(" ")
    items = [
        {{"metainfo": {{"version": "1.0.6", "release_name": "Lester Gooch #5",
                      "json_schema_version": 1}}}},
        {{"table": {{"family": family, "name": name, "handle": table["handle"]}}}},
    ]
    for chain in table["chains"]:
        items.append({{"chain": dict(family=family, table=name, **chain)}})
    for rule in table["rules"]:
        expr = [
            {{"counter": dict(rule["counter"])}} if "counter" in e else e for e in rule["expr"]
        ]
        if rule.get("cgroup_id") is not None:
            # The kernel holds the cgroup's id; nft finds its path again when listing,
            # and prints the bare id once no directory has it (removed, or recreated).
            path = os.path.join(CGROUP_BASE, expr[0]["match"]["right"])
            if not os.path.isdir(path) or os.stat(path).st_ino != rule["cgroup_id"]:
                match = dict(expr[0]["match"], right=str(rule["cgroup_id"]))
                expr = [{{"match": match}}, *expr[1:]]
        items.append({{"rule": {{"family": family, "table": name, "chain": rule["chain"],
                                "handle": rule["handle"], "expr": expr}}}})
    return {{"nftables": items}}


META_CGROUP = re.compile(r"meta cgroup (\\d+) counter meta priority set ([0-9a-f]+:[0-9a-f]+)")
SOCKET_V2 = re.compile(
    r'socket cgroupv2 level (\\d+) "([^"]+)" counter meta priority set ([0-9a-f]+:[0-9a-f]+)'
)


def mangle(value):
    return {{"mangle": {{"key": {{"meta": {{"key": "priority"}}}}, "value": value}}}}


def rule_expr(line, where):
    m = META_CGROUP.fullmatch(line)
    if m:
        match = {{"op": "==", "left": {{"meta": {{"key": "cgroup"}}}}, "right": int(m[1])}}
        return [{{"match": match}}, {{"counter": None}}, mangle(m[2])], None
    m = SOCKET_V2.fullmatch(line)
    if m:
        path = os.path.join(CGROUP_BASE, m[2])
        if not os.path.isdir(path):
            fail("cgroupv2 path fails: No such file or directory", line, where)
        # nft 1.0.6 lists the path, without the level.
        match = {{"op": "==", "left": {{"socket": {{"key": "cgroupv2"}}}}, "right": m[2]}}
        return [{{"match": match}}, {{"counter": None}}, mangle(m[3])], os.stat(path).st_ino
    fail("syntax error", line, where)


def add_table(state, key):
    if key not in state["tables"]:
        state["next_handle"] += 1
        state["tables"][key] = {{"handle": state["next_handle"], "chains": [], "rules": [],
                                "next": 0}}


def apply(state, text):
    table = chain = None
    for n, raw in enumerate(text.splitlines(), 1):
        line, where = raw.strip(), "/dev/stdin:" + str(n)
        words = line.split()
        if not words:
            continue
        if words[:2] == ["add", "table"] and len(words) == 4:
            add_table(state, words[2] + " " + words[3])
        elif words[:2] == ["delete", "table"] and len(words) == 4:
            if words[2] + " " + words[3] not in state["tables"]:
                fail("Could not process rule: No such file or directory", line, where)
            del state["tables"][words[2] + " " + words[3]]
        elif words[0] == "table" and len(words) == 4 and words[3] == "{{" and table is None:
            table = words[1] + " " + words[2]
            add_table(state, table)
        elif words[0] == "chain" and len(words) == 3 and words[2] == "{{" and table is not None:
            t = state["tables"][table]
            t["next"] += 1
            chain = {{"name": words[1], "handle": t["next"]}}
            t["chains"].append(chain)
        elif words[0] == "type" and chain is not None:
            m = re.fullmatch(r"type (\\w+) hook (\\w+) priority (-?\\d+); policy (\\w+);", line)
            if m is None:
                fail("syntax error", line, where)
            chain.update(type=m[1], hook=m[2], prio=int(m[3]), policy=m[4])
        elif line == "}}" and chain is not None:
            chain = None
        elif line == "}}" and table is not None:
            table = None
        elif chain is not None:
            t = state["tables"][table]
            t["next"] += 1
            expr, cgroup_id = rule_expr(line, where)
            t["rules"].append({{"chain": chain["name"], "handle": t["next"], "expr": expr,
                               "cgroup_id": cgroup_id, "counter": {{"packets": 0, "bytes": 0}}}})
        else:
            fail("syntax error", line, where)


args = sys.argv[1:]
with open(LOG, "a") as f:
    f.write(json.dumps(args) + "\\n")
with open(STATE) as f:
    state = json.load(f)
as_json = args[:1] == ["-j"]
command = " ".join(args[1:] if as_json else args)
if command in state["fail"]:
    fail(state["fail"][command], command)
if command.startswith("list table ") and as_json:
    key = " ".join(args[3:5])
    if key not in state["tables"]:
        fail("No such file or directory", command)
    print(state["garbage"] or json.dumps(listing(state, key)))
elif command == "-f -" and not as_json:
    new = copy.deepcopy(state)
    apply(new, sys.stdin.read())
    with open(STATE, "w") as f:
        json.dump(new, f)
elif command.startswith("delete table "):
    key = " ".join(args[-2:])
    if key not in state["tables"]:
        fail("Could not process rule: No such file or directory", command)
    del state["tables"][key]
    with open(STATE, "w") as f:
        json.dump(state, f)
else:
    fail("syntax error, unexpected command", command)
'''

NFT_KEY = f"{FAMILY} {TABLE}"
"""The agent's table as the state file keys it: ``<family> <name>``."""


class NftBinary:
    """A stand-in ``nft`` below ``where``: its path, the ruleset it holds, what it was
    asked. ``socket cgroupv2`` paths resolve below ``cgroup_base``."""

    def __init__(self, where: Path, *, cgroup_base: Path | None = None) -> None:
        where.mkdir(parents=True, exist_ok=True)
        self.path = where / "nft"
        self.state_path = where / "nft-state.json"
        self.log_path = where / "nft-calls.log"
        self.cgroup_base = cgroup_base or where / "cgroup"
        self._save({"tables": {}, "next_handle": 0, "fail": {}, "garbage": ""})
        self.log_path.write_text("")
        self.path.write_text(
            NFT_SCRIPT.format(
                python=sys.executable,
                state=str(self.state_path),
                log=str(self.log_path),
                cgroup_base=str(self.cgroup_base),
            )
        )
        self.path.chmod(self.path.stat().st_mode | stat.S_IXUSR)

    def _load(self) -> dict[str, Any]:
        state: dict[str, Any] = json.loads(self.state_path.read_text())
        return state

    def _save(self, state: dict[str, Any]) -> None:
        self.state_path.write_text(json.dumps(state))

    def calls(self) -> list[list[str]]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines()]

    def writes(self) -> int:
        """How many batches (``-f -``) it was given."""
        return sum(1 for c in self.calls() if c == ["-f", "-"])

    def table(self) -> dict[str, Any] | None:
        table: dict[str, Any] | None = self._load()["tables"].get(NFT_KEY)
        return table

    def rules(self) -> list[list[dict[str, Any]]]:
        """The rules' expressions as the kernel holds them (counters aside)."""
        table = self.table()
        assert table is not None
        return [r["expr"] for r in table["rules"]]

    # ---- what someone else does to the host's ruleset ------------------------------

    def delete_table(self) -> None:
        state = self._load()
        del state["tables"][NFT_KEY]
        self._save(state)

    def edit(self, index: int, expr: list[dict[str, Any]]) -> None:
        state = self._load()
        state["tables"][NFT_KEY]["rules"][index]["expr"] = expr
        self._save(state)

    def count(self, index: int, *, packets: int, nbytes: int) -> None:
        """Traffic matched rule ``index``."""
        state = self._load()
        state["tables"][NFT_KEY]["rules"][index]["counter"] = {"packets": packets, "bytes": nbytes}
        self._save(state)

    def fail(self, command: str, message: str) -> None:
        """``nft [-j] <command>`` fails with ``message``."""
        state = self._load()
        state["fail"][command] = message
        self._save(state)

    def print_garbage(self, text: str) -> None:
        state = self._load()
        state["garbage"] = text
        self._save(state)


RULES: list[Rule] = [ClassifyRule(classid(m)) for m in (0x10, 0x20, 0x30)]


# ---- the network loop's shaper and table ---------------------------------------------

BYTES_PER_MBIT_S = 1_000_000 // 8


class FakeShaper(HTBShaper):
    """The agent's HTB tree as the kernel would hold it: the classes last ensured and
    their byte counters (which start at 0 when a class is created)."""

    def __init__(self, interface: str = "eth0", *, netns: str | None = None) -> None:
        super().__init__(interface, netns=netns, default_minor=MINOR[SYSTEM])
        self.tree: dict[int, ClassSpec] = {}
        self.sent: dict[int, int] = {}
        self.ensured: list[tuple[float, list[ClassSpec]]] = []
        self.error: ShaperError | None = None
        self.removed = 0

    def transmit(self, seconds: float, **mbit: float) -> None:
        """Traffic through the classes that exist: class name -> Mbit/s."""
        for name, rate in mbit.items():
            minor = MINOR[name]
            if minor in self.tree:
                self.sent[minor] += round(rate * BYTES_PER_MBIT_S * seconds)

    def wipe(self) -> None:
        """Someone deleted the root qdisc: the tree and its counters are gone."""
        self.tree, self.sent = {}, {}

    def stats(self) -> dict[int, ClassStats]:
        if self.error is not None:
            raise self.error
        return {
            m: ClassStats(
                m, self.sent[m], self.sent[m] // 1500, 0, 0, s.rate_mbit, s.ceil_mbit, s.prio
            )
            for m, s in self.tree.items()
        }

    def ensure(self, link_mbit: float, classes: Sequence[ClassSpec]) -> list[str]:
        if self.error is not None:
            raise self.error
        self.ensured.append((link_mbit, list(classes)))
        done = []
        for spec in classes:
            if self.tree.get(spec.minor) != spec:
                done.append(f"class {spec.minor:x}")
                self.sent.setdefault(spec.minor, 0)
        self.tree = {c.minor: c for c in classes}
        return done

    def remove(self) -> bool:
        if self.error is not None:
            raise self.error
        self.removed += 1
        had = bool(self.tree)
        self.wipe()
        return had


class FakeTable(NftTable):
    """The agent's nftables table as a list of rules."""

    def __init__(self, *, netns: str | None = None) -> None:
        super().__init__(netns=netns, nft="/nonexistent/nft")
        self.held: list[Rule] | None = None
        self.error: NftError | None = None
        self.removed = 0

    def ensure(self, rules: Sequence[Rule]) -> bool:
        if self.error is not None:
            raise self.error
        changed = self.held != list(rules)
        self.held = list(rules)
        return changed

    def remove(self) -> bool:
        if self.error is not None:
            raise self.error
        self.removed += 1
        had = self.held is not None
        self.held = None
        return had
