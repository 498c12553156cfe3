"""Pod manifests from a folder: parsed, validated, given stable UIDs.

A manifest is a YAML file (``*.yaml``/``*.yml``, several documents allowed) of
``kind: Pod`` objects as ``kubectl apply`` would take them, with ``command`` (and
``args``) as the process to run. A file that does not parse, or a pod that breaks
a rule of the QoS model, is reported with the file name and the rule and left
out; it never stops the node, and the other pods of the folder still run.

Pods have no API server to give them a UID, so one is derived from the namespace
and name (UUID5): the same pod keeps its UID, and so its checkpointed
allocation, across agent restarts. A changed manifest is a new *revision* of the
pod, which the local node replaces.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from katalyst.qos import PodView, QoSValidationError

log = logging.getLogger(__name__)

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*", re.ASCII)


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader without anchors and aliases: a few hundred bytes of nested
    aliases expand to gigabytes ("billion laughs"); Pod manifests never need them."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, "YAML aliases are not allowed in Pod manifests", event.start_mark
            )
        return super().compose_node(parent, index)


#: The namespace of the UUID5 names of standalone pods.
_UID_NAMESPACE = uuid.UUID("6b0c1f6e-5d0b-4d5e-9f61-0c5c9f5a7e21")
MAX_MANIFEST_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """What the local node runs for one container."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    init: bool


@dataclass(frozen=True, slots=True)
class LocalPod:
    """A validated pod from the folder."""

    view: PodView
    containers: tuple[ContainerSpec, ...]
    source: Path
    revision: str
    """A digest of the pod's manifest: it changes when the manifest does."""
    restart_policy: str
    """``Always``, ``OnFailure`` or ``Never``."""

    @property
    def key(self) -> str:
        """``namespace/name``."""
        return f"{self.view.namespace}/{self.view.name}"


@dataclass(frozen=True, slots=True)
class ManifestError:
    """Why a file (or one pod in it) was left out."""

    source: Path
    message: str


def pod_uid(namespace: str, name: str) -> str:
    """The stable UID of a standalone pod."""
    return str(uuid.uuid5(_UID_NAMESPACE, f"{namespace}/{name}"))


def _containers(doc: Mapping[str, object], source: Path) -> tuple[ContainerSpec, ...]:
    # PodView.from_dict has checked this structure already; the checks here only
    # keep the types honest.
    spec = doc.get("spec")
    if not isinstance(spec, Mapping):
        raise ValueError("spec must be an object")
    out: list[ContainerSpec] = []
    for key, init in (("initContainers", True), ("containers", False)):
        entries = spec.get(key) or []
        if not isinstance(entries, list):
            raise ValueError(f"spec.{key} must be a list")
        for raw in entries:
            if not isinstance(raw, Mapping):
                raise ValueError(f"spec.{key} entries must be objects")
            name = str(raw["name"])
            command = raw.get("command") or []
            args = raw.get("args") or []
            if not isinstance(command, list) or not isinstance(args, list):
                raise ValueError(f"container {name!r}: command and args must be lists of strings")
            argv = tuple(str(a) for a in [*command, *args])
            if any("\x00" in a for a in argv):
                raise ValueError(f"container {name!r}: command and args must not contain NUL")
            if not argv:
                raise ValueError(
                    f"container {name!r} has no command: a standalone node has no images, "
                    "so every container names the process to run"
                )
            env: dict[str, str] = {}
            for item in raw.get("env") or []:
                if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
                    raise ValueError(f"container {name!r}: env entries need a name")
                var, value = str(item["name"]), str(item.get("value", ""))
                if not _ENV_NAME.fullmatch(var) or "\x00" in value:
                    raise ValueError(
                        f"container {name!r}: env {var!r} must be a C identifier "
                        "(letters, digits, '_', '.', '-') with a value without NUL"
                    )
                env[var] = value
            out.append(ContainerSpec(name=name, argv=argv, env=env, init=init))
    return tuple(out)


def _pod(doc: Mapping[str, object], source: Path) -> LocalPod:
    if doc.get("kind") != "Pod":
        raise ValueError(f"kind {doc.get('kind')!r} is not Pod")
    metadata = doc.get("metadata")
    if not isinstance(metadata, Mapping) or not isinstance(metadata.get("name"), str):
        raise ValueError("metadata.name is required")
    namespace = metadata.get("namespace") or "default"
    if not isinstance(namespace, str):
        raise ValueError("metadata.namespace must be a string")
    full = dict(doc)
    full["metadata"] = {
        **metadata,
        "namespace": namespace,
        "uid": pod_uid(namespace, str(metadata["name"])),
    }
    view = PodView.from_dict(full)
    spec = doc.get("spec")
    restart = spec.get("restartPolicy", "Always") if isinstance(spec, Mapping) else "Always"
    if restart not in ("Always", "OnFailure", "Never"):
        raise ValueError(f"spec.restartPolicy {restart!r} is not Always, OnFailure or Never")
    digest = hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return LocalPod(
        view=view,
        containers=_containers(doc, source),
        source=source,
        revision=digest,
        restart_policy=str(restart),
    )


def load_folder(folder: Path) -> tuple[dict[str, LocalPod], list[ManifestError]]:
    """Every valid pod of the folder by ``namespace/name``, and what was left out why.

    Two pods with the same namespace and name: the first file (by name) wins and
    the other is reported.
    """
    pods: dict[str, LocalPod] = {}
    errors: list[ManifestError] = []
    try:
        files = sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    except OSError as exc:
        return {}, [ManifestError(folder, f"cannot list the folder: {exc.strerror}")]
    for path in files:
        try:
            if path.stat().st_size > MAX_MANIFEST_BYTES:
                raise ValueError(f"larger than {MAX_MANIFEST_BYTES} bytes")
            text = path.read_bytes().decode("utf-8")
            loaded = yaml.load_all(text, Loader=_NoAliasLoader)
            docs = [d for d in loaded if d is not None]
        except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
            errors.append(ManifestError(path, f"{path.name}: not readable YAML: {exc}"))
            continue
        for index, doc in enumerate(docs):
            where = f"{path.name}" + (f" (document {index + 1})" if len(docs) > 1 else "")
            if not isinstance(doc, Mapping):
                errors.append(ManifestError(path, f"{where}: a document must be a mapping"))
                continue
            try:
                pod = _pod(doc, path)
            except (QoSValidationError, ValueError, KeyError) as exc:
                errors.append(ManifestError(path, f"{where}: {exc}"))
                continue
            if pod.key in pods:
                errors.append(
                    ManifestError(
                        path,
                        f"{where}: pod {pod.key} is already defined in {pods[pod.key].source.name}",
                    )
                )
                continue
            pods[pod.key] = pod
    return pods, errors
