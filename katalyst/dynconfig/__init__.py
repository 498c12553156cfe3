"""Dynamic configuration: the objects, their validation, and their resolution per node.

SREs tune the agents per cluster, node pool, named node and service without a
restart, through a ``KatalystCustomConfig`` (KCC) and its target configs
(``AdminQoSConfiguration``). The controller resolves them into one
``CustomNodeConfig`` (CNC) per node listing the configs that apply and their
hashes; the agent fetches those configs, merges them over its file, and applies
them. Everything here is pure (no I/O, no ``kubernetes`` import), shared by the
controller and the agent:

* :mod:`~katalyst.dynconfig.model`: constants, and frozen values parsed from the
  API server's JSON (:func:`parse_kcc`, :func:`parse_target`, :func:`parse_node`,
  :func:`parse_cnc`), :class:`ParseError` naming the field;
* :mod:`~katalyst.dynconfig.merge`: the field-level merge and the spec hash;
* :mod:`~katalyst.dynconfig.validate`: the semantic checks, with the agent's own
  section rules;
* :mod:`~katalyst.dynconfig.resolve`: :func:`resolve` and the incremental
  :class:`Resolver`.

The resolution rules, in words, are in :mod:`katalyst.dynconfig.resolve`'s
docstring; the CRDs of these kinds are in ``deploy/crds/``.
"""

from katalyst.dynconfig.merge import canonical_json, merge, merge_layers, spec_hash, strip_nulls
from katalyst.dynconfig.model import (
    ADMIN_QOS_GVR,
    ADMIN_QOS_KIND,
    CNC_GVR,
    CNC_KIND,
    CNR_GVR,
    CNR_KIND,
    CONFIG_GROUP,
    KCC,
    KCC_GVR,
    KCC_KIND,
    NODE_GROUP,
    VERSION,
    AllowedKeys,
    CNCEntry,
    ConfigRef,
    CustomNodeConfig,
    GroupVersionResource,
    InvalidTarget,
    Level,
    Node,
    ParseError,
    Requirement,
    Selector,
    ServiceOverride,
    TargetConfig,
    cnc_config_list,
    load_target,
    parse_cnc,
    parse_duration,
    parse_kcc,
    parse_label_selector,
    parse_node,
    parse_selector,
    parse_service_overrides,
    parse_target,
    parse_timestamp,
)
from katalyst.dynconfig.resolve import (
    EMPTY,
    Condition,
    History,
    Layer,
    NodeResolution,
    Resolution,
    Resolver,
    resolve,
    service_targets,
)
from katalyst.dynconfig.validate import (
    DYNAMIC_SECTIONS,
    STATIC_KEYS,
    DynamicConfigError,
    ReclaimConfig,
    Sections,
    build_sections,
    validate_config,
    validate_service_overrides,
    validate_target,
)

__all__ = [
    "ADMIN_QOS_GVR",
    "ADMIN_QOS_KIND",
    "CNC_GVR",
    "CNC_KIND",
    "CNR_GVR",
    "CNR_KIND",
    "CONFIG_GROUP",
    "DYNAMIC_SECTIONS",
    "EMPTY",
    "KCC",
    "KCC_GVR",
    "KCC_KIND",
    "NODE_GROUP",
    "STATIC_KEYS",
    "VERSION",
    "AllowedKeys",
    "CNCEntry",
    "Condition",
    "ConfigRef",
    "CustomNodeConfig",
    "DynamicConfigError",
    "GroupVersionResource",
    "History",
    "InvalidTarget",
    "Layer",
    "Level",
    "Node",
    "NodeResolution",
    "ParseError",
    "ReclaimConfig",
    "Requirement",
    "Resolution",
    "Resolver",
    "Sections",
    "Selector",
    "ServiceOverride",
    "TargetConfig",
    "build_sections",
    "canonical_json",
    "cnc_config_list",
    "load_target",
    "merge",
    "merge_layers",
    "parse_cnc",
    "parse_duration",
    "parse_kcc",
    "parse_label_selector",
    "parse_node",
    "parse_selector",
    "parse_service_overrides",
    "parse_target",
    "parse_timestamp",
    "resolve",
    "service_targets",
    "spec_hash",
    "strip_nulls",
    "validate_config",
    "validate_service_overrides",
    "validate_target",
]
