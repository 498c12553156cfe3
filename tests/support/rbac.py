"""Kubernetes RBAC, as the API server's authorizer applies it, for the fake API server.

Each of our processes names itself in its User-Agent (``katalyst-agent/<version>
...``, ``katalyst-controller/...``, ``katalyst-scheduler-extender/...``); the fake
API server maps that product to the process's ServiceAccount and allows a request
only if a rule bound to that account in the shipped manifests allows it: the
kustomize base, deploy/kustomize/base/katalyst.yaml, which deploy/render.py
renders from the Helm chart. So every test that runs a process's real code against
the fake runs it under the RBAC we ship, and a call the manifests do not grant
fails as it would in a cluster (403 Forbidden).

Every allowed request is also noted against the rule that allowed it
(:data:`EXERCISED`), so that the suite can tell a grant no code path uses
(tests/conftest.py, ``make test``).

The rules (``k8s.io/apiserver/pkg/authorization`` and ``plugin/pkg/auth/authorizer/
rbac``): a request has a verb (get, list, watch, create, update, patch, delete,
deletecollection), an API group, a resource (``pods/eviction`` with its
subresource), a namespace and a name; a PolicyRule matches when its apiGroups,
resources and verbs contain the request's (or ``*``) and its resourceNames are
empty or contain the name (a create or a list has no name: a rule with
resourceNames never matches them). A ClusterRoleBinding grants everywhere; a
RoleBinding only in its namespace.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final

import yaml

__all__ = [
    "BASE_MANIFESTS",
    "EXERCISED",
    "PROCESS_ACCOUNTS",
    "Attributes",
    "Grant",
    "Policy",
    "attributes",
    "policy_for_values",
    "policy_from_objects",
    "process_of",
    "shipped_policy",
]

BASE_MANIFESTS: Final = (
    Path(__file__).resolve().parents[2] / "deploy" / "kustomize" / "base" / "katalyst.yaml"
)
_RENDER: Final = Path(__file__).resolve().parents[2] / "deploy" / "render.py"
SYSTEM_NAMESPACE: Final = "katalyst-system"
PROCESS_ACCOUNTS: Final = {
    "katalyst-agent": f"{SYSTEM_NAMESPACE}/katalyst-agent",
    "katalyst-controller": f"{SYSTEM_NAMESPACE}/katalyst-controller",
    "katalyst-scheduler-extender": f"{SYSTEM_NAMESPACE}/katalyst-scheduler-extender",
}
"""User-Agent product -> ``namespace/name`` of its ServiceAccount in the base."""

_TRUE: Final = frozenset({"true", "1"})


@dataclass(frozen=True)
class Attributes:
    """What the authorizer judges of one resource request."""

    verb: str
    group: str
    resource: str
    """``plural`` or ``plural/subresource``."""
    namespace: str
    """``""`` at the cluster scope."""
    name: str
    """``""`` for a collection."""

    def describe(self, user: str) -> str:
        """The API server's Forbidden message for ``user`` (``system:anonymous``, or
        a ServiceAccount's ``namespace/name``)."""
        if "/" in user:
            ns, _, name = user.partition("/")
            user = f"system:serviceaccount:{ns}:{name}"
        user = f'User "{user}"'
        scope = f'in the namespace "{self.namespace}"' if self.namespace else "at the cluster scope"
        plural = self.resource.split("/", 1)[0]
        qualified = f"{plural}.{self.group}" if self.group else plural
        subject = f'{qualified} "{self.name}"' if self.name else qualified
        return (
            f'{subject} is forbidden: {user} cannot {self.verb} resource "{self.resource}" '
            f'in API group "{self.group}" {scope}'
        )


def attributes(
    method: str, match_info: Mapping[str, str], query: Mapping[str, str]
) -> Attributes | None:
    """The request's attributes; None for a non-resource path (``/version``, ``/api``:
    every authenticated user may read those, ``system:discovery``)."""
    plural = match_info.get("plural")
    if plural is None:
        return None
    name = match_info.get("name", "")
    sub = match_info.get("sub", "")
    if method == "GET":
        verb = "get" if name else "watch" if query.get("watch") in _TRUE else "list"
    elif method == "DELETE":
        verb = "delete" if name else "deletecollection"
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, "get")
    if sub in ("eviction", "binding"):
        verb = "create"
    return Attributes(
        verb=verb,
        group=match_info.get("group", ""),
        resource=f"{plural}/{sub}" if sub else plural,
        namespace=match_info.get("namespace", ""),
        name=name,
    )


