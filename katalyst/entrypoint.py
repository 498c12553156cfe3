"""What every console script shares: its argument parser's common flags."""

from __future__ import annotations

import argparse
import sys

from katalyst import __version__


def base_parser(prog: str, description: str | None) -> argparse.ArgumentParser:
    """An argument parser with ``--version``; each process adds its own flags."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version=f"{prog} {__version__}")
    return parser


def not_built_yet(prog: str, issue: str) -> int:
    """Say plainly that a process's run loop does not exist yet; exit status 2."""
    print(
        f"{prog}: the run loop arrives with {issue}; only --help and --version work in "
        "this release",
        file=sys.stderr,
    )
    return 2
