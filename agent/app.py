"""``katalyst-agent``: the composition root of this process.

the node agent: QoS resource manager plugins (kubelet hook), sysadvisor, eviction,
reporter and cgroup enforcement. Each process has exactly one composition root; it
builds every
dependency and runs the loops and servers as children of one task group.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from katalyst import __version__


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``katalyst-agent``."""
    parser = argparse.ArgumentParser(
        prog="katalyst-agent", description=__doc__.split("\n\n")[1] if __doc__ else None
    )
    parser.add_argument("--version", action="version", version=f"katalyst-agent {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``katalyst-agent`` console script."""
    build_parser().parse_args(argv)
    # The process's loops are not built yet: say so plainly rather than pretend to run.
    print(
        "katalyst-agent: the run loop arrives with the agent-core issue (#3); "
        "only --help and --version work in this release",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
