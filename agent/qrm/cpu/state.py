"""The CPU policy's state: immutable records, and their checkpoint form.

The policy keeps one :class:`PolicyState` and replaces it whole on every change,
so a refused request leaves it exactly as it was. :func:`encode_state` gives the
JSON checkpoint form; :func:`decode_state` reads it back and checks it against
the node (CPUs that exist, reserve untouched, dedicated sets disjoint and
consistent with their pods), raising ``ValueError`` naming the first problem, so
that the caller can set the checkpoint aside and start afresh.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from agent.qrm.cpu.pools import NAMED_POOLS, POOL_DEDICATED, POOL_RECLAIM, POOL_SHARE
from agent.qrm.types import ContainerType, TopologyHint, valid_container_name, valid_pod_uid
from katalyst.checkpoint import JSONValue
from katalyst.cpuset import CPUSet
from katalyst.qos import PodUID, QoSLevel
from katalyst.topology import CPUTopology

STATE_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class DedicatedSet:
    """The exclusive CPUs of one ``dedicated_cores`` pod."""

    cpus: CPUSet
    numa_nodes: CPUSet | None
    """The NUMA nodes the pod is bound to (``numa_binding``); None when unbound."""
    numa_exclusive: bool
    """Whether the pod holds its NUMA nodes whole (``cpus`` is every non-reserved CPU
    of ``numa_nodes``)."""


@dataclass(frozen=True, slots=True)
class ContainerEntry:
    """What the policy remembers of one allocated container."""

    level: QoSLevel
    pool: str
    """``reserve``, ``share``, ``reclaim`` or ``dedicated`` (the pod's own set)."""
    container_type: ContainerType
    container_index: int
    milli_cpu: int
    """The container's ``cpu`` request in milli-cores (0 when it has none)."""
    hint: TopologyHint | None
    """The hint the kubelet sent with Allocate, echoed in every answer."""


def _no_pods() -> Mapping[PodUID, Mapping[str, ContainerEntry]]:
    return MappingProxyType({})


def _no_dedicated() -> Mapping[PodUID, DedicatedSet]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class PolicyState:
    """Everything the CPU policy knows; replaced whole on every change."""

    containers: Mapping[PodUID, Mapping[str, ContainerEntry]] = field(default_factory=_no_pods)
    """Pod UID -> container name -> entry. A pod is here iff it has a container."""
    dedicated: Mapping[PodUID, DedicatedSet] = field(default_factory=_no_dedicated)
    """Pod UID -> its exclusive CPUs, for ``dedicated_cores`` pods."""
    reclaim_size: int | None = None
    """The sysadvisor's reclaim pool size; None: reclaim on share."""
    generation: int = 0
    """Bumps on every change."""


def _ceil_cores(milli: int) -> int:
    return -(-milli // 1000)


def required_cpus(entries: Iterable[ContainerEntry]) -> int:
    """Exclusive CPUs a dedicated pod needs for these containers: Kubernetes' effective
    pod request, ``max(largest init container, sum of the other containers)``, rounded
    up to whole CPUs."""
    largest_init = 0
    apps = 0
    for entry in entries:
        if entry.container_type is ContainerType.INIT:
            largest_init = max(largest_init, entry.milli_cpu)
        else:
            apps += entry.milli_cpu
    return _ceil_cores(max(largest_init, apps))


# ---- encoding ------------------------------------------------------------------------


def _hint_json(hint: TopologyHint | None) -> JSONValue:
    if hint is None:
        return None
    nodes: list[JSONValue] = list(sorted(hint.nodes))
    return {"nodes": nodes, "preferred": hint.preferred}


def encode_state(state: PolicyState) -> dict[str, JSONValue]:
    """The JSON checkpoint form of ``state`` (``{"version": 1, ...}``)."""
    pods: dict[str, JSONValue] = {}
    for uid, containers in sorted(state.containers.items()):
        entries: dict[str, JSONValue] = {}
        for name, entry in sorted(containers.items()):
            entries[name] = {
                "level": entry.level.value,
                "pool": entry.pool,
                "type": int(entry.container_type),
                "index": entry.container_index,
                "milli_cpu": entry.milli_cpu,
                "hint": _hint_json(entry.hint),
            }
        dedicated: JSONValue = None
        ded = state.dedicated.get(uid)
        if ded is not None:
            dedicated = {
                "cpus": str(ded.cpus),
                "numa_nodes": None if ded.numa_nodes is None else str(ded.numa_nodes),
                "numa_exclusive": ded.numa_exclusive,
            }
        pods[uid] = {"containers": entries, "dedicated": dedicated}
    return {
        "version": STATE_VERSION,
        "generation": state.generation,
        "reclaim_size": state.reclaim_size,
        "pods": pods,
    }


# ---- decoding ------------------------------------------------------------------------


def _object(value: object, where: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ValueError(f"{where}: must be a JSON object")
    return value


def _field(obj: Mapping[str, object], key: str, where: str) -> object:
    if key not in obj:
        raise ValueError(f"{where}: {key!r} is missing")
    return obj[key]


def _int(value: object, where: str, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{where}: {value!r} is not an integer >= {minimum}")
    return value


def _bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{where}: {value!r} is not true or false")
    return value


def _cpuset(value: object, where: str) -> CPUSet:
    if not isinstance(value, str):
        raise ValueError(f"{where}: {value!r} is not a CPU list string")
    try:
        return CPUSet.parse(value)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _hint(value: object, where: str) -> TopologyHint | None:
    if value is None:
        return None
    obj = _object(value, where)
    nodes = _field(obj, "nodes", where)
    if not isinstance(nodes, list):
        raise ValueError(f"{where}.nodes: {nodes!r} is not a list")
    return TopologyHint(
        nodes=frozenset(_int(n, f"{where}.nodes") for n in nodes),
        preferred=_bool(_field(obj, "preferred", where), f"{where}.preferred"),
    )


def _level(value: object, where: str) -> QoSLevel:
    if isinstance(value, str) and value in {level.value for level in QoSLevel}:
        return QoSLevel(value)
    raise ValueError(f"{where}: {value!r} is not a QoS level")


def _container_type(value: object, where: str) -> ContainerType:
    number = _int(value, where)
    try:
        return ContainerType(number)
    except ValueError:
        raise ValueError(f"{where}: {number} is not a container type") from None


_POOL_FOR_LEVEL: Final[Mapping[QoSLevel, tuple[str, ...]]] = {
    QoSLevel.SHARED_CORES: (POOL_SHARE,),
    QoSLevel.RECLAIMED_CORES: (POOL_RECLAIM,),
    QoSLevel.SYSTEM_CORES: NAMED_POOLS,
    QoSLevel.DEDICATED_CORES: (POOL_DEDICATED,),
}


def _entry(value: object, where: str) -> ContainerEntry:
    obj = _object(value, where)
    level = _level(_field(obj, "level", where), f"{where}.level")
    pool = _field(obj, "pool", where)
    if not isinstance(pool, str) or pool not in _POOL_FOR_LEVEL[level]:
        raise ValueError(f"{where}.pool: {pool!r} is not a pool of a {level.value} container")
    return ContainerEntry(
        level=level,
        pool=pool,
        container_type=_container_type(_field(obj, "type", where), f"{where}.type"),
        container_index=_int(_field(obj, "index", where), f"{where}.index"),
        milli_cpu=_int(_field(obj, "milli_cpu", where), f"{where}.milli_cpu"),
        hint=_hint(_field(obj, "hint", where), f"{where}.hint"),
    )


def _dedicated(
    value: object, where: str, *, topology: CPUTopology, reserved: CPUSet
) -> DedicatedSet:
    obj = _object(value, where)
    cpus = _cpuset(_field(obj, "cpus", where), f"{where}.cpus")
    if not cpus:
        raise ValueError(f"{where}.cpus: is empty")
    missing = cpus.difference(topology.online)
    if missing:
        raise ValueError(f"{where}.cpus: CPUs {missing} are not online on this node")
    overlap = cpus.intersection(reserved)
    if overlap:
        raise ValueError(f"{where}.cpus: CPUs {overlap} are reserved on this node")
    raw_nodes = _field(obj, "numa_nodes", where)
    nodes = None if raw_nodes is None else _cpuset(raw_nodes, f"{where}.numa_nodes")
    exclusive = _bool(_field(obj, "numa_exclusive", where), f"{where}.numa_exclusive")
    if nodes is None:
        if exclusive:
            raise ValueError(f"{where}: numa_exclusive without numa_nodes")
        return DedicatedSet(cpus=cpus, numa_nodes=None, numa_exclusive=False)
    by_node = topology.numa_nodes()
    unknown = [n for n in nodes if n not in by_node]
    if unknown or not nodes:
        raise ValueError(f"{where}.numa_nodes: {nodes} names NUMA nodes this node lacks")
    on_nodes = CPUSet.of(cpu for n in nodes for cpu in by_node[n])
    outside = cpus.difference(on_nodes)
    if outside:
        raise ValueError(f"{where}.cpus: CPUs {outside} are outside its NUMA nodes {nodes}")
    if exclusive and cpus != on_nodes.difference(reserved):
        raise ValueError(
            f"{where}: a NUMA-exclusive set must be every non-reserved CPU of NUMA nodes "
            f"{nodes} ({on_nodes.difference(reserved)}), not {cpus}"
        )
    return DedicatedSet(cpus=cpus, numa_nodes=nodes, numa_exclusive=exclusive)


def decode_state(
    raw: Mapping[str, object], *, topology: CPUTopology, reserved: CPUSet
) -> PolicyState:
    """Read :func:`encode_state` output back, checked against this node.

    Raises ``ValueError`` naming the problem: a malformed field, an unknown version,
    a CPU that is not online or is reserved, two pods holding one CPU, a dedicated set
    smaller than its containers' requests or outside its NUMA nodes, a container whose
    pool does not match its level.
    """
    top = _object(raw, "cpu state")
    version = _field(top, "version", "cpu state")
    if version != STATE_VERSION:
        raise ValueError(f"cpu state: version {version!r}, expected {STATE_VERSION}")
    generation = _int(_field(top, "generation", "cpu state"), "cpu state.generation")
    raw_size = _field(top, "reclaim_size", "cpu state")
    reclaim_size = None if raw_size is None else _int(raw_size, "cpu state.reclaim_size")
    pods = _object(_field(top, "pods", "cpu state"), "cpu state.pods")
    containers: dict[PodUID, Mapping[str, ContainerEntry]] = {}
    dedicated: dict[PodUID, DedicatedSet] = {}
    owner: dict[int, str] = {}
    for uid, raw_pod in sorted(pods.items()):
        where = f"pod {uid!r}"
        if not valid_pod_uid(uid):
            raise ValueError(f"{where}: not a pod UID")
        pod = _object(raw_pod, where)
        raw_containers = _object(_field(pod, "containers", where), f"{where}.containers")
        if not raw_containers:
            raise ValueError(f"{where}: has no containers")
        entries: dict[str, ContainerEntry] = {}
        for name, raw_entry in sorted(raw_containers.items()):
            if not valid_container_name(name):
                raise ValueError(f"{where}: {name!r} is not a container name")
            entries[name] = _entry(raw_entry, f"{where} container {name!r}")
        levels = {entry.level for entry in entries.values()}
        if len(levels) > 1:
            raise ValueError(f"{where}: containers of different QoS levels {sorted(levels)}")
        raw_ded = _field(pod, "dedicated", where)
        is_dedicated = QoSLevel.DEDICATED_CORES in levels
        if is_dedicated != (raw_ded is not None):
            raise ValueError(
                f"{where}: a dedicated_cores pod needs a dedicated set and no other pod has one"
            )
        if raw_ded is not None:
            ded = _dedicated(raw_ded, f"{where}.dedicated", topology=topology, reserved=reserved)
            for cpu in ded.cpus:
                if cpu in owner:
                    raise ValueError(
                        f"CPU {cpu} is dedicated to both pod {owner[cpu]!r} and {uid!r}"
                    )
                owner[cpu] = uid
            needed = required_cpus(entries.values())
            if len(ded.cpus) < needed:
                raise ValueError(
                    f"{where}: holds {len(ded.cpus)} CPUs but its containers need {needed}"
                )
            dedicated[PodUID(uid)] = ded
        containers[PodUID(uid)] = MappingProxyType(entries)
    return PolicyState(
        containers=MappingProxyType(containers),
        dedicated=MappingProxyType(dedicated),
        reclaim_size=reclaim_size,
        generation=generation,
    )
