"""The field-level merge of partial configs, and the spec hash."""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from katalyst.dynconfig import canonical_json, merge, merge_layers, spec_hash, strip_nulls


def test_mappings_merge_key_by_key() -> None:
    lower = {"sysadvisor": {"period_s": 1, "limits": {"reclaim_floor_cpus": 1, "max_log_step": 1}}}
    upper = {"sysadvisor": {"limits": {"max_log_step": 2}}, "io": {"enabled": False}}
    assert merge(lower, upper) == {
        "sysadvisor": {"period_s": 1, "limits": {"reclaim_floor_cpus": 1, "max_log_step": 2}},
        "io": {"enabled": False},
    }


def test_other_values_replace_whole() -> None:
    assert merge({"io": {"devices": ["8:0", "8:16"]}}, {"io": {"devices": ["259:0"]}}) == {
        "io": {"devices": ["259:0"]}
    }
    assert merge({"a": {"b": 1}}, {"a": 5}) == {"a": 5}
    assert merge({"a": 5}, {"a": {"b": 1}}) == {"a": {"b": 1}}


def test_null_removes_a_key_so_that_the_lower_layer_shows() -> None:
    cluster = {"sysadvisor": {"period_s": 2}}
    pool = {"sysadvisor": {"period_s": 5}}
    named = {"sysadvisor": {"period_s": None}}
    assert merge_layers([cluster, pool, named]) == {"sysadvisor": {}}
    # null removes the pool's value: what shows is what lies below the pool's layer
    assert merge(merge_layers([cluster]), {"sysadvisor": {"period_s": None}}) == {"sysadvisor": {}}
    assert merge({"a": 1, "b": 2}, {"a": None}) == {"b": 2}
    assert merge({"b": 2}, {"a": None}) == {"b": 2}


def test_the_result_never_holds_null_in_a_mapping() -> None:
    assert merge({}, {"a": {"b": None, "c": {"d": None}}}) == {"a": {"c": {}}}
    assert merge({"x": None}, {}) == {}
    assert strip_nulls({"a": [None, {"b": None}]}) == {"a": [None, {}]}


def test_inputs_are_neither_changed_nor_shared() -> None:
    lower = {"a": {"b": [1]}, "c": {"d": 1}}
    upper = {"a": {"e": {"f": 1}}}
    before = copy.deepcopy((lower, upper))
    out = merge(lower, upper)
    out["c"]["d"] = 2  # type: ignore[index]
    out["a"]["e"]["f"] = 2  # type: ignore[index]
    assert (lower, upper) == before


def test_merge_layers_is_a_left_fold() -> None:
    assert merge_layers([]) == {}
    assert merge_layers([{"a": 1}, {"b": 2}, {"a": 3}]) == {"a": 3, "b": 2}


_values = st.recursive(
    st.none() | st.integers(-5, 5) | st.text(max_size=2),
    lambda c: st.dictionaries(st.sampled_from("abc"), c, max_size=3),
    max_leaves=8,
)
_configs = st.dictionaries(st.sampled_from("abc"), _values, max_size=3)


def _leaves(value: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in _leaves(v, (*path, k))]
    return [(path, value)]


def _at(value: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        value = value[key]
    return value


@given(_configs, _configs)
def test_every_value_of_the_upper_layer_wins(lower: dict[str, Any], upper: dict[str, Any]) -> None:
    out = merge(lower, upper)
    for path, value in _leaves(upper):
        if value is None:
            parent = _at(out, path[:-1]) if _present(out, path[:-1]) else {}
            assert path[-1] not in parent
        else:
            assert _at(out, path) == value
    for path, value in _leaves(strip_nulls(lower)):
        if not _touched(upper, path):
            assert _at(out, path) == value


def _present(value: Any, path: tuple[str, ...]) -> bool:
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return False
        value = value[key]
    return isinstance(value, dict)


def _touched(upper: Any, path: tuple[str, ...]) -> bool:
    """Whether ``upper`` sets ``path`` or a prefix of it to a non-mapping or null."""
    for key in path:
        if not isinstance(upper, dict) or key not in upper:
            return False
        upper = upper[key]
        if not isinstance(upper, dict):
            return True
    return True


@given(_configs)
def test_merging_over_nothing_is_stripping_nulls(a: dict[str, Any]) -> None:
    assert merge({}, a) == strip_nulls(a)
    assert merge(strip_nulls(a), {}) == strip_nulls(a)  # type: ignore[arg-type]


# ---- hash ------------------------------------------------------------------------------


def test_the_hash_is_16_hex_of_sha256_of_canonical_json() -> None:
    spec = {"priority": 1, "nodeLabelSelector": "pool=a", "config": {"io": {"enabled": False}}}
    text = '{"config":{"io":{"enabled":false}},"nodeLabelSelector":"pool=a","priority":1}'
    assert canonical_json(spec) == text
    assert spec_hash(spec) == hashlib.sha256(text.encode()).hexdigest()[:16]
    # a fixed value: changing the canonical form breaks every CNC in a fleet
    assert spec_hash(spec) == "5d92deac79434d3a"


def test_the_hash_ignores_key_order_and_the_spelling_of_numbers() -> None:
    a = {
        "config": {"sysadvisor": {"period_s": 1.0, "limits": {"max_log_step": 2}}},
        "paused": False,
    }
    b = json.loads(
        '{"paused":false,"config":{"sysadvisor":{"limits":{"max_log_step":2.0},"period_s":1}}}'
    )
    assert spec_hash(a) == spec_hash(b)


def test_the_hash_changes_with_any_value() -> None:
    base = {"config": {"sysadvisor": {"period_s": 1.5}}}
    assert spec_hash(base) != spec_hash({"config": {"sysadvisor": {"period_s": 1.25}}})
    assert spec_hash(base) != spec_hash({**base, "paused": True})
    assert spec_hash({"a": True}) != spec_hash({"a": 1})
    assert spec_hash({"a": "1"}) != spec_hash({"a": 1})
    assert spec_hash({"a": []}) != spec_hash({"a": {}})


def test_the_hash_never_fails() -> None:
    odd: dict[str, Any] = {
        "nan": float("nan"),
        "inf": float("-inf"),
        "big": 10**5000,
        "tuple": (1, 2),
        "set": {1},
        "text": "\udcff ünï",
    }
    assert len(spec_hash(odd)) == 16
    assert canonical_json({"t": (1, 2)}) == canonical_json({"t": [1, 2]})


@given(_configs)
def test_the_hash_is_stable_through_a_json_round_trip(spec: dict[str, Any]) -> None:
    assert spec_hash(json.loads(json.dumps(spec))) == spec_hash(spec)
