"""Tag containers' sockets with their QoS class: cgroup v1 ``net_cls.classid``.

The kernel copies a cgroup's ``net_cls.classid`` to the sockets its tasks create,
updates their existing sockets when the classid is written or a task moves in,
and nftables' ``meta cgroup`` matches it (:mod:`agent.isolation.nft`). The
``net_cls`` hierarchy is often not mounted; :func:`mount_net_cls` mounts it (as
runc expects, at ``/sys/fs/cgroup/net_cls``) when it is not.

A container's cgroup in ``net_cls`` mirrors its path in the ``cpu`` hierarchy
(where the kubelet and the standalone node create it). Neither the kubelet nor
runc create it when ``net_cls`` was mounted after the pod started, so the
classifier creates it, writes the classid, and moves the container's tasks
there (new children inherit it); it removes what it created when the container
goes, and resets what it found.
"""

from __future__ import annotations

import errno
import logging
import posixpath
import subprocess
from collections.abc import Mapping

from katalyst.cgroup import CgroupDriver, CgroupError, CgroupNotFound
from katalyst.cgroup.fs import CgroupFS
from katalyst.cgroup.layout import Hierarchy, detect_layout

log = logging.getLogger(__name__)

DEFAULT_MOUNTPOINT = "/sys/fs/cgroup/net_cls"


class NetClsError(Exception):
    """net_cls is not available and could not be mounted; the message says why."""


def find_net_cls(fs: CgroupFS) -> Hierarchy | None:
    """The mounted v1 hierarchy that carries ``net_cls``, if any."""
    for hier in detect_layout(fs).v1:
        if "net_cls" in hier.controllers:
            return hier
    return None


