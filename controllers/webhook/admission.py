"""The pure admission decision for pods: validate QoS annotations, mutate reclaimed pods.

:func:`review` takes an ``admission.k8s.io/v1`` AdmissionReview as JSON-decoded by the
HTTP layer and returns the AdmissionReview the API server expects back. It does no I/O
and never raises: a malformed review is answered ``allowed: false`` with a message.

Validating (CREATE and UPDATE):

* the pod must pass :meth:`katalyst.qos.PodView.from_dict` (malformed QoS annotation,
  unknown level, contradictory enhancements, bad quantities); its message is returned;
* a ``reclaimed_cores`` pod may have no ``cpu``/``memory`` limits: it runs on capacity
  lent by other pods and is accounted only in the reclaimed extended resources;
* a ``reclaimed_cores`` container may not ask for native ``cpu`` (``memory``) together
  with ``reclaimed_millicpu`` (``reclaimed_memory``): which one is meant is ambiguous.

Mutating (CREATE only; a pod's resources are immutable after creation):

* a pod without a ``katalyst.kubewharf.io/qos_level`` annotation gets the level of the
  first matching :class:`DefaultRule` (by namespace name or by pod labels);
* a ``reclaimed_cores`` pod's ``cpu``/``memory`` requests are replaced, per container and
  init container, by ``resource.katalyst.kubewharf.io/reclaimed_millicpu`` (milli-cores)
  and ``reclaimed_memory`` (bytes) as integer strings, so Kubernetes classes the pod
  BestEffort and the scheduler fits it on reclaimed capacity. The same values are set as
  limits: Kubernetes refuses an extended-resource request without an equal limit
  (``ValidateResourceRequirements`` in ``pkg/apis/core/validation/validation.go``:
  "Limit must be set for non overcommitable resources" and "must be equal to ... limit";
  only native resources may be overcommitted, ``helper.IsOvercommitAllowed``).

Pods in excluded namespaces (``kube-system`` and ``katalyst-system`` by default) are
allowed untouched, whatever they carry, so a webhook bug cannot block system pods.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Literal, NotRequired, TypedDict

from katalyst.qos import (
    QOS_LEVEL_ANNOTATION,
    RESOURCE_RECLAIMED_MEMORY,
    RESOURCE_RECLAIMED_MILLICPU,
    ContainerView,
    PodView,
    QoSLevel,
    QoSValidationError,
)
from katalyst.qos.model import (
    CPU_ENHANCEMENT_ANNOTATION,
    MEMORY_ENHANCEMENT_ANNOTATION,
    NETWORK_ENHANCEMENT_ANNOTATION,
)

__all__ = [
    "CODE_BAD_REVIEW",
    "CODE_DENIED",
    "DEFAULT_EXCLUDED_NAMESPACES",
    "AdmissionConfig",
    "AdmissionResponseDict",
    "AdmissionReviewDict",
    "DefaultRule",
    "Defaults",
    "PatchOp",
    "StatusDict",
    "malformed",
    "review",
]

logger = logging.getLogger(__name__)

API_VERSION: Final = "admission.k8s.io/v1"
KIND: Final = "AdmissionReview"
DEFAULT_EXCLUDED_NAMESPACES: Final = frozenset({"kube-system", "katalyst-system"})

CODE_BAD_REVIEW: Final = 400
"""HTTP code in ``status`` for a review that is not a well-formed pod AdmissionReview."""
CODE_DENIED: Final = 403
"""HTTP code in ``status`` for a pod that breaks a QoS rule (the code kubectl shows)."""

_QOS_ANNOTATIONS: Final = (
    QOS_LEVEL_ANNOTATION,
    MEMORY_ENHANCEMENT_ANNOTATION,
    CPU_ENHANCEMENT_ANNOTATION,
    NETWORK_ENHANCEMENT_ANNOTATION,
)
# (native resource, the extended resource a reclaimed pod asks for instead).
_RECLAIMED: Final = (
    ("cpu", RESOURCE_RECLAIMED_MILLICPU),
    ("memory", RESOURCE_RECLAIMED_MEMORY),
)


# --- Wire types --------------------------------------------------------------------------


class StatusDict(TypedDict):
    """``response.status``: a ``metav1.Status`` reduced to what the API server shows."""

    code: int
    message: str


class AdmissionResponseDict(TypedDict):
    """``response`` of an ``admission.k8s.io/v1`` AdmissionReview."""

    uid: str
    allowed: bool
    status: NotRequired[StatusDict]
    patchType: NotRequired[Literal["JSONPatch"]]
    patch: NotRequired[str]


class AdmissionReviewDict(TypedDict):
    """The AdmissionReview returned to the API server."""

    apiVersion: str
    kind: str
    response: AdmissionResponseDict


class PatchOp(TypedDict):
    """One RFC 6902 operation; ``value`` is absent for ``remove``."""

    op: Literal["add", "remove"]
    path: str
    value: NotRequired[object]


# --- Configuration -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DefaultRule:
    """Give pods that carry no QoS level ``qos_level`` when they match the selector.

    At least one of ``namespaces`` and ``match_labels`` must be set; when both are, both
    must match.
    """

    qos_level: QoSLevel
    """The level written to ``katalyst.kubewharf.io/qos_level``."""
    namespaces: frozenset[str] = frozenset()
    """Namespace names the rule applies to; empty means any namespace."""
    match_labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """Pod labels that must all be present with these values (a ``matchLabels``
    selector); empty means any pod."""

    def __post_init__(self) -> None:
        if not isinstance(self.qos_level, QoSLevel):
            raise ValueError(f"DefaultRule.qos_level: {self.qos_level!r} is not a QoSLevel")
        if not self.namespaces and not self.match_labels:
            raise ValueError("DefaultRule: set namespaces, match_labels or both")
        object.__setattr__(self, "namespaces", frozenset(self.namespaces))
        object.__setattr__(self, "match_labels", MappingProxyType(dict(self.match_labels)))

    def matches(self, *, namespace: str, labels: Mapping[str, str]) -> bool:
        """Whether a pod in ``namespace`` with ``labels`` is selected."""
        if self.namespaces and namespace not in self.namespaces:
            return False
        return all(labels.get(key) == value for key, value in self.match_labels.items())


@dataclass(frozen=True, slots=True)
class Defaults:
    """Namespace- or label-selected QoS levels for pods that set none; first match wins."""

    rules: tuple[DefaultRule, ...] = ()
    """Rules in priority order."""

    def level_for(self, *, namespace: str, labels: Mapping[str, str]) -> QoSLevel | None:
        """The default level of a pod, or ``None`` when no rule selects it."""
        for rule in self.rules:
            if rule.matches(namespace=namespace, labels=labels):
                return rule.qos_level
        return None


@dataclass(frozen=True, slots=True)
class AdmissionConfig:
    """What the webhook does beyond the fixed QoS rules."""

    excluded_namespaces: frozenset[str] = DEFAULT_EXCLUDED_NAMESPACES
    """Namespaces whose pods are always allowed untouched; default ``kube-system`` and
    ``katalyst-system`` (the project's own)."""
    defaults: Defaults = Defaults()
    """Default QoS levels; default none."""


# --- The decision ------------------------------------------------------------------------


class _BadReview(Exception):
    """The review itself is malformed; the message says how."""


def review(
    request: Mapping[str, object], *, config: AdmissionConfig | None = None, mutate: bool = True
) -> AdmissionReviewDict:
    """Answer one AdmissionReview for a pod; never raises.

    ``mutate=False`` is the validating webhook: the same checks on the pod as it is
    (the API server calls validating webhooks after the mutating ones, on the mutated
    pod), no default level applied, never a patch."""
    config = config or AdmissionConfig()
    uid = ""
    if isinstance(request, Mapping):
        inner = request.get("request")
        if isinstance(inner, Mapping) and isinstance(inner.get("uid"), str):
            uid = inner["uid"]
    try:
        response = _decide(request, config=config, mutate=mutate)
    except _BadReview as err:
        logger.info("malformed AdmissionReview (uid %r): %s", uid, err)
        return _answer(uid, allowed=False, code=CODE_BAD_REVIEW, message=str(err))
    if response is None:
        return _answer(uid, allowed=True)
    if isinstance(response, str):
        return _answer(uid, allowed=False, code=CODE_DENIED, message=response)
    return _answer(uid, allowed=True, patch=response)


def _answer(
    uid: str,
    *,
    allowed: bool,
    code: int | None = None,
    message: str = "",
    patch: Sequence[PatchOp] = (),
) -> AdmissionReviewDict:
    response: AdmissionResponseDict = {"uid": uid, "allowed": allowed}
    if code is not None:
        response["status"] = {"code": code, "message": message}
    if patch:
        encoded = json.dumps(list(patch), separators=(",", ":"), ensure_ascii=False)
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(encoded.encode("utf-8")).decode("ascii")
    return {"apiVersion": API_VERSION, "kind": KIND, "response": response}


def malformed(message: str, *, code: int = CODE_BAD_REVIEW) -> AdmissionReviewDict:
    """The answer to a request that is not an AdmissionReview at all (not JSON), or
    that was not read (``code``: 408, 413, 429)."""
    return _answer("", allowed=False, code=code, message=message)


def _decide(
    review_: object, *, config: AdmissionConfig, mutate: bool = True
) -> list[PatchOp] | str | None:
    """A patch to allow with, a message to deny with, or ``None`` to allow as is."""
    if not isinstance(review_, Mapping):
        raise _BadReview("the body must be a JSON object (an AdmissionReview)")
    if review_.get("apiVersion") != API_VERSION or review_.get("kind") != KIND:
        raise _BadReview(f'must be apiVersion "{API_VERSION}", kind "{KIND}"')
    request = review_.get("request")
    if not isinstance(request, Mapping):
        raise _BadReview('"request" must be an object')
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise _BadReview('"request.uid" must be a non-empty string')
    kind = request.get("kind")
    if not (
        isinstance(kind, Mapping)
        and kind.get("group") == ""
        and kind.get("version") == "v1"
        and kind.get("kind") == "Pod"
    ):
        raise _BadReview('"request.kind" must be {"group": "", "version": "v1", "kind": "Pod"}')
    operation = request.get("operation")
    if operation not in ("CREATE", "UPDATE", "DELETE", "CONNECT"):
        raise _BadReview('"request.operation" must be CREATE, UPDATE, DELETE or CONNECT')
    namespace = request.get("namespace")
    if not isinstance(namespace, str) or not namespace:
        raise _BadReview('"request.namespace" must be a non-empty string (pods are namespaced)')
    if namespace in config.excluded_namespaces:
        return None
    sub_resource = request.get("subResource")
    if operation not in ("CREATE", "UPDATE") or sub_resource:
        # Only the pod itself carries QoS; never mutate what we were not asked about.
        return None
    pod = request.get("object")
    if not isinstance(pod, Mapping):
        raise _BadReview('"request.object" must be a Pod object')
    if pod.get("kind", "Pod") != "Pod" or pod.get("apiVersion", "v1") != "v1":
        raise _BadReview('"request.object" must be apiVersion "v1", kind "Pod"')
    metadata = pod.get("metadata")
    if not isinstance(metadata, Mapping):
        error = QoSValidationError(
            key="metadata", kind="field", value=metadata, rule="must be an object"
        )
        return _denial(namespace, "", error)
    name = _display_name(request, metadata)

    if operation == "UPDATE":
        old = request.get("oldObject")
        if _qos_annotations(old) == _qos_annotations(pod):
            # Unchanged QoS: allow, so a pod admitted before this webhook (or before a
            # rule tightened) can still get its finalizers removed and labels changed.
            return None
        try:
            _validate(_for_validation(pod, metadata, request=request, annotations=None))
        except QoSValidationError as err:
            return _denial(namespace, name, err)
        return None

    patch: list[PatchOp] = []
    annotations = metadata.get("annotations")
    defaulted: dict[str, object] | None = None
    # A non-object "annotations" is left for PodView.from_dict to report.
    if mutate and (
        annotations is None
        or (isinstance(annotations, Mapping) and QOS_LEVEL_ANNOTATION not in annotations)
    ):
        labels = metadata.get("labels")
        level = config.defaults.level_for(
            namespace=namespace,
            labels=_str_items(labels) if isinstance(labels, Mapping) else {},
        )
        if level is not None:
            defaulted = {**(annotations or {}), QOS_LEVEL_ANNOTATION: level.value}
            if isinstance(annotations, Mapping):
                patch.append(_add(("metadata", "annotations", QOS_LEVEL_ANNOTATION), level.value))
            else:
                patch.append(_add(("metadata", "annotations"), {QOS_LEVEL_ANNOTATION: level.value}))
    try:
        view = _validate(_for_validation(pod, metadata, request=request, annotations=defaulted))
    except QoSValidationError as err:
        return _denial(namespace, name, err)
    if mutate and view.level is QoSLevel.RECLAIMED_CORES:
        patch.extend(_reclaimed_patch(pod, view))
    return patch or None


def _denial(namespace: str, name: str, err: QoSValidationError) -> str:
    return f"pod {namespace}/{name or '<generated>'}: {err}"


def _display_name(request: Mapping[str, object], metadata: Mapping[str, object]) -> str:
    for candidate in (metadata.get("name"), request.get("name")):
        if isinstance(candidate, str) and candidate:
            return candidate
    generate = metadata.get("generateName")
    return f"{generate}<generated>" if isinstance(generate, str) and generate else ""


def _str_items(raw: Mapping[object, object]) -> dict[str, str]:
    return {k: v for k, v in raw.items() if isinstance(k, str) and isinstance(v, str)}


def _qos_annotations(pod: object) -> tuple[object, ...] | None:
    if not isinstance(pod, Mapping):
        return None
    metadata = pod.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, Mapping) else None
    if not isinstance(annotations, Mapping):
        annotations = {}
    return tuple(annotations.get(key) for key in _QOS_ANNOTATIONS)


