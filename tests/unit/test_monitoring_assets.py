"""The monitoring assets agree with the code.

* docs/operations.md's metrics reference lists exactly the families the processes'
  collectors export, with their types. The families are read from the real
  collector classes through ``CollectorRegistry.collect()``: real inputs where they
  are cheap to build (the controller's and the webhook's metrics, the eviction
  manager, the reporter loop, the dynamic-config record, the node's applier), small
  stand-ins for the loops whose state takes a whole running agent to reach (the
  sysadvisor's decision, the metrics snapshot, the IO and network periods, the
  plugin servers, the pod watch). A stand-in only feeds values; the names come from
  the collector's own code.
* A source scan backs that up: every ``katalyst_*`` string literal in a module that
  imports prometheus_client, and every ``Collector`` subclass, must be covered, so a
  new collector or metric cannot slip past the reference unnoticed.
* Every metric that deploy/prometheus/rules.yaml and
  deploy/grafana/katalyst-dashboard.json query is in the reference.
* The dashboard and the rules are well-formed for the use the docs describe.
"""

from __future__ import annotations

import ast
import datetime
import json
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import yaml
from prometheus_client import CollectorRegistry

from agent.cluster.metrics import ClusterCollector
from agent.config import AgentConfig
from agent.dynconfig.record import DynamicConfigCollector, DynamicConfigRecord
from agent.dynconfig.settings import DynamicSettings
from agent.enforcement.applier import Applier
from agent.eviction import EvictionCollector, EvictionManager, build_plugins
from agent.isolation.io_metrics import IOCollector
from agent.isolation.network import NetworkCollector
from agent.isolation.setup import SupportedCollector
from agent.observability import AgentCollector, ContainerCollector, WritesCollector
from agent.reporter import Reporter, ReporterCollector, ReportLoop, ReportPlanner
from agent.sysadvisor.metrics import AdvisorCollector
from controllers.metrics import ControllerCollector, ControllerMetrics, State
from controllers.webhook.server import CertCollector, WebhookMetrics
from katalyst.cgroup import open_driver
from katalyst.cgroup.fake import FakeCgroupFS
from katalyst.clock import FakeClock
from katalyst.config.eviction import EvictionConfig
from katalyst.config.reporter import ReporterConfig
from scheduler_plugins.metrics import ExtenderCollector, ExtenderMetrics

ROOT = Path(__file__).resolve().parents[2]
OPERATIONS = ROOT / "docs" / "operations.md"
RULES = ROOT / "deploy" / "prometheus" / "rules.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "katalyst-dashboard.json"
PACKAGES = ("agent", "controllers", "scheduler_plugins")

#: Every prometheus Collector subclass in PACKAGES that this test instantiates.
COVERED_COLLECTORS = frozenset(
    {
        "AgentCollector",
        "ContainerCollector",
        "WritesCollector",
        "ClusterCollector",
        "AdvisorCollector",
        "EvictionCollector",
        "ReporterCollector",
        "DynamicConfigCollector",
        "IOCollector",
        "NetworkCollector",
        "SupportedCollector",
        "ControllerCollector",
        "CertCollector",
        "ExtenderCollector",
    }
)

_ROW = re.compile(r"^\| `(katalyst_[a-z0-9_]+)` \| (counter|gauge|histogram) \|")
_METRIC = re.compile(r"\bkatalyst_[a-z0-9_]*[a-z0-9]\b")
_LITERAL = re.compile(r"katalyst_[a-z0-9_]*[a-z0-9]")
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def _stub(**fields: object) -> Any:
    return SimpleNamespace(**fields)


# ---- what the code exports ------------------------------------------------------------


