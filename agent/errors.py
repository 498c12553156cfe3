"""The error every configuration loader of the agent raises (defined with the
configuration schema in :mod:`katalyst.settings`)."""

from __future__ import annotations

from katalyst.settings import ConfigError

__all__ = ["ConfigError"]
