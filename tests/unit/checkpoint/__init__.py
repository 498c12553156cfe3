"""Tests of the crash-safe checkpoint store."""
