"""The reporter's effect: write a :class:`Report` to the Node and to the CNR.

Over an injected :class:`ReportClient` (the API server's four calls, on the wire;
``agent.metaserver.apiserver`` implements it over the official client, the only
module of the agent that may import it).

The Node is one merge patch of its status. The CNR is read first, created when it is
missing (a 409 AlreadyExists means another agent or the CNR controller created it
meanwhile: read again), then its status is patched with the stored
resourceVersion; a 409 Conflict (changed since the read) or a 404 (deleted since
the read) starts over from the read, a few rounds at most.
"""

from __future__ import annotations

import enum
import logging
from collections import Counter
from collections.abc import Mapping
from typing import Any, Final, Protocol

from agent.reporter.model import Reclaimed, Report, Target
from agent.reporter.wire import cnr_object, cnr_status_patch, node_status_patch

__all__ = ["ReportClient", "Reporter", "WriteOutcome"]

log = logging.getLogger(__name__)

HTTP_NOT_FOUND: Final = 404
HTTP_CONFLICT: Final = 409
CNR_ROUNDS: Final = 4
"""Reads of the CNR in one write before giving up on conflicts (the write is then
retried after the back-off)."""


class ReportClient(Protocol):
    """The API-server calls the reporter needs, on the wire.

    Every call raises ``OSError`` (``ConnectionError`` included) or ``TimeoutError``
    when the API server gave no answer; an answer, whatever its status, is returned
    as the HTTP status, except by :meth:`get_cnr`, which has an object to return.
    """

    async def patch_node_status(self, name: str, body: Mapping[str, Any]) -> int:
        """PATCH ``/api/v1/nodes/{name}/status`` with ``body`` as
        ``application/merge-patch+json``; the HTTP status."""
        ...

    async def get_cnr(self, name: str) -> dict[str, Any] | None:
        """GET ``/apis/node.katalyst.kubewharf.io/v1alpha1/customnoderesources/{name}``:
        the object, or None on 404; ``ConnectionError`` for any other status."""
        ...

    async def create_cnr(self, body: Mapping[str, Any]) -> int:
        """POST ``body`` to ``/apis/node.katalyst.kubewharf.io/v1alpha1/
        customnoderesources``; the HTTP status."""
        ...

    async def patch_cnr_status(self, name: str, body: Mapping[str, Any]) -> int:
        """PATCH ``.../customnoderesources/{name}/status`` with ``body`` as
        ``application/merge-patch+json``; the HTTP status."""
        ...


class WriteOutcome(enum.StrEnum):
    """How one write to one target went."""

    WRITTEN = "written"
    """The API server accepted the write."""
    CREATED = "created"
    """The CNR was missing: created, then its status written."""
    FAILED = "failed"
    """No answer, or an answer that is not a success; retried after the back-off."""


class _Refused(Exception):
    """The API server answered, but not with a success; the message says what."""


def _ok(status: int) -> bool:
    return 200 <= status < 300


class Reporter:
    """Writes reports for one node; counts every write by target and outcome."""

    def __init__(self, client: ReportClient, *, node_name: str) -> None:
        self._client = client
        self._node = node_name
        self.writes: Counter[tuple[Target, WriteOutcome]] = Counter()
        """(target, outcome) -> writes so far."""
        self.last_error: dict[Target, str] = {}
        """Target -> why its last write failed (removed when a write succeeds)."""

    @property
    def node_name(self) -> str:
        """The node reported on (also the CNR's name)."""
        return self._node

    async def send(self, report: Report) -> dict[Target, bool]:
        """Write ``report`` to each of its targets; whether each succeeded."""
        succeeded: dict[Target, bool] = {}
        for target, reason in report.targets.items():
            try:
                if target is Target.NODE:
                    outcome = await self._write_node(report.values)
                else:
                    outcome = await self._write_cnr(report.values)
            except (OSError, TimeoutError, _Refused) as exc:
                outcome = WriteOutcome.FAILED
                self.last_error[target] = str(exc) or type(exc).__name__
                log.warning(
                    "reporter: writing the %s of node %s failed (%s)",
                    target.value,
                    self._node,
                    self.last_error[target],
                )
            else:
                self.last_error.pop(target, None)
                level = logging.DEBUG if reason == "resync" else logging.INFO
                log.log(
                    level,
                    "reporter: %s of node %s %s: reclaimed %d milli-CPU, %d bytes (%s)",
                    target.value,
                    self._node,
                    outcome.value,
                    report.values.millicpu,
                    report.values.memory_bytes,
                    reason,
                )
            self.writes[target, outcome] += 1
            succeeded[target] = outcome is not WriteOutcome.FAILED
        return succeeded

    async def _write_node(self, values: Reclaimed) -> WriteOutcome:
        status = await self._client.patch_node_status(self._node, node_status_patch(values))
        if not _ok(status):
            # 404: the kubelet has not registered the node yet (or it was deleted).
            raise _Refused(f"node status patch: HTTP {status}")
        return WriteOutcome.WRITTEN

    async def _write_cnr(self, values: Reclaimed) -> WriteOutcome:
        created = False
        for _ in range(CNR_ROUNDS):
            stored = await self._client.get_cnr(self._node)
            if stored is None:
                status = await self._client.create_cnr(cnr_object(self._node))
                if _ok(status):
                    created = True
                elif status != HTTP_CONFLICT:  # 409: someone else created it: read it
                    raise _Refused(f"CNR create: HTTP {status}")
                continue
            status = await self._client.patch_cnr_status(
                self._node, cnr_status_patch(values, stored)
            )
            if _ok(status):
                return WriteOutcome.CREATED if created else WriteOutcome.WRITTEN
            if status not in (HTTP_NOT_FOUND, HTTP_CONFLICT):
                raise _Refused(f"CNR status patch: HTTP {status}")
            # Changed (409) or deleted (404) since the read: read again.
        raise _Refused(f"CNR changed under every one of {CNR_ROUNDS} writes")
