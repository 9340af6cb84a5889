"""Inside kserve.ModelServer, Ferry answers the inference paths ahead of KServe's middleware stack; every other
path still goes through it. ``kserve_adapter_app.py`` plays it in a process of its own (see there why)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

APP = Path(__file__).with_name("kserve_adapter_app.py")


@pytest.fixture(scope="module")
def played(repo_dir):
    done = subprocess.run(
        [sys.executable, str(APP), str(repo_dir / "churn")], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_inference_paths_are_exactly_v2_infer_and_v1_predict(played):
    inference = {path for path, answer in played["inference_paths"].items() if answer}
    assert inference == {
        "/v2/models/churn/infer",
        "/v2/models/churn/versions/1/infer",
        "/v1/models/churn:predict",
    }


def test_inference_is_answered_ahead_of_kserves_middlewares_and_the_rest_goes_through_them(played):
    answers = played["answers"]
    for key in ("v2", "versioned", "v1", "unknown", "bad"):
        assert answers[key]["stack_so_far"] == 0, f"{key}: an inference request went through the host's stack"
    assert answers["v2"]["status"] == 200, answers["v2"]
    assert answers["versioned"]["status"] == 200, answers["versioned"]
    v2_out = np.reshape(answers["v2"]["json"]["outputs"][0]["data"], (2, 2))
    np.testing.assert_allclose(np.reshape(answers["versioned"]["json"]["outputs"][0]["data"], (2, 2)), v2_out)
    assert answers["v1"]["status"] == 200, answers["v1"]
    np.testing.assert_allclose(answers["v1"]["json"]["predictions"], v2_out, atol=1e-6)
    assert answers["v2"]["request_id"]  # Ferry's request ids
    # Ferry's errors, in KServe's shape: {"error": ...} naming what was wrong.
    assert answers["unknown"]["status"] == 404 and "nope" in answers["unknown"]["json"]["error"]
    assert answers["bad"]["status"] == 400 and "inputs" in answers["bad"]["json"]["error"]
    # Everything else is the host's, through its stack.
    assert answers["metadata"]["status"] == 200
    assert answers["metadata"]["json"] == {"name": "churn", "answered_by": "the host"}
    assert answers["wrong_method"]["status"] in (404, 405)
    assert played["through_stack"] == [["GET", "/v2/models/churn"], ["GET", "/v2/models/churn/infer"]]
