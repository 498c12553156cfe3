"""Which replica of the extender answers kube-scheduler, when it is ready, and how the
Service finds it.

The extender's assume cache (the pods it has bound but the pod watch has not shown
bound yet) lives in the process, so two replicas answering at once could give the
last GPU to two pods. Replicas compete for a Lease (:mod:`katalyst.leader`); only
the holder answers ``filter``, ``prioritize`` and ``bind``. The rules, pure over what
the elector and the watches report:

* **Serving**: leader election is off, or this replica holds the Lease. A standby
  answers the verbs with HTTP 503, so that a call routed to it fails (kube-scheduler
  retries the pod) rather than bypass the leader's assume cache. The elector flips
  ``leading`` synchronously when it steps down, so a replica that loses the Lease
  refuses the very next call. This check is the authority: the pod label below only
  steers traffic, and a standby that still carries it answers 503 all the same.
* **Ready** (``GET /readyz``, the pod's readiness): the CNR and pod watches have
  listed once, leader or standby. A standby is a healthy spare: it keeps its watches
  running, so that it serves at once from its own synced copy when it takes over, and
  being Ready it lets a rolling update proceed and a PodDisruptionBudget count it.
* **Routed** (:class:`LeaderLabel`): the leader carries the label
  ``katalyst.kubewharf.io/extender-leader: "true"`` on its own Pod, and the Service
  selects it, so kube-scheduler's calls reach the leader (a Service routes to pods
  that match its selector *and* are Ready). The label follows leadership with merge
  patches, retried with backoff; a failed patch is logged, never fatal, and never
  delays the answer to a call.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from katalyst.clock import Clock, first_of

__all__ = [
    "LEADER_LABEL",
    "LEADER_LABEL_VALUE",
    "LabelSettings",
    "LeaderLabel",
    "Leadership",
    "PodLabel",
    "PodLabelError",
    "Replica",
    "Synced",
    "not_ready",
    "standby",
]

log = logging.getLogger(__name__)

LEADER_LABEL: Final = "katalyst.kubewharf.io/extender-leader"
"""The label the leader keeps on its own Pod; the Service selects it."""
LEADER_LABEL_VALUE: Final = "true"


class Leadership(Protocol):
    """What a :class:`katalyst.leader.LeaderElector` tells of its Lease."""

    @property
    def identity(self) -> str: ...

    @property
    def leading(self) -> bool: ...

    @property
    def holder(self) -> str: ...


class Synced(Protocol):
    """A watch (:class:`scheduler_plugins.apiserver.ListWatch`) that says when it has
    listed."""

    @property
    def what(self) -> str: ...

    @property
    def synced(self) -> asyncio.Event: ...


def standby(leadership: Leadership | None) -> str | None:
    """None when this replica may answer kube-scheduler; otherwise why not."""
    if leadership is None or leadership.leading:
        return None
    holder = leadership.holder
    if holder and holder != leadership.identity:
        return f"standby: {holder} holds the lease, not this replica ({leadership.identity})"
    return f"standby: this replica ({leadership.identity}) does not hold the lease yet"


def not_ready(watches: Sequence[Synced]) -> str | None:
    """None when this replica is ready (``/readyz`` 200), leader or standby; otherwise
    why not: watches that have not listed yet (their copy would be empty)."""
    waiting = [w.what for w in watches if not w.synced.is_set()]
    if waiting:
        return f"not synced: waiting for the first list of {' and '.join(waiting)}"
    return None


class Replica:
    """The gate the HTTP server asks on every request
    (:func:`scheduler_plugins.server.make_app`)."""

    def __init__(self, leadership: Leadership | None, watches: Sequence[Synced]) -> None:
        self._leadership = leadership
        self._watches = tuple(watches)

    def serving(self) -> str | None:
        """:func:`standby`."""
        return standby(self._leadership)

    def ready(self) -> str | None:
        """:func:`not_ready`."""
        return not_ready(self._watches)


# ---- the leader's label on its own pod ---------------------------------------------------


class PodLabelError(Exception):
    """A patch of the pod's label failed (no answer, or an error answer)."""


