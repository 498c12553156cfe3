"""Tests for katalyst.qos."""