@dataclass(frozen=True)
class Grant:
    """One PolicyRule bound to one account, where the binding applies."""

    account: str
    role: str
    """``Kind/namespace/name`` of the role, for messages."""
    namespace: str | None
    """None: every namespace and the cluster scope (a ClusterRoleBinding)."""
    api_groups: frozenset[str]
    resources: frozenset[str]
    verbs: frozenset[str]
    resource_names: frozenset[str]

    def allows(self, request: Attributes) -> bool:
        if self.namespace is not None and request.namespace != self.namespace:
            return False
        if "*" not in self.api_groups and request.group not in self.api_groups:
            return False
        if "*" not in self.resources and request.resource not in self.resources:
            return False
        if "*" not in self.verbs and request.verb not in self.verbs:
            return False
        return not self.resource_names or request.name in self.resource_names

    def units(self) -> set[tuple[str, str, str, str]]:
        """(account, verb, group, resource) for each combination the rule grants."""
        return {
            (self.account, verb, group, resource)
            for verb in self.verbs
            for group in self.api_groups
            for resource in self.resources
        }


@dataclass(frozen=True)
class Policy:
    grants: tuple[Grant, ...]

    def allowing(self, account: str, request: Attributes) -> Grant | None:
        """The first grant of ``account`` that allows ``request``."""
        for grant in self.grants:
            if grant.account == account and grant.allows(request):
                return grant
        return None

    def units(self, accounts: Iterable[str] | None = None) -> set[tuple[str, str, str, str]]:
        wanted = None if accounts is None else set(accounts)
        out: set[tuple[str, str, str, str]] = set()
        for grant in self.grants:
            if wanted is None or grant.account in wanted:
                out |= grant.units()
        return out


def policy_from_objects(objects: Iterable[Mapping[str, Any]]) -> Policy:
    """The grants of the ClusterRoles, Roles and their bindings among ``objects``."""
    roles: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    bindings: list[Mapping[str, Any]] = []
    for obj in objects:
        kind = obj.get("kind")
        meta = obj.get("metadata") or {}
        if kind in ("ClusterRole", "Role"):
            key = (kind, meta.get("namespace", "") if kind == "Role" else "", meta["name"])
            roles[key] = list(obj.get("rules") or [])
        elif kind in ("ClusterRoleBinding", "RoleBinding"):
            bindings.append(obj)
    grants: list[Grant] = []
    for binding in bindings:
        meta = binding["metadata"]
        ref = binding["roleRef"]
        scope = meta.get("namespace") if binding["kind"] == "RoleBinding" else None
        role_ns = (scope or "") if ref["kind"] == "Role" else ""
        rules = roles.get((ref["kind"], role_ns, ref["name"]))
        if rules is None:
            raise ValueError(f"{binding['kind']} {meta['name']}: no {ref['kind']} {ref['name']}")
        for subject in binding.get("subjects") or []:
            if subject.get("kind") != "ServiceAccount":
                continue
            account = f"{subject['namespace']}/{subject['name']}"
            for rule in rules:
                grants.append(
                    Grant(
                        account=account,
                        role=f"{ref['kind']}/{role_ns}/{ref['name']}",
                        namespace=scope,
                        api_groups=frozenset(rule.get("apiGroups") or ()),
                        resources=frozenset(rule.get("resources") or ()),
                        verbs=frozenset(rule.get("verbs") or ()),
                        resource_names=frozenset(rule.get("resourceNames") or ()),
                    )
                )
    return Policy(tuple(grants))


def policy_for_values(values: Mapping[str, Any]) -> Policy:
    """The RBAC of the Helm chart rendered with ``values`` (Helm's own engine)."""
    return policy_from_objects(_render_module().render_chart(values))


def _render_module() -> Any:
    # deploy/render.py is a script, not a package: load it by path.
    spec = importlib.util.spec_from_file_location("katalyst_deploy_render", _RENDER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@cache
def shipped_policy() -> Policy:
    """The RBAC of the kustomize base (the Helm chart with its default values)."""
    with BASE_MANIFESTS.open() as f:
        return policy_from_objects(doc for doc in yaml.safe_load_all(f) if doc)


def process_of(user_agent: str | None) -> str | None:
    """The ServiceAccount of the process that sent ``user_agent``; None for any other
    client (a test seeding objects is not one of our processes)."""
    if not user_agent:
        return None
    product = user_agent.split("/", 1)[0].strip()
    return PROCESS_ACCOUNTS.get(product)


EXERCISED: Final[set[tuple[str, str, str, str]]] = set()
"""(account, verb, group, resource) of every request allowed in this test session."""
