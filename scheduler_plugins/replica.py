"""Which replica of the extender answers kube-scheduler, when it is ready, and how the
Service finds it.

The extender's assume cache (the pods it has bound but the pod watch has not shown
bound yet) lives in the process, so two replicas answering at once could give the
last GPU to two pods. Replicas compete for a Lease (:mod:`katalyst.leader`); only
the holder answers ``filter``, ``prioritize`` and ``bind``. The rules, pure over what
the elector and the watches report:

* **Serving**: leader election is off, or this replica holds the Lease. A standby
  answers the verbs with HTTP 503 (and ``Connection: close``:
  :mod:`scheduler_plugins.server`), so that a call routed to it fails (kube-scheduler
  retries the pod) rather than bypass the leader's assume cache. The elector flips
  ``leading`` synchronously when it steps down, so a replica that loses the Lease
  refuses the very next call. This check is the authority: the EndpointSlice below
  only steers traffic, and a standby whose address is still in it answers 503 all
  the same.
* **Ready** (``GET /readyz``, the pod's readiness): the CNR and pod watches have
  listed once, leader or standby. A standby is a healthy spare: it keeps its watches
  running, so that it serves at once from its own synced copy when it takes over, and
  being Ready it lets a rolling update proceed and a PodDisruptionBudget count it.
* **Routed** (:class:`LeaderSlice`): the extender's Service has no selector; the
  leader publishes its own address as the one endpoint of the ``discovery.k8s.io/v1``
  EndpointSlice ``<service>-leader``, labelled ``kubernetes.io/service-name:
  <service>`` (kube-proxy routes a Service to the endpoints of the slices that carry
  its name). A replica removes its address when it stops leading, and only its own:
  every write is conditional on the slice's ``resourceVersion``, so a replica that
  steps down never takes out the address its successor has just written. Not a label
  on the leader's Pod, which a selector could pick: that needs ``pods: patch`` in the
  release namespace, where the agent's privileged pods run too (a patched image would
  be root on every node); an EndpointSlice grants no such power.
"""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import logging
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from katalyst.clock import Clock, first_of

__all__ = [
    "DEFAULT_SERVICE",
    "MANAGED_BY",
    "MANAGED_BY_LABEL",
    "PORT_NAME",
    "SERVICE_NAME_LABEL",
    "LeaderEndpoint",
    "LeaderSlice",
    "Leadership",
    "Replica",
    "SliceConflict",
    "SliceError",
    "SliceSettings",
    "SliceStore",
    "Synced",
    "check_service_name",
    "holds",
    "leader_endpoint",
    "not_ready",
    "published",
    "publishes",
    "slice_object",
    "standby",
    "withdrawn",
]

log = logging.getLogger(__name__)

DEFAULT_SERVICE: Final = "katalyst-scheduler-extender"
"""The chart's Service (``--service``)."""
SERVICE_NAME_LABEL: Final = "kubernetes.io/service-name"
"""The label that ties an EndpointSlice to its Service (``discovery.k8s.io/v1``)."""
MANAGED_BY_LABEL: Final = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY: Final = "katalyst-scheduler-extender"
"""Our value of :data:`MANAGED_BY_LABEL`: not ``endpointslice-controller.k8s.io``, so
Kubernetes' EndpointSlice controller leaves the slice alone (it manages only the
slices of Services with a selector, and only those labelled as its own)."""
PORT_NAME: Final = "http"
"""The slice's port name: it must equal the Service port's name, which is how
kube-proxy pairs the two."""
SLICE_SUFFIX: Final = "-leader"
SLICE_API_VERSION: Final = "discovery.k8s.io/v1"
SLICE_KIND: Final = "EndpointSlice"
_DNS1035_LABEL: Final = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


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


# ---- the leader's EndpointSlice: what it holds (pure) -------------------------------------


@dataclass(frozen=True, slots=True)
class LeaderEndpoint:
    """This replica as the one endpoint of its Service while it leads."""

    service: str
    """``--service``: the selector-less Service the slice belongs to."""
    namespace: str
    """The Service's and the slice's namespace: ``$POD_NAMESPACE``."""
    ip: str
    """``$POD_IP``, canonical (:func:`leader_endpoint`)."""
    port: int
    """The port of ``--listen``."""
    pod: str = ""
    """``$POD_NAME``, the endpoint's ``targetRef``; empty: no targetRef."""
    node: str = ""
    """``$NODE_NAME``, the endpoint's ``nodeName``; empty: none."""

    @property
    def slice_name(self) -> str:
        """``<service>-leader``."""
        return f"{self.service}{SLICE_SUFFIX}"

    @property
    def address_type(self) -> str:
        """``IPv4`` or ``IPv6``, by the address."""
        return "IPv6" if ipaddress.ip_address(self.ip).version == 6 else "IPv4"


