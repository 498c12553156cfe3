"""The kernel's CPU list format."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from katalyst.cpuset import CPUSet


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("", set()),
        ("\n", set()),
        ("0", {0}),
        ("0-3", {0, 1, 2, 3}),
        ("0-1,4,6-7\n", {0, 1, 4, 6, 7}),
    ],
)
def test_parse(text: str, ids: set[int]) -> None:
    assert CPUSet.parse(text).ids == ids


@pytest.mark.parametrize("bad", ["a", "3-1", "1-", "-1", "1,,2", "0-99999999", "1 2"])
def test_parse_rejects_with_the_text_named(bad: str) -> None:
    with pytest.raises(ValueError, match="cpu list"):
        CPUSet.parse(bad)


def test_format_merges_ranges() -> None:
    assert str(CPUSet.of([3, 0, 1, 2, 7, 9, 10])) == "0-3,7,9-10"
    assert str(CPUSet.of([])) == ""


@given(st.frozensets(st.integers(min_value=0, max_value=300)))
def test_round_trip(ids: frozenset[int]) -> None:
    assert CPUSet.parse(str(CPUSet.of(ids))).ids == ids


@given(st.text(max_size=30))
def test_arbitrary_text_parses_or_raises_value_error(text: str) -> None:
    with contextlib.suppress(ValueError):
        CPUSet.parse(text)
