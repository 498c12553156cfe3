"""``katalyst``: the operator's command line.

``katalyst node describe`` works on any Linux machine without an agent: it prints
what the agent would detect (CPU topology, cgroup layout, PSI) and the QoS classes
it manages. ``katalyst status`` asks a running agent (its ``/status`` endpoint on
``--metrics-addr``) for the node's regions, indicators against their targets,
pools and headroom.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.request
from collections.abc import Sequence

from katalyst.cgroup import CgroupError, HostCgroupFS, describe_driver, detect_layout, open_driver
from katalyst.entrypoint import base_parser
from katalyst.qos import QoSLevel, oom_priority_range
from katalyst.topology import TopologyError, read_cpu_topology

_LEVEL_ROLES = {
    "dedicated_cores": "exclusive whole CPUs, optionally NUMA-bound (Kubernetes Guaranteed)",
    "shared_cores": "the shared pool; the default when no level is set",
    "reclaimed_cores": "lent capacity only; evicted first under pressure (BestEffort)",
    "system_cores": "node daemons; reserve pool; never evicted",
}


def _describe(args: argparse.Namespace) -> int:
    report: dict[str, object] = {}
    lines: list[str] = []
    try:
        topo = read_cpu_topology(args.sysfs)
        numa = {str(n): str(c) for n, c in topo.numa_nodes().items()}
        report["cpus"] = {
            "online": str(topo.online),
            "sockets": len(topo.sockets()),
            "physical_cores": len(topo.cores()),
            "numa_nodes": numa,
        }
        lines.append(f"CPU topology ({args.sysfs})")
        lines.append(f"  online CPUs:     {topo.online} ({len(topo.online)})")
        lines.append(f"  sockets:         {len(topo.sockets())}")
        lines.append(f"  physical cores:  {len(topo.cores())}")
        for n, cpus in numa.items():
            lines.append(f"  NUMA node {n}:     CPUs {cpus}")
    except (TopologyError, OSError) as exc:
        report["cpus"] = {"error": str(exc)}
        lines.append(f"CPU topology: unavailable ({exc})")
    fs = HostCgroupFS()
    try:
        layout = detect_layout(fs)
        driver = open_driver(fs, base="katalyst", below_own_cgroup=True, layout=layout)
        report["cgroups"] = {
            "layout": layout.describe(),
            "driver": f"v{driver.version}",
            "base": list(describe_driver(driver)),
        }
        lines.append("")
        lines.append("cgroups")
        lines.extend(f"  {line}" for line in layout.describe())
        lines.append(f"  driver: cgroup v{driver.version}; the agent's cgroups would go to:")
        lines.extend(f"    {line}" for line in describe_driver(driver))
        try:
            psi = driver.node_pressure("cpu")
            lines.append(f"  PSI: available (node cpu some avg10={psi.some.avg10:.2f}%)")
            report["psi"] = True
        except (CgroupError, OSError) as exc:
            lines.append(f"  PSI: unavailable ({exc})")
            report["psi"] = False
    except (CgroupError, OSError) as exc:
        report["cgroups"] = {"error": str(exc)}
        lines.append(f"cgroups: unavailable ({exc})")
    lines.append("")
    lines.append("QoS levels (annotation katalyst.kubewharf.io/qos_level)")
    levels = []
    for level in QoSLevel:
        prio = oom_priority_range(level)
        lo, hi = prio.start, prio.stop
        levels.append(
            {"level": str(level), "oom_priority": [lo, hi], "role": _LEVEL_ROLES[str(level)]}
        )
        lines.append(f"  {level!s:<16} oom_priority [{lo}, {hi})  {_LEVEL_ROLES[str(level)]}")
    report["qos_levels"] = levels
    if args.output == "json":
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print("\n".join(lines))
    return 0


def _fmt(value: object, digits: int = 2) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return "-" if value is None else str(value)


def format_status(status: dict[str, object]) -> list[str]:
    """The agent's ``/status`` as tables: the sysadvisor, then network and IO isolation."""
    lines = _advisor_lines(status.get("sysadvisor"))
    lines += _network_lines(status.get("network")) + _io_lines(status.get("io"))
    return lines + _dynamic_lines(status.get("dynamic_config"))


