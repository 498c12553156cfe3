"""Field-level merge of partial configs, and the canonical hash of a spec.

**Merge.** A dynamic config is *partial*: it sets only the fields an SRE wants to
change. Layers are merged lowest precedence first (the agent's file, the
cluster-wide config, the node pool's, the named nodes'), each over the result of
the ones below, by :func:`merge`:

* a key the upper layer does not mention keeps the lower value;
* where both values are mappings, they merge recursively, key by key;
* any other upper value replaces the lower one whole (a list is replaced, never
  concatenated: a list of devices is one setting);
* an explicit ``None`` (JSON ``null``) removes the key, so that the value of the
  layer below (or, with nothing below, the agent's default) shows through again.

A consequence worth knowing: ``null`` cannot *set* a setting to null through a
dynamic config (for the optional settings whose null means "off", such as
``eviction.memory_pressure.psi_some_avg10``); that stays the agent file's business.
The result never contains ``None`` values in mappings.

**Hash.** :func:`spec_hash` identifies a version of a config's ``spec``: the first
16 hex digits of the SHA-256 of its canonical JSON, UTF-8 encoded: keys sorted,
no whitespace (``separators=(",", ":")``), non-ASCII characters as themselves
(``ensure_ascii=False``). Before encoding, a float with an integral value is
written as the integer (``1.0`` as ``1``: the API server may return either for the
same field, and the hash must not change with it), a non-finite float as the
string ``"NaN"``, ``"Infinity"`` or ``"-Infinity"`` (JSON has no such numbers;
such a value is refused by validation anyway), a tuple as a list, and a mapping's
keys as strings. The controller writes the hash into each node's CNC; the agent
recomputes it from the object it fetches and uses the object only if they agree.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from typing import Final

__all__ = ["HASH_LENGTH", "canonical_json", "merge", "merge_layers", "spec_hash", "strip_nulls"]

HASH_LENGTH: Final = 16
"""Hex digits of the SHA-256 kept in a hash (64 bits)."""


def strip_nulls(value: object) -> object:
    """``value`` copied, with every ``None`` in a mapping removed (recursively;
    lists are copied as they are)."""
    if isinstance(value, Mapping):
        return {k: strip_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [strip_nulls(v) if isinstance(v, Mapping) else v for v in value]
    return value


def merge(lower: Mapping[str, object], upper: Mapping[str, object]) -> dict[str, object]:
    """``upper`` merged over ``lower`` field by field (see the module's docstring);
    a new dict, neither input is changed or shared."""
    out: dict[str, object] = {k: strip_nulls(v) for k, v in lower.items() if v is not None}
    for key, value in upper.items():
        if value is None:
            out.pop(key, None)
            continue
        below = out.get(key)
        if isinstance(value, Mapping) and isinstance(below, Mapping):
            out[key] = merge(below, value)
        else:
            out[key] = strip_nulls(value)
    return out


def merge_layers(layers: Iterable[Mapping[str, object]]) -> dict[str, object]:
    """The layers merged in order, lowest precedence first."""
    out: dict[str, object] = {}
    for layer in layers:
        out = merge(out, layer)
    return out


def _canonical(value: object) -> object:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        # Beyond Python's int-to-str limit (4300 digits) json.dumps raises; no
        # Kubernetes integer is that long, but a hash must never fail.
        return value if value.bit_length() <= 4096 else f"int:{value:x}"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return int(value) if value.is_integer() else value
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return str(value)


def canonical_json(value: object) -> str:
    """``value`` as canonical JSON (see the module's docstring)."""
    return json.dumps(_canonical(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def spec_hash(spec: Mapping[str, object]) -> str:
    """The hash of a config's ``spec``: 16 hex digits of SHA-256 of its canonical JSON."""
    digest = hashlib.sha256(canonical_json(spec).encode("utf-8", "surrogatepass")).hexdigest()
    return digest[:HASH_LENGTH]
