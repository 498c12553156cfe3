"""Network namespaces, a veth pair and a ``net_cls`` mount of the test's own.

Everything is named ``kq<pid><n>...`` so that it is recognisably the test's, lives
only inside the namespaces it creates (nothing touches the host's interfaces or
firewall), and is removed on exit, also when the test fails.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

from agent.isolation.netcls import find_net_cls
from katalyst.cgroup import HostCgroupFS
from katalyst.cgroup.layout import Hierarchy
from tests.support.kernel import kernel_unavailable

_counter = itertools.count()

SINK = """
import socket, threading
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((HOST, PORT))
s.listen(16)
def drain(c):
    with c:
        while c.recv(1 << 16):
            pass
while True:
    c, _ = s.accept()
    threading.Thread(target=drain, args=(c,), daemon=True).start()
"""
"""A TCP sink: accepts and reads everything (``HOST``/``PORT`` set by :func:`sink_argv`)."""

SENDER = """
import socket, sys, time
end = time.monotonic() + 20
while True:
    try:
        s = socket.create_connection((HOST, PORT))
        break
    except OSError:
        if time.monotonic() > end:
            raise
        time.sleep(0.05)
chunk = b"x" * 65536
while True:
    s.sendall(chunk)
"""
"""A bulk TCP sender that runs until it is stopped."""


def sink_argv(host: str, port: int) -> list[str]:
    return [sys.executable, "-c", f"HOST={host!r}\nPORT={port}\n{SINK}"]


def sender_argv(host: str, port: int) -> list[str]:
    return [sys.executable, "-c", f"HOST={host!r}\nPORT={port}\n{SENDER}"]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


@dataclass(frozen=True, slots=True)
class VethPair:
    """Two namespaces joined by a veth: ``a`` (address ``addr_a``) sends to ``b``."""

    ns_a: str
    ns_b: str
    dev_a: str
    dev_b: str
    addr_a: str
    addr_b: str

    def exec_argv(self, ns: str, argv: list[str]) -> list[str]:
        """``argv`` run inside namespace ``ns``."""
        return ["ip", "netns", "exec", ns, *argv]


def check_net_ready() -> None:
    if os.geteuid() != 0:
        kernel_unavailable("network namespace tests need root")
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            kernel_unavailable(f"{tool} is not installed (.ci/run installs iproute2 and nftables)")


@contextlib.contextmanager
def veth_pair() -> Iterator[VethPair]:
    """Namespaces ``kq<pid><n>a``/``b`` joined by a veth, addresses in 10.251.x/30."""
    check_net_ready()
    n = next(_counter)
    tag = f"kq{os.getpid()}{n}"
    pair = VethPair(
        ns_a=f"{tag}a",
        ns_b=f"{tag}b",
        dev_a=f"{tag}va"[-15:],
        dev_b=f"{tag}vb"[-15:],
        addr_a=f"10.251.{n % 250}.1",
        addr_b=f"10.251.{n % 250}.2",
    )
    made: list[str] = []
    try:
        for ns in (pair.ns_a, pair.ns_b):
            _ip("netns", "add", ns)
            made.append(ns)
        _ip("-n", pair.ns_a, "link", "add", pair.dev_a, "type", "veth", "peer", "name", pair.dev_b)
        _ip("-n", pair.ns_a, "link", "set", pair.dev_b, "netns", pair.ns_b)
        for ns, dev, addr in (
            (pair.ns_a, pair.dev_a, pair.addr_a),
            (pair.ns_b, pair.dev_b, pair.addr_b),
        ):
            _ip("-n", ns, "addr", "add", f"{addr}/30", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield pair
    finally:
        # Deleting a namespace deletes its veth end, and the peer with it.
        for ns in reversed(made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20, check=False)


@contextlib.contextmanager
def net_cls_hierarchy() -> Iterator[Hierarchy]:
    """The host's ``net_cls`` hierarchy, or one mounted for the test in a temp
    folder (unmounted on exit when the test mounted it)."""
    fs = HostCgroupFS()
    found = find_net_cls(fs)
    if found is not None:
        yield found
        return
    where = tempfile.mkdtemp(prefix="kqnetcls")
    try:
        done = subprocess.run(
            ["mount", "-t", "cgroup", "-o", "net_cls", "kqnetcls", where],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        if done.returncode != 0:
            kernel_unavailable(f"cannot mount net_cls: {done.stderr.strip()}")
        try:
            hier = find_net_cls(fs)
            assert hier is not None, "net_cls was mounted but is not in mountinfo"
            yield hier
        finally:
            subprocess.run(["umount", where], capture_output=True, timeout=20, check=False)
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(where)
