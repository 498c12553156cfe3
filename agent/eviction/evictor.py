"""Evictors: the effect of an :class:`EvictionDecision`.

:class:`ApiServerEvictor` asks the API server, through the Eviction API, exactly as
``kubectl drain`` and the kubelet's node-pressure eviction do not (the kubelet kills
pods itself); going through the API server honours PodDisruptionBudgets and lets
the pod's controller replace it elsewhere. It then records a core/v1 Event on the
pod so that ``kubectl describe pod`` says why. It talks through a small injected
:class:`EvictionClient`: the agent's one module that imports the ``kubernetes``
client (``agent.metaserver.apiserver``) provides the real one.

:class:`LocalEvictor` stops a pod of the standalone node.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from agent.eviction.model import EvictionDecision, EvictionOutcome, Outcome
from katalyst.cgroup import CgroupError

__all__ = [
    "COMPONENT",
    "ApiServerEvictor",
    "EvictionClient",
    "Evictor",
    "LocalEvictor",
    "event_body",
    "eviction_body",
]

log = logging.getLogger(__name__)

COMPONENT: Final = "katalyst-agent"
"""``source.component`` and ``reportingComponent`` of the Events the agent writes."""

MAX_MESSAGE: Final = 1024
"""Event messages are cut to this many characters (the API server's limit on notes)."""

# Status codes of POST pods/{name}/eviction (k8s.io/kubernetes pkg/registry/core/pod/
# storage/eviction.go): 201 evicted; 429 a PodDisruptionBudget allows no disruption
# now ("Cannot evict pod as it would violate the pod's disruption budget"), retry
# later; 404 no such pod; 409 the deleteOptions' UID precondition failed: the name
# now belongs to another pod, ours is gone.
_EVICTED: Final = frozenset({200, 201})
_GONE: Final = frozenset({404, 409})
_BLOCKED: Final = frozenset({429})


class Evictor(Protocol):
    """Carries out an eviction decision."""

    async def evict(self, decision: EvictionDecision) -> EvictionOutcome:
        """Evict ``decision.pod``; never raises for a refusal or a lost connection
        (those are outcomes)."""
        ...


class EvictionClient(Protocol):
    """The two API-server calls the evictor needs, on the wire.

    Both raise ``OSError`` (``ConnectionError`` included) or ``TimeoutError`` when
    the API server gave no answer; an answer, whatever its status, is not an error.
    """

    async def post_eviction(self, namespace: str, name: str, body: Mapping[str, Any]) -> int:
        """POST ``body`` (a policy/v1 Eviction) to
        ``/api/v1/namespaces/{namespace}/pods/{name}/eviction``; the HTTP status."""
        ...

    async def post_event(self, namespace: str, body: Mapping[str, Any]) -> None:
        """POST ``body`` (a core/v1 Event) to ``/api/v1/namespaces/{namespace}/events``;
        ``OSError`` also for an answer that is not 2xx."""
        ...


def eviction_body(decision: EvictionDecision, *, grace_period_s: int | None) -> dict[str, Any]:
    """The policy/v1 Eviction for ``decision``.

    ``deleteOptions.preconditions.uid`` makes the API server refuse (409) to evict a
    different pod that took the same name meanwhile (a StatefulSet's replacement)."""
    pod = decision.pod
    delete_options: dict[str, Any] = {"preconditions": {"uid": pod.uid}}
    if grace_period_s is not None:
        delete_options["gracePeriodSeconds"] = grace_period_s
    return {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": pod.name, "namespace": pod.namespace},
        "deleteOptions": delete_options,
    }


def _rfc3339(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def event_body(
    decision: EvictionDecision,
    *,
    reason: str,
    message: str,
    node_name: str,
    wall: float,
    serial: int = 0,
) -> dict[str, Any]:
    """A core/v1 Event (type Warning) on ``decision.pod``, as client-go's legacy
    recorder writes one: named ``<pod>.<hex nanoseconds>`` (``serial`` added, so two
    events of one instant differ), first and last timestamps equal, count 1, no
    ``eventTime`` (which would subject it to the events.k8s.io rules), ``source`` and
    ``reportingComponent``/``reportingInstance`` naming this agent."""
    pod = decision.pod
    stamp = _rfc3339(wall)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{pod.name}.{int(wall * 1e9) + serial:x}",
            "namespace": pod.namespace,
        },
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "Pod",
            "namespace": pod.namespace,
            "name": pod.name,
            "uid": pod.uid,
        },
        "reason": reason,
        "message": message[:MAX_MESSAGE],
        "type": "Warning",
        "source": {"component": COMPONENT, "host": node_name},
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
        "action": "Evict",
        "reportingComponent": COMPONENT,
        "reportingInstance": node_name,
    }


