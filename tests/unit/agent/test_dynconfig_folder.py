"""The standalone dynamic configuration: AdminQoSConfiguration objects read from a
folder, resolved for this node by the library (cluster < node pool < named nodes),
applied, and refused (naming the file and the field) while the last good settings
stay."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agent.config import AgentConfig
from agent.dynconfig import (
    DynamicConfigCollector,
    DynamicConfigError,
    FolderSource,
    LayerCheckpoint,
    SettingsApplier,
    read_document,
)
from katalyst.clock import FakeClock
from katalyst.config.io import IOConfig
from katalyst.dynconfig import KCC, TargetConfig, spec_hash

NOW = 1_700_000_000.0  # FakeClock's wall time at 0


def aqc(name: str, spec: str, *, namespace: str = "katalyst-system", meta: str = "") -> str:
    """An AdminQoSConfiguration document with ``spec`` (YAML, indented as given)."""
    return (
        "apiVersion: config.katalyst.kubewharf.io/v1alpha1\n"
        "kind: AdminQoSConfiguration\n"
        f"metadata: {{name: {name}, namespace: {namespace}{meta}}}\n"
        "spec:\n" + textwrap.indent(textwrap.dedent(spec).strip() + "\n", "  ")
    )


def target(spec: str) -> str:
    """A config that sets the usage ratio's target."""
    return f"config: {{sysadvisor: {{indicators: {{cpu_usage_ratio: {{target: {spec}}}}}}}}}"


CLUSTER = aqc("cluster", target("0.5"))
POOL = aqc("batch", "nodeLabelSelector: node-pool=batch\npriority: 1\n" + target("0.4"))
NAMED = aqc(
    "incident",
    "ephemeralSelector: {nodeNames: [node-a], lastDuration: 1h}\n" + target("0.3"),
    meta=", creationTimestamp: '2023-11-14T22:13:20Z'",
)


def parse(text: str) -> TargetConfig | KCC:
    parsed = read_document(yaml.safe_load(text), source="f.yaml", mtime=NOW)
    assert parsed is not None
    return parsed


async def resolved(
    folder: Path,
    documents: list[str],
    *,
    node: str = "node-a",
    labels: dict[str, str] | None = None,
    clock: FakeClock | None = None,
) -> FolderSource:
    """A folder source over ``documents`` (one file), polled once."""
    folder.mkdir(exist_ok=True)
    (folder / "f.yaml").write_text("---\n".join(documents))
    src = source(folder, node=node, labels=labels, clock=clock)
    await src.poll()
    return src


def names(src: FolderSource) -> list[tuple[str, str]]:
    return [(x.level, x.name) for x in src.layers]


# ---- objects and resolution ---------------------------------------------------------------


def test_a_document_is_parsed_by_the_library_with_the_folder_s_defaults() -> None:
    got = parse(aqc("p", "nodeLabelSelector: node-pool=batch\npriority: 1", namespace="ops"))
    assert isinstance(got, TargetConfig)
    assert (got.ref.namespace, got.level, got.priority) == ("ops", "pool", 1)
    assert got.creation_timestamp == NOW  # no creationTimestamp: the file's mtime
    # The hash the controller would list for the same spec.
    assert got.hash == spec_hash({"nodeLabelSelector": "node-pool=batch", "priority": 1})
    bare = parse(
        "apiVersion: config.katalyst.kubewharf.io/v1alpha1\nkind: AdminQoSConfiguration\n"
        "metadata: {name: x, creationTimestamp: 2023-11-14 22:13:20}\nspec: {}\n"
    )
    assert isinstance(bare, TargetConfig)
    assert bare.ref.namespace == "default"
    assert bare.creation_timestamp == NOW  # a YAML timestamp without a zone is UTC
    assert bare.level == "cluster"
    assert read_document(None, source="f.yaml", mtime=NOW) is None


