"""Tests of the wire protocol definitions and their generated code."""
