"""The extender's verbs over kube-scheduler's JSON (Go field names), on top of the
pure plugins: thin, and apart from the HTTP layer so that it is tested directly.

kube-scheduler's types (``k8s.io/kube-scheduler/extender/v1``): ``ExtenderArgs
{Pod, Nodes, NodeNames}``, ``ExtenderFilterResult {Nodes, NodeNames, FailedNodes,
FailedAndUnresolvableNodes, Error}``, ``HostPriorityList [{Host, Score}]`` with
scores 0..``MaxExtenderPriority`` (10), ``ExtenderBindingArgs {PodName,
PodNamespace, PodUID, Node}``, ``ExtenderBindingResult {Error}``.

A request the extender cannot judge (a pod missing a field a plugin needs, a bad
quantity, a node name that is not a string) is answered with ``Error`` set:
kube-scheduler then fails this scheduling attempt (``ignorable: false``) rather
than place the pod on a node nobody checked.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, Protocol

from katalyst.qos import GPU_INDICES_ANNOTATION, RDMA_DEVICES_ANNOTATION
from scheduler_plugins.plugins import MAX_SCORE, gpu_share, rdma_topology, reclaimed_fit
from scheduler_plugins.plugins.model import (
    NodeView,
    PodRequest,
    RequestError,
    parse_pod,
)
from scheduler_plugins.state import ClusterState

log = logging.getLogger(__name__)

MAX_EXTENDER_PRIORITY: Final = 10
"""``extenderv1.MaxExtenderPriority``."""
RECENT_PODS: Final = 4096
"""Pods remembered from filter calls, for the bind that follows (bind carries names only)."""
SHAPES: Final = 16
"""Request shapes whose verdicts are remembered (for every node): the shapes of the
pods being scheduled now, as replicas of one workload share a shape."""


@dataclass(frozen=True)
class Verdict:
    reason: str | None
    """Why the node does not fit; None when it fits."""
    unresolvable: bool
    """Not even preemption (every pod gone) would make it fit."""
    score: int
    """0..10."""
    priority: Mapping[str, Any]
    """``HostPriority {Host, Score}`` for this node, built once per verdict: at 5,000
    nodes building the answer's objects costs more than judging the nodes. Read-only."""


Shape = tuple[int, int, int, int, int, str]


def _shape(pod: PodRequest) -> Shape:
    """What the plugins read of a pod: pods of one shape get one verdict per node
    (the equivalence cache kube-scheduler once had: replicas share a shape)."""
    return (pod.millicpu, pod.memory, pod.gpu_memory_mib, pod.gpu_count, pod.rdma, pod.policy)


@dataclass
class _Memo:
    """The verdicts of one request shape."""

    by_id: dict[int, tuple[NodeView, Verdict]] = field(default_factory=dict)
    """``id`` of a view -> (that view, kept alive so its ``id`` stays its own; verdict)."""
    by_name: dict[str, int] = field(default_factory=dict)
    """Node -> the ``id`` of its view last judged (to drop the entry it replaces)."""


@dataclass(frozen=True)
class Strategies:
    reclaimed: reclaimed_fit.Strategy = "least-allocated"
    """How ``reclaimed-fit`` scores: least-allocated spreads, most-allocated packs."""
    gpu: gpu_share.Strategy = "binpack"
    """How ``gpu-share`` scores and chooses GPUs."""


class Binder(Protocol):
    """The bind's effect on the API server."""

    async def bind(
        self, namespace: str, name: str, uid: str, node: str, annotations: Mapping[str, str]
    ) -> None:
        """Create the pod's ``pods/binding`` to ``node``, whose ``metadata.annotations``
        the API server copies onto the pod in the same write; raise on failure."""
        ...


def _filter_node(pod: PodRequest, view: NodeView) -> str | None:
    for plugin in (reclaimed_fit, gpu_share, rdma_topology):
        reason = plugin.filter(pod, view)
        if reason is not None:
            return f"{plugin.__name__.rsplit('.', 1)[-1].replace('_', '-')}: {reason}"
    return None


def _emptied(view: NodeView) -> NodeView:
    """The node with every pod gone: what preemption could at best achieve."""
    return replace(
        view,
        requested_millicpu=0,
        requested_memory=0,
        gpus=tuple(replace(g, allocated_mib=0) for g in view.gpus),
        nics=tuple(replace(n, allocated=False) for n in view.nics),
    )


