"""CPU and memory-node sets in the kernel's list format (``0-3,8,10-11``)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")
# A sanity bound: no machine has this many CPUs, and it keeps a hostile string
# such as "0-999999999" from allocating a huge set.
MAX_CPU_ID = 65535


@dataclass(frozen=True, slots=True)
class CPUSet:
    """An immutable set of CPU (or NUMA node) ids with the kernel's list syntax."""

    ids: frozenset[int]

    @classmethod
    def of(cls, ids: Iterable[int]) -> CPUSet:
        """Build a set from ids, rejecting negative or absurdly large ones."""
        frozen = frozenset(ids)
        for i in frozen:
            if i < 0 or i > MAX_CPU_ID:
                raise ValueError(f"cpu id {i} out of range 0..{MAX_CPU_ID}")
        return cls(frozen)

    @classmethod
    def parse(cls, text: str) -> CPUSet:
        """Parse the kernel list format; the empty string (or only blanks) is the empty set.

        Raises ``ValueError`` naming the text and the rule for anything else the
        kernel's ``bitmap_parselist`` would reject (bad ranges, reversed ranges).
        """
        stripped = text.strip()
        if not stripped:
            return cls(frozenset())
        ids: set[int] = set()
        for part in stripped.split(","):
            m = _RANGE.match(part.strip())
            if m is None:
                raise ValueError(f"cpu list {text!r}: {part!r} is not N or N-M")
            lo = int(m.group(1))
            hi = int(m.group(2)) if m.group(2) is not None else lo
            if hi < lo:
                raise ValueError(f"cpu list {text!r}: range {part!r} is reversed")
            if hi > MAX_CPU_ID:
                raise ValueError(f"cpu list {text!r}: id {hi} exceeds {MAX_CPU_ID}")
            ids.update(range(lo, hi + 1))
        return cls(frozenset(ids))

    def __str__(self) -> str:
        """Canonical kernel list format, ranges merged: ``0-3,6``."""
        out: list[str] = []
        ordered = sorted(self.ids)
        i = 0
        while i < len(ordered):
            j = i
            while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
                j += 1
            out.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
            i = j + 1
        return ",".join(out)

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self.ids))

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, cpu: object) -> bool:
        return cpu in self.ids

    def issubset(self, other: CPUSet) -> bool:
        """Whether every id here is also in ``other``."""
        return self.ids <= other.ids

    def union(self, other: CPUSet) -> CPUSet:
        """Ids in either set."""
        return CPUSet(self.ids | other.ids)

    def difference(self, other: CPUSet) -> CPUSet:
        """Ids here but not in ``other``."""
        return CPUSet(self.ids - other.ids)

    def intersection(self, other: CPUSet) -> CPUSet:
        """Ids in both sets."""
        return CPUSet(self.ids & other.ids)
