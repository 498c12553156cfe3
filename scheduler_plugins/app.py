"""``katalyst-scheduler-extender``: the composition root of this process.

The kube-scheduler HTTP extender: reclaimed-resource fit, GPU sharing and
topology-aware placement.

Each process has exactly one composition root: it builds every dependency and
runs the loops and servers as children of one task group.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from katalyst.entrypoint import base_parser, not_built_yet

PROG = "katalyst-scheduler-extender"


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``katalyst-scheduler-extender``."""
    return base_parser(PROG, __doc__.split("\n\n")[1] if __doc__ else None)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``katalyst-scheduler-extender`` console script."""
    build_parser().parse_args(argv)
    return not_built_yet(PROG, "the scheduler-extender issue (#7)")


if __name__ == "__main__":
    sys.exit(main())
