"""``katalyst-controller``: the composition root of this process.

KatalystCustomConfig resolution into per-node CustomNodeConfig, CNR lifecycle, config
validation. Each process has exactly one composition root; it builds every
dependency and runs the loops and servers as children of one task group.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from katalyst import __version__


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``katalyst-controller``."""
    parser = argparse.ArgumentParser(
        prog="katalyst-controller", description=__doc__.split("\n\n")[1] if __doc__ else None
    )
    parser.add_argument("--version", action="version", version=f"katalyst-controller {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``katalyst-controller`` console script."""
    build_parser().parse_args(argv)
    # The process's loops are not built yet: say so plainly rather than pretend to run.
    print(
        "katalyst-controller: the run loop arrives with the dynamic-configuration issue (#6); "
        "only --help and --version work in this release",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