def check_service_name(name: str) -> str:
    """``name`` if it can name a Service (a DNS-1035 label); ValueError otherwise."""
    if len(name) > 63 or not _DNS1035_LABEL.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a Service name (at most 63 lower-case letters, digits and "
            "'-', starting with a letter and ending with a letter or digit)"
        )
    return name


def leader_endpoint(
    *, service: str, namespace: str, ip: str, port: int, pod: str = "", node: str = ""
) -> LeaderEndpoint:
    """The endpoint, checked: ValueError naming ``$POD_IP`` when ``ip`` is not an IPv4
    or IPv6 address (the API server refuses any other), and ``--service`` when
    ``service`` cannot name a Service. The address is written canonically
    (``fd00::1``, not ``fd00:0::1``), as the API server compares them."""
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        raise ValueError(f"$POD_IP: {ip!r} is not an IPv4 or IPv6 address") from None
    try:
        check_service_name(service)
    except ValueError as exc:
        raise ValueError(f"--service: {exc}") from None
    return LeaderEndpoint(service, namespace, str(address), port, pod, node)


def slice_object(endpoint: LeaderEndpoint) -> dict[str, Any]:
    """The EndpointSlice that routes the Service to ``endpoint``: the body of a create
    (no ``resourceVersion``)."""
    entry: dict[str, Any] = {"addresses": [endpoint.ip], "conditions": {"ready": True}}
    if endpoint.pod:
        entry["targetRef"] = {"kind": "Pod", "namespace": endpoint.namespace, "name": endpoint.pod}
    if endpoint.node:
        entry["nodeName"] = endpoint.node
    return {
        "apiVersion": SLICE_API_VERSION,
        "kind": SLICE_KIND,
        "metadata": {
            "name": endpoint.slice_name,
            "namespace": endpoint.namespace,
            "labels": {SERVICE_NAME_LABEL: endpoint.service, MANAGED_BY_LABEL: MANAGED_BY},
        },
        "addressType": endpoint.address_type,
        "endpoints": [entry],
        "ports": [{"name": PORT_NAME, "port": endpoint.port, "protocol": "TCP"}],
    }


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _routing(obj: Mapping[str, Any]) -> tuple[object, ...]:
    """What kube-proxy routes by, in a slice: the Service it names, the address type,
    each endpoint's addresses, readiness, pod and node, each port. Fields the API
    server may default and we do not set are left out, so that a slice the server
    stored from our body compares equal to it."""
    meta = _mapping(obj.get("metadata"))
    labels = _mapping(meta.get("labels"))
    endpoints = obj.get("endpoints")
    ports = obj.get("ports")
    return (
        labels.get(SERVICE_NAME_LABEL),
        labels.get(MANAGED_BY_LABEL),
        obj.get("addressType"),
        [
            (
                e.get("addresses"),
                _mapping(e.get("conditions")).get("ready"),
                e.get("targetRef"),
                e.get("nodeName"),
            )
            for e in (endpoints if isinstance(endpoints, list) else [])
            if isinstance(e, Mapping)
        ],
        [
            (p.get("name"), p.get("port"), p.get("protocol") or "TCP")
            for p in (ports if isinstance(ports, list) else [])
            if isinstance(p, Mapping)
        ],
    )


def publishes(obj: Mapping[str, Any], endpoint: LeaderEndpoint) -> bool:
    """Whether the slice ``obj`` routes the Service to ``endpoint`` and nowhere else,
    as :func:`slice_object` would have it (other metadata aside)."""
    return _routing(obj) == _routing(slice_object(endpoint))


def holds(obj: Mapping[str, Any], ip: str) -> bool:
    """Whether any endpoint of the slice ``obj`` has the address ``ip``."""
    endpoints = obj.get("endpoints")
    for entry in endpoints if isinstance(endpoints, list) else []:
        addresses = _mapping(entry).get("addresses")
        if isinstance(addresses, list) and ip in addresses:
            return True
    return False


