"""NUMA topology hints, shared by the resource policies.

Every policy answers GetTopologyHints the same way, so that the kubelet's
topology manager can merge the answers of the CPU and memory plugins: every
*minimal* run of adjacent NUMA nodes (by id) that can give the amount asked, the
runs with the fewest nodes preferred. A minimal run contains no smaller fitting
run: with 6 CPUs free on node 0 and 1 each on nodes 1 and 2, a 2-CPU ask gets
``{0}`` and ``{1, 2}``, not ``{0, 1}``. No fitting run: no hints (the kubelet then
refuses admission).
"""

from __future__ import annotations

from collections.abc import Mapping

from agent.qrm.types import TopologyHint


def numa_hints(
    *, node_ids: list[int], available: Mapping[int, int], count: int
) -> tuple[TopologyHint, ...]:
    """Hints for ``count`` units (CPUs, bytes): minimal runs of adjacent nodes, shortest preferred.

    ``node_ids``: every NUMA node of the machine, in id order (adjacency is
    position in this list). ``available``: node -> what it can give; a node absent
    from it may not be part of any run (for ``numa_exclusive``, a node with
    dedicated CPUs in use). Sorted by run length, then first node.
    """
    ids = sorted(node_ids)

    def fits(lo: int, hi: int) -> bool:
        window = ids[lo : hi + 1]
        return all(n in available for n in window) and (sum(available[n] for n in window) >= count)

    runs: list[tuple[int, ...]] = []
    for lo in range(len(ids)):
        for hi in range(lo, len(ids)):
            if not fits(lo, hi):
                continue
            # [lo, hi - 1] does not fit (hi is the first end that does); if
            # [lo + 1, hi] fits, the run from lo + 1 is the smaller one.
            if lo == hi or not fits(lo + 1, hi):
                runs.append(tuple(ids[lo : hi + 1]))
            break  # a longer run from the same start contains this one
    if not runs:
        return ()
    shortest = min(len(run) for run in runs)
    runs.sort(key=lambda run: (len(run), run))
    return tuple(TopologyHint(nodes=frozenset(run), preferred=len(run) == shortest) for run in runs)
