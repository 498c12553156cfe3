"""The network isolation benchmark's pure parts: the numbers it reports (throughput
from counters, percentiles, ratios, goals), what it reads (the client's lines, the
agent's ``/status``), what it hands the agent (the config file and the pods), the
trees it builds for (u), (n) and (s), and its arguments. Nothing here times
anything or touches the kernel."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
import yaml

from agent.config import load_config
from agent.isolation.network import (
    MINOR,
    RECLAIMED,
    RECLAIMED_PRIO,
    SHARED,
    SYSTEM,
    NetworkConfig,
    NetworkLoop,
    ShapedInterface,
)
from agent.isolation.nft import ClassifyRule
from agent.isolation.tc import PARENT_MINOR, ClassSpec, ClassStats
from agent.standalone.manifests import load_folder
from bench.colocation import Latency
from bench.net_isolation import (
    CONNECTIONS,
    RESPONSE_BYTES,
    SERVICE_REQUEST_MBIT,
    Bed,
    CapSample,
    Counters,
    Options,
    ScenarioResult,
    agent_settings,
    class_mbit,
    classify_rules,
    client_code,
    combine_rounds,
    converged,
    evaluate_goals,
    fifo_tree,
    format_report,
    manifests,
    mbit,
    parse_args,
    parse_client_line,
    per_period,
    preflight,
    ratios,
    report_json,
    round_table,
    sample_from_status,
    scenario_result,
    sender_code,
    server_code,
    sink_code,
    spare_mbit,
    static_tree,
    window_requests,
)
from examples.standalone.loadgen import Request
from katalyst.clock import MonotonicClock
from katalyst.qos import QoSLevel

BED = Bed.named("kqb4194304")
OPTS = Options()
LINK = 100.0


def lat(p99: float, *, p50: float = 0.3, p999: float | None = None) -> Latency:
    return Latency(p50=p50, p99=p99, p999=p999 or 2 * p99, requests=4000, errors=0)


def result(
    name: str,
    *,
    p99: float,
    bulk: float = math.nan,
    link: float = math.nan,
    cap: float = math.nan,
    samples: Sequence[CapSample] = (),
) -> ScenarioResult:
    return ScenarioResult(
        name=name,
        title=f"({name})",
        window_s=20.0,
        latency=lat(p99),
        bulk_mbit=bulk,
        link_mbit=link,
        service_class_mbit=math.nan,
        reclaimed_class_mbit=math.nan,
        cap_mbit=cap,
        samples=tuple(samples),
    )


def sample(
    t_s: float,
    *,
    cap: float | None = 93.0,
    target: float | None = 93.0,
    service: float | None = 1.7,
    classified: int = 2,
    mode: str | None = "normal",
    supported: bool = True,
) -> CapSample:
    return CapSample(
        t_s=t_s,
        supported=supported,
        classified=classified,
        mode=mode,
        cap_mbit=cap,
        target_mbit=target,
        service_mbit=service,
        reclaimed_mbit=90.0,
        reclaim_cpus=0.75,
    )


def full_results(*, d_p99: float = 3.0, d_bulk: float = 88.0) -> dict[str, ScenarioResult]:
    return {
        "u": result("u", p99=3.0, link=2.0),
        "n": result("n", p99=30.0, bulk=93.0, link=99.0),
        "s": result("s", p99=3.1, bulk=47.0, link=51.0, cap=50.0),
        "d": result("d", p99=d_p99, bulk=d_bulk, link=94.0, cap=93.3, samples=[sample(0.5)]),
    }


# ---- the programs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        server_code("10.250.0.1", 7000),
        client_code("10.250.0.1", 7000, 200.0),
        sink_code("10.250.0.2", 7001),
        sender_code("10.250.0.2", 7001, 2),
    ],
)
def test_programs_are_python_with_their_names_bound(code: str) -> None:
    compile(code, "<program>", "exec")
    assert code.startswith("HOST = '10.250.0.")


def test_client_program_carries_the_workload() -> None:
    code = client_code("10.250.0.1", 7000, 250.0)
    assert "RATE = 250.0\n" in code
    assert f"RESPONSE = {RESPONSE_BYTES}\n" in code
    assert f"CONNECTIONS = {CONNECTIONS}\n" in code


def test_bed_names_fit_the_kernel_and_carry_the_run_tag() -> None:
    assert (BED.ns_a, BED.ns_b) == ("kqb4194304a", "kqb4194304b")
    assert len(BED.dev_a) <= 15 and len(BED.dev_b) <= 15
    assert BED.exec_argv(BED.ns_a, ["python"], ip="/sbin/ip") == [
        "/sbin/ip",
        "netns",
        "exec",
        "kqb4194304a",
        "python",
    ]


# ---- what the client prints -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("12.500000 0.3125", (12.5, 0.3125)),
        ("12.500000 -", (12.5, None)),
        ("ready", None),
        ("1.0 x", None),
        ("Traceback (most recent call last):", None),
        ("", None),
    ],
)
def test_parse_client_line(line: str, expected: tuple[float, float | None] | None) -> None:
    assert parse_client_line(line) == expected


def test_window_requests_keeps_the_window_and_times_them_from_its_start() -> None:
    records = [(9.9, 1.0), (10.0, 0.5), (15.0, None), (19.99, 2.0), (20.0, 9.0)]
    got = window_requests(records, 10.0, 20.0)
    assert [r.sent_s for r in got] == pytest.approx([0.0, 5.0, 9.99])
    assert [r.ok for r in got] == [True, False, True]
    assert math.isnan(got[1].latency_ms)
    latency = Latency.of(got)
    assert (latency.requests, latency.errors) == (3, 1)


# ---- throughput from counters ------------------------------------------------------------------


def counters(at: float, sink: int, classes: Mapping[int, int]) -> Counters:
    return Counters(at=at, sink_bytes=sink, class_bytes=dict(classes))


def test_mbit() -> None:
    assert mbit(12_500_000, 1.0) == pytest.approx(100.0)
    assert math.isnan(mbit(1, 0.0))
    assert math.isnan(mbit(-1, 1.0))  # a counter that went back: the class was recreated


def test_class_mbit_sums_classes_and_is_nan_for_a_missing_one() -> None:
    before = counters(0.0, 0, {PARENT_MINOR: 0, 0x10: 0, 0x20: 0})
    after = counters(2.0, 0, {PARENT_MINOR: 25_000_000, 0x10: 250_000, 0x20: 250_000})
    assert class_mbit(before, after, [PARENT_MINOR]) == pytest.approx(100.0)
    assert class_mbit(before, after, [0x10, 0x20]) == pytest.approx(2.0)
    assert math.isnan(class_mbit(before, after, [0x30]))


def test_scenario_result_from_counters_and_requests() -> None:
    minors = (PARENT_MINOR, MINOR[SYSTEM], MINOR[SHARED], MINOR[RECLAIMED])
    before = counters(100.0, 1_000, dict.fromkeys(minors, 0))
    after = counters(
        110.0,
        1_000 + 110_000_000,
        {PARENT_MINOR: 120_000_000, 0x10: 1_000_000, 0x20: 1_500_000, 0x30: 117_500_000},
    )
    requests = [Request(i / 200, 0.25, ok=True) for i in range(2000)]
    samples = [sample(0.5), sample(4.5, cap=80.0)]
    got = scenario_result(
        "d",
        "(d)",
        before=before,
        after=after,
        requests=requests,
        cap_mbit=93.0,
        samples=samples,
        period_s=1.0,
        span_s=5.0,
    )
    assert got.window_s == 10.0
    assert got.bulk_mbit == pytest.approx(88.0)
    assert got.link_mbit == pytest.approx(96.0)
    assert got.service_class_mbit == pytest.approx(2.0)
    assert got.reclaimed_class_mbit == pytest.approx(94.0)
    assert got.latency.requests == 2000 and got.latency.p99 == pytest.approx(0.25)
    assert [row.t_s for row in got.periods] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert got.periods[4].sample == samples[1]
    assert got.periods[1].sample is None


def test_fifo_scenarios_have_no_class_numbers() -> None:
    before = counters(0.0, 0, {PARENT_MINOR: 0, 0x10: 0})
    after = counters(1.0, 0, {PARENT_MINOR: 250_000, 0x10: 250_000})
    got = scenario_result("u", "(u)", before=before, after=after, requests=[])
    assert got.link_mbit == pytest.approx(2.0)
    assert math.isnan(got.service_class_mbit) and math.isnan(got.reclaimed_class_mbit)
    assert math.isnan(got.cap_mbit) and got.periods == ()
    assert got.bulk_mbit == 0.0


# ---- ratios and goals ---------------------------------------------------------------------------


def test_ratios_against_alone_and_the_fifo() -> None:
    results = full_results()
    alone = results["u"]
    assert spare_mbit(alone, LINK) == pytest.approx(98.0)
    got = ratios(results["d"], alone=alone, fifo=results["n"], link_mbit=LINK)
    assert got.p99_vs_u == pytest.approx(1.0)
    assert got.p99_vs_n == pytest.approx(0.1)
    assert got.bulk_vs_n == pytest.approx(88 / 93)
    assert got.spare_share == pytest.approx(88 / 98)
    without_n = ratios(results["d"], alone=alone, fifo=None, link_mbit=LINK)
    assert math.isnan(without_n.p99_vs_n) and math.isnan(without_n.bulk_vs_n)


def goals_of(results: Mapping[str, ScenarioResult]) -> list[bool | None]:
    return [g.met for g in evaluate_goals(results, link_mbit=LINK)]


def test_goals_all_met() -> None:
    assert goals_of(full_results(d_p99=3.2, d_bulk=88.0)) == [True, True, True, True]


def test_goals_missed_on_latency_and_bulk() -> None:
    # 3.4 / 3.0 = 1.13 > 1.10; 55 of 98 Mbit/s = 0.56 < 0.60; not better than (s)
    # on latency (worse) while more bulk: not better on one and equal on the other.
    assert goals_of(full_results(d_p99=3.4, d_bulk=55.0)) == [False, False, False, True]


def test_goals_on_the_edge() -> None:
    # Exactly 10 % over (u), exactly 60 % of the spare link: met.
    met = goals_of(full_results(d_p99=3.3, d_bulk=0.6 * 98.0))
    assert met[:2] == [True, True]


def test_goals_not_measurable_without_answers_and_absent_without_scenarios() -> None:
    results = full_results()
    results["d"] = dataclasses.replace(
        results["d"], latency=Latency(math.nan, math.nan, math.nan, 4000, 4000)
    )
    assert goals_of(results)[0] is None
    only = {k: v for k, v in full_results().items() if k in ("u", "d")}
    assert len(evaluate_goals(only, link_mbit=LINK)) == 2


# ---- the agent's /status ------------------------------------------------------------------------


STATUS = {
    "sysadvisor": {"mode": "normal", "reclaim_cpus": 0.75},
    "network": {
        "supported": True,
        "classified_containers": 2,
        "classify_error": None,
        "interfaces": [
            {
                "name": "kqb1va",
                "netns": "kqb1a",
                "link_mbit": 100.0,
                "mode": "normal",
                "reclaimed_cap_mbit": 93.3,
                "cap_target_mbit": 93.3,
                "service_mbit": 1.74,
                "guaranteed_mbit": {"system": 1.0, "shared": 20.0, "reclaimed": 1.0},
                "throughput_mbit": {"system": 0.0, "shared": 1.74, "reclaimed": 92.7},
                "error": None,
            }
        ],
    },
}


def test_sample_from_status() -> None:
    got = sample_from_status(STATUS, 2.5)
    assert got == CapSample(
        t_s=2.5,
        supported=True,
        classified=2,
        mode="normal",
        cap_mbit=93.3,
        target_mbit=93.3,
        service_mbit=1.74,
        reclaimed_mbit=92.7,
        reclaim_cpus=0.75,
        error=None,
    )
    assert converged(got, link_mbit=LINK)


def test_sample_from_status_before_the_first_pass_and_with_errors() -> None:
    net: dict[str, object] = {
        "supported": False,
        "classified_containers": 0,
        "classify_error": "cannot classify traffic by cgroup: no net_cls",
        "interfaces": [
            {"mode": None, "reclaimed_cap_mbit": None, "cap_target_mbit": None, "error": None}
        ],
    }
    got = sample_from_status({"network": net}, 0.0)
    assert got is not None
    assert got.cap_mbit is None and got.mode is None and got.reclaim_cpus is None
    assert got.error == "cannot classify traffic by cgroup: no net_cls"
    assert not converged(got, link_mbit=LINK)


@pytest.mark.parametrize(
    "doc", [None, [], {}, {"network": None}, {"network": {"interfaces": ["x"]}}]
)
def test_sample_from_status_without_a_network_part(doc: object) -> None:
    assert sample_from_status(doc, 0.0) is None


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, True),
        ({"cap": 92.8, "target": 93.3}, True),  # within 1 % of the link
        ({"cap": 41.0, "target": 93.3}, False),  # still ramping
        # Before its first measurement the agent reports the floor as the target.
        ({"cap": 1.0, "target": 1.0, "service": None}, False),
        ({"classified": 1}, False),
        ({"mode": "degraded"}, False),
        ({"supported": False}, False),
    ],
)
def test_converged(kwargs: dict[str, object], expected: bool) -> None:
    got = sample(0.0, **kwargs)  # type: ignore[arg-type]
    assert converged(got, link_mbit=LINK) is expected


def test_per_period_rows() -> None:
    requests = [Request(0.1, 1.0, ok=True), Request(0.6, 3.0, ok=True)]
    requests += [Request(1.2, 7.0, ok=True), Request(1.5, math.nan, ok=False)]
    samples = [sample(0.25), sample(0.75, cap=50.0), sample(2.5)]
    rows = per_period(requests, samples, period_s=1.0, span_s=3.0)
    assert [r.t_s for r in rows] == [0.0, 1.0, 2.0]
    assert [r.requests for r in rows] == [2, 1, 0]
    assert rows[0].sample == samples[1] and rows[1].sample is None
    assert rows[1].p99_ms == 7.0 and math.isnan(rows[2].p99_ms)


# ---- rounds and the report ----------------------------------------------------------------------


def test_combine_rounds_takes_medians_and_the_typical_rounds_readings() -> None:
    runs = [
        result("d", p99=p99, bulk=bulk, cap=cap, samples=[sample(0.5, cap=cap)])
        for p99, bulk, cap in ((9.0, 80.0, 90.0), (3.0, 88.0, 93.0), (2.0, 90.0, 92.0))
    ]
    got = combine_rounds(runs)
    assert got.latency.p99 == 3.0
    assert got.latency.requests == 12000
    assert got.bulk_mbit == 88.0 and got.cap_mbit == 92.0
    assert got.samples == runs[1].samples
    assert combine_rounds(runs[:1]) is runs[0]
    with pytest.raises(ValueError, match="no rounds"):
        combine_rounds([])


def test_report_text_and_json() -> None:
    results = full_results()
    results["d"] = dataclasses.replace(
        results["d"], periods=tuple(per_period([], [sample(0.5)], period_s=1.0, span_s=2.0))
    )
    text = "\n".join(format_report(results, bed=BED, opts=OPTS))
    assert "shaped to 100 Mbit/s" in text
    for r in results.values():
        assert r.title in text
    assert "PASS  (d) p99 within 10% of (u)" in text
    assert "PASS  (d) bulk gets >= 60% of the spare link: 88.0 of 98.0 Mbit/s" in text
    assert "spare = 100 Mbit/s link - 2.00 Mbit/s" in text
    assert "the agent's cap over time" in text
    doc = report_json(results, bed=BED, opts=OPTS, per_round=[results, results])
    back = json.loads(json.dumps(doc, allow_nan=False))  # NaN is written as null
    assert back["scenarios"]["d"]["ratios"]["p99_vs_u"] == pytest.approx(1.0)
    assert back["scenarios"]["u"]["bulk_mbit"] is None
    assert back["spare_mbit"] == pytest.approx(98.0)
    assert back["options"]["static_cap_mbit"] == 50.0
    assert [g["met"] for g in back["goals"]] == [True, True, True, True]
    assert len(back["rounds"]) == 2


def test_round_table_shows_each_rounds_ratios() -> None:
    one, two = full_results(), full_results(d_p99=6.0, d_bulk=49.0)
    lines = round_table([one, two], link_mbit=LINK)
    assert "medians of 2 rounds" in lines[0]
    assert lines[2].split() == ["1", "3.000", "3.000", "1.00", "0.97", "0.10", "1.87", "0.90"]
    assert lines[3].split() == ["2", "3.000", "6.000", "2.00", "1.94", "0.20", "1.04", "0.50"]


# ---- the trees of (u), (n), (s) -----------------------------------------------------------------


def test_fifo_tree_is_one_default_class_at_the_link() -> None:
    assert fifo_tree(LINK) == [ClassSpec(MINOR[SYSTEM], LINK, LINK, 0)]


class _FakeShaper:
    def __init__(self) -> None:
        self.written: list[tuple[float, list[ClassSpec]]] = []

    def stats(self) -> dict[int, ClassStats]:
        return {}

    def ensure(self, link_mbit: float, classes: Sequence[ClassSpec]) -> list[str]:
        self.written.append((link_mbit, list(classes)))
        return ["written"]


class _FakeNft:
    def __init__(self) -> None:
        self.rules: list[list[ClassifyRule]] = []

    def ensure(self, rules: Sequence[ClassifyRule]) -> bool:
        self.rules.append(list(rules))
        return True


def test_static_tree_is_the_agents_tree_with_the_cap_fixed() -> None:
    # The agent's loop, its kernel side replaced by fakes: its first pass (cap at the
    # floor, nothing measured yet) is what static_tree gives for the floor as cap.
    config = NetworkConfig()
    loop = NetworkLoop(
        config,
        interfaces=[ShapedInterface("veth0", LINK)],
        guaranteed=lambda: {"veth0": {SHARED: float(SERVICE_REQUEST_MBIT)}},
        containers=list,
        classifier=None,
        clock=MonotonicClock(),
    )
    shaper, nft = _FakeShaper(), _FakeNft()
    loop.interfaces[0].shaper = shaper  # type: ignore[assignment]
    loop.interfaces[0].nft = nft  # type: ignore[assignment]
    loop.step()
    floor = config.reclaimed_floor_ratio * LINK
    assert shaper.written == [
        (LINK, static_tree(LINK, cap_mbit=floor, shared_mbit=SERVICE_REQUEST_MBIT))
    ]
    assert nft.rules == [classify_rules()]
    tree = {c.minor: c for c in static_tree(LINK, cap_mbit=50.0, shared_mbit=20.0)}
    assert tree[MINOR[RECLAIMED]] == ClassSpec(MINOR[RECLAIMED], floor, 50.0, RECLAIMED_PRIO)
    assert tree[MINOR[SHARED]].rate_mbit == 20.0 and tree[MINOR[SHARED]].ceil_mbit == LINK


# ---- what the agent is given ---------------------------------------------------------------------


def test_agent_settings_are_a_config_the_agent_accepts(tmp_path: Path) -> None:
    file = tmp_path / "agent.yaml"
    settings = agent_settings(
        BED, link_mbit=100, period_s=0.5, net_cls_mountpoint="/tmp/kqb1netcls"
    )
    file.write_text(yaml.safe_dump(settings))
    config = load_config(["--config", str(file)], env={})
    (iface,) = config.network.interfaces
    assert (iface.name, iface.speed_mbit, iface.netns) == (BED.dev_a, 100, BED.ns_a)
    assert config.network.period_s == 0.5
    assert config.network.classify == "net_cls"  # as (s) classifies
    assert config.network.net_cls_mountpoint == "/tmp/kqb1netcls"
    assert config.io.enabled is False


def test_manifests_are_pods_the_standalone_node_accepts(tmp_path: Path) -> None:
    service, bulk = manifests(BED, python="/venv/bin/python", ip="/sbin/ip")
    for i, doc in enumerate([service, bulk]):
        (tmp_path / f"{i}.yaml").write_text(yaml.safe_dump(doc))
    pods, errors = load_folder(tmp_path)
    assert errors == []
    levels = {key: pod.view.level for key, pod in pods.items()}
    assert levels == {
        "default/latency-service": QoSLevel.SHARED_CORES,
        "batch/bulk-sender": QoSLevel.RECLAIMED_CORES,
    }
    server = pods["default/latency-service"].containers[0]
    assert server.argv[:6] == ("/sbin/ip", "netns", "exec", BED.ns_a, "/venv/bin/python", "-c")
    compile(server.argv[6], "<server>", "exec")
    sender = pods["batch/bulk-sender"].containers[0]
    assert sender.argv[3] == BED.ns_a and f"HOST = {BED.addr_b!r}" in sender.argv[6]
    requests = service["spec"]["containers"][0]["resources"]["requests"]
    assert requests["resource.katalyst.kubewharf.io/net_bandwidth"] == str(SERVICE_REQUEST_MBIT)


# ---- arguments and preconditions ----------------------------------------------------------------


def test_defaults_fit_the_three_minute_budget() -> None:
    got = parse_args([])
    assert (got.duration, got.warmup, got.link_mbit, got.rate) == (20.0, 3.0, 100, 200.0)
    assert (got.period, got.repeat, got.json) == (1.0, 1, None)
    assert got.static_cap is None and got.static_cap_mbit == 50.0
    assert parse_args(["--link-mbit", "40", "--static-cap", "30"]).static_cap_mbit == 30.0


@pytest.mark.parametrize(
    ("argv", "name"),
    [
        (["--duration", "1.5"], "--duration"),  # under two periods
        (["--duration", "inf"], "--duration"),
        (["--warmup", "-1"], "--warmup"),
        (["--link-mbit", "0"], "--link-mbit"),
        (["--link-mbit", "1.5"], "--link-mbit"),
        (["--rate", "0"], "--rate"),
        (["--rate", "nan"], "--rate"),
        (["--static-cap", "0"], "--static-cap"),
        (["--static-cap", "150"], "--static-cap"),  # above the 100 Mbit/s link
        (["--period", "0.01"], "--period"),
        (["--repeat", "0"], "--repeat"),
        (["--json", "/nonexistent-dir-kq/x.json"], "--json"),
    ],
)
def test_bad_arguments_are_refused_by_name(
    argv: list[str], name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2
    assert name in capsys.readouterr().err


def test_preflight_refuses_without_root_or_tools(tmp_path: Path) -> None:
    agent = tmp_path / "katalyst-agent"
    agent.write_text("")

    def everything(tool: str) -> str | None:
        return f"/usr/sbin/{tool}"

    def no_nft(tool: str) -> str | None:
        return None if tool == "nft" else f"/usr/sbin/{tool}"

    assert preflight(euid=0, which=everything, agent=agent) is None
    assert "needs root" in (preflight(euid=1000, which=everything, agent=agent) or "")
    assert "nft is not installed" in (preflight(euid=0, which=no_nft, agent=agent) or "")
    missing = preflight(euid=0, which=everything, agent=tmp_path / "nope")
    assert missing is not None and "nope is missing" in missing