def mount_net_cls(fs: CgroupFS, mountpoint: str = DEFAULT_MOUNTPOINT) -> Hierarchy:
    """The ``net_cls`` hierarchy, mounted at ``mountpoint`` first when it is not mounted
    anywhere. (The ``mount`` command: Python has no mount(2) binding, and the
    command reports the kernel's reason in words.)"""
    found = find_net_cls(fs)
    if found is not None:
        return found
    try:
        fs.mkdir(mountpoint)
    except CgroupError as exc:
        raise NetClsError(f"cannot create the net_cls mountpoint {mountpoint}: {exc}") from exc
    try:
        done = subprocess.run(
            ["mount", "-t", "cgroup", "-o", "net_cls", "net_cls", mountpoint],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetClsError(f"cannot mount net_cls at {mountpoint}: {exc}") from exc
    if done.returncode != 0:
        raise NetClsError(f"cannot mount net_cls at {mountpoint}: {done.stderr.strip()}")
    log.info("mounted the net_cls cgroup hierarchy at %s", mountpoint)
    found = find_net_cls(fs)
    if found is None:
        raise NetClsError(f"net_cls was mounted at {mountpoint} but is not in mountinfo")
    return found


class NetClsClassifier:
    """Writes ``net_cls.classid`` for containers given by their cgroup (relative to
    ``driver``'s base), in the ``net_cls`` hierarchy ``hier``.

    Who removes the ``net_cls`` directories: the kubelet removes those it made with
    the pod. A directory whose ``cpu`` counterpart is gone and that holds no task
    and no child belongs to no one: the classifier removes it (and such parents up
    to the driver's base) when its container goes, at :meth:`release`, and at
    :meth:`cleanup`, whoever made it, so that directories made by an earlier run
    of the agent do not pile up either.
    """

    def __init__(self, driver: CgroupDriver, hier: Hierarchy) -> None:
        if "net_cls" not in hier.controllers:
            raise ValueError(f"{hier.mountpoint} does not carry net_cls")
        self._driver = driver
        self._fs = driver.fs
        self._hier = hier
        self._known: dict[str, int] = {}
        """Container cgroup -> the classid it was given."""

    @property
    def mountpoint(self) -> str:
        return self._hier.mountpoint

    def path_for(self, cgroup: str) -> str:
        """The container's directory in ``net_cls``: its ``cpu`` path, re-rooted."""
        cpu = self._driver.layout.hierarchy_for("cpu")
        absolute = self._driver.path("cpu", cgroup)
        inside = posixpath.relpath(absolute, cpu.mountpoint)
        in_ns = posixpath.normpath(posixpath.join(cpu.root, inside))
        root = self._hier.root.rstrip("/")
        if root and not (in_ns == root or in_ns.startswith(root + "/")):
            raise CgroupError(f"{cgroup}: outside the net_cls mount's root {self._hier.root}")
        rel = in_ns[len(root) :].lstrip("/")
        return posixpath.join(self._hier.mountpoint, rel) if rel else self._hier.mountpoint

    def _ensure_dir(self, path: str) -> None:
        missing: list[str] = []
        at = path
        while at != self._hier.mountpoint and not self._fs.is_dir(at):
            missing.append(at)
            at = posixpath.dirname(at)
        for p in reversed(missing):
            self._fs.mkdir(p)

    def classify(self, cgroup: str, classid: int) -> bool:
        """Give the container's sockets ``classid``; True when something was written.
        A container whose cgroup vanished raises :class:`CgroupNotFound` (pod churn)."""
        tasks = self._driver.procs(cgroup)  # CgroupNotFound when the container is gone
        path = self.path_for(cgroup)
        self._ensure_dir(path)
        changed = False
        file = posixpath.join(path, "net_cls.classid")
        if int(self._fs.read_text(file).strip() or "0") != classid:
            self._fs.write_text(file, str(classid))
            changed = True
        inside = set(self._read_procs(path))
        for pid in tasks:
            if pid in inside:
                continue
            try:
                self._fs.write_text(posixpath.join(path, "cgroup.procs"), str(pid))
                changed = True
            except CgroupError as exc:
                # A task that exited meanwhile (ESRCH) is churn, not a failure.
                if exc.errno != errno.ESRCH:
                    raise
        self._known[cgroup] = classid
        return changed

    def _read_procs(self, path: str) -> list[int]:
        text = self._fs.read_text(posixpath.join(path, "cgroup.procs"))
        return [int(x) for x in text.split() if x.isdigit()]

    def sync(self, targets: Mapping[str, int]) -> tuple[int, int]:
        """Classify every container in ``targets`` (cgroup -> classid) and let go of
        those no longer there; returns (written, gone) counts."""
        written = gone = 0
        for cgroup, cid in targets.items():
            try:
                if self.classify(cgroup, cid):
                    written += 1
            except CgroupNotFound:
                gone += 1
        for cgroup in set(self._known) - set(targets):
            self.forget(cgroup)
        return written, gone

    def forget(self, cgroup: str) -> None:
        """The container is gone: prune its directory and parents that belong to no one."""
        self._known.pop(cgroup, None)
        self._prune(cgroup)

    def _orphan(self, cgroup: str, path: str) -> bool:
        """Whether ``path`` (the mirror of ``cgroup``) has no ``cpu`` counterpart, no
        task and no child."""
        if self._fs.is_dir(self._driver.path("cpu", cgroup)):
            return False
        if self._read_procs(path):
            return False
        return not any(self._fs.is_dir(posixpath.join(path, n)) for n in self._fs.listdir(path))

    def _prune(self, cgroup: str) -> None:
        rel = cgroup.strip("/")
        while True:
            try:
                path = self.path_for(rel)
                if path == self._hier.mountpoint or not self._fs.is_dir(path):
                    pass
                elif self._orphan(rel, path):
                    self._fs.rmdir(path)
                else:
                    return
            except CgroupNotFound:
                pass
            except CgroupError as exc:
                log.debug("net_cls: %s not pruned: %s", rel or "<base>", exc)
                return
            if not rel:
                return
            rel = posixpath.dirname(rel)

    def release(self) -> None:
        """The agent stops: prune what belongs to no one (containers that are gone);
        running containers keep their classids across the agent's restart."""
        for cgroup in list(self._known):
            self._prune(cgroup)

    def cleanup(self) -> None:
        """Reset every classid the classifier wrote and prune what belongs to no one."""
        for cgroup in list(self._known):
            try:
                file = posixpath.join(self.path_for(cgroup), "net_cls.classid")
                if self._fs.exists(file):
                    self._fs.write_text(file, "0")
            except CgroupError as exc:
                log.warning("net_cls: cannot reset %s: %s", cgroup, exc)
            self._prune(cgroup)
        self._known.clear()


def reset_classids(fs: CgroupFS, hier: Hierarchy, *, major: int, top: str | None = None) -> int:
    """Write 0 to every ``net_cls.classid`` below ``top`` (a directory of ``hier``;
    default its mountpoint) whose major is ``major`` (the agent's: ``--cleanup`` after
    a restart, when the agent no longer knows which cgroups it tagged); returns how
    many it reset. ``top`` keeps one agent's cleanup off another's pods."""
    reset = 0
    stack = [top or hier.mountpoint]
    while stack:
        path = stack.pop()
        try:
            names = fs.listdir(path)
        except CgroupError:
            continue
        for name in names:
            child = posixpath.join(path, name)
            if fs.is_dir(child):
                stack.append(child)
        file = posixpath.join(path, "net_cls.classid")
        try:
            value = int(fs.read_text(file).strip() or "0")
            if value >> 16 == major:
                fs.write_text(file, "0")
                reset += 1
        except (CgroupError, ValueError):
            continue
    return reset