class Extender:
    def __init__(
        self, *, state: ClusterState, binder: Binder, strategies: Strategies | None = None
    ) -> None:
        self.state = state
        self._binder = binder
        self._strategies = strategies or Strategies()
        self._recent: OrderedDict[str, PodRequest] = OrderedDict()
        self._memo: dict[Shape, _Memo] = {}
        """The verdicts of each request shape, in least recent use order."""

    def _verdicts(self, pod: PodRequest, names: list[str]) -> list[Verdict]:
        """The plugins' verdict on each named node, remembered per request shape while
        the node's view object is the state's current one (a new CNR, pod or assumed
        pod makes a new view, so nothing stale is ever served).

        Written for 5,000 nodes per call: the look-ups are by the view's ``id`` and run
        in C (``map``); the memo holds the view itself, so its ``id`` cannot be reused
        while the entry lives, and a node's entry is replaced when its view is."""
        views = self.state.views(names)
        memo = self._memo.pop(_shape(pod), None)
        if memo is None:
            memo = _Memo()
            if len(self._memo) >= SHAPES:
                del self._memo[next(iter(self._memo))]  # the least recently used shape
        self._memo[_shape(pod)] = memo
        hits = list(map(memo.by_id.get, map(id, views)))
        if not all(hits):
            for i, view in enumerate(views):
                if hits[i] is None:
                    entry = hits[i] = (view, self._judge(pod, view))
                    old = memo.by_name.get(view.name)
                    if old is not None:
                        memo.by_id.pop(old, None)
                    memo.by_name[view.name] = id(view)
                    memo.by_id[id(view)] = entry
        return [hit[1] for hit in hits]  # type: ignore[index]  # no None is left

    def _judge(self, pod: PodRequest, view: NodeView) -> Verdict:
        score = self._score(pod, view)
        priority = {"Host": view.name, "Score": score}
        if pod.managed and not self.state.known(view.name):
            return Verdict(f"no CustomNodeResource for node {view.name}", True, score, priority)
        reason = _filter_node(pod, view)
        unresolvable = reason is not None and _filter_node(pod, _emptied(view)) is not None
        return Verdict(reason, unresolvable, score, priority)

    def _score(self, pod: PodRequest, view: NodeView) -> int:
        scores = [
            s
            for s in (
                reclaimed_fit.score(pod, view, self._strategies.reclaimed),
                gpu_share.score(pod, view, self._strategies.gpu),
                rdma_topology.score(pod, view),
            )
            if s is not None
        ]
        mean = sum(scores) / len(scores) if scores else 0
        return round(mean * MAX_EXTENDER_PRIORITY / MAX_SCORE)

    def _remember(self, pod: PodRequest) -> None:
        self._recent[pod.key] = pod
        self._recent.move_to_end(pod.key)
        while len(self._recent) > RECENT_PODS:
            self._recent.popitem(last=False)

    @staticmethod
    def _names(args: Mapping[str, Any]) -> tuple[list[str], list[Any] | None]:
        """The node names and, in full-node mode, the Node objects."""
        names = args.get("NodeNames")
        if names is not None:
            # Checked in C (set of types, then a search for ""): 5,000 names per call.
            if not isinstance(names, list) or set(map(type, names)) - {str} or "" in names:
                raise RequestError("NodeNames: not a list of node names")
            return list(names), None
        nodes = args.get("Nodes")
        if not isinstance(nodes, Mapping) or not isinstance(nodes.get("items"), list):
            raise RequestError("neither NodeNames nor Nodes.items given")
        items: list[Any] = nodes["items"]
        out: list[str] = []
        for i, node in enumerate(items):
            name = node.get("metadata", {}).get("name") if isinstance(node, Mapping) else None
            if not isinstance(name, str) or not name:
                raise RequestError(f"Nodes.items[{i}].metadata.name: missing")
            out.append(name)
        return out, items

    def filter(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """``ExtenderFilterResult`` for ``ExtenderArgs``."""
        try:
            pod = parse_pod(args.get("Pod"))
            names, items = self._names(args)
        except RequestError as exc:
            return {
                "Nodes": None,
                "NodeNames": None,
                "FailedNodes": {},
                "FailedAndUnresolvableNodes": {},
                "Error": str(exc),
            }
        self._remember(pod)
        verdicts = self._verdicts(pod, names)
        passed = [i for i, v in enumerate(verdicts) if v.reason is None]
        failed: dict[str, str] = {}
        unresolvable: dict[str, str] = {}
        if len(passed) < len(names):
            for name, verdict in zip(names, verdicts, strict=True):
                if verdict.reason is not None:
                    (unresolvable if verdict.unresolvable else failed)[name] = verdict.reason
        result: dict[str, Any] = {
            "Nodes": None,
            "NodeNames": None,
            "FailedNodes": failed,
            "FailedAndUnresolvableNodes": unresolvable,
            "Error": "",
        }
        if items is None:
            result["NodeNames"] = [names[i] for i in passed]
        else:
            result["Nodes"] = {"metadata": {}, "items": [items[i] for i in passed]}
        return result

    def prioritize(self, args: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        """``HostPriorityList``: the mean of the plugins that have a say, 0..10. A pod
        the extender cannot read scores 0 everywhere (its filter already said why;
        kube-scheduler ignores prioritize failures anyway)."""
        try:
            names, _ = self._names(args)
        except RequestError as exc:
            log.info("prioritize: %s", exc)
            return []
        try:
            pod = parse_pod(args.get("Pod"))
        except RequestError as exc:
            log.info("prioritize: %s; scoring 0", exc)
            return [{"Host": n, "Score": 0} for n in names]
        return [v.priority for v in self._verdicts(pod, names)]

    def choose(self, pod: PodRequest, view: NodeView) -> tuple[tuple[int, ...], tuple[str, ...]]:
        """The GPU indices and the RDMA NIC names to give the pod on ``view``'s node:
        for a pod with RDMA NICs, ``rdma-topology``'s placement (NICs aligned with the
        GPUs as best the node allows, free ones only); otherwise ``gpu-share``'s."""
        if pod.rdma > 0:
            placement = rdma_topology.place(pod, view, self._strategies.gpu)
            if placement is None:
                return (), ()
            return (placement.gpus if pod.wants_gpu else ()), placement.nics
        return gpu_share.choose(pod, view, self._strategies.gpu), ()

    async def bind(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """``ExtenderBindingResult``: check the node again (with the pods assumed
        since the filter), choose the GPUs and RDMA NICs, assume the pod with them,
        then bind it with the chosen GPUs as the annotation
        ``katalyst.kubewharf.io/gpu_indices`` and the chosen NICs as
        ``katalyst.kubewharf.io/rdma_devices``."""
        try:
            fields = {k: args.get(k) for k in ("PodName", "PodNamespace", "PodUID", "Node")}
            for key, value in fields.items():
                if not isinstance(value, str) or (not value and key != "PodUID"):
                    raise RequestError(f"{key}: missing")
        except RequestError as exc:
            return {"Error": str(exc)}
        name, namespace, uid, node = (
            str(fields["PodName"]),
            str(fields["PodNamespace"]),
            str(fields["PodUID"]),
            str(fields["Node"]),
        )
        key = uid or f"{namespace}/{name}"
        pod = self.state.pod(key) or self._recent.get(key)
        if pod is None:
            pod = PodRequest(uid=uid, namespace=namespace, name=name)
        if pod.managed:
            if not self.state.known(node):
                return {"Error": f"no CustomNodeResource for node {node}"}
            self.state.forget(key)  # a retried bind must not count against itself
            view = self.state.view(node)
            reason = _filter_node(pod, view)
            if reason is not None:
                return {"Error": f"pod {namespace}/{name} no longer fits node {node}: {reason}"}
        gpus: tuple[int, ...] = ()
        nics: tuple[str, ...] = ()
        if pod.wants_gpu or pod.rdma > 0:
            gpus, nics = self.choose(pod, self.state.view(node))
        self.state.assume(pod, node, gpus, nics)
        annotations: dict[str, str] = {}
        if gpus:
            annotations[GPU_INDICES_ANNOTATION] = ",".join(map(str, gpus))
        if nics:
            annotations[RDMA_DEVICES_ANNOTATION] = ",".join(nics)
        try:
            await self._binder.bind(namespace, name, uid, node, annotations)
        except Exception as exc:  # noqa: BLE001 - any failure is the bind's answer
            self.state.forget(key)
            log.warning("bind %s/%s to %s: %s", namespace, name, node, exc)
            return {"Error": f"binding {namespace}/{name} to {node}: {exc}"}
        self._recent.pop(key, None)
        return {"Error": ""}