def published(current: Mapping[str, Any], endpoint: LeaderEndpoint) -> dict[str, Any]:
    """The body of the conditional update that makes ``current`` publish ``endpoint``:
    :func:`slice_object` at ``current``'s ``resourceVersion`` (a 409 if anyone wrote
    the slice since it was read), keeping the labels and annotations others added."""
    body = slice_object(endpoint)
    old = _mapping(current.get("metadata"))
    meta = body["metadata"]
    meta["labels"] = {**_mapping(old.get("labels")), **meta["labels"]}
    for key in ("annotations", "resourceVersion"):
        if key in old:
            meta[key] = copy.deepcopy(old[key])
    return body


def withdrawn(current: Mapping[str, Any]) -> dict[str, Any]:
    """``current`` with no endpoints, at its ``resourceVersion``: the conditional update
    that takes the leader's address out (the Service then has no endpoint until the
    next leader writes its own)."""
    body = copy.deepcopy(dict(current))
    body["endpoints"] = []
    return body


# ---- the leader's EndpointSlice: keeping it --------------------------------------------


class SliceError(Exception):
    """A request for the EndpointSlice failed (no answer, or an error answer)."""


class SliceConflict(SliceError):
    """The slice changed since it was read: a conditional update answered 409, an update
    404 (deleted meanwhile), or a create 409 (created meanwhile). Read it again."""


class SliceStore(Protocol):
    """The EndpointSlice ``<service>-leader`` in the Service's namespace
    (:class:`scheduler_plugins.apiserver.ApiServerEndpointSlice`)."""

    @property
    def where(self) -> str:
        """The slice, for messages (``endpointslice NS/NAME``)."""
        ...

    async def get(self) -> Mapping[str, Any] | None:
        """The slice; None if there is none. :class:`SliceError` when that fails."""
        ...

    async def create(self, obj: Mapping[str, Any]) -> Mapping[str, Any]:
        """Create it; :class:`SliceConflict` if it exists."""
        ...

    async def update(self, obj: Mapping[str, Any]) -> Mapping[str, Any]:
        """Replace it, conditionally on ``obj``'s ``metadata.resourceVersion``;
        :class:`SliceConflict` if it changed or went since."""
        ...


@dataclass(frozen=True, slots=True)
class SliceSettings:
    backoff_initial_s: float = 0.5
    """First retry delay after a failed request, seconds; doubled per failure in a row."""
    backoff_max_s: float = 30.0
    """Cap of the retry delay, seconds."""
    reassert_s: float = 30.0
    """Seconds between the leader's checks that the slice still routes to it (someone
    may have edited or deleted it); a check is one GET, and a write only if needed."""
    stop_deadline_s: float = 5.0
    """Seconds a graceful stop keeps trying to withdraw the address (the pod's
    termination grace period is 30 s by default)."""
    conflict_retries: int = 3
    """Reads and writes in a row that may lose a race (409) before that counts as a
    failure and backs off."""


