"""What the extender knows of the cluster: each node's CNR, the pods bound to each
node, and the pods it has assumed onto a node but not yet seen bound.

The assume cache closes the window between a bind and the pod watch showing it:
without it, two pods scheduled in quick succession both see the last GPU share
(or the last aligned RDMA NIC) free. An assumed pod leaves the cache when the
watch shows it bound (then it is counted as a bound pod) or after ``assume_ttl_s``
when it never does (a bind the API server lost, a pod deleted in between).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from katalyst.clock import Clock
from scheduler_plugins.plugins.model import (
    CnrNode,
    NodeView,
    PodRequest,
    RequestError,
    node_view,
    parse_cnr,
    parse_pod,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Assumed:
    node: str
    pod: PodRequest
    expires: float


def _uid(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return str(meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}")


class ClusterState:
    """Node and pod state, fed by the API-server watches (or by tests)."""

    def __init__(self, *, clock: Clock, assume_ttl_s: float = 30.0) -> None:
        self._clock = clock
        self._ttl = assume_ttl_s
        self._cnrs: dict[str, CnrNode] = {}
        self._pods: dict[str, PodRequest] = {}
        self._node_of: dict[str, str] = {}
        self._by_node: dict[str, dict[str, PodRequest]] = {}
        self._assumed: dict[str, Assumed] = {}
        self._views: dict[str, NodeView] = {}
        """Views of nodes without assumed pods, dropped when their CNR or pods change:
        building a view costs more than all the plugins together."""

    # --- CNRs -----------------------------------------------------------------
    def set_cnr(self, obj: Mapping[str, Any]) -> None:
        cnr = parse_cnr(obj)
        if cnr.name:
            self._cnrs[cnr.name] = cnr
            self._views.pop(cnr.name, None)

    def delete_cnr(self, name: str) -> None:
        self._cnrs.pop(name, None)
        self._views.pop(name, None)

    def replace_cnrs(self, objs: list[Mapping[str, Any]]) -> None:
        self._cnrs.clear()
        self._views.clear()
        for obj in objs:
            self.set_cnr(obj)

    def known(self, name: str) -> bool:
        return name in self._cnrs

    def counts(self) -> tuple[int, int, int]:
        """Nodes with a CNR, pods bound to a node, pods assumed (for /metrics)."""
        return len(self._cnrs), len(self._node_of), len(self.assumed())

    # --- pods -----------------------------------------------------------------
    def set_pod(self, obj: Mapping[str, Any]) -> None:
        uid = _uid(obj)
        self.delete_pod(uid)
        phase = (obj.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            return  # finished pods hold no resources
        try:
            pod = parse_pod(obj)
        except RequestError as exc:
            log.warning("pod %s: %s; not counted", uid, exc)
            return
        self._pods[uid] = pod
        node = (obj.get("spec") or {}).get("nodeName")
        if isinstance(node, str) and node:
            self._node_of[uid] = node
            self._by_node.setdefault(node, {})[uid] = pod
            self._views.pop(node, None)
            self._assumed.pop(uid, None)

    def delete_pod(self, uid: str) -> None:
        self._pods.pop(uid, None)
        node = self._node_of.pop(uid, None)
        if node is not None:
            self._views.pop(node, None)
            on_node = self._by_node.get(node, {})
            on_node.pop(uid, None)
            if not on_node:
                self._by_node.pop(node, None)

    def replace_pods(self, objs: list[Mapping[str, Any]]) -> None:
        self._pods.clear()
        self._node_of.clear()
        self._by_node.clear()
        self._views.clear()
        for obj in objs:
            self.set_pod(obj)

    def pod(self, uid: str) -> PodRequest | None:
        return self._pods.get(uid)

    def bound(self, uid: str) -> str | None:
        return self._node_of.get(uid)

    # --- assume cache -------------------------------------------------------------
    def assume(
        self,
        pod: PodRequest,
        node: str,
        gpu_indices: tuple[int, ...],
        rdma_devices: tuple[str, ...] = (),
    ) -> None:
        """Count ``pod`` on ``node`` with the GPUs and RDMA NICs chosen for it until
        the watch shows it bound (or ``assume_ttl_s`` passes)."""
        self._assumed[pod.key] = Assumed(
            node=node,
            pod=replace(pod, gpu_indices=gpu_indices, rdma_devices=rdma_devices),
            expires=self._clock.monotonic() + self._ttl,
        )

    def forget(self, key: str) -> None:
        self._assumed.pop(key, None)

    def assumed(self) -> Mapping[str, Assumed]:
        now = self._clock.monotonic()
        for key in [k for k, a in self._assumed.items() if a.expires <= now]:
            log.info("assumed pod %s never showed up bound; forgetting it", key)
            del self._assumed[key]
        return self._assumed

    # --- views ----------------------------------------------------------------
    def _assumed_by_node(self) -> dict[str, list[PodRequest]]:
        extra: dict[str, list[PodRequest]] = {}
        for key, a in self.assumed().items():
            if key not in self._node_of:
                extra.setdefault(a.node, []).append(a.pod)
        return extra

    def _build(self, name: str, extra: Mapping[str, list[PodRequest]]) -> NodeView:
        pods = list(self._by_node.get(name, {}).values()) + extra.get(name, [])
        view = node_view(self._cnrs.get(name), name, pods)
        if name not in extra:
            self._views[name] = view
        return view

    def view(self, name: str) -> NodeView:
        """The view of node ``name`` (a node without a CNR has no headroom)."""
        return self.views([name])[0]

    def views(self, names: Sequence[str]) -> list[NodeView]:
        """The view of each named node, in order. A cached view is the same object
        until the node's CNR or pods change (callers may memoize on its identity); a
        node with assumed pods is never cached, so its view is new on every call."""
        extra = self._assumed_by_node()
        cache = self._views
        for node in extra:
            cache.pop(node, None)
        out = list(map(cache.get, names))  # in C: the common case is all cached
        if not all(out):  # a NodeView is always true
            for i, view in enumerate(out):
                if view is None:
                    out[i] = self._build(names[i], extra)
        return out  # type: ignore[return-value]  # every None was replaced