async def test_levels_resolve_cluster_then_pool_then_named(tmp_path: Path) -> None:
    clock = FakeClock()
    await clock.advance(60)
    mine = await resolved(
        tmp_path / "a", [CLUSTER, POOL, NAMED], labels={"node-pool": "batch"}, clock=clock
    )
    assert names(mine) == [
        ("cluster", "katalyst-system/cluster"),
        ("pool", "katalyst-system/batch"),
        ("named", "katalyst-system/incident"),
    ]
    assert usage_target(mine) == 0.3
    # Another node of another pool: the cluster-wide config alone.
    other = await resolved(
        tmp_path / "b", [CLUSTER, POOL, NAMED], node="node-b", labels={"node-pool": "web"}
    )
    assert names(other) == [("cluster", "katalyst-system/cluster")]


async def test_the_highest_matching_priority_wins_and_paused_configs_are_absent(
    tmp_path: Path,
) -> None:
    low = aqc("low", "nodeLabelSelector: zone in (a, b)\npriority: 0\n" + target("0.7"))
    high = aqc("high", "nodeLabelSelector: node-pool=batch,!gpu\npriority: 2\n" + target("0.6"))
    paused = aqc("top", "nodeLabelSelector: node-pool\npriority: 9\npaused: true\n")
    documents = [low, high, paused]
    got = await resolved(tmp_path / "a", documents, labels={"node-pool": "batch", "zone": "a"})
    assert [x.name for x in got.layers] == ["katalyst-system/high"]
    gpu = await resolved(
        tmp_path / "b", documents, labels={"node-pool": "batch", "zone": "a", "gpu": ""}
    )
    assert [x.name for x in gpu.layers] == ["katalyst-system/low"]


async def test_a_named_config_expires_after_its_last_duration(tmp_path: Path) -> None:
    clock = FakeClock()
    src = await resolved(tmp_path, [NAMED], clock=clock)
    assert names(src) == [("named", "katalyst-system/incident")]
    await clock.advance(3599)
    assert not await src.poll()
    await clock.advance(2)
    assert await src.poll()
    assert src.layers == ()
    assert src.record.expired == ("katalyst-system/incident",)


@pytest.mark.parametrize(
    ("documents", "labels", "message"),
    [
        ([CLUSTER, aqc("second", "")], {}, "spec: another cluster-wide config applies as well"),
        (
            [
                aqc("p1", "nodeLabelSelector: node-pool=batch"),
                aqc("p2", "nodeLabelSelector: zone=a"),
            ],
            {"node-pool": "batch", "zone": "a"},
            "spec.nodeLabelSelector: overlaps AdminQoSConfiguration/katalyst-system/p",
        ),
        (
            [NAMED, aqc("other", "ephemeralSelector: {nodeNames: [node-a], lastDuration: 2h}")],
            {},
            "spec.ephemeralSelector.nodeNames: node node-a is also named by",
        ),
    ],
)
async def test_conflicts_are_refused_naming_both(
    tmp_path: Path, documents: list[str], labels: dict[str, str], message: str
) -> None:
    src = await resolved(tmp_path, documents, labels=labels)
    error = str(src.record.last_error)
    assert error.count(message) == 2, error
    assert src.record.refusals_total == 2
    assert src.layers == ()  # neither applies: no version of either was ever good


async def test_a_config_that_clashes_with_an_established_one_is_left_out(
    tmp_path: Path,
) -> None:
    src = await resolved(tmp_path, [CLUSTER])
    rewrite(tmp_path / "second.yaml", aqc("second", target("0.2")))
    assert not await src.poll()
    assert names(src) == [("cluster", "katalyst-system/cluster")]
    assert usage_target(src) == 0.5
    assert "katalyst-system/second: spec: another cluster-wide config" in str(src.record.last_error)


async def test_an_object_defined_twice_refuses_the_folder(tmp_path: Path) -> None:
    src = await resolved(tmp_path, [CLUSTER, CLUSTER])
    assert "katalyst-system/cluster: defined twice" in str(src.record.last_error)
    assert src.layers == ()


