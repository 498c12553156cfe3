"""The standalone dynamic configuration: AdminQoSConfiguration objects read from a
folder, resolved for this node (cluster < node pool < named nodes), applied, and
refused (naming the file and the field) while the last good settings stay."""

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
)
from agent.dynconfig.objects import (
    AllowedKeys,
    TargetConfig,
    parse_document,
    parse_duration,
    parse_selector,
    resolve,
)
from katalyst.clock import FakeClock

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


def parse(text: str, *, base: AgentConfig | None = None) -> TargetConfig | AllowedKeys:
    parsed = parse_document(
        yaml.safe_load(text), source="f.yaml", base=base or AgentConfig(), mtime=NOW
    )
    assert parsed is not None
    return parsed


# ---- objects and resolution ---------------------------------------------------------------


def test_levels_resolve_cluster_then_pool_then_named() -> None:
    objects = [parse(CLUSTER), parse(POOL), parse(NAMED)]
    got = resolve(objects, node_name="node-a", labels={"node-pool": "batch"}, now=NOW + 60)
    assert [(x.level, x.name) for x in got.layers] == [
        ("cluster", "katalyst-system/cluster"),
        ("pool", "katalyst-system/batch"),
        ("named", "katalyst-system/incident"),
    ]
    # Another node of another pool: the cluster-wide config alone.
    other = resolve(objects, node_name="node-b", labels={"node-pool": "web"}, now=NOW)
    assert [x.level for x in other.layers] == ["cluster"]


def test_the_highest_matching_priority_wins_and_paused_configs_are_absent() -> None:
    low = aqc("low", "nodeLabelSelector: zone in (a, b)\npriority: 0\n" + target("0.7"))
    high = aqc("high", "nodeLabelSelector: node-pool=batch,!gpu\npriority: 2\n" + target("0.6"))
    paused = aqc("top", "nodeLabelSelector: node-pool\npriority: 9\npaused: true\n")
    objects = [parse(low), parse(high), parse(paused)]
    got = resolve(objects, node_name="n", labels={"node-pool": "batch", "zone": "a"}, now=NOW)
    assert [x.name for x in got.layers] == ["katalyst-system/high"]
    gpu = resolve(
        objects, node_name="n", labels={"node-pool": "batch", "zone": "a", "gpu": ""}, now=NOW
    )
    assert [x.name for x in gpu.layers] == ["katalyst-system/low"]


def test_a_named_config_expires_after_its_last_duration() -> None:
    objects = [parse(NAMED)]
    assert resolve(objects, node_name="node-a", labels={}, now=NOW + 3599).layers
    late = resolve(objects, node_name="node-a", labels={}, now=NOW + 3601)
    assert late.layers == ()
    assert late.expired == ("katalyst-system/incident",)


@pytest.mark.parametrize(
    ("documents", "labels", "message"),
    [
        ([CLUSTER, aqc("second", "")], {}, "cluster-wide configs conflict"),
        (
            [
                aqc("p1", "nodeLabelSelector: node-pool=batch"),
                aqc("p2", "nodeLabelSelector: zone=a"),
            ],
            {"node-pool": "batch", "zone": "a"},
            "node-pool (priority 0, matching this node) configs conflict",
        ),
        (
            [NAMED, aqc("other", "ephemeralSelector: {nodeNames: [node-a], lastDuration: 2h}")],
            {},
            "named-node (naming this node) configs conflict",
        ),
        ([CLUSTER, CLUSTER], {}, "defined twice"),
    ],
)
def test_conflicts_are_refused_naming_both(
    documents: list[str], labels: dict[str, str], message: str
) -> None:
    with pytest.raises(DynamicConfigError) as exc:
        resolve([parse(d) for d in documents], node_name="node-a", labels=labels, now=NOW)
    assert message in str(exc.value)


