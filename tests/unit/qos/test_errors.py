"""QoSValidationError: one type, and a message that names the input, value and rule."""

from __future__ import annotations

import copy
import pickle

import pytest

from katalyst.qos import QoSValidationError
from katalyst.qos.errors import MISSING


def test_message_names_key_value_and_rule() -> None:
    err = QoSValidationError(key="katalyst.kubewharf.io/qos_level", value="foo", rule="must be x")
    assert str(err) == (
        'annotation "katalyst.kubewharf.io/qos_level": value "foo" is invalid: must be x'
    )
    assert (err.key, err.value, err.rule, err.kind, err.field) == (
        "katalyst.kubewharf.io/qos_level",
        "foo",
        "must be x",
        "annotation",
        None,
    )


def test_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="must be x"):
        raise QoSValidationError(key="k", value="v", rule="must be x")


def test_field_inside_an_annotation_is_named() -> None:
    err = QoSValidationError(key="a/b", field="numa_binding", value="yes", rule="must be y")
    assert str(err) == 'annotation "a/b" field "numa_binding": value "yes" is invalid: must be y'


def test_field_path_kind() -> None:
    err = QoSValidationError(key="spec.nodeName", kind="field", value=3, rule="must be a string")
    assert str(err) == 'field "spec.nodeName": value 3 is invalid: must be a string'
    assert err.value == "3"


def test_missing_value_is_shown_as_missing() -> None:
    err = QoSValidationError(
        key="metadata.uid", kind="field", value=MISSING, rule="must be present"
    )
    assert str(err) == 'field "metadata.uid": value <missing> is invalid: must be present'
    assert err.value == "<missing>"


def test_long_values_are_truncated_for_display() -> None:
    err = QoSValidationError(key="k", value="x" * 10_000, rule="r")
    assert err.value.startswith("x" * 100)
    assert err.value.endswith("...(9900 more characters)")
    assert len(str(err)) < 200


def test_control_characters_cannot_forge_log_lines() -> None:
    err = QoSValidationError(key="k\nfake", value='a"\nb', rule="r")
    assert "\n" not in str(err)
    assert '\\"' in str(err)


def test_strings_are_quoted_and_other_values_are_not() -> None:
    assert 'value "5" is' in str(QoSValidationError(key="k", value="5", rule="r"))
    assert "value 5 is" in str(QoSValidationError(key="k", value=5, rule="r"))
    assert "value true is" in str(QoSValidationError(key="k", value=True, rule="r"))
    assert 'value ["a\\nb"] is' in str(QoSValidationError(key="k", value=["a\nb"], rule="r"))


def test_lone_surrogates_are_printable() -> None:
    err = QoSValidationError(key="k", value="\ud800", rule="r")
    str(err).encode("utf-8")  # must not raise UnicodeEncodeError


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, "null"),
        (True, "true"),
        (1.5, "1.5"),
        ([1, "a"], '[1, "a"]'),
        ({"a": 1}, '{"a": 1}'),
        (10**5000, "<integer of 16610 bits>"),
        (object(), "<object>"),
    ],
    ids=["null", "bool", "float", "list", "dict", "huge-int", "object"],
)
def test_non_string_values_are_rendered_safely(value: object, shown: str) -> None:
    assert QoSValidationError(key="k", value=value, rule="r").value == shown


def test_self_referencing_value_does_not_break_the_message() -> None:
    loop: list[object] = []
    loop.append(loop)
    assert QoSValidationError(key="k", value=loop, rule="r").value == "<list>"


def test_errors_survive_pickling_and_copying() -> None:
    error = QoSValidationError(
        key="katalyst.kubewharf.io/qos_level", value="foo", rule="must be a level", field=None
    )
    # Our own bytes, just produced: nothing untrusted is unpickled.
    for clone in (pickle.loads(pickle.dumps(error)), copy.deepcopy(error)):  # noqa: S301
        assert isinstance(clone, QoSValidationError)
        assert str(clone) == str(error)
        assert (clone.key, clone.value, clone.rule) == (error.key, error.value, error.rule)