class LeaderSlice:
    """Keeps this replica's address in the EndpointSlice while it leads, and takes it
    out when it stops leading.

    :meth:`lead` (the elector's ``on_change``) only records what is wanted, at once
    and without I/O; :meth:`run` reads the slice and writes it until it matches, one
    request at a time, so that the last write sent is always the latest wish. Every
    write is conditional on the ``resourceVersion`` just read; a lost race reads again.

    * Leading: the slice is created if missing, replaced if it routes anywhere else,
      and checked again every ``reassert_s`` (restored if edited or deleted).
    * Not leading: if the slice still holds *this* replica's address, its endpoints
      are emptied; another replica's address is never touched.
    * At start the slice's state is unknown (a previous container of this pod may have
      crashed while leading), so the first request removes this address if it is
      there: :attr:`first_try` is set once that has been tried, and the app campaigns
      only then.

    A failed request is retried with exponential backoff and full jitter, sooner if
    leadership changes meanwhile; it is logged, and never raised.
    """

    def __init__(
        self,
        store: SliceStore,
        endpoint: LeaderEndpoint,
        *,
        clock: Clock,
        settings: SliceSettings | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._endpoint = endpoint
        self._clock = clock
        self._settings = settings or SliceSettings()
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._want: bool | None = False
        """Publish (True), withdraw (False), or neither until :meth:`run` ends (None:
        :meth:`hold`)."""
        self._has: bool | None = None
        """Whether the slice routes to this replica, as our last successful request
        found or left it; None: not known (start-up, a failed request, or a check
        due)."""
        self._due = False
        """A periodic check found nothing wrong last time and is running again: a
        write it needs repairs another writer's change."""
        self._changed = asyncio.Event()
        self.first_try = asyncio.Event()
        """Set once the start-up withdrawal has been tried (whatever its outcome)."""
        self.failures = 0
        """Failed requests (or rounds of lost races) in a row."""
        self.writes = 0
        """Successful writes (creates and updates)."""

    @property
    def endpoint(self) -> LeaderEndpoint:
        return self._endpoint

    @property
    def routed(self) -> bool | None:
        """Whether the slice routes to this replica, as far as it knows."""
        return self._has

    def lead(self, leading: bool) -> None:
        """Want the address published (leading) or withdrawn; :meth:`run` follows."""
        self._want, self._due = leading, False
        self._changed.set()

    def hold(self) -> None:
        """Publish no more, and withdraw only when :meth:`run`'s ``stop`` is set: a
        graceful stop takes the address out after the release of the Lease."""
        self._want, self._due = None, False
        self._changed.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Keep the slice as wanted until ``stop``; then withdraw this replica's
        address, trying for at most ``stop_deadline_s``. Set ``stop`` only once the
        elector has stopped (and released the Lease), so that every change of
        leadership is followed."""
        s = self._settings
        try:
            while not stop.is_set():
                self._changed.clear()
                want = self._want
                if want is None or self._has is want:
                    if not want:
                        await first_of(self._changed, stop)
                        continue
                    await first_of(self._clock.sleep(s.reassert_s), self._changed, stop)
                    if not self._changed.is_set() and not stop.is_set():
                        self._has, self._due = None, True  # time to look again
                    continue
                ok = await self._sync(want)
                self.first_try.set()
                if not ok:
                    await first_of(self._clock.sleep(self._delay()), self._changed, stop)
        finally:
            self.first_try.set()
        await self._withdraw_before(self._clock.monotonic() + s.stop_deadline_s)

    async def _withdraw_before(self, deadline: float) -> None:
        self._want = False
        while self._has is not False:
            if await self._sync(False):
                return
            remaining = deadline - self._clock.monotonic()
            if remaining <= 0:
                log.warning(
                    "%s: could not withdraw %s before stopping; the next leader replaces "
                    "it, and the next start of this pod removes it",
                    self._store.where,
                    self._endpoint.ip,
                )
                return
            await self._clock.sleep(min(self._delay(), remaining))

    async def _sync(self, publish: bool) -> bool:
        """Read the slice and write it if it is not as wanted; False after a failure
        (or ``conflict_retries`` lost races). Gives up at once, successfully, when the
        wish changes between tries: :meth:`run` follows the new one."""
        for attempt in range(max(self._settings.conflict_retries, 1)):
            if attempt and self._want is not publish:
                return True
            try:
                done = await self._apply(publish)
            except SliceConflict as exc:
                log.debug("%s: lost a race (%s); reading it again", self._store.where, exc)
                continue
            except SliceError as exc:
                self._failed(publish, str(exc))
                return False
            self.failures = 0
            self._has = publish
            if done:
                self.writes += 1
                self._log(publish, done)
            self._due = False
            return True
        self._failed(publish, f"{self._store.where}: it kept changing under us")
        return False

    async def _apply(self, publish: bool) -> str:
        """One read and at most one write; what was written ("" for nothing)."""
        ep = self._endpoint
        current = await self._store.get()
        if publish:
            if current is None:
                await self._store.create(slice_object(ep))
                return "created"
            if publishes(current, ep):
                return ""
            await self._store.update(published(current, ep))
            return "updated"
        if current is None or not holds(current, ep.ip):
            return ""
        await self._store.update(withdrawn(current))
        return "withdrawn"

    def _log(self, publish: bool, done: str) -> None:
        where, ep = self._store.where, self._endpoint
        if not publish:
            log.info("%s: withdrew %s (no endpoint until the next leader)", where, ep.ip)
        elif self._due:
            # Published before, and a periodic check found it changed: another writer's.
            log.warning(
                "%s did not route to the leader (%s by another writer); %s it with %s:%d",
                where,
                "deleted" if done == "created" else "changed",
                "recreated" if done == "created" else "restored",
                ep.ip,
                ep.port,
            )
        else:
            log.info("%s: published %s:%d (%s)", where, ep.ip, ep.port, done)

    def _failed(self, publish: bool, why: str) -> None:
        self.failures += 1
        self._has = None
        log.warning(
            "%s %s failed (%s); retrying",
            "publishing" if publish else "withdrawing",
            self._endpoint.ip,
            why,
        )

    def _delay(self) -> float:
        s = self._settings
        cap = min(s.backoff_max_s, s.backoff_initial_s * 2.0 ** min(max(self.failures, 1) - 1, 30))
        return cap / 2 + self._rng.uniform(0, cap / 2)