async def test_pool_configs_at_one_priority_that_do_not_both_match_are_no_conflict(
    tmp_path: Path,
) -> None:
    documents = [
        aqc("p1", "nodeLabelSelector: node-pool=batch"),
        aqc("p2", "nodeLabelSelector: node-pool=web"),
    ]
    got = await resolved(tmp_path, documents, node="n", labels={"node-pool": "web"})
    assert [x.name for x in got.layers] == ["katalyst-system/p2"]
    assert got.record.last_error is None


KCC_DOC = """\
apiVersion: config.katalyst.kubewharf.io/v1alpha1
kind: KatalystCustomConfig
metadata: {name: aqc, namespace: katalyst-system}
spec:
  targetType:
    group: config.katalyst.kubewharf.io
    version: v1alpha1
    resource: adminqosconfigurations
  nodeLabelSelectorAllowedKeyList:
    - {priority: 0, keyList: [node-pool]}
    - {priority: 1, keyList: [node-pool, zone]}
"""


async def test_the_kcc_limits_the_label_keys_per_priority(tmp_path: Path) -> None:
    assert isinstance(parse(KCC_DOC), KCC)
    zone0 = aqc("z", "nodeLabelSelector: zone=a")
    refused = await resolved(tmp_path / "a", [KCC_DOC, zone0], labels={"zone": "a"})
    assert "key 'zone' is not allowed at priority 0 by KatalystCustomConfig" in str(
        refused.record.last_error
    )
    zone1 = aqc("z", "nodeLabelSelector: zone=a\npriority: 1")
    taken = await resolved(tmp_path / "b", [KCC_DOC, zone1], labels={"zone": "a"})
    assert [x.name for x in taken.layers] == ["katalyst-system/z"]
    # Without a KCC, any key at any priority.
    free = await resolved(tmp_path / "c", [zone0], labels={"zone": "a"})
    assert [x.name for x in free.layers] == ["katalyst-system/z"]
    other = KCC_DOC.replace("resource: adminqosconfigurations", "resource: others")
    with pytest.raises(DynamicConfigError, match=r"spec\.targetType: this agent reads"):
        parse(other)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (CLUSTER.replace("v1alpha1", "v1"), "f.yaml: apiVersion: must be"),
        (CLUSTER.replace("kind: AdminQoSConfiguration", "kind: Pod"), "f.yaml: kind: must be"),
        ("[1, 2]", "f.yaml: must be an object"),
        (
            aqc("x", "ephemeralSelector: {nodeNames: [n], lastDuration: soon}"),
            "f.yaml: AdminQoSConfiguration katalyst-system/x: "
            "spec.ephemeralSelector.lastDuration: invalid duration 'soon'",
        ),
        (aqc("x", "nodeLabelSelector: 'a in (b'"), "spec.nodeLabelSelector: expected ')'"),
        (aqc("x", "paused: 1"), "spec.paused: must be true or false"),
        (aqc("x", "selector: {}"), "spec.selector: unknown field"),
    ],
)
def test_a_document_that_does_not_parse_names_the_file_and_the_field(
    text: str, message: str
) -> None:
    with pytest.raises(DynamicConfigError) as exc:
        parse(text)
    assert message in str(exc.value)
    assert str(exc.value).startswith("f.yaml: ")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            aqc(
                "x", "nodeLabelSelector: a=b\nephemeralSelector: {nodeNames: [n], lastDuration: 1h}"
            ),
            "spec: nodeLabelSelector and ephemeralSelector.nodeNames cannot both be set",
        ),
        (
            aqc("x", "ephemeralSelector: {nodeNames: [n]}"),
            "spec.ephemeralSelector.lastDuration: required with nodeNames",
        ),
        (aqc("x", "priority: 3"), "spec.priority: only with nodeLabelSelector"),
        (
            aqc("x", target("-1")),
            "spec.config.sysadvisor.indicators.cpu_usage_ratio.target: must be > 0",
        ),
        (
            aqc("x", "config: {network: {interfaces: [{name: eth9}]}}"),
            "spec.config.network.interfaces: not allowed in a dynamic config",
        ),
    ],
)
async def test_an_invalid_object_refuses_the_folder_naming_the_file_and_the_field(
    tmp_path: Path, document: str, message: str
) -> None:
    src = await resolved(tmp_path, [document])
    error = str(src.record.last_error)
    assert error.startswith(f"{tmp_path / 'f.yaml'}: AdminQoSConfiguration katalyst-system/x: ")
    assert message in error
    assert src.record.origin == "base"


