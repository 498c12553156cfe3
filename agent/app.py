"""``katalyst-agent``: the composition root of this process.

The node agent: QoS resource manager plugins (kubelet hook), sysadvisor,
eviction, reporter and cgroup enforcement.

Each process has exactly one composition root: it builds every dependency and
runs the loops and servers as children of one task group.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from katalyst.entrypoint import base_parser, not_built_yet

PROG = "katalyst-agent"


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``katalyst-agent``."""
    return base_parser(PROG, __doc__.split("\n\n")[1] if __doc__ else None)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``katalyst-agent`` console script."""
    build_parser().parse_args(argv)
    return not_built_yet(PROG, "the agent-core issue (#3)")


if __name__ == "__main__":
    sys.exit(main())