def _dynamic_lines(dynamic: object) -> list[str]:
    """The dynamic configuration in force: its layers, lowest first, and the last error."""
    if not isinstance(dynamic, dict):
        return []
    reclaim = "on" if dynamic.get("reclaim_enabled", True) else "OFF"
    lines = [
        "",
        f"dynamic config: from {dynamic.get('source') or '-'} ({dynamic.get('origin') or '-'}), "
        f"settings {dynamic.get('hash') or '-'}, reclaim {reclaim}, "
        f"{dynamic.get('applied_total', 0)} applied, {dynamic.get('refusals_total', 0)} refused",
    ]
    for layer in dynamic.get("layers") or []:
        if isinstance(layer, dict):
            name = f"{layer.get('name', '?')}@{layer.get('hash', '?')}"
            lines.append(f"  {layer.get('level', '?')!s:<8} {name}")
    if not dynamic.get("layers"):
        lines.append("  (no layer: the agent's own configuration)")
    if dynamic.get("pending"):
        lines.append(f"  pending: {dynamic['pending']}")
    if dynamic.get("last_error"):
        lines.append(f"  last refusal: {dynamic['last_error']}")
    return lines


def _advisor_lines(advisor: object) -> list[str]:
    if not isinstance(advisor, dict):
        return ["sysadvisor: no decision yet (the agent has not completed a period)"]
    lines = [
        f"sysadvisor: {advisor['mode']} mode"
        + (f" (breaches: {', '.join(advisor['breaches'])})" if advisor.get("breaches") else "")
        + (
            f", cool-down {advisor['cooldown_left']} periods"
            if advisor.get("cooldown_left")
            else ""
        )
        + (f", {advisor['stale_periods']} stale periods" if advisor.get("stale_periods") else ""),
        "",
        f"  {'REGION':<44} {'REQUIREMENT':>11}  DECIDED BY",
    ]
    for region in advisor.get("regions", []):
        lines.append(
            f"  {region['name']:<44} {_fmt(region['requirement_cpus']):>11}  "
            f"{region['decided_by'] or region['decision']}"
        )
    lines += [
        "",
        f"  {'REGION':<20} {'INDICATOR':<20} {'CURRENT':>9} {'TARGET':>9} "
        f"{'ERROR':>7} {'P':>7} {'I':>7} {'D':>7} {'WANTS':>7}",
    ]
    for t in advisor.get("indicators", []):
        region = t["region"] if len(t["region"]) <= 20 else t["region"][:17] + "..."
        lines.append(
            f"  {region:<20} {t['indicator']:<20} {_fmt(t['current'], 3):>9} "
            f"{_fmt(t['target'], 3):>9} {_fmt(t['error'], 3):>7} {_fmt(t['p'], 3):>7} "
            f"{_fmt(t['i'], 3):>7} {_fmt(t['d'], 3):>7} {_fmt(t['candidate_cpus']):>7}"
            + ("  BREACH" if t.get("breach") else "")
        )
    memory = advisor.get("reclaim_memory_limit_bytes")
    lines += [
        "",
        "reclaimed pods get",
        f"  allocatable CPUs   {_fmt(advisor['allocatable_cpus'])}",
        f"  headroom           {_fmt(advisor['headroom_cpus'])} CPUs",
        f"  lent (quota)       {_fmt(advisor['reclaim_cpus'])} CPUs "
        f"(target {_fmt(advisor['reclaim_target_cpus'])}; cfs_quota_us "
        f"{advisor['reclaim_quota_us']} on {advisor.get('reclaimed_cgroup') or '-'})",
        f"  own cpuset         {advisor['reclaim_pool_cpus']} CPUs (0: shares the share pool)",
        f"  memory limit       {memory // 2**20 if isinstance(memory, int) else '-'} MiB",
    ]
    return lines


def _mbit(value: object) -> str:
    return f"{value:.1f}" if isinstance(value, int | float) else "-"


