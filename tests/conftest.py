"""Suite-wide settings.

* Hypothesis: no per-example deadline (a loaded 2-core CI machine is not a bug),
  and derandomized under CI so that a run is reproducible.
* Strict mode (``KATALYST_STRICT_TESTS=1``, set by ``.ci/run``): a kernel test that
  cannot run fails instead of skipping, and any skipped test fails the session, so
  a skip is never counted as a pass.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.support.kernel import STRICT_ENV

settings.register_profile(
    "katalyst", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.register_profile("katalyst-ci", parent=settings.get_profile("katalyst"), derandomize=True)
settings.load_profile("katalyst-ci" if os.environ.get("CI") else "katalyst")

_skipped: list[str] = []


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A fresh directory with a short path, removed afterwards: an agent's plugin
    sockets live below its state directory, and a unix socket path must fit in
    106 bytes (gRPC's limit), which ``tmp_path`` often does not leave room for."""
    path = Path(tempfile.mkdtemp(prefix="kq"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Remember every skipped test (xfails are not skips)."""
    if report.skipped and not hasattr(report, "wasxfail"):
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In strict mode, a run with skipped tests fails."""
    if os.environ.get(STRICT_ENV) == "1" and _skipped and exitstatus == 0:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(
                f"{STRICT_ENV}=1: {len(_skipped)} skipped test(s) fail this run: "
                + ", ".join(_skipped[:10]),
                red=True,
            )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