def _for_validation(
    pod: Mapping[str, object],
    metadata: Mapping[str, object],
    *,
    request: Mapping[str, object],
    annotations: Mapping[str, object] | None,
) -> dict[str, object]:
    """The pod as PodView.from_dict needs it.

    At CREATE the API server has not yet assigned ``metadata.uid``, and a pod created
    with ``generateName`` has no name; neither is the user's to get right here, so both
    get placeholders. ``metadata.namespace`` may be absent: the request's is the one.
    """
    filled: dict[str, object] = dict(metadata)
    if not filled.get("uid"):
        filled["uid"] = request.get("uid")
    if not filled.get("name"):
        request_name = request.get("name")
        generate = filled.get("generateName")
        if isinstance(request_name, str) and request_name:
            filled["name"] = request_name
        elif isinstance(generate, str):
            # The API server appends five characters; validate a name of that shape.
            filled["name"] = f"{generate}xxxxx"
        else:
            filled["name"] = "generated"
    if not filled.get("namespace"):
        filled["namespace"] = request.get("namespace")
    if annotations is not None:
        filled["annotations"] = annotations
    return {**pod, "metadata": filled}


def _validate(pod: Mapping[str, object]) -> PodView:
    view = PodView.from_dict(pod)
    if view.level is QoSLevel.RECLAIMED_CORES:
        for container in (*view.containers, *view.init_containers):
            _check_reclaimed_container(container, raw=_raw_resources(pod, container))
    return view


