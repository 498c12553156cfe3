"""Typed cgroup errors, translated from ``OSError`` at the file boundary.

Callers never see a bare ``OSError`` from the cgroup layer: a vanished cgroup is
routine pod churn (:class:`CgroupNotFound`), a value the kernel refuses is the
caller's bug or the user's bad input (:class:`CgroupInvalidValue`), and so on.
"""

from __future__ import annotations

import errno


class CgroupError(Exception):
    """Base class of every error the cgroup layer raises."""

    def __init__(self, message: str, *, path: str = "", err: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        """The cgroup file or directory the operation touched."""
        self.errno = err
        """The kernel's errno, when the error came from a system call."""


class CgroupNotFound(CgroupError):
    """The cgroup (or one of its files) does not exist: usually pod churn."""


class CgroupPermissionError(CgroupError):
    """The kernel refused the operation for lack of privilege (EACCES/EPERM)."""


class CgroupInvalidValue(CgroupError):
    """The kernel rejected the value written (EINVAL, ERANGE, ENOSPC, EOVERFLOW).

    ENOSPC is what cgroup v1 answers when a task is attached to a cpuset cgroup
    whose ``cpuset.cpus`` or ``cpuset.mems`` is empty.
    """


class CgroupBusy(CgroupError):
    """EBUSY: the cgroup still has tasks or children, or a child uses the resource."""


class CgroupUnsupported(CgroupError):
    """The controller or interface file is not offered by this kernel or layout."""


_BY_ERRNO: dict[int, type[CgroupError]] = {
    errno.ENOENT: CgroupNotFound,
    # ENODEV: reading a file of a cgroup that was removed while it was open.
    errno.ENODEV: CgroupNotFound,
    errno.ESRCH: CgroupNotFound,
    errno.EACCES: CgroupPermissionError,
    errno.EPERM: CgroupPermissionError,
    errno.EROFS: CgroupPermissionError,
    errno.EINVAL: CgroupInvalidValue,
    errno.ERANGE: CgroupInvalidValue,
    errno.ENOSPC: CgroupInvalidValue,
    errno.EOVERFLOW: CgroupInvalidValue,
    errno.EBUSY: CgroupBusy,
    errno.ENOTEMPTY: CgroupBusy,
    errno.EOPNOTSUPP: CgroupUnsupported,
}


def translate_oserror(exc: OSError, *, path: str, action: str) -> CgroupError:
    """Map an ``OSError`` from a cgroup file operation to the typed error.

    ``action`` says what was attempted (``"write '20000' to"``) so that the
    message names the file, the operation and the kernel's answer.
    """
    code = exc.errno if exc.errno is not None else 0
    kind = _BY_ERRNO.get(code, CgroupError)
    reason = exc.strerror or errno.errorcode.get(code, str(code))
    return kind(f"{action} {path}: {reason}", path=path, err=code)
