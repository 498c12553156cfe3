"""Choosing exclusive CPUs for ``dedicated_cores`` pods (pure).

**Which CPUs** (:func:`take_cpus`), given the free CPUs and a count:

1. If one NUMA node has enough free CPUs, take them all from one node: the node
   where the take (as in 3) breaks the fewest whole physical cores, then the one
   with the fewest free CPUs (best fit, keeping big holes for big pods), then the
   lowest id.
2. Otherwise spill: take every free CPU of the nodes with the most free CPUs
   until the rest fits on one node, then place the rest as in 1.
3. Within a node, take whole physical cores (every SMT sibling free) in core
   order while the rest needs at least a whole core; then single CPUs, first from
   cores that are already partly taken (fewest free siblings first), so that as
   few whole cores as possible are broken.

NUMA hints are :func:`agent.qrm.hints.numa_hints`, shared with the memory policy.
"""

from __future__ import annotations

from katalyst.cpuset import CPUSet
from katalyst.topology import CPUTopology


def _whole_cores(topology: CPUTopology, free: CPUSet) -> list[CPUSet]:
    """Physical cores all of whose siblings are free, in core order."""
    return [cpus for cpus in topology.cores().values() if cpus.issubset(free)]


def _take_from_node(topology: CPUTopology, free: CPUSet, count: int) -> CPUSet:
    """``count`` CPUs of ``free`` (all on one node; the caller checked there are enough)."""
    taken: set[int] = set()
    for core in _whole_cores(topology, free):
        if len(core) <= count - len(taken):
            taken.update(core)
    if len(taken) == count:
        return CPUSet.of(taken)
    rest = free.difference(CPUSet.of(taken))
    free_siblings = {
        cpu: len(core.intersection(rest)) for core in topology.cores().values() for cpu in core
    }
    # Partly taken cores first (fewest free siblings), then by CPU id.
    singles = sorted(rest, key=lambda cpu: (free_siblings.get(cpu, 1), cpu))
    taken.update(singles[: count - len(taken)])
    return CPUSet.of(taken)


def _node_rank(
    topology: CPUTopology, *, node: int, free_on_node: CPUSet, count: int
) -> tuple[int, int, int]:
    """Sort key of a node that can hold ``count``: whole cores the take would break,
    then free CPUs (best fit), then id."""
    taken = _take_from_node(topology, free_on_node, count)
    broken = sum(
        1
        for core in _whole_cores(topology, free_on_node)
        if core.intersection(taken) and not core.issubset(taken)
    )
    return (broken, len(free_on_node), node)


def take_cpus(topology: CPUTopology, *, free: CPUSet, count: int) -> CPUSet | None:
    """``count`` CPUs out of ``free``, chosen as the module docstring says.

    None when ``free`` holds fewer than ``count`` CPUs. ``count`` 0 gives the empty set.
    """
    if count < 0:
        raise ValueError(f"cannot take {count} CPUs")
    if len(free) < count:
        return None
    if count == 0:
        return CPUSet.of(())
    by_node = {
        node: free.intersection(cpus)
        for node, cpus in topology.numa_nodes().items()
        if free.intersection(cpus)
    }
    taken = CPUSet.of(())
    remaining = count
    while True:
        fitting = [node for node, cpus in by_node.items() if len(cpus) >= remaining]
        if fitting:
            best = min(
                fitting,
                key=lambda n: _node_rank(
                    topology, node=n, free_on_node=by_node[n], count=remaining
                ),
            )
            return taken.union(_take_from_node(topology, by_node[best], remaining))
        # Spill: the fullest node goes entirely, then try again with the rest.
        fullest = min(by_node, key=lambda n: (-len(by_node[n]), n))
        taken = taken.union(by_node.pop(fullest))
        remaining = count - len(taken)
