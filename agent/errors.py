"""The error every configuration loader of the agent raises."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value broke a rule; the message names the field and the rule."""
