"""Log lines as text and as JSON."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from katalyst.logsetup import JSONFormatter, configure_logging


def test_json_lines_carry_level_logger_message_and_exception() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.getLogger("agent.x").makeRecord(
            "agent.x", logging.ERROR, __file__, 1, "failed %s", ("twice",), sys.exc_info()
        )
    entry = json.loads(JSONFormatter().format(record))
    assert entry["level"] == "error"
    assert entry["logger"] == "agent.x"
    assert entry["msg"] == "failed twice"
    assert "RuntimeError: boom" in entry["exc"]
    assert entry["ts"].endswith("Z")


def test_configure_logging_replaces_root_handlers(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        configure_logging("json")
        logging.getLogger("t").warning("hello")
        assert json.loads(capsys.readouterr().err.strip())["msg"] == "hello"
        configure_logging("text")
        logging.getLogger("t").warning("plain")
        assert "WARNING t: plain" in capsys.readouterr().err
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
