"""Leader election over a ``coordination.k8s.io/v1`` Lease, in the manner of client-go.

Replicas of the controller compete for one Lease; only its holder writes. The rules,
as client-go's ``leaderelection`` package has them:

* **Acquire** when there is no Lease (create it), when its ``holderIdentity`` is
  empty (released), when it is ours already, or when it has *expired*: the record
  has not changed for ``leaseDurationSeconds`` of *our* clock since we first saw it
  as it is. Expiry is judged on the local monotonic clock from the moment a record
  was observed, never on the ``renewTime`` in it, so that clock skew between
  replicas cannot make a standby take over early. Taking the Lease from another
  holder (or from none) increments ``leaseTransitions``; renewing keeps it.
* Every write of the Lease is a conditional update (``metadata.resourceVersion``):
  of two standbys racing for an expired Lease, one gets a 409 and stays standby.
* **Renew** every retry period. A leader **steps down**, which stops all of its
  writes at once, when another holder shows up in the Lease or when it has not
  renewed for the renew deadline (shorter than the lease, so it has stopped before
  any standby can take over). It then campaigns again as a standby.
* **Release** on a graceful stop (SIGTERM): the Lease is rewritten with no holder
  and ``leaseDurationSeconds: 1``, so that a standby takes over at its next try
  rather than a whole lease later. A leader that dies without releasing is taken
  over once the lease expires.

:class:`LeaderElector` is the loop, on a :class:`~katalyst.clock.Clock` and a
:class:`LeaseClient` (each process's API-server module has one:
``controllers.apiserver.ApiLeaseClient``, ``scheduler_plugins.apiserver.ApiServerLeaseClient``;
an in-memory one in the unit tests, which run it in virtual time); the decisions are
the pure functions :func:`may_acquire`, :func:`acquired`, :func:`released`.

What both processes share besides the loop lives here too, so that neither client
builds a Lease its own way: :func:`lease_object` (the body of a create or a
conditional replace), :func:`record_from_lease` (an answer as a record),
:func:`default_identity` and :func:`check_lease_flags` (the flags' defaults and rules).
This module imports no Kubernetes client: it is the library's, and the library never
talks to the API server.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import enum
import logging
import math
import os
import random
import re
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final, Protocol

from katalyst.clock import Clock, first_of

__all__ = [
    "JITTER_FACTOR",
    "LEASE_API_VERSION",
    "LEASE_KIND",
    "LeaderElector",
    "LeaseClient",
    "LeaseConflict",
    "LeaseError",
    "LeaseFlagError",
    "LeaseRecord",
    "LeaseSettings",
    "Observed",
    "Outcome",
    "acquired",
    "check_lease_flags",
    "default_identity",
    "lease_object",
    "lease_spec",
    "may_acquire",
    "micro_time",
    "record_from_lease",
    "released",
]

log = logging.getLogger(__name__)

LEASE_API_VERSION: Final = "coordination.k8s.io/v1"
LEASE_KIND: Final = "Lease"
JITTER_FACTOR: Final = 1.2
"""client-go's: a standby retries every ``retry-period * (1 + rand * 1.2)``, and the
renew deadline must leave room for one such retry."""


class LeaseError(Exception):
    """A Lease request failed (no answer, or an answer other than a conflict)."""


class LeaseConflict(LeaseError):
    """A conditional write of the Lease lost a race (HTTP 409): someone else wrote it."""


def micro_time(seconds: float) -> str:
    """Seconds since the epoch as a ``metav1.MicroTime``: exactly six fractional digits
    and ``Z`` (the API server refuses any other number of digits)."""
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """The spec of a Lease, and the resourceVersion it was read at."""

    holder: str = ""
    """``holderIdentity``; empty: nobody (released)."""
    duration_s: int = 0
    """``leaseDurationSeconds``."""
    acquire_time: str | None = None
    renew_time: str | None = None
    transitions: int = 0
    """``leaseTransitions``: how many times the holder changed."""
    resource_version: str = ""

    @property
    def content(self) -> tuple[str, int, str | None, str | None, int]:
        """What a change of the record is judged on (not the resourceVersion)."""
        return (self.holder, self.duration_s, self.acquire_time, self.renew_time, self.transitions)


def lease_spec(record: LeaseRecord) -> dict[str, Any]:
    """The Lease's ``spec`` as the API server takes it."""
    spec: dict[str, Any] = {
        "holderIdentity": record.holder,
        "leaseDurationSeconds": record.duration_s,
        "leaseTransitions": record.transitions,
    }
    if record.acquire_time is not None:
        spec["acquireTime"] = record.acquire_time
    if record.renew_time is not None:
        spec["renewTime"] = record.renew_time
    return spec