def _raw_resources(pod: Mapping[str, object], container: ContainerView) -> Mapping[str, object]:
    """The container's ``resources`` as the user wrote it (PodView validated the shape)."""
    spec = pod["spec"]
    assert isinstance(spec, Mapping)
    for raw in spec.get("initContainers" if container.init else "containers") or ():
        if isinstance(raw, Mapping) and raw.get("name") == container.name:
            resources = raw.get("resources")
            return resources if isinstance(resources, Mapping) else {}
    return {}


def _written(raw: Mapping[str, object], section: str, resource: str, parsed: object) -> object:
    """What the user wrote for ``resources.<section>[resource]``, else the parsed value."""
    values = raw.get(section)
    return values.get(resource, parsed) if isinstance(values, Mapping) else parsed


def _container_path(container: ContainerView) -> str:
    kind = "initContainers" if container.init else "containers"
    return f"spec.{kind}[{container.name}].resources"


def _check_reclaimed_container(container: ContainerView, *, raw: Mapping[str, object]) -> None:
    path = _container_path(container)
    for native, extended in _RECLAIMED:
        limit = container.limits.get(native)
        if limit is not None:
            raise QoSValidationError(
                key=f"{path}.limits[{native}]",
                kind="field",
                value=_written(raw, "limits", native, str(limit)),
                rule=(
                    f"must be absent for a {QoSLevel.RECLAIMED_CORES.value} pod: it runs on "
                    f"lent capacity and has no {native} limit; ask for {extended} instead"
                ),
            )
        if native in container.requests and (
            extended in container.requests or extended in container.limits
        ):
            raise QoSValidationError(
                key=f"{path}.requests[{native}]",
                kind="field",
                value=_written(raw, "requests", native, str(container.requests[native])),
                rule=(
                    f"must not be set together with {extended} in a "
                    f"{QoSLevel.RECLAIMED_CORES.value} pod: the webhook rewrites {native} "
                    f"to {extended}; set one of them"
                ),
            )


