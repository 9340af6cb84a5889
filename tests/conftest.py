"""Fixtures shared by every suite."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory):
    """The demo artifacts (quick build): churn and digits models, the MLflow registry, Feast data."""
    from ferry.demo import build

    out = tmp_path_factory.mktemp("demo")
    build(out, quick=True, progress=lambda line: None)
    return out
