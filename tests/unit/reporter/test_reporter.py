"""Reporter over a scripted client: the calls it makes, and how it reads the answers."""

from __future__ import annotations

from agent.reporter import Reclaimed, Report, Reporter, Target, WriteOutcome, ZoneAmount
from tests.unit.reporter.support import ScriptedClient

CPU = "resource.katalyst.kubewharf.io/reclaimed_millicpu"
MEM = "resource.katalyst.kubewharf.io/reclaimed_memory"
VALUES = Reclaimed(
    millicpu=1500,
    memory_bytes=2048,
    zones=(ZoneAmount(numa=0, socket=0, millicpu=1500, memory_bytes=2048),),
)


def _report(*targets: Target, values: Reclaimed = VALUES) -> Report:
    return Report(values=values, targets=dict.fromkeys(targets, "change"))


async def test_the_node_is_one_status_patch() -> None:
    client = ScriptedClient()
    reporter = Reporter(client, node_name="n1")

    assert await reporter.send(_report(Target.NODE)) == {Target.NODE: True}

    assert client.names() == ["patch_node_status"]
    assert client.node is not None
    assert client.node["status"]["capacity"] == {CPU: "1500", MEM: "2048"}
    assert reporter.writes == {(Target.NODE, WriteOutcome.WRITTEN): 1}


async def test_a_missing_node_is_a_failure_with_the_status_named() -> None:
    client = ScriptedClient(node_exists=False)
    reporter = Reporter(client, node_name="n1")
    assert await reporter.send(_report(Target.NODE)) == {Target.NODE: False}
    assert reporter.last_error == {Target.NODE: "node status patch: HTTP 404"}
    assert reporter.writes == {(Target.NODE, WriteOutcome.FAILED): 1}


async def test_a_missing_cnr_is_created_then_its_status_patched() -> None:
    client = ScriptedClient()
    reporter = Reporter(client, node_name="n1")

    assert await reporter.send(_report(Target.CNR)) == {Target.CNR: True}

    assert client.names() == ["get_cnr", "create_cnr", "get_cnr", "patch_cnr_status"]
    assert client.cnr is not None
    assert client.cnr["status"]["resources"]["allocatable"] == {CPU: "1500", MEM: "2048"}
    assert client.cnr["status"]["topologyZone"][0]["children"][0]["name"] == "0"
    patch = client.calls[-1][1]
    assert patch["metadata"] == {"resourceVersion": "2"}  # the version read after the create
    assert reporter.writes == {(Target.CNR, WriteOutcome.CREATED): 1}


async def test_an_existing_cnr_is_read_then_patched() -> None:
    client = ScriptedClient()
    reporter = Reporter(client, node_name="n1")
    await reporter.send(_report(Target.CNR))
    client.calls.clear()

    assert await reporter.send(_report(Target.CNR)) == {Target.CNR: True}
    assert client.names() == ["get_cnr", "patch_cnr_status"]
    assert reporter.writes[Target.CNR, WriteOutcome.WRITTEN] == 1


async def test_a_cnr_created_meanwhile_by_someone_else_is_read_again() -> None:
    client = ScriptedClient()
    client.answer("create_cnr", 409)
    reporter = Reporter(client, node_name="n1")

    # The scripted 409 stores nothing: the next read still finds no CNR, and the
    # reporter creates it then.
    assert await reporter.send(_report(Target.CNR)) == {Target.CNR: True}
    assert client.names() == [
        "get_cnr",
        "create_cnr",
        "get_cnr",
        "create_cnr",
        "get_cnr",
        "patch_cnr_status",
    ]


async def test_a_cnr_changed_between_read_and_patch_is_read_again() -> None:
    client = ScriptedClient()
    reporter = Reporter(client, node_name="n1")
    await reporter.send(_report(Target.CNR))
    client.calls.clear()

    def other_writer() -> None:
        assert client.cnr is not None
        client.cnr["metadata"]["resourceVersion"] = client.bump()

    client.after_get.append(other_writer)
    assert await reporter.send(_report(Target.CNR)) == {Target.CNR: True}
    assert client.names() == ["get_cnr", "patch_cnr_status", "get_cnr", "patch_cnr_status"]


async def test_endless_conflicts_give_up_after_a_few_rounds() -> None:
    client = ScriptedClient()
    reporter = Reporter(client, node_name="n1")
    await reporter.send(_report(Target.CNR))
    client.answer("patch_cnr_status", 409, 409, 409, 409)

    assert await reporter.send(_report(Target.CNR)) == {Target.CNR: False}
    assert reporter.last_error[Target.CNR] == "CNR changed under every one of 4 writes"


async def test_a_cnr_deleted_between_read_and_patch_is_created_again() -> None:
    client = ScriptedClient()
    reporter = Reporter(client, node_name="n1")
    await reporter.send(_report(Target.CNR))
    client.calls.clear()

    def deleted() -> None:
        client.cnr = None

    client.after_get.append(deleted)
    assert await reporter.send(_report(Target.CNR)) == {Target.CNR: True}
    assert client.names() == [
        "get_cnr",
        "patch_cnr_status",
        "get_cnr",
        "create_cnr",
        "get_cnr",
        "patch_cnr_status",
    ]
    assert reporter.writes[Target.CNR, WriteOutcome.CREATED] == 2  # at first, and now


async def test_no_answer_and_refusals_are_failures_and_the_other_target_still_goes() -> None:
    client = ScriptedClient()
    client.answer("patch_node_status", ConnectionError("connection refused"))
    client.answer("create_cnr", 403)
    reporter = Reporter(client, node_name="n1")

    assert await reporter.send(_report(Target.NODE, Target.CNR)) == {
        Target.NODE: False,
        Target.CNR: False,
    }
    assert reporter.last_error == {
        Target.NODE: "connection refused",
        Target.CNR: "CNR create: HTTP 403",
    }

    client.answer("get_cnr", 500)  # get_cnr raises ConnectionError for it
    assert await reporter.send(_report(Target.CNR)) == {Target.CNR: False}
    assert reporter.last_error[Target.CNR] == "HTTP 500"

    assert await reporter.send(_report(Target.NODE, Target.CNR)) == {
        Target.NODE: True,
        Target.CNR: True,
    }
    assert reporter.last_error == {}


async def test_a_timeout_is_a_failure() -> None:
    client = ScriptedClient()
    client.answer("patch_node_status", TimeoutError())
    reporter = Reporter(client, node_name="n1")
    assert await reporter.send(_report(Target.NODE)) == {Target.NODE: False}
    assert reporter.last_error == {Target.NODE: "TimeoutError"}