def _network_lines(network: object) -> list[str]:
    """The network part of ``/status``: each shaped interface's classes and cap."""
    if not isinstance(network, dict):
        return []
    lines = [
        "",
        "network isolation: "
        + ("supported" if network.get("supported") else "NOT fully supported")
        + f", {network.get('classified_containers', 0)} containers classified"
        + (f" ({network['classify_error']})" if network.get("classify_error") else ""),
        f"  {'INTERFACE':<16} {'LINK':>7} {'MODE':<9} {'CAP':>7} {'TARGET':>7} "
        f"{'SERVICE':>7} {'SYSTEM':>7} {'SHARED':>7} {'RECLAIMED':>9}  (Mbit/s)",
    ]
    for i in network.get("interfaces", []):
        if not isinstance(i, dict):
            continue
        through = i.get("throughput_mbit") or {}
        name = str(i.get("name", "?")) + (f"@{i['netns']}" if i.get("netns") else "")
        lines.append(
            f"  {name[:16]:<16} {_mbit(i.get('link_mbit')):>7} {i.get('mode') or '-'!s:<9} "
            f"{_mbit(i.get('reclaimed_cap_mbit')):>7} {_mbit(i.get('cap_target_mbit')):>7} "
            f"{_mbit(i.get('service_mbit')):>7} {_mbit(through.get('system')):>7} "
            f"{_mbit(through.get('shared')):>7} {_mbit(through.get('reclaimed')):>9}"
            + (f"  ERROR {i['error']}" if i.get("error") else "")
        )
    return lines


def _io_lines(io: object) -> list[str]:
    """The IO part of ``/status``: the reclaimed throttle per device and why."""
    if not isinstance(io, dict):
        return []
    pressure = io.get("pressure")
    lines = [
        "",
        f"io isolation: {io.get('mode', '-')} mode ({io.get('action', '-')}), pressure "
        + (f"{pressure:.1f}" if isinstance(pressure, int | float) else "-")
        + f" % ({io.get('pressure_scope') or '-'}) against target {io.get('pressure_target')} %"
        + f", reclaimed cgroup {io.get('reclaimed_cgroup') or '-'}",
        f"  {'DEVICE':<16} {'READ B/S':>12} {'WRITE B/S':>12} {'READ IOPS':>10} {'WRITE IOPS':>10}",
    ]
    for d in io.get("devices", []):
        if not isinstance(d, dict):
            continue
        limit = d.get("limit") or {}
        cells = [
            "-" if limit.get(k) is None else str(limit[k])
            for k in ("read_bps", "write_bps", "read_iops", "write_iops")
        ]
        name = f"{d.get('name') or '?'} ({d.get('device', '?')})"
        lines.append(
            f"  {name[:16]:<16} {cells[0]:>12} {cells[1]:>12} {cells[2]:>10} {cells[3]:>10}"
        )
    return lines


def _status(args: argparse.Namespace) -> int:
    url = f"http://{args.addr}/status"
    try:
        # urllib rather than an HTTP client library: one local GET, and the operator
        # CLI stays importable without the agent's dependencies.
        with urllib.request.urlopen(url, timeout=args.timeout) as response:
            status = json.load(response)
    except (OSError, ValueError) as exc:
        print(f"katalyst status: cannot read {url}: {exc}", file=sys.stderr)
        return 1
    if not isinstance(status, dict):
        print(f"katalyst status: {url} did not answer a JSON object", file=sys.stderr)
        return 1
    if args.output == "json":
        print(json.dumps(status, indent=2))
    else:
        print("\n".join(format_status(status)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used to document the CLI)."""
    parser = base_parser("katalyst", __doc__.split("\n\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    node = sub.add_parser("node", help="this machine as the agent sees it")
    node_sub = node.add_subparsers(dest="node_command", required=True)
    describe = node_sub.add_parser(
        "describe", help="CPU topology, cgroup layout, PSI and QoS levels"
    )
    describe.add_argument("--sysfs", default="/sys", help="sysfs root (default /sys)")
    describe.add_argument("-o", "--output", choices=["text", "json"], default="text")
    describe.set_defaults(func=_describe)
    status = sub.add_parser(
        "status", help="a running agent's regions, indicators, pools and headroom"
    )
    status.add_argument(
        "--addr",
        default="127.0.0.1:9316",
        help="the agent's --metrics-addr (default 127.0.0.1:9316)",
    )
    status.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    status.add_argument("-o", "--output", choices=["text", "json"], default="text")
    status.set_defaults(func=_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``katalyst`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "sysfs", None) is not None and not os.path.isdir(args.sysfs):
        parser.error(f"--sysfs {args.sysfs!r} is not a directory")
    try:
        code: int = args.func(args)
    except BrokenPipeError:
        # The reader (`| head`) went away: not an error of ours. Point stdout at
        # /dev/null so the interpreter's final flush does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
