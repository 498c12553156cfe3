"""Suite-wide settings.

* Hypothesis: no per-example deadline (a loaded 2-core CI machine is not a bug),
  and derandomized under CI so that a run is reproducible.
* Strict mode (``KATALYST_STRICT_TESTS=1``, set by ``.ci/run``): a kernel test that
  cannot run fails instead of skipping, and any skipped test fails the session, so
  a skip is never counted as a pass.
* RBAC coverage (``KATALYST_RBAC_COVERAGE=1``, set by ``make test``): after a run of
  the whole suite, every permission the shipped manifests grant our processes must
  have been used by one of them against the fake API server (which refuses what
  they do not grant: :mod:`tests.support.rbac`), so that no grant outlives the
  code that needed it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.support import rbac
from tests.support.kernel import STRICT_ENV

RBAC_COVERAGE_ENV = "KATALYST_RBAC_COVERAGE"

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


def _fail_session(session: pytest.Session, message: str) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_line(message, red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _whole_suite(session: pytest.Session) -> bool:
    """Whether this run was the whole suite: no paths, keywords or markers chosen."""
    option = session.config.option
    args = [a.rstrip("/") for a in session.config.args]
    return (
        args in ([], ["tests"], [str(session.config.rootpath / "tests")])
        and not getattr(option, "keyword", "")
        and not getattr(option, "markexpr", "")
        and not getattr(option, "lf", False)
        and not getattr(option, "collectonly", False)
    )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In strict mode, a run with skipped tests fails; with RBAC coverage on, a whole
    run that left a granted permission unused fails."""
    if exitstatus != 0:
        return
    if os.environ.get(STRICT_ENV) == "1" and _skipped:
        _fail_session(
            session,
            f"{STRICT_ENV}=1: {len(_skipped)} skipped test(s) fail this run: "
            + ", ".join(_skipped[:10]),
        )
    if os.environ.get(RBAC_COVERAGE_ENV) == "1" and _whole_suite(session):
        unused = sorted(rbac.shipped_policy().units() - rbac.EXERCISED)
        if unused:
            _fail_session(
                session,
                f"{RBAC_COVERAGE_ENV}=1: the shipped RBAC grants what no process used in "
                "this run (remove the grant, or test the code that needs it): "
                + "; ".join(f"{a} {v} {g or 'core'}/{r}" for a, v, g, r in unused),
            )
