"""The console scripts, through their entry points and as installed commands."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from agent import app as agent_app
from controllers import app as controller_app
from katalyst import __version__, cli
from scheduler_plugins import app as extender_app


def test_node_describe_json_reports_this_machine(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["node", "describe", "-o", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["cpus"]["online"]
    levels = {entry["level"]: entry["oom_priority"] for entry in report["qos_levels"]}
    assert levels == {
        "dedicated_cores": [100, 200],
        "shared_cores": [0, 100],
        "reclaimed_cores": [-100, 0],
        "system_cores": [200, 300],
    }
    assert "layout" in report["cgroups"] or "error" in report["cgroups"]


def test_node_describe_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["node", "describe"]) == 0
    out = capsys.readouterr().out
    assert "CPU topology" in out
    assert "reclaimed_cores" in out


def test_a_bad_flag_exits_2_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["node", "describe", "--sysfs", "/no/such/dir"])
    assert exc.value.code == 2
    assert "--sysfs '/no/such/dir' is not a directory" in capsys.readouterr().err


@pytest.mark.parametrize("module", [agent_app, controller_app, extender_app])
def test_process_entry_points_answer_version(
    module: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        module.main(["--version"])
    assert exc.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_the_agent_refuses_a_bad_flag_with_one_line_and_status_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Never main([]) here: that would run a real agent on the system's paths.
    assert agent_app.main(["--mode", "fast"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "katalyst-agent: error: mode (from --mode): 'fast' is not one of qrm, orm"


@pytest.mark.parametrize(
    "script", ["katalyst", "katalyst-agent", "katalyst-controller", "katalyst-scheduler-extender"]
)
def test_console_scripts_are_installed(script: str) -> None:
    path = shutil.which(script, path=str(Path(sys.executable).parent)) or shutil.which(script)
    assert path is not None, f"{script} is not on PATH: install the project (pip install -e .)"
    done = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    assert done.returncode == 0
    assert __version__ in done.stdout


def test_status_of_an_agent_that_does_not_answer_is_exit_1_with_the_url(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Port 9 (discard) on loopback: nothing listens there in a test machine.
    assert cli.main(["status", "--addr", "127.0.0.1:9", "--timeout", "2"]) == 1
    err = capsys.readouterr().err
    assert "http://127.0.0.1:9/status" in err


def test_status_table_names_every_term() -> None:
    status: dict[str, object] = {
        "sysadvisor": {
            "mode": "safety",
            "breaches": ["share/cpu_usage_ratio"],
            "cooldown_left": 3,
            "stale_periods": 0,
            "allocatable_cpus": 7.0,
            "headroom_cpus": 0.5,
            "reclaim_target_cpus": 0.5,
            "reclaim_cpus": 0.0,
            "reclaim_pool_cpus": 0,
            "reclaim_quota_us": 1000,
            "reclaim_memory_limit_bytes": 2**30,
            "reclaimed_cgroup": "reclaimed",
            "regions": [
                {
                    "name": "share",
                    "kind": "share",
                    "requirement_cpus": 6.5,
                    "decision": "controlled",
                    "decided_by": "cpu_usage_ratio",
                }
            ],
            "indicators": [
                {
                    "region": "share",
                    "indicator": "cpu_usage_ratio",
                    "current": 0.95,
                    "target": 0.6,
                    "error": 0.46,
                    "p": 0.46,
                    "i": 0.0,
                    "d": 0.0,
                    "candidate_cpus": 6.5,
                    "breach": True,
                }
            ],
        }
    }
    text = "\n".join(cli.format_status(status))
    assert "safety mode (breaches: share/cpu_usage_ratio), cool-down 3 periods" in text
    assert "BREACH" in text
    assert "cfs_quota_us 1000 on reclaimed" in text
    assert "1024 MiB" in text
    assert "no decision yet" in "\n".join(cli.format_status({"sysadvisor": None}))


def test_status_shows_network_and_io_isolation() -> None:
    status: dict[str, object] = {
        "sysadvisor": None,
        "network": {
            "supported": False,
            "classified_containers": 3,
            "classify_error": None,
            "interfaces": [
                {
                    "name": "eth0",
                    "netns": None,
                    "link_mbit": 1000.0,
                    "mode": "normal",
                    "reclaimed_cap_mbit": 412.5,
                    "cap_target_mbit": 500.0,
                    "service_mbit": 450.0,
                    "throughput_mbit": {"system": 50.0, "shared": 400.0, "reclaimed": 410.0},
                    "error": None,
                },
                {"name": "eth1", "netns": "ns1", "link_mbit": 100.0, "error": "nft missing"},
            ],
        },
        "io": {
            "mode": "safety",
            "action": "hold",
            "pressure": 31.25,
            "pressure_scope": "node",
            "pressure_target": 10.0,
            "reclaimed_cgroup": "reclaimed",
            "devices": [
                {"device": "8:0", "name": "sda", "limit": {"read_bps": None, "write_bps": 1024}},
                {"device": "8:16", "name": "sdb", "limit": None},
            ],
        },
    }
    # The sysadvisor's part is absent before its first period; the rest still shows.
    text = "\n".join(cli.format_status(status))
    assert "sysadvisor: no decision yet" in text
    assert "network isolation: NOT fully supported, 3 containers classified" in text
    assert "eth0" in text and "412.5" in text and "410.0" in text
    assert "eth1@ns1" in text and "ERROR nft missing" in text
    assert "io isolation: safety mode (hold), pressure 31.2 % (node) against target 10.0 %" in text
    sda = next(line for line in text.splitlines() if "sda" in line)
    assert sda.split()[-4:] == ["-", "1024", "-", "-"]


def test_status_shows_the_dynamic_config_layers_and_the_last_refusal() -> None:
    status: dict[str, object] = {
        "dynamic_config": {
            "source": "cluster",
            "origin": "customnodeconfig",
            "hash": "0123abcd",
            "reclaim_enabled": False,
            "layers": [
                {"name": "katalyst-system/base", "level": "cluster", "hash": "aaaa"},
                {"name": "katalyst-system/batch", "level": "pool", "hash": "bbbb"},
            ],
            "applied_total": 3,
            "refusals_total": 1,
            "last_error": "spec.config.sysadvisor.period_s: must be in [0.01, 3600]",
        }
    }
    text = "\n".join(cli.format_status(status))
    assert "reclaim OFF, 3 applied, 1 refused" in text
    assert "pool     katalyst-system/batch@bbbb" in text
    assert "last refusal: spec.config.sysadvisor.period_s" in text
