"""Evictors with fake seams: status handling, Events, failures that are outcomes."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pytest

from agent.eviction import (
    ApiServerEvictor,
    EvictionDecision,
    LocalEvictor,
    Outcome,
    Resource,
    event_body,
    eviction_body,
)
from katalyst.clock import FakeClock
from tests.unit.eviction.samples import pod

DECISION = EvictionDecision(
    pod=pod("batch"), plugin="cpu_suppression", reason="cpu_suppression: why", resource=Resource.CPU
)


class FakeClient:
    """Answers evictions with the scripted statuses (or raises), records everything."""

    def __init__(self, *answers: int | BaseException, event_error: BaseException | None = None):
        self.answers = list(answers)
        self.event_error = event_error
        self.evictions: list[tuple[str, str, Mapping[str, Any]]] = []
        self.events: list[tuple[str, Mapping[str, Any]]] = []

    async def post_eviction(self, namespace: str, name: str, body: Mapping[str, Any]) -> int:
        self.evictions.append((namespace, name, body))
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def post_event(self, namespace: str, body: Mapping[str, Any]) -> None:
        if self.event_error is not None:
            raise self.event_error
        self.events.append((namespace, body))


def _evictor(client: FakeClient) -> ApiServerEvictor:
    return ApiServerEvictor(client, node_name="node-a", wall=FakeClock().wall)


@pytest.mark.parametrize(
    ("status", "outcome", "event"),
    [
        (201, Outcome.EVICTED, "Evicted"),
        (200, Outcome.EVICTED, "Evicted"),
        (404, Outcome.GONE, None),
        (409, Outcome.GONE, None),
        (429, Outcome.BLOCKED, "EvictionFailed"),
        (403, Outcome.FAILED, "EvictionFailed"),
        (500, Outcome.FAILED, "EvictionFailed"),
        (503, Outcome.FAILED, "EvictionFailed"),
    ],
)
async def test_status_to_outcome_and_event(
    status: int, outcome: Outcome, event: str | None
) -> None:
    client = FakeClient(status)
    result = await _evictor(client).evict(DECISION)
    assert result.outcome is outcome
    assert result.decision is DECISION
    assert [body["reason"] for _, body in client.events] == ([event] if event else [])
    assert client.evictions == [("ns", "batch", eviction_body(DECISION, grace_period_s=None))]


@pytest.mark.parametrize("error", [ConnectionRefusedError("refused"), TimeoutError()])
async def test_no_answer_is_a_failure_not_an_exception(error: BaseException) -> None:
    client = FakeClient(error, event_error=ConnectionRefusedError("still refused"))
    result = await _evictor(client).evict(DECISION)
    assert result.outcome is Outcome.FAILED
    assert result.detail.startswith("no answer from the API server: ")


async def test_a_lost_event_changes_nothing_but_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = FakeClient(201, event_error=ConnectionError("HTTP 403"))
    with caplog.at_level(logging.WARNING, logger="agent.eviction.evictor"):
        result = await _evictor(client).evict(DECISION)
    assert result.outcome is Outcome.EVICTED
    assert "event Evicted for ns/batch not recorded: HTTP 403" in caplog.text


def test_eviction_body_carries_the_uid_precondition_and_the_grace() -> None:
    assert eviction_body(DECISION, grace_period_s=0) == {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": "batch", "namespace": "ns"},
        "deleteOptions": {"preconditions": {"uid": "uid-batch"}, "gracePeriodSeconds": 0},
    }


def test_event_body_is_a_core_v1_warning_on_the_pod() -> None:
    body = event_body(
        DECISION, reason="Evicted", message="x" * 2000, node_name="node-a", wall=1.5, serial=3
    )
    assert body["metadata"] == {"name": f"batch.{1_500_000_003:x}", "namespace": "ns"}
    assert body["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "namespace": "ns",
        "name": "batch",
        "uid": "uid-batch",
    }
    assert body["type"] == "Warning"
    assert len(body["message"]) == 1024
    assert body["firstTimestamp"] == body["lastTimestamp"] == "1970-01-01T00:00:01Z"
    assert body["source"] == {"component": "katalyst-agent", "host": "node-a"}
    assert (body["reportingComponent"], body["reportingInstance"]) == ("katalyst-agent", "node-a")
    assert "eventTime" not in body


async def test_local_evictor_stops_the_pod_with_the_reason() -> None:
    calls: list[tuple[str, str, str]] = []
    answers = [True, False]

    async def stop_pod(namespace: str, name: str, reason: str) -> bool:
        calls.append((namespace, name, reason))
        return answers.pop(0)

    evictor = LocalEvictor(stop_pod)
    assert (await evictor.evict(DECISION)).outcome is Outcome.EVICTED
    assert (await evictor.evict(DECISION)).outcome is Outcome.GONE
    assert calls == [("ns", "batch", "cpu_suppression: why")] * 2


async def test_local_evictor_turns_an_os_error_into_a_failure() -> None:
    async def stop_pod(namespace: str, name: str, reason: str) -> bool:
        raise PermissionError("EPERM")

    result = await LocalEvictor(stop_pod).evict(DECISION)
    assert (result.outcome, result.detail) == (Outcome.FAILED, "EPERM")