# ---- the folder -------------------------------------------------------------------------


def source(
    folder: Path,
    *,
    base: AgentConfig | None = None,
    node: str = "node-a",
    labels: dict[str, str] | None = None,
    clock: FakeClock | None = None,
    checkpoint: Path | None = None,
) -> FolderSource:
    return FolderSource(
        folder,
        applier=SettingsApplier(base or AgentConfig()),
        node_name=node,
        labels=labels or {},
        clock=clock or FakeClock(),
        checkpoint=LayerCheckpoint(checkpoint) if checkpoint is not None else None,
    )


def usage_target(src: FolderSource) -> float:
    return src.record.settings.sysadvisor.indicators.cpu_usage_ratio.target


def rewrite(path: Path, text: str) -> None:
    """Write ``text`` as an operator should: a new file renamed into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


async def test_the_folder_is_applied_and_reloaded_when_a_file_changes(tmp_path: Path) -> None:
    (tmp_path / "cluster.yaml").write_text(CLUSTER)
    (tmp_path / "README.md").write_text("not a config")
    src = source(tmp_path, labels={"node-pool": "batch"})
    assert await src.poll()
    assert usage_target(src) == 0.5
    assert not await src.poll()  # nothing changed
    rewrite(tmp_path / "pool.yaml", POOL)
    assert await src.poll()
    assert usage_target(src) == 0.4
    status = src.record.status()["dynamic_config"]
    assert isinstance(status, dict)
    assert [x["name"] for x in status["layers"]] == [
        "katalyst-system/cluster",
        "katalyst-system/batch",
    ]
    assert status["last_changes"] == ["sysadvisor.indicators.cpu_usage_ratio.target: 0.5 -> 0.4"]
    (tmp_path / "pool.yaml").unlink()
    assert await src.poll()
    assert usage_target(src) == 0.5


async def test_a_bad_file_is_refused_once_and_the_last_good_settings_stay(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "cluster.yaml").write_text(CLUSTER)
    src = source(tmp_path)
    await src.poll()
    rewrite(tmp_path / "cluster.yaml", aqc("cluster", target("0")))
    rewrite(tmp_path / "extra.yaml", "kind: [unclosed\n")
    assert not await src.poll()
    assert not await src.poll()  # the same content: not counted again
    assert usage_target(src) == 0.5
    status = src.record.status()["dynamic_config"]
    assert isinstance(status, dict)
    assert status["refusals_total"] == 2  # one per bad file
    error = str(status["last_error"])
    assert f"{tmp_path / 'cluster.yaml'}: AdminQoSConfiguration katalyst-system/cluster: " in error
    assert "spec.config.sysadvisor.indicators.cpu_usage_ratio.target: must be > 0" in error
    assert f"{tmp_path / 'extra.yaml'}: not valid YAML" in error
    logged = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(logged) == 2
    # Fixed: the new content applies and the error is gone.
    (tmp_path / "extra.yaml").unlink()
    rewrite(tmp_path / "cluster.yaml", aqc("cluster", target("0.45")))
    assert await src.poll()
    assert usage_target(src) == 0.45
    status = src.record.status()["dynamic_config"]
    assert isinstance(status, dict)
    assert status["last_error"] is None
    assert status["refusals_total"] == 2


async def test_a_set_the_agent_cannot_take_is_refused_as_a_whole(tmp_path: Path) -> None:
    # The IO loop was not started (io.enabled false in the agent's file): switching
    # it on takes a restart. Each object is valid; the set is not for this agent.
    (tmp_path / "cluster.yaml").write_text(aqc("cluster", "config: {io: {enabled: true}}"))
    src = source(tmp_path, base=AgentConfig(io=IOConfig(enabled=False)))
    assert not await src.poll()
    assert src.record.refusals_total == 1
    assert "io.enabled: the IO loop was not started" in str(src.record.last_error)
    assert src.record.settings == src.record.settings.of(AgentConfig(io=IOConfig(enabled=False)))
    assert not await src.poll()
    assert src.record.refusals_total == 1  # counted once while it lasts


async def test_several_documents_in_one_file_and_named_expiry_over_time(tmp_path: Path) -> None:
    stamp = datetime.fromtimestamp(NOW, UTC).isoformat()
    named = aqc(
        "incident",
        "ephemeralSelector: {nodeNames: [node-a], lastDuration: 90s}\n"
        "config: {reclaim: {enabled: false}}",
        meta=f", creationTimestamp: '{stamp}'",
    )
    (tmp_path / "all.yaml").write_text(CLUSTER + "---\n" + named)
    clock = FakeClock()
    src = source(tmp_path, clock=clock)
    assert await src.poll()
    assert not src.record.settings.reclaim_enabled
    assert [x.source for x in src.layers] == [
        f"{tmp_path / 'all.yaml'}#0",
        f"{tmp_path / 'all.yaml'}#1",
    ]
    await clock.advance(91)
    assert await src.poll()  # the files did not change; the named config expired
    assert src.record.settings.reclaim_enabled
    assert src.record.expired == ("katalyst-system/incident",)


async def test_a_restart_restores_the_checkpoint_first(tmp_path: Path) -> None:
    folder = tmp_path / "dyn"
    folder.mkdir()
    (folder / "cluster.yaml").write_text(CLUSTER)
    checkpoint = tmp_path / "state" / "dynamic_config"
    first = source(folder, checkpoint=checkpoint)
    await first.start()
    assert usage_target(first) == 0.5
    # Restarted with a folder broken meanwhile: the node keeps what it ran.
    (folder / "cluster.yaml").write_text("{not yaml")
    second = source(folder, checkpoint=checkpoint)
    await second.start()
    assert usage_target(second) == 0.5
    assert second.record.origin == "checkpoint"
    assert second.record.refusals_total == 1


async def test_a_corrupt_checkpoint_falls_back_to_the_agent_s_own_settings(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "dyn"
    folder.mkdir()
    (folder / "cluster.yaml").write_text(CLUSTER)
    checkpoint = tmp_path / "state" / "dynamic_config"
    first = source(folder, checkpoint=checkpoint)
    await first.start()
    checkpoint.write_text(checkpoint.read_text()[:-20])
    (folder / "cluster.yaml").write_text("{not yaml")
    second = source(folder, checkpoint=checkpoint)
    assert not await second.restore()
    assert usage_target(second) == 0.6  # the default: the agent's own configuration
    assert second.record.origin == "base"


async def test_the_metrics(tmp_path: Path) -> None:
    (tmp_path / "cluster.yaml").write_text(CLUSTER)
    src = source(tmp_path)
    await src.poll()
    rewrite(tmp_path / "cluster.yaml", "kind: x\n")
    await src.poll()
    registry = CollectorRegistry()
    registry.register(DynamicConfigCollector(src.record))
    families = {
        f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())
    }
    assert families["katalyst_dynamic_config_applied"].samples[0].value == 1.0
    assert families["katalyst_dynamic_config_refusals"].samples[0].value == 1.0
    (info,) = families["katalyst_dynamic_config_info"].samples
    assert info.labels["hash"] == src.record.settings.hash
    assert info.labels["layers"] == f"katalyst-system/cluster@{src.layers[0].hash}"
    assert families["katalyst_dynamic_config_reclaim_enabled"].samples[0].value == 1.0
    assert "katalyst_dynamic_config_last_applied_timestamp_seconds" in families