def test_pool_configs_at_one_priority_that_do_not_both_match_are_no_conflict() -> None:
    objects = [
        parse(aqc("p1", "nodeLabelSelector: node-pool=batch")),
        parse(aqc("p2", "nodeLabelSelector: node-pool=web")),
    ]
    got = resolve(objects, node_name="n", labels={"node-pool": "web"}, now=NOW)
    assert [x.name for x in got.layers] == ["katalyst-system/p2"]


KCC = """\
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


def test_the_kcc_limits_the_label_keys_per_priority() -> None:
    kcc = parse(KCC)
    zone0 = parse(aqc("z", "nodeLabelSelector: zone=a"))
    with pytest.raises(DynamicConfigError, match="key 'zone' is not allowed at priority 0"):
        resolve([kcc, zone0], node_name="n", labels={}, now=NOW)
    zone1 = parse(aqc("z", "nodeLabelSelector: zone=a\npriority: 1"))
    assert resolve([kcc, zone1], node_name="n", labels={"zone": "a"}, now=NOW).layers


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (CLUSTER.replace("v1alpha1", "v1"), "f.yaml: apiVersion: must be"),
        (CLUSTER.replace("kind: AdminQoSConfiguration", "kind: Pod"), "kind: must be"),
        (
            aqc(
                "x", "nodeLabelSelector: a=b\nephemeralSelector: {nodeNames: [n], lastDuration: 1h}"
            ),
            "not both",
        ),
        (
            aqc("x", "ephemeralSelector: {nodeNames: [n]}"),
            "spec.ephemeralSelector.lastDuration: required with nodeNames",
        ),
        (
            aqc("x", "ephemeralSelector: {nodeNames: [n], lastDuration: soon}"),
            "spec.ephemeralSelector.lastDuration: 'soon' is not a duration",
        ),
        (aqc("x", "nodeLabelSelector: 'a in (b'"), "spec.nodeLabelSelector: cannot parse"),
        (aqc("x", "priority: 3"), "spec.priority: only a config with a nodeLabelSelector"),
        (aqc("x", "paused: 1"), "spec.paused: must be true or false"),
        (aqc("x", "selector: {}"), "spec: unknown key 'selector'"),
        (
            aqc("x", target("-1")),
            "f.yaml: AdminQoSConfiguration katalyst-system/x: "
            "spec.config.sysadvisor.indicators.cpu_usage_ratio.target: must be > 0",
        ),
        (aqc("Bad_Name", ""), "metadata.name: must be a DNS subdomain"),
    ],
)
def test_a_bad_object_is_refused_naming_the_file_and_the_field(text: str, message: str) -> None:
    with pytest.raises(DynamicConfigError) as exc:
        parse(text)
    assert message in str(exc.value)
    assert str(exc.value).startswith("f.yaml: ")


def test_selectors_and_durations() -> None:
    terms = parse_selector("node-pool=batch, zone in (a,b),!gpu,ssd,tier!=web, x notin (y)")
    labels = {"node-pool": "batch", "zone": "b", "ssd": "1"}
    assert all(t.matches(labels) for t in terms)
    assert not all(t.matches({**labels, "gpu": "1"}) for t in terms)
    assert not all(t.matches({**labels, "x": "y"}) for t in terms)
    assert parse_selector("") == ()
    for bad in ("a in ()", "a=b=c", "=x", "a,,b", "a in (b"):
        with pytest.raises(ValueError):  # noqa: PT011 - the messages vary by term
            parse_selector(bad)
    assert parse_duration("1h30m") == 5400.0
    assert parse_duration("90s") == parse_duration("1.5m") == 90.0
    for bad in ("", "1", "1d", "0s", "-1h"):
        with pytest.raises(ValueError):  # noqa: PT011
            parse_duration(bad)


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
    (tmp_path / "cluster.yaml").write_text(
        aqc("cluster", "config: {network: {interfaces: [{name: eth9}]}}")
    )
    src = source(tmp_path)
    assert not await src.poll()
    assert src.record.refusals_total == 1
    assert "network.interfaces: fixed at start-up" in str(src.record.last_error)
    assert src.record.settings == src.record.settings.of(AgentConfig())


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