class PodLabel(Protocol):
    """:data:`LEADER_LABEL` on this replica's own Pod
    (:class:`scheduler_plugins.apiserver.ApiServerPodLabel`)."""

    @property
    def where(self) -> str:
        """The pod, for messages (``pod NS/NAME``)."""
        ...

    async def put(self, value: str | None) -> None:
        """Set the label to ``value``, or remove it (None); :class:`PodLabelError` when
        that fails. Removing a label the pod does not have succeeds."""
        ...


@dataclass(frozen=True, slots=True)
class LabelSettings:
    backoff_initial_s: float = 0.5
    """First retry delay after a failed patch, seconds; doubled per failure in a row."""
    backoff_max_s: float = 30.0
    """Cap of the retry delay, seconds."""
    stop_deadline_s: float = 5.0
    """Seconds a graceful stop keeps trying to remove the label (the pod's
    termination grace period is 30 s by default)."""


class LeaderLabel:
    """Keeps :data:`LEADER_LABEL` on this replica's Pod while it leads, and off it
    otherwise.

    :meth:`lead` (the elector's ``on_change``) only records what is wanted, at once
    and without I/O; :meth:`run` patches the pod until it matches, one patch at a
    time, so that the last patch sent is always the latest wish. At start the label's
    state is unknown (a previous container of this pod may have crashed while
    leading), so the first patch removes it: :attr:`first_try` is set once that has
    been tried, and the app campaigns only then. A failed patch is retried with
    exponential backoff and full jitter, sooner if leadership changes meanwhile.
    """

    def __init__(
        self,
        pod: PodLabel,
        *,
        clock: Clock,
        settings: LabelSettings | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._pod = pod
        self._clock = clock
        self._settings = settings or LabelSettings()
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._want = False
        self._has: bool | None = None
        """Whether the pod carries the label, as our last successful patch left it;
        None: not known (start-up, or a patch whose answer was lost)."""
        self._changed = asyncio.Event()
        self.first_try = asyncio.Event()
        """Set once the start-up removal has been tried (whatever its outcome)."""
        self.failures = 0
        """Failed patches in a row."""
        self.patches = 0
        """Successful patches."""

    @property
    def labelled(self) -> bool | None:
        """Whether the pod carries the label as far as this replica knows."""
        return self._has

    def lead(self, leading: bool) -> None:
        """Want the label (leading) or not; the patch follows in :meth:`run`."""
        self._want = leading
        self._changed.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Keep the label as wanted until ``stop``; then remove it, trying for at most
        ``stop_deadline_s``. Set ``stop`` only once the elector has stopped (and
        released the Lease), so that every change of leadership is followed."""
        try:
            while not stop.is_set():
                self._changed.clear()
                want = self._want
                if self._has is want:
                    await first_of(self._changed, stop)
                    continue
                ok = await self._put(want)
                self.first_try.set()
                if not ok:
                    await first_of(self._clock.sleep(self._delay()), self._changed, stop)
        finally:
            self.first_try.set()
        await self._remove_before(self._clock.monotonic() + self._settings.stop_deadline_s)

    async def _remove_before(self, deadline: float) -> None:
        self._want = False
        while self._has is not False:
            if await self._put(False):
                return
            remaining = deadline - self._clock.monotonic()
            if remaining <= 0:
                log.warning(
                    "%s: could not remove label %s before stopping; the next start of "
                    "this pod removes it",
                    self._pod.where,
                    LEADER_LABEL,
                )
                return
            await self._clock.sleep(min(self._delay(), remaining))

    async def _put(self, want: bool) -> bool:
        try:
            await self._pod.put(LEADER_LABEL_VALUE if want else None)
        except PodLabelError as exc:
            self.failures += 1
            self._has = None
            log.warning(
                "%s label %s failed (%s); retrying",
                "setting" if want else "removing",
                LEADER_LABEL,
                exc,
            )
            return False
        self.failures = 0
        self.patches += 1
        self._has = want
        if want:
            log.info("%s: labelled %s=%s", self._pod.where, LEADER_LABEL, LEADER_LABEL_VALUE)
        else:
            log.info("%s: label %s removed", self._pod.where, LEADER_LABEL)
        return True

    def _delay(self) -> float:
        s = self._settings
        cap = min(s.backoff_max_s, s.backoff_initial_s * 2.0 ** min(max(self.failures, 1) - 1, 30))
        return cap / 2 + self._rng.uniform(0, cap / 2)
