"""What every console script shares: its argument parser's common flags."""

from __future__ import annotations

import argparse

from katalyst import __version__


def base_parser(prog: str, description: str | None) -> argparse.ArgumentParser:
    """An argument parser with ``--version``; each process adds its own flags."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version=f"{prog} {__version__}")
    return parser