def _agent_registry() -> CollectorRegistry:
    """Every agent collector on one registry, as agent/app.py registers them (which
    also proves that no two of them export the same family)."""
    clock = FakeClock()
    registry = CollectorRegistry()
    server = _stub(
        policy=_stub(plugin_name="qrm_cpu_plugin", allocations=dict),
        serving=True,
        registered=True,
    )
    registry.register(AgentCollector(cpu=_stub(pools=lambda: {"share": {1, 2}}), servers=[server]))
    node = _stub(
        cpus=4,
        cpu_usage_cores=1.0,
        memory_total_bytes=1 << 30,
        memory_available_bytes=1 << 29,
        pressure=lambda resource: None,
    )
    metrics_loop = _stub(
        age=lambda: 0.5,
        last_pass_s=0.01,
        failed_passes=0,
        snapshot=_stub(containers={}, node=node),
    )
    registry.register(ContainerCollector(loop=metrics_loop))
    registry.register(WritesCollector(Applier(open_driver(FakeCgroupFS.v1(), base="kqos"))))
    watcher = _stub(synced=_stub(is_set=lambda: True), failures=0, lists=1)
    registry.register(ClusterCollector(node=_stub(pods={}, refusals=0), watcher=watcher))
    plan = _stub(
        trace=[],
        regions=[],
        headroom_cpus=1.0,
        target_reclaim_cpus=1.0,
        reclaim_cpus=1.0,
        reclaim_pool_size=0,
        quota_us=lambda period: 100_000,
        reclaim_memory_limit=1 << 30,
        mode="normal",
    )
    advisor = _stub(writes=Counter(), latest=_stub(plan=plan, duration_s=0.01))
    registry.register(AdvisorCollector(advisor))
    config = EvictionConfig()
    manager = EvictionManager(config, plugins=build_plugins(config), clock=clock)
    registry.register(EvictionCollector(manager))

    async def no_sample() -> None:
        return None

    report = ReportLoop(
        ReportPlanner(ReporterConfig(), numa_sockets={0: 0}, clock=clock),
        Reporter(cast(Any, None), node_name="n1"),
        next_sample=no_sample,
        clock=clock,
    )
    registry.register(ReporterCollector(report))
    settings = DynamicSettings.of(AgentConfig(node_name="n1"))
    record = DynamicConfigRecord("test", settings)
    record.applied([], settings, [], at=1.0, origin="test")
    registry.register(DynamicConfigCollector(record))
    decision = _stub(
        level=0.5,
        pressure=1.0,
        target=10.0,
        safety_threshold=20.0,
        mode="normal",
        stale_periods=0,
    )
    io = _stub(
        write_counts=dict,
        usage=dict,
        supported={"throttle": True, "weight": True},
        latest=_stub(decision=decision, limits={}, pressure_scope="node", duration_s=0.01),
    )
    network = _stub(interfaces=[], last_pass_s=0.01, classified=0, passes=1, classify_error=None)
    # As agent/isolation/setup.py wires them: one family of "supported" for both loops.
    registry.register(NetworkCollector(network))
    registry.register(IOCollector(io, supported=False))
    registry.register(SupportedCollector(network=network, io=io))
    return registry


def _controller_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    ControllerMetrics(registry)
    registry.register(ControllerCollector(lambda: State(leading=True, last_sync=1.0)))
    WebhookMetrics(registry)
    current = _stub(not_after=datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC))
    registry.register(CertCollector(_stub(current=current, loads=1, errors=0)))
    return registry


def _extender_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    ExtenderMetrics(registry)
    registry.register(
        ExtenderCollector(
            leading=lambda: True,
            ready=lambda: True,
            nodes=lambda: 1,
            pods=lambda: 2,
            assumed=lambda: 0,
        )
    )
    return registry


def _families(registry: CollectorRegistry) -> dict[str, str]:
    return {family.name: family.type for family in registry.collect()}


@pytest.fixture(scope="module")
def exported() -> dict[str, str]:
    """Family name (as prometheus_client holds it: no ``_total``) -> type."""
    families = _families(_agent_registry())
    controller = _families(_controller_registry())
    extender = _families(_extender_registry())
    assert not set(families) & set(controller), "agent and controller share a family name"
    assert not (set(families) | set(controller)) & set(extender), "a family name is shared"
    return {**families, **controller, **extender}


# ---- what the reference says ----------------------------------------------------------


def _reference_rows() -> Iterator[tuple[str, str]]:
    text = OPERATIONS.read_text(encoding="utf-8")
    section = text.split("\n## Metrics reference\n", 1)[1].split("\n## ", 1)[0]
    for line in section.splitlines():
        match = _ROW.match(line)
        if match:
            yield match.group(1), match.group(2)


@pytest.fixture(scope="module")
def reference() -> dict[str, str]:
    """Family name -> type, from the reference's tables (counters are listed with
    ``_total``, as queried)."""
    rows = list(_reference_rows())
    names = [name for name, _ in rows]
    assert len(names) == len(set(names)), "a metric is listed twice in docs/operations.md"
    families: dict[str, str] = {}
    for listed, kind in rows:
        if kind == "counter":
            assert listed.endswith("_total"), f"{listed}: list counters with _total, as queried"
        families[listed.removesuffix("_total") if kind == "counter" else listed] = kind
    return families


def _series(reference: Mapping[str, str]) -> set[str]:
    """The sample names a query may use for each reference family."""
    out: set[str] = set()
    for name, kind in reference.items():
        if kind == "counter":
            out.add(f"{name}_total")
        elif kind == "histogram":
            out.update(f"{name}_{suffix}" for suffix in ("bucket", "sum", "count"))
        else:
            out.add(name)
    return out


# ---- reference against code -----------------------------------------------------------


def test_the_reference_is_not_empty(reference: dict[str, str]) -> None:
    assert len(reference) > 80


def test_every_referenced_metric_is_exported_with_that_type(
    reference: dict[str, str], exported: dict[str, str]
) -> None:
    missing = sorted(set(reference) - set(exported))
    assert not missing, f"docs/operations.md lists metrics no collector exports: {missing}"
    wrong = {n: (reference[n], exported[n]) for n in reference if reference[n] != exported[n]}
    assert not wrong, f"types in docs/operations.md differ from the code (doc, code): {wrong}"


def test_every_exported_metric_is_in_the_reference(
    reference: dict[str, str], exported: dict[str, str]
) -> None:
    missing = sorted(set(exported) - set(reference))
    assert not missing, f"metrics the code exports that docs/operations.md lacks: {missing}"


