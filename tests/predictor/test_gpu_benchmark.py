"""The GPU case of the benchmark (benchmarks/gpu.py) run on CPU: the same models, exports, servers, load
generator, answer checks and target arithmetic that a GPU machine runs, so the harness is known to work before a
GPU is at hand. Real ferry-predictor servers on loopback, real wrk load; bounded to a few seconds per point."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not installed (make test installs it)"
)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-bench")
    command = [
        sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--device=cpu", "--runs=1", "--seconds=1", "--in_process_seconds=0.1",
        "--models=digits,resnet18",
        "--dtypes=fp32,fp16", "--side=16", f"--json={out / 'gpu.json'}",
    ]  # fmt: skip
    env = {**os.environ, "FERRY_BENCH_MODELS": str(out / "models"), "FERRY_BENCH_PYTHON": sys.executable}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "gpu.json").read_text()), done.stdout


def test_every_model_backend_and_precision_is_measured_and_answers_correctly(report):
    data, _ = report
    assert set(data["configs"]) == {
        f"{model}-{backend}-{dtype}"
        for model in ("digits", "resnet18")
        for backend in ("onnx", "torchscript")
        for dtype in ("fp32", "fp16")
    }
    for name, record in data["configs"].items():
        assert "error" not in record, (name, record)
        assert set(record["in_process_rows_per_s"]) == {"1", "8", "16", "32", "64"}
        for side in ("batching_on", "batching_off"):
            # A wrong answer would have been recorded as an error instead of points.
            point = record[side]["points"]["64"]
            assert point["rps"] > 0 and point["non_2xx"] == 0 and point["socket_errors"] == 0, (
                name,
                side,
                point,
            )


def test_batching_forms_batches_and_the_targets_come_from_the_measured_points(report):
    data, stdout = report
    for name, record in data["configs"].items():
        on, off = record["batching_on"]["points"]["64"], record["batching_off"]["points"]["64"]
        assert on["rows_per_batch"] > 8, (name, on)  # 64 connections: batches of many rows
        assert off["rows_per_batch"] == pytest.approx(1.0), (name, off)
        targets = record["targets"]
        assert targets["batching_on_over_off"] == pytest.approx(on["rps"] / off["rps"])
        ceiling = targets["in_process_at_batch_rows_per_s"]
        low, high = (
            sorted(record["in_process_rows_per_s"].values())[0],
            max(record["in_process_rows_per_s"].values()),
        )
        assert low <= ceiling <= high
        assert targets["server_over_in_process"] == pytest.approx(on["rps"] / ceiling)
        assert targets["batching_pass"] == (targets["batching_on_over_off"] >= 3.0)
        assert f"{name} " in stdout


def test_results_md_shows_the_gpu_case_with_the_device_named(report, tmp_path):
    data, _ = report
    sys.path.insert(0, str(REPO / "benchmarks"))
    import report

    (tmp_path / "gpu.json").write_text(json.dumps(data))
    _, suites, _ = report.load_run(tmp_path)
    section = "\n".join(report.gpu_section(suites))
    assert f"Device: **{data['device']}**" in section
    assert section.count("| digits |") == 4 and section.count("| resnet18 |") == 4
    assert "Not measured" in "\n".join(report.gpu_section({}))