def _pointer(parts: Sequence[str | int]) -> str:
    """An RFC 6901 JSON Pointer: ``~`` is ``~0`` and ``/`` is ``~1`` in each token."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in parts)


def _add(parts: Sequence[str | int], value: object) -> PatchOp:
    return {"op": "add", "path": _pointer(parts), "value": value}


def _remove(parts: Sequence[str | int]) -> PatchOp:
    return {"op": "remove", "path": _pointer(parts)}


def _reclaimed_patch(pod: Mapping[str, object], view: PodView) -> list[PatchOp]:
    """Move each container's cpu/memory requests to the reclaimed extended resources.

    ``view`` validated ``pod``: the container lists are lists of objects in the same
    order, and each ``resources`` is an object or absent. A zero request is removed and
    not replaced (an extended resource of 0 asks for nothing).
    """
    spec = pod["spec"]
    assert isinstance(spec, Mapping)
    ops: list[PatchOp] = []
    for list_name, views in (
        ("containers", view.containers),
        ("initContainers", view.init_containers),
    ):
        raw_list = spec.get(list_name) or []
        assert isinstance(raw_list, list | tuple)
        for index, (raw, container) in enumerate(zip(raw_list, views, strict=True)):
            assert isinstance(raw, Mapping)
            resources = raw.get("resources")
            if not isinstance(resources, Mapping):
                continue
            raw_requests = resources.get("requests")
            if not isinstance(raw_requests, Mapping):
                # No explicit requests; defaulted ones would come from cpu/memory limits,
                # which a reclaimed pod was refused for.
                continue
            base: tuple[str | int, ...] = ("spec", list_name, index, "resources")
            moved: dict[str, str] = {}
            for native, extended in _RECLAIMED:
                if native not in raw_requests:
                    continue
                ops.append(_remove((*base, "requests", native)))
                amount = container.requests[native]
                # Kubernetes reads cpu with MilliValue() and memory with Value(), both
                # rounding up: 0.5m of cpu becomes 1 milli-core, 0.5 bytes 1 byte.
                whole = amount.milli_value() if native == "cpu" else amount.value()
                if whole > 0:
                    moved[extended] = str(whole)
            ops.extend(_add((*base, "requests", ext), val) for ext, val in moved.items())
            if not moved:
                continue
            raw_limits = resources.get("limits")
            if isinstance(raw_limits, Mapping):
                ops.extend(_add((*base, "limits", ext), val) for ext, val in moved.items())
            else:
                ops.append(_add((*base, "limits"), dict(moved)))
    return ops