def _modules() -> Iterator[tuple[Path, ast.Module]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _imports_prometheus(tree: ast.Module) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("prometheus_client"):
            return True
        if isinstance(node, ast.Import) and any(
            a.name.startswith("prometheus_client") for a in node.names
        ):
            return True
    return False


def test_every_metric_name_literal_in_the_source_is_exported(exported: dict[str, str]) -> None:
    """A source scan: catches a family a collector yields only in a state the
    stand-ins above do not reach, and metrics of a collector this test does not know."""
    unknown: list[str] = []
    for path, tree in _modules():
        if not _imports_prometheus(tree):
            continue
        literals = {
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
        }
        unknown += [
            f"{path.relative_to(ROOT)}: {name}"
            for name in sorted(literals)
            if _LITERAL.fullmatch(name) and name.removesuffix("_total") not in exported
        ]
    assert not unknown, f"metric names in the source that no collector here exports: {unknown}"


def test_every_collector_class_is_covered() -> None:
    found: set[str] = set()
    for _path, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and any(
                isinstance(base, ast.Name) and base.id == "Collector" for base in node.bases
            ):
                found.add(node.name)
    assert found == COVERED_COLLECTORS, (
        f"new collectors {sorted(found - COVERED_COLLECTORS)} (add them to this test and "
        f"docs/operations.md); gone {sorted(COVERED_COLLECTORS - found)}"
    )


# ---- rules ----------------------------------------------------------------------------


def _rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    assert loaded["apiVersion"] == "monitoring.coreos.com/v1"
    assert loaded["kind"] == "PrometheusRule"
    assert loaded["metadata"]["namespace"] == "katalyst-system"
    return [rule for group in loaded["spec"]["groups"] for rule in group["rules"]]


def test_every_alert_has_expr_for_severity_and_summary() -> None:
    rules = _rules()
    assert rules
    names = [r.get("alert") for r in rules]
    assert len(names) == len(set(names)), "an alert name is used twice"
    for rule in rules:
        name = rule.get("alert")
        assert name, f"not an alert: {rule}"
        assert isinstance(rule.get("expr"), str) and rule["expr"].strip(), name
        assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), f"{name}: for"
        assert rule.get("labels", {}).get("severity") in ("critical", "warning", "info"), name
        assert rule.get("annotations", {}).get("summary"), f"{name}: annotations.summary"


def test_every_alert_is_documented() -> None:
    text = OPERATIONS.read_text(encoding="utf-8")
    undocumented = [r["alert"] for r in _rules() if f"`{r['alert']}`" not in text]
    assert not undocumented, f"alerts missing from docs/operations.md: {undocumented}"


def test_the_rules_query_only_referenced_metrics(reference: dict[str, str]) -> None:
    allowed = _series(reference)
    used = {m for rule in _rules() for m in _METRIC.findall(rule["expr"])}
    assert used
    assert not used - allowed, f"rules.yaml queries unknown series: {sorted(used - allowed)}"


# ---- dashboard ------------------------------------------------------------------------


def _dashboard() -> dict[str, Any]:
    loaded = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _uses_datasource_variable(value: object) -> bool:
    return value in ("${datasource}", DATASOURCE)


def test_the_dashboard_has_the_variables_and_schema() -> None:
    dashboard = _dashboard()
    assert dashboard["schemaVersion"] >= 39
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["node"]["type"] == "query"
    assert _uses_datasource_variable(variables["node"]["datasource"])


def test_every_panel_and_query_uses_the_datasource_variable() -> None:
    panels = list(_panels(_dashboard()["panels"]))
    assert len(panels) > 20
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in panels:
        assert _uses_datasource_variable(panel.get("datasource")), panel["title"]
        for target in panel.get("targets", []):
            assert _uses_datasource_variable(target.get("datasource")), panel["title"]


def _dashboard_exprs() -> list[str]:
    dashboard = _dashboard()
    exprs = [t["expr"] for p in _panels(dashboard["panels"]) for t in p.get("targets", [])]
    exprs += [str(v.get("definition", "")) for v in dashboard["templating"]["list"]]
    return exprs


def test_the_dashboard_queries_only_referenced_metrics(reference: dict[str, str]) -> None:
    allowed = _series(reference)
    used = {m for expr in _dashboard_exprs() for m in _METRIC.findall(expr)}
    assert len(used) > 30
    assert not used - allowed, f"the dashboard queries unknown series: {sorted(used - allowed)}"


def test_agent_panels_select_the_node_variable() -> None:
    """Agent series carry ``node`` from the scrape; a panel that forgets the variable
    silently shows the whole fleet."""
    controller = ("katalyst_controller_", "katalyst_webhook_", "katalyst_extender_")
    for expr in _dashboard_exprs():
        if expr.startswith("label_values") or not _METRIC.search(expr):
            continue
        if all(m.startswith(controller) for m in _METRIC.findall(expr)):
            continue
        assert 'node=~"$node"' in expr, expr