class ApiServerEvictor:
    """Evicts through the API server's Eviction API and records an Event.

    Outcomes: 200/201 evicted (Event ``Evicted``); 404, and 409 from the UID
    precondition, gone (no Event: there is no pod to tell about); 429 blocked by a
    PodDisruptionBudget, 5xx and the rest failed, and no answer failed (Event
    ``EvictionFailed``, when the API server can be reached). A lost Event is logged
    and changes nothing.
    """

    def __init__(
        self,
        client: EvictionClient,
        *,
        node_name: str,
        wall: Callable[[], float],
        grace_period_s: int | None = None,
    ) -> None:
        """``wall``: seconds since the epoch for the Events' timestamps (a clock's
        ``wall``). ``grace_period_s``: ``deleteOptions.gracePeriodSeconds``; None:
        the pod's own."""
        self._client = client
        self._node = node_name
        self._wall = wall
        self._grace = grace_period_s
        self._serial = itertools.count()

    async def evict(self, decision: EvictionDecision) -> EvictionOutcome:
        pod = decision.pod
        body = eviction_body(decision, grace_period_s=self._grace)
        try:
            status = await self._client.post_eviction(pod.namespace, pod.name, body)
        except (OSError, TimeoutError) as exc:
            detail = f"no answer from the API server: {exc or type(exc).__name__}"
            log.warning("evicting %s failed: %s", pod.key, detail)
            return EvictionOutcome(decision, Outcome.FAILED, detail)
        if status in _EVICTED:
            log.info("evicted %s (%s): HTTP %d", pod.key, decision.plugin, status)
            await self._event(decision, "Evicted", decision.reason)
            return EvictionOutcome(decision, Outcome.EVICTED, f"HTTP {status}")
        if status in _GONE:
            log.info("%s is already gone (HTTP %d); nothing to evict", pod.key, status)
            return EvictionOutcome(decision, Outcome.GONE, f"HTTP {status}")
        if status in _BLOCKED:
            detail = f"HTTP {status}: a PodDisruptionBudget allows no disruption now"
            outcome = Outcome.BLOCKED
        else:
            detail = f"HTTP {status}"
            outcome = Outcome.FAILED
        log.warning("evicting %s refused: %s", pod.key, detail)
        await self._event(decision, "EvictionFailed", f"{decision.reason} (not evicted: {detail})")
        return EvictionOutcome(decision, outcome, detail)

    async def _event(self, decision: EvictionDecision, reason: str, message: str) -> None:
        body = event_body(
            decision,
            reason=reason,
            message=message,
            node_name=self._node,
            wall=self._wall(),
            serial=next(self._serial),
        )
        try:
            await self._client.post_event(decision.pod.namespace, body)
        except (OSError, TimeoutError) as exc:
            log.warning(
                "event %s for %s not recorded: %s",
                reason,
                decision.pod.key,
                exc or type(exc).__name__,
            )


StopPod = Callable[[str, str, str], Awaitable[bool]]
"""``async stop_pod(namespace, name, reason) -> bool``: stop the pod, True; no such pod, False."""


class LocalEvictor:
    """Evicts from the standalone node: ``stop_pod`` stops the pod's containers."""

    def __init__(self, stop_pod: StopPod) -> None:
        self._stop_pod = stop_pod

    async def evict(self, decision: EvictionDecision) -> EvictionOutcome:
        pod = decision.pod
        try:
            stopped = await self._stop_pod(pod.namespace, pod.name, decision.reason)
        except (OSError, CgroupError) as exc:
            log.warning("stopping %s failed: %s", pod.key, exc)
            return EvictionOutcome(decision, Outcome.FAILED, str(exc))
        if not stopped:
            return EvictionOutcome(decision, Outcome.GONE, "no such pod")
        log.info("stopped %s (%s): %s", pod.key, decision.plugin, decision.reason)
        return EvictionOutcome(decision, Outcome.EVICTED, "stopped")