def record_from_lease(obj: Mapping[str, Any]) -> LeaseRecord:
    """A Lease object as a record; fields of the wrong type read as absent (another
    writer's garbage must not stop the election: it reads as a free Lease)."""
    meta = obj.get("metadata")
    spec = obj.get("spec")
    meta = meta if isinstance(meta, Mapping) else {}
    spec = spec if isinstance(spec, Mapping) else {}

    def text(value: object) -> str | None:
        return value if isinstance(value, str) else None

    def whole(value: object) -> int:
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    return LeaseRecord(
        holder=text(spec.get("holderIdentity")) or "",
        duration_s=whole(spec.get("leaseDurationSeconds")),
        acquire_time=text(spec.get("acquireTime")),
        renew_time=text(spec.get("renewTime")),
        transitions=whole(spec.get("leaseTransitions")),
        resource_version=text(meta.get("resourceVersion")) or "",
    )


def lease_object(record: LeaseRecord, *, namespace: str, name: str) -> dict[str, Any]:
    """The whole Lease ``namespace/name`` holding ``record``: the body of a create (no
    ``resourceVersion``: the API server refuses a create that has one) or of a
    conditional replace (``metadata.resourceVersion`` is the record's, so that the
    write is answered 409 Conflict if anyone wrote the Lease since it was read)."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if record.resource_version:
        meta["resourceVersion"] = record.resource_version
    return {
        "apiVersion": LEASE_API_VERSION,
        "kind": LEASE_KIND,
        "metadata": meta,
        "spec": lease_spec(record),
    }


@dataclass(frozen=True, slots=True)
class Observed:
    """A record, and when (our monotonic clock) we first saw it as it is."""

    record: LeaseRecord
    at: float


def may_acquire(observed: Observed | None, *, identity: str, now: float) -> bool:
    """Whether ``identity`` may write itself into the Lease at ``now`` (monotonic):
    there is none, nobody holds it, we hold it, or its holder's lease has expired
    (the record unchanged for ``leaseDurationSeconds`` since we first saw it)."""
    if observed is None:
        return True
    record = observed.record
    if not record.holder or record.holder == identity:
        return True
    return now >= observed.at + record.duration_s


def acquired(
    current: LeaseRecord | None, *, identity: str, wall: float, duration_s: int
) -> LeaseRecord:
    """The record that makes ``identity`` the holder at ``wall`` (epoch seconds): a
    renewal when it holds the Lease already (acquire time and transitions kept), a
    takeover otherwise (``leaseTransitions`` + 1, except on a brand-new Lease)."""
    now = micro_time(wall)
    if current is None:
        return LeaseRecord(identity, duration_s, now, now, 0)
    if current.holder == identity:
        return replace(
            current, duration_s=duration_s, renew_time=now, acquire_time=current.acquire_time or now
        )
    return replace(
        current,
        holder=identity,
        duration_s=duration_s,
        acquire_time=now,
        renew_time=now,
        transitions=current.transitions + 1,
    )


def released(current: LeaseRecord, *, wall: float) -> LeaseRecord:
    """The record a leader leaves on a graceful stop (client-go's ReleaseOnCancel):
    no holder, a one-second lease, the transitions kept."""
    now = micro_time(wall)
    return replace(current, holder="", duration_s=1, acquire_time=now, renew_time=now)


class LeaseClient(Protocol):
    """The Lease on the API server. Each call raises :class:`LeaseError` when it fails
    (:class:`LeaseConflict` for a lost race)."""

    async def get(self) -> LeaseRecord | None:
        """The Lease, or None when there is none."""
        ...

    async def create(self, record: LeaseRecord) -> LeaseRecord:
        """Create the Lease; the record as stored."""
        ...

    async def update(self, record: LeaseRecord) -> LeaseRecord:
        """Replace the Lease's spec if it is still at ``record.resource_version``."""
        ...


@dataclass(frozen=True, slots=True)
class LeaseSettings:
    """The timings (the flags of both processes: :func:`check_lease_flags`)."""

    duration_s: int = 15
    renew_deadline_s: float = 10.0
    retry_period_s: float = 2.0
    jitter: float = JITTER_FACTOR
    """A standby retries every ``retry_period_s * (1 + rand * jitter)``."""


def default_identity(env: Mapping[str, str] | None = None) -> str:
    """``$POD_NAME``, else ``<hostname>_<random>`` (client-go's habit), so that two
    replicas on one host never share an identity."""
    env = os.environ if env is None else env
    name = env.get("POD_NAME", "").strip()
    if name:
        return name
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


class LeaseFlagError(ValueError):
    """A leader-election flag broke its rule; the message names the flag."""


_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def check_lease_flags(
    *,
    namespace: str,
    lease_name: str,
    identity: str,
    lease_duration_s: object,
    renew_deadline_s: object,
    retry_period_s: object,
) -> LeaseSettings:
    """The settings, or :class:`LeaseFlagError` naming the flag
    (``--namespace``, ``--lease-name``, ``--identity``, ``--lease-duration-s``,
    ``--renew-deadline-s``, ``--retry-period-s``) whose rule is broken. The timings
    follow client-go's checks, ``lease-duration > renew-deadline > 1.2 * retry-period
    > 0``: a leader stops writing once it has failed to renew for the renew deadline,
    which is shorter than the lease, so it has stopped before any standby may take
    over."""
    if len(namespace) > 63 or not _DNS_LABEL.fullmatch(namespace):
        raise LeaseFlagError(
            f"--namespace: {namespace!r} is not a namespace name (at most 63 of a-z 0-9 "
            "and -, starting and ending alphanumeric)"
        )
    if len(lease_name) > 253 or not _DNS_SUBDOMAIN.fullmatch(lease_name):
        raise LeaseFlagError(
            f"--lease-name: {lease_name!r} is not an object name (a DNS subdomain: "
            "a-z 0-9 - and ., at most 253)"
        )
    if not identity or len(identity) > 253 or not identity.isprintable():
        raise LeaseFlagError(
            f"--identity: {identity!r} must be 1 to 253 printable characters (the pod's name)"
        )
    duration = lease_duration_s
    if isinstance(duration, bool) or not isinstance(duration, int) or duration < 1:
        raise LeaseFlagError(
            "--lease-duration-s: must be a whole number of seconds >= 1 (the Lease's "
            f"leaseDurationSeconds), got {duration!r}"
        )
    renew = _positive("--renew-deadline-s", renew_deadline_s)
    retry = _positive("--retry-period-s", retry_period_s)
    if not renew < duration:
        raise LeaseFlagError(
            f"--renew-deadline-s: must be less than --lease-duration-s ({duration}), got "
            f"{renew!r}: a leader must stop writing before a standby may take over"
        )
    if not renew > JITTER_FACTOR * retry:
        raise LeaseFlagError(
            f"--renew-deadline-s: must be more than {JITTER_FACTOR} x --retry-period-s "
            f"({JITTER_FACTOR * retry:g}), got {renew!r}"
        )
    return LeaseSettings(
        duration_s=duration, renew_deadline_s=renew, retry_period_s=retry, jitter=JITTER_FACTOR
    )


def _positive(flag: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise LeaseFlagError(f"{flag}: must be a number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise LeaseFlagError(f"{flag}: must be a finite number > 0, got {value!r}")
    return float(value)


class Outcome(enum.Enum):
    """What one try at the Lease found."""

    HELD = "held"
    """We hold the Lease now (acquired or renewed)."""
    OTHER = "other"
    """Another replica holds a lease that has not expired."""
    FAILED = "failed"
    """No answer, or a lost race: nothing known."""


class LeaderElector:
    """Campaigns for the Lease, renews it while leading, releases it on a graceful stop.

    ``on_change(leading)`` is called synchronously each time leadership starts or
    ends, before anything else happens: the controller stops its writes in it.
    """

    def __init__(
        self,
        leases: LeaseClient,
        *,
        identity: str,
        settings: LeaseSettings,
        clock: Clock,
        on_change: Callable[[bool], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._leases = leases
        self.identity = identity
        self._settings = settings
        self._clock = clock
        self._on_change = on_change
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._observed: Observed | None = None
        self.leading = False
        """Whether this replica holds the Lease (and may write)."""
        self.renewed_at: float | None = None
        """When (monotonic) the Lease was last acquired or renewed by us."""
        self.holder = ""
        """The holder last seen in the Lease (ours included)."""
        self.terms = 0
        """How many times this replica started leading."""

    @property
    def observed(self) -> Observed | None:
        return self._observed

    async def run(self, stop: asyncio.Event) -> None:
        """Campaign and lead until ``stop`` is set; then release the Lease if leading.
        Cancelled (the process killed), it stops leading without a release."""
        try:
            while not stop.is_set():
                if self.leading:
                    await self._lead(stop)
                else:
                    await self._campaign(stop)
        except asyncio.CancelledError:
            self._set_leading(False)
            raise
        if self.leading:
            self._set_leading(False)
            await self._release()

    # ---- the two states -------------------------------------------------------------

    async def _campaign(self, stop: asyncio.Event) -> None:
        outcome = await self._try()
        if outcome is Outcome.HELD:
            self.renewed_at = self._clock.monotonic()
            self.terms += 1
            log.info(
                "leader election: %s now leads (lease transitions %d)",
                self.identity,
                self._observed.record.transitions if self._observed else 0,
            )
            self._set_leading(True)
            return
        s = self._settings
        delay = s.retry_period_s * (1 + self._rng.random() * s.jitter)
        await first_of(self._clock.sleep(delay), stop)

    async def _lead(self, stop: asyncio.Event) -> None:
        s = self._settings
        await first_of(self._clock.sleep(s.retry_period_s), stop)
        if stop.is_set():
            return
        assert self.renewed_at is not None
        deadline = self.renewed_at + s.renew_deadline_s
        outcome = await self._try_until(deadline)
        now = self._clock.monotonic()
        if outcome is Outcome.HELD:
            self.renewed_at = now
        elif outcome is Outcome.OTHER:
            log.warning(
                "leader election: %s holds the lease now; %s steps down",
                self.holder,
                self.identity,
            )
            self._set_leading(False)
        elif now >= deadline:
            log.warning(
                "leader election: %s could not renew the lease for %.1f s; stepping down",
                self.identity,
                s.renew_deadline_s,
            )
            self._set_leading(False)

    def _set_leading(self, leading: bool) -> None:
        if leading == self.leading:
            return
        self.leading = leading
        if self._on_change is not None:
            self._on_change(leading)

    # ---- the Lease --------------------------------------------------------------------

    def _observe(self, record: LeaseRecord) -> None:
        old = self._observed
        if old is None or old.record.content != record.content:
            self._observed = Observed(record, self._clock.monotonic())
        else:
            # Same content at a new resourceVersion: the clock keeps running.
            self._observed = Observed(record, old.at)
        self.holder = record.holder

    async def _try(self) -> Outcome:
        """One acquire-or-renew (client-go's tryAcquireOrRenew)."""
        leases = self._leases
        try:
            current = await leases.get()
            if current is None:
                record = acquired(
                    None,
                    identity=self.identity,
                    wall=self._clock.wall(),
                    duration_s=self._settings.duration_s,
                )
                self._observe(await leases.create(record))
                return Outcome.HELD
            self._observe(current)
            if not may_acquire(self._observed, identity=self.identity, now=self._clock.monotonic()):
                return Outcome.OTHER
            record = acquired(
                current,
                identity=self.identity,
                wall=self._clock.wall(),
                duration_s=self._settings.duration_s,
            )
            self._observe(await leases.update(record))
        except LeaseConflict as exc:
            log.debug("leader election: lost a race for the lease (%s)", exc)
            return Outcome.FAILED
        except LeaseError as exc:
            log.warning("leader election: %s", exc)
            return Outcome.FAILED
        return Outcome.HELD

    async def _try_until(self, deadline: float) -> Outcome:
        """:meth:`_try`, abandoned (FAILED) when the clock passes ``deadline``: a leader
        must step down on time even if a request hangs."""
        remaining = deadline - self._clock.monotonic()
        if remaining <= 0:
            return Outcome.FAILED
        attempt = asyncio.ensure_future(self._try())
        timer = asyncio.ensure_future(self._clock.sleep(remaining))
        try:
            await asyncio.wait({attempt, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            if not attempt.done():
                attempt.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await attempt
        if attempt.cancelled():
            return Outcome.FAILED
        return attempt.result()

    async def _release(self) -> None:
        observed = self._observed
        if observed is None or observed.record.holder != self.identity:
            return
        record = released(observed.record, wall=self._clock.wall())
        try:
            self._observe(await self._leases.update(record))
        except LeaseError as exc:
            log.warning("leader election: could not release the lease: %s", exc)
            return
        log.info("leader election: %s released the lease", self.identity)
