"""The colocation benchmark's pure parts: the numbers it reports (percentiles,
ratios, goals, the load step's reaction), what it reads (``/status``, /proc/stat,
the agent's log line) and its arguments. Nothing here times anything."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

import pytest
import yaml

from agent.standalone.manifests import load_folder
from bench.colocation import (
    BUSY_LOOP,
    SERVICE_PY,
    AgentSample,
    Latency,
    Machine,
    Options,
    ScenarioResult,
    StepResult,
    agent_settings,
    better_on_one_equal_on_other,
    combine_rounds,
    combine_steps,
    converged,
    evaluate_goals,
    format_report,
    idle_cores,
    manifests,
    parse_args,
    parse_metrics_addr,
    parse_proc_stat,
    per_period,
    periods_to_cut,
    ratio,
    ratios,
    report_json,
    round_table,
    sample_from_status,
    save_plot,
    step_result,
    utilization,
)
from examples.standalone.loadgen import Request
from katalyst.cpuset import CPUSet
from katalyst.qos import QoSLevel

MACHINE = Machine(online=CPUSet.of([0, 1]), reserved=CPUSet.of([0]), pool=CPUSet.of([1]))
OPTS = Options(duration=20, rate=150, period=1.0, warmup=3, static_cpus=None, plot=None, json=None)


def lat(p99: float, *, p50: float = 1.0, p999: float | None = None) -> Latency:
    return Latency(p50=p50, p99=p99, p999=p999 or p99, requests=100, errors=0)


def result(
    name: str, *, p99: float, service_cores: float = 0.3, batch_cores: float = 0.0
) -> ScenarioResult:
    window = 10.0
    return ScenarioResult(
        name=name,
        title=f"({name})",
        window_s=window,
        latency=lat(p99),
        service_cpu_s=service_cores * window,
        batch_cpu_s=batch_cores * window,
        node_util=0.5,
        pool_util=0.8,
    )


def sample(
    t_s: float, lend: float, *, mode: str = "normal", batch: float | None = None
) -> AgentSample:
    return AgentSample(
        t_s=t_s,
        mode=mode,
        headroom_cpus=lend,
        reclaim_target_cpus=lend,
        reclaim_cpus=lend,
        reclaim_quota_us=max(1000, round(lend * 100_000)),
        batch_cpu_s=batch,
    )


def ok(sent_s: float, latency_ms: float) -> Request:
    return Request(sent_s, latency_ms, ok=True)


# ---- latency and ratios --------------------------------------------------------------------


def test_latency_counts_failed_requests_as_errors_and_leaves_them_out_of_percentiles() -> None:
    requests = [ok(i / 100, float(i)) for i in range(1, 101)]
    requests.append(Request(1.0, math.nan, ok=False))
    got = Latency.of(requests)
    assert (got.requests, got.errors) == (101, 1)
    assert got.p50 == pytest.approx(50.5)
    assert 99 <= got.p99 <= 100
    assert got.p99 <= got.p999 <= 100


def test_latency_of_nothing_is_nan_not_an_error() -> None:
    got = Latency.of([])
    assert math.isnan(got.p99) and got.requests == 0


@pytest.mark.parametrize(
    ("x", "y", "expected"), [(2.0, 4.0, 0.5), (1.0, 0.0, math.nan), (math.nan, 1.0, math.nan)]
)
def test_ratio(x: float, y: float, expected: float) -> None:
    got = ratio(x, y)
    assert (math.isnan(got) and math.isnan(expected)) or got == expected


def test_ratios_against_alone_and_plain_cfs() -> None:
    alone = result("a", p99=5.0, service_cores=0.3)
    plain = result("b", p99=50.0, batch_cores=0.7)
    agent = result("d", p99=5.5, batch_cores=0.56)
    assert idle_cores(alone, MACHINE.allocatable_cpus) == pytest.approx(0.7)
    got = ratios(agent, alone=alone, plain=plain, allocatable_cpus=1.0)
    assert got.p99_vs_a == pytest.approx(1.1)
    assert got.p99_vs_b == pytest.approx(0.11)
    assert got.batch_vs_b == pytest.approx(0.8)
    assert got.idle_share == pytest.approx(0.8)
    without_b = ratios(agent, alone=alone, plain=None, allocatable_cpus=1.0)
    assert math.isnan(without_b.p99_vs_b) and math.isnan(without_b.batch_vs_b)


@pytest.mark.parametrize(
    ("p99", "batch", "expected"),
    [
        (8.0, 0.5, True),  # better latency, equal batch
        (10.2, 0.6, True),  # equal latency (within 5 %), more batch
        (8.0, 0.4, False),  # better latency, but less batch
        (11.0, 0.9, False),  # more batch, but worse latency
        (10.0, 0.51, False),  # both within the tolerance: not better on either
        (math.nan, 0.9, False),
    ],
)
def test_better_on_one_equal_on_other(p99: float, batch: float, expected: bool) -> None:
    got = better_on_one_equal_on_other(p99=p99, p99_ref=10.0, batch=batch, batch_ref=0.5)
    assert got is expected


# ---- goals ------------------------------------------------------------------------------------


def goals_for(d: ScenarioResult, step: StepResult | None = None) -> dict[str, bool | None]:
    results = {
        "a": result("a", p99=5.0, service_cores=0.3),
        "b": result("b", p99=50.0, batch_cores=0.7),
        "c": result("c", p99=10.0, batch_cores=0.5),
        "d": d,
    }
    goals = evaluate_goals(results, step, allocatable_cpus=1.0)
    return {g.text.split(":")[0]: g.met for g in goals}


def test_goals_all_met() -> None:
    d = result("d", p99=5.4, batch_cores=0.6)
    met = goals_for(d)
    assert list(met.values()) == [True, True, True]


def test_goals_missed_on_latency_and_batch() -> None:
    met = goals_for(result("d", p99=6.0, batch_cores=0.3))
    assert list(met.values()) == [False, False, False]


def step_with(lend_before: float | None, cut: float | None) -> StepResult:
    run = result("step", p99=6.0)
    return StepResult(
        run=run,
        step_at_s=10,
        rate_before=150,
        rate_after=300,
        before=lat(5),
        reaction=lat(8),
        after=lat(6),
        lend_before=lend_before,
        cut_after_periods=cut,
    )


@pytest.mark.parametrize(
    ("lend", "cut", "expected"),
    [(0.5, 1.25, True), (0.5, 2.5, False), (0.5, None, False), (0.0, None, None)],
)
def test_step_goal(lend: float, cut: float | None, expected: bool | None) -> None:
    met = goals_for(result("d", p99=5.0), step_with(lend, cut))
    assert list(met.values())[-1] is expected


# ---- the load step ----------------------------------------------------------------------------


def test_periods_to_cut_finds_the_first_smaller_lend_after_the_step() -> None:
    samples = [sample(t / 4, 0.6) for t in range(40)]  # 0 .. 9.75 s, four per period
    samples = [s if s.t_s < 6.5 else sample(s.t_s, 0.3) for s in samples]
    assert periods_to_cut(samples, step_at_s=5.0, period_s=1.0) == (0.6, 1.5)
    assert periods_to_cut(samples, step_at_s=5.0, period_s=0.5) == (0.6, 3.0)


def test_periods_to_cut_counts_entering_safety_but_not_staying_in_it() -> None:
    entering = [sample(4.0, 0.5), sample(5.5, 0.5, mode="safety")]
    assert periods_to_cut(entering, step_at_s=5.0, period_s=1.0) == (0.5, 0.5)
    staying = [sample(4.0, 0.0, mode="safety"), sample(5.5, 0.0, mode="safety")]
    assert periods_to_cut(staying, step_at_s=5.0, period_s=1.0) == (0.0, None)


def test_periods_to_cut_without_readings_before_the_step() -> None:
    assert periods_to_cut([sample(6.0, 0.1)], step_at_s=5.0, period_s=1.0) == (None, None)


def test_step_result_splits_the_requests_at_the_step() -> None:
    requests = [ok(t / 10, 1.0 if t < 50 else 9.0) for t in range(100)]
    run = dataclass_replace_samples(result("step", p99=5.0), [sample(4.0, 0.5), sample(6.2, 0.2)])
    got = step_result(run, requests, step_at_s=5.0, rate_before=10, rate_after=20, period_s=1.0)
    assert got.before.requests == 50 and got.before.p99 == 1.0
    assert got.after.requests == 50 and got.after.p99 == 9.0
    assert got.reaction.requests == 20  # two periods of the doubled half
    assert got.lend_before == 0.5
    assert got.cut_after_periods == pytest.approx(1.2)


def dataclass_replace_samples(run: ScenarioResult, samples: list[AgentSample]) -> ScenarioResult:
    return dataclasses.replace(run, samples=tuple(samples))


def test_per_period_rows() -> None:
    requests = [ok(0.1, 1.0), ok(0.5, 3.0), ok(1.2, 7.0), Request(1.5, math.nan, ok=False)]
    samples = [
        sample(0.5, 0.4, batch=0.2),
        sample(0.9, 0.4, batch=0.36),
        sample(1.9, 0.3, batch=0.66),
    ]
    rows = per_period(requests, samples, period_s=1.0, span_s=3.0)
    assert [r.t_s for r in rows] == [0.0, 1.0, 2.0]
    assert [r.requests for r in rows] == [2, 1, 0]
    assert rows[0].p99_ms == pytest.approx(3.0, abs=0.05)
    assert rows[1].p99_ms == 7.0
    assert math.isnan(rows[2].p99_ms)
    assert rows[0].sample is samples[1] and rows[2].sample is None
    assert rows[0].batch_cores == pytest.approx(0.4)  # 0.36 CPU-s over 0.9 s
    assert rows[1].batch_cores == pytest.approx(0.3)  # 0.30 CPU-s over 1.0 s
    assert rows[2].batch_cores is None


# ---- what the benchmark reads -------------------------------------------------------------------


def test_sample_from_status() -> None:
    doc = {
        "sysadvisor": {
            "mode": "safety",
            "breaches": ["share/cpu_sched_wait"],
            "headroom_cpus": 0.5,
            "reclaim_target_cpus": 0.0,
            "reclaim_cpus": 0.0,
            "reclaim_quota_us": 1000,
        }
    }
    got = sample_from_status(doc, 1.5)
    assert got == AgentSample(
        t_s=1.5,
        mode="safety",
        headroom_cpus=0.5,
        reclaim_target_cpus=0.0,
        reclaim_cpus=0.0,
        reclaim_quota_us=1000,
        breaches=("share/cpu_sched_wait",),
    )
    assert not converged(got)
    assert converged(sample(1.0, 0.4))


@pytest.mark.parametrize(
    "doc",
    [
        None,
        [],
        {"sysadvisor": None},
        {"sysadvisor": {"mode": "normal"}},
        {
            "sysadvisor": {
                "mode": "normal",
                "headroom_cpus": "x",
                "reclaim_target_cpus": 0,
                "reclaim_cpus": 0,
                "reclaim_quota_us": 1000,
            }
        },
    ],
)
def test_sample_from_status_without_a_decision(doc: object) -> None:
    assert sample_from_status(doc, 0.0) is None


def test_parse_metrics_addr_only_takes_loopback() -> None:
    log = (
        "INFO agent.observability: metrics and health on "
        "http://127.0.0.1:43211/metrics and /healthz\n"
    )
    assert parse_metrics_addr("start\n" + log) == "127.0.0.1:43211"
    assert parse_metrics_addr(log.replace("127.0.0.1", "10.1.2.3")) is None
    assert parse_metrics_addr("nothing yet") is None


PROC_STAT_1 = """cpu  100 0 50 800 50 0 0 0 0 0
cpu0 60 0 20 400 20 0 0 0 0 0
cpu1 40 0 30 400 30 0 0 0 0 0
intr 12345
"""
PROC_STAT_2 = """cpu  200 0 100 850 50 0 0 0 0 0
cpu0 70 0 30 490 10 0 0 0 0 0
cpu1 100 0 40 430 30 0 0 0 0 0
intr 12399
"""


def test_proc_stat_utilization() -> None:
    before, after = parse_proc_stat(PROC_STAT_1), parse_proc_stat(PROC_STAT_2)
    assert before["cpu1"] == (70, 500)
    assert utilization(before, after, ["cpu"]) == pytest.approx(150 / 200)
    assert utilization(before, after, ["cpu1"]) == pytest.approx(0.7)
    assert math.isnan(utilization(before, before, ["cpu"]))  # no ticks in between


# ---- the report -------------------------------------------------------------------------------


def full_results() -> dict[str, ScenarioResult]:
    d = dataclass_replace_samples(
        result("d", p99=5.4, batch_cores=0.6), [sample(0.5, 0.6, batch=0.3)]
    )
    return {
        "a": result("a", p99=5.0),
        "b": result("b", p99=50.0, batch_cores=0.7),
        "c": result("c", p99=10.0, batch_cores=0.5),
        "d": d,
    }


def test_report_text_and_json() -> None:
    results = full_results()
    step = step_with(0.5, 1.25)
    text = "\n".join(format_report(results, step, machine=MACHINE, opts=OPTS, rounds=2000))
    assert "PASS  (d) p99 within 10% of (a)" in text
    assert "PASS  load step" in text
    assert "first cut 1.25 periods after it" in text
    assert "headroom over time, (d)" in text
    doc = report_json(results, step, machine=MACHINE, opts=OPTS, rounds=2000)
    encoded = json.dumps(doc, allow_nan=False)  # NaN is written as null
    back = json.loads(encoded)
    assert back["scenarios"]["d"]["ratios"]["p99_vs_a"] == pytest.approx(1.08)
    assert back["step"]["cut_after_periods"] == 1.25
    assert [g["met"] for g in back["goals"]] == [True, True, True, True]


# ---- repeated rounds ---------------------------------------------------------------------------


def test_combine_rounds_takes_medians_and_the_typical_rounds_readings() -> None:
    runs = [
        dataclass_replace_samples(
            result("d", p99=p99, batch_cores=batch), [sample(0.5, lend, batch=0.1)]
        )
        for p99, batch, lend in ((9.0, 0.6, 0.1), (5.0, 0.5, 0.2), (4.0, 0.7, 0.3))
    ]
    got = combine_rounds(runs)
    assert got.latency.p99 == 5.0
    assert got.latency.requests == 300  # summed
    assert got.batch_cores == pytest.approx(0.6)
    assert got.samples == runs[1].samples  # the round with the median p99
    # An even count: the mean of the middle two; the lower one's readings.
    two = combine_rounds(runs[1:])
    assert two.latency.p99 == pytest.approx(4.5)
    assert two.samples == runs[2].samples
    assert combine_rounds(runs[:1]) is runs[0]


def test_combine_rounds_ignores_rounds_without_answers() -> None:
    empty = dataclasses.replace(
        result("d", p99=1.0), latency=Latency(math.nan, math.nan, math.nan, 5, 5)
    )
    got = combine_rounds([empty, result("d", p99=7.0), result("d", p99=3.0)])
    assert got.latency.p99 == pytest.approx(5.0)
    assert got.latency.errors == 5
    with pytest.raises(ValueError, match="no rounds"):
        combine_rounds([])


def test_combine_steps_counts_a_round_without_a_cut_as_the_slowest() -> None:
    got = combine_steps([step_with(0.5, None), step_with(0.4, 1.0), step_with(0.6, 3.0)])
    assert got.cut_after_periods == 3.0
    assert got.lend_before == 0.5
    worst = combine_steps([step_with(0.5, None), step_with(0.5, None), step_with(0.5, 1.0)])
    assert worst.cut_after_periods is None
    assert combine_steps([step_with(None, None)]).lend_before is None


def test_round_table_shows_each_rounds_ratios() -> None:
    one, two = full_results(), full_results()
    two["d"] = result("d", p99=10.0, batch_cores=0.35)
    lines = round_table(
        [one, two], [step_with(0.5, 1.25), step_with(0.5, None)], allocatable_cpus=1.0
    )
    assert "medians of 2 rounds" in lines[0]
    first, second = lines[2].split(), lines[3].split()
    assert first == ["1", "5.00", "5.40", "1.08", "0.54", "1.20", "0.86", "1.25"]
    assert second == ["2", "5.00", "10.00", "2.00", "1.00", "0.70", "0.50", "-"]


def test_plot_is_skipped_without_matplotlib(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import raises ImportError
    line = save_plot([(full_results()["d"], None)], tmp_path / "x.png", period_s=1.0)
    assert line.startswith("plot skipped: matplotlib is not installed")
    assert not (tmp_path / "x.png").exists()


# ---- arguments --------------------------------------------------------------------------------


def test_defaults_fit_the_three_minute_budget() -> None:
    got = parse_args([])
    assert (got.duration, got.rate, got.period, got.warmup) == (20.0, 150.0, 1.0, 3.0)
    assert got.plot is None and got.json is None and got.agent_config == {}
    assert got.repeat == 1


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["--duration", "3"], "--duration"),
        (["--duration", "nan"], "--duration"),
        (["--rate", "0"], "--rate"),
        (["--period", "0.01"], "--period"),
        (["--warmup", "-1"], "--warmup"),
        (["--repeat", "0"], "--repeat"),
        (["--static-cpus", "0"], "--static-cpus"),
        (["--plot", "/nonexistent-dir-kq/x.png"], "--plot"),
    ],
)
def test_bad_arguments_are_refused_by_name(
    argv: list[str], names: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2
    assert names in capsys.readouterr().err


def test_agent_config_must_be_a_mapping(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(SystemExit):
        parse_args(["--agent-config", str(bad)])
    assert "--agent-config" in capsys.readouterr().err
    good = tmp_path / "good.yaml"
    good.write_text("sysadvisor:\n  indicators:\n    cpu_sched_wait: {enabled: false}\n")
    got = parse_args(["--agent-config", str(good)])
    assert got.agent_config == {
        "sysadvisor": {"indicators": {"cpu_sched_wait": {"enabled": False}}}
    }


# ---- the pods under the agent ---------------------------------------------------------------


def test_manifests_are_pods_the_standalone_node_accepts(tmp_path: Path) -> None:
    service, batch = manifests(18555, 1234)
    for i, doc in enumerate([service, *batch]):
        (tmp_path / f"{i}.yaml").write_text(yaml.safe_dump(doc))
    pods, errors = load_folder(tmp_path)
    assert errors == []
    levels = {key: pod.view.level for key, pod in pods.items()}
    assert levels == {
        "default/latency-service": QoSLevel.SHARED_CORES,
        "batch/batch-1": QoSLevel.RECLAIMED_CORES,
        "batch/batch-2": QoSLevel.RECLAIMED_CORES,
    }
    server = pods["default/latency-service"].containers[0]
    assert server.argv[-1] == str(SERVICE_PY)
    assert server.env["PORT"] == "18555" and server.env["ROUNDS"] == "1234"
    assert pods["batch/batch-1"].containers[0].argv == BUSY_LOOP


def test_agent_config_is_checked_as_the_agent_reads_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("sysadvisor:\n  indicators:\n    cpu_usage_ratio: {target: -1}\n")
    with pytest.raises(SystemExit):
        parse_args(["--agent-config", str(bad)])
    err = capsys.readouterr().err
    assert "sysadvisor.indicators.cpu_usage_ratio.target: must be > 0" in err
    assert str(bad) in err


def test_agent_settings_set_the_period_over_the_file() -> None:
    extra = {"sysadvisor": {"period_s": 9, "limits": {"ramp_up_cpus_per_period": 1.0}}}
    assert agent_settings(extra, period_s=0.5) == {
        "sysadvisor": {"period_s": 0.5, "limits": {"ramp_up_cpus_per_period": 1.0}}
    }
    assert agent_settings({}, period_s=1.0) == {"sysadvisor": {"period_s": 1.0}}
