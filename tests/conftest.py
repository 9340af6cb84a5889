"""Fixtures shared by every suite, and the rule on skips: only a missing device may skip a test."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

# The only reasons a test may skip: hardware this machine lacks. Every other skip (a package, a program, an
# environment not built) is turned into a failure, so a green run means every test ran.
DEVICE_SKIP_REASONS = ("no CUDA device", "no Docker engine")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if not reason.removeprefix("Skipped: ").startswith(DEVICE_SKIP_REASONS):
        report.outcome = "failed"
        report.longrepr = f"skipped for a reason other than a missing device (not allowed): {reason}"


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory):
    """The demo artifacts (quick build): churn and digits models, the MLflow registry, Feast data."""
    from ferry_tools.demo import build

    out = tmp_path_factory.mktemp("demo")
    build(out, quick=True, progress=lambda line: None)
    return out
