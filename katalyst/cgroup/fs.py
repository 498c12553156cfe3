"""The ``CgroupFS`` seam: every byte the project reads from or writes to a cgroup
filesystem goes through one of these.

:class:`HostCgroupFS` talks to the kernel; :class:`katalyst.cgroup.fake.FakeCgroupFS`
models it in memory for tests. Both raise only the typed errors of
:mod:`katalyst.cgroup.errors`. One contract suite runs against both.
"""

from __future__ import annotations

import os
from typing import Protocol

from katalyst.cgroup.errors import CgroupError, CgroupInvalidValue, translate_oserror


class CgroupFS(Protocol):
    """File operations on absolute paths of mounted cgroup hierarchies."""

    page_size: int
    """The kernel's page size in bytes: memory limits read back rounded down to it."""

    def proc_path(self, relative: str) -> str:
        """The path of a file below procfs, e.g. ``pressure/cpu``."""
        ...

    def read_text(self, path: str) -> str:
        """Return the whole content of a cgroup file."""
        ...

    def write_text(self, path: str, value: str) -> None:
        """Write ``value`` to a cgroup file in one ``write(2)``; the kernel's error is raised."""
        ...

    def exists(self, path: str) -> bool:
        """Whether the file or directory exists."""
        ...

    def is_dir(self, path: str) -> bool:
        """Whether ``path`` is a directory (a cgroup)."""
        ...

    def listdir(self, path: str) -> list[str]:
        """Names in a cgroup directory, sorted."""
        ...

    def mkdir(self, path: str) -> None:
        """Create a cgroup; an existing one is not an error, a name taken by an
        interface file (``cpu.shares``) is :class:`CgroupInvalidValue`."""
        ...

    def rmdir(self, path: str) -> None:
        """Remove an empty cgroup (no tasks, no children); :class:`CgroupBusy` otherwise."""
        ...

    def mountinfo(self) -> str:
        """The text of ``/proc/self/mountinfo`` for layout detection."""
        ...

    def proc_self_cgroup(self) -> str:
        """The text of ``/proc/self/cgroup``: this process's own cgroups."""
        ...


class HostCgroupFS:
    """The real kernel's cgroup filesystems."""

    def __init__(self, *, proc_root: str = "/proc") -> None:
        self._proc = proc_root
        self.page_size = os.sysconf("SC_PAGE_SIZE")

    def proc_path(self, relative: str) -> str:
        return os.path.join(self._proc, relative)

    def read_text(self, path: str) -> str:
        try:
            with open(path, encoding="ascii", errors="replace") as f:
                return f.read()
        except OSError as exc:
            raise translate_oserror(exc, path=path, action="read") from exc

    def write_text(self, path: str, value: str) -> None:
        # os.open/os.write rather than open().write(): buffered file objects can
        # report the kernel's EINVAL only at close, or lose it entirely when the
        # object is garbage-collected; one write(2) per value is also what the
        # kernel's cgroup files expect (they do not accept a value split in two).
        data = value.encode("ascii")
        action = f"write {value.strip()!r} to"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise translate_oserror(exc, path=path, action=action) from exc
        try:
            written = os.write(fd, data)
        except OSError as exc:
            raise translate_oserror(exc, path=path, action=action) from exc
        finally:
            os.close(fd)
        if written != len(data):
            raise CgroupError(
                f"{action} {path}: short write ({written} of {len(data)} bytes)", path=path
            )

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
        try:
            os.mkdir(path)
        except FileExistsError:
            if os.path.isdir(path):
                return
            raise CgroupInvalidValue(
                f"create cgroup {path}: the name is taken by an interface file", path=path
            ) from None
        except OSError as exc:
            raise translate_oserror(exc, path=path, action="create cgroup") from exc

    def rmdir(self, path: str) -> None:
        try:
            os.rmdir(path)
        except OSError as exc:
            raise translate_oserror(exc, path=path, action="remove cgroup") from exc

    def mountinfo(self) -> str:
        return self.read_text(self.proc_path("self/mountinfo"))

    def proc_self_cgroup(self) -> str:
        return self.read_text(self.proc_path("self/cgroup"))
