"""A saved alibi explainer is dill-pickled: it loads only with --allow_unpickle or a matching
--explainer_sha256. Also: the predictor going away mid-life is a 502, and settings are checked up front."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from explain_support import SELDON_PAYLOAD, explainer_command, start_explainer, start_predictor
from ferry_explain.artifacts import directory_sha256

NAMES = "--feature_names=tenure,monthly_charges,total_charges,contract"
CATEGORIES = '--categorical_map={"contract": ["month-to-month", "one-year", "two-year"]}'


@pytest.fixture(scope="module")
def saved(demo, tmp_path_factory) -> Path:
    """An AnchorTabular fitted on the demo's reference sample and saved with alibi's ``save``."""
    from alibi.explainers import AnchorTabular

    reference = pd.read_csv(demo / "churn" / "reference.csv").to_numpy(np.float64)
    explainer = AnchorTabular(
        lambda x: np.tile([0.9, 0.1], (len(x), 1)),  # alibi does not save the predictor
        feature_names=["tenure", "monthly_charges", "total_charges", "contract"],
        categorical_names={3: ["month-to-month", "one-year", "two-year"]},
        seed=0,
    )
    explainer.fit(reference)
    target = tmp_path_factory.mktemp("saved") / "anchors"
    explainer.save(str(target))
    return target


def run(*flags: str) -> subprocess.CompletedProcess:
    command = explainer_command(0, *flags)
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_saved_explainer_refused_without_opt_in(saved):
    done = run(f"--model_dir={saved}", "--predictor_host=127.0.0.1:9", NAMES)
    assert done.returncode == 2
    assert "dill-pickled" in done.stderr
    assert (
        f"--explainer_sha256={directory_sha256(saved)}" in done.stderr and "--allow_unpickle" in done.stderr
    )


def test_saved_explainer_refused_with_wrong_digest(saved):
    done = run(
        f"--model_dir={saved}", "--predictor_host=127.0.0.1:9", NAMES, f"--explainer_sha256={'0' * 64}"
    )
    assert done.returncode == 2
    assert "refusing to unpickle" in done.stderr


def test_saved_explainer_loads_with_digest_and_predictor_down_is_502(saved, demo, tmp_path):
    predictor = start_predictor(demo / "churn" / "onnx", tmp_path / "predictor.log")
    explainer = None
    try:
        explainer = start_explainer(
            tmp_path / "explainer.log",
            f"--predictor_host=127.0.0.1:{predictor.http_port}",
            f"--model_dir={saved}",
            f"--explainer_sha256={directory_sha256(saved)}",
            NAMES,
            CATEGORIES,
            "--class_names=no_churn,churn",
        )
        response = httpx.post(f"{explainer.url}/api/v1.0/explain", json=SELDON_PAYLOAD, timeout=60)
        assert response.status_code == 200, response.text
        assert response.json()["summary"]["text"].endswith(")")
        assert response.json()["summary"]["prediction"] == "no_churn"

        predictor.stop()
        down = httpx.post(f"{explainer.url}/api/v1.0/explain", json=SELDON_PAYLOAD, timeout=60)
        assert down.status_code == 502
        assert "unreachable" in down.json()["status"]["info"]
    finally:
        predictor.stop()
        if explainer is not None:
            explainer.stop()


def test_dry_run_and_bad_settings():
    done = run("--predictor_host=p:80", "--explainer_type=shap", "--threshold=0.9", "--dry_run")
    assert done.returncode == 0, done.stderr
    assert '"explainer_type": "shap"' in done.stdout
    bad = run("--predictor_host=p:80", "--threshold=0.999", "--dry_run")
    assert bad.returncode == 2 and "threshold" in bad.stderr
    missing = run("--dry_run")
    assert missing.returncode == 2 and "predictor_host is required" in missing.stderr


def test_no_reference_is_a_clear_error(tmp_path):
    done = run(f"--model_dir={tmp_path}", "--predictor_host=127.0.0.1:9")
    assert done.returncode == 2
    assert "nothing to explain with" in done.stderr


def test_console_script_is_installed():
    assert (Path(sys.executable).parent / "ferry-explainer").exists()


def test_shap_engine_never_imports_alibi(demo):
    """The licence claim behind the shap engine: building and running it loads no alibi module."""
    script = f"""
import sys
import numpy as np
from pathlib import Path
from ferry_explain import artifacts, engines
found = artifacts.resolve(model_dir=None, reference=Path({str(demo / "churn" / "reference.csv")!r}),
                          feature_names=(), class_names=(), categorical_map={{}})
predict = lambda x: np.tile([0.7, 0.3], (len(x), 1))
background = engines.background_rows(found.reference, "kmeans", 10, 0)
engine = engines.ShapEngine.fit(predict, found.features, background, 0)
payload, summary = engine.explain(np.array([[24, 65.5, 1572.0, 1]]), {{}})
assert summary["engine"] == "shap"
loaded = sorted(m for m in sys.modules if m == "alibi" or m.startswith("alibi."))
print(loaded)
sys.exit(1 if loaded else 0)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
