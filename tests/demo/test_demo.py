"""The demo artifacts (``ferry_tools.demo.build``), checked from the outside: files, exports, metrics, registry."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ferry_tools.demo import build

FEATURES = ["tenure", "monthly_charges", "total_charges", "contract"]
FILES = [
    "manifest.json",
    "churn/data/churn.parquet",
    "churn/reference.csv",
    "churn/meta.json",
    "digits/meta.json",
    "feast/customer_stats.parquet",
    "feast/transaction_stats.parquet",
    "mlflow/mlflow.db",
] + [
    f"{model}/{kind}/{name}"
    for model in ("churn", "digits")
    for kind, file in (("onnx", "model.onnx"), ("torchscript", "model.pt"), ("export", "model.pt2"))
    for name in (file, "ferry.json")
]
#: Files whose bytes must not change between two builds.
DATA_FILES = [
    "churn/data/churn.parquet",
    "churn/reference.csv",
    "churn/meta.json",
    "digits/meta.json",
    "feast/customer_stats.parquet",
    "feast/transaction_stats.parquet",
]


def _build(directory: Path) -> tuple[dict, list[str]]:
    lines: list[str] = []
    # Run from an empty directory so anything written to the working directory (./mlruns, ./mlflow.db) shows.
    cwd = directory / "cwd"
    cwd.mkdir()
    previous = Path.cwd()
    os.chdir(cwd)
    try:
        manifest = build(directory / "demo", quick=True, progress=lines.append)
    finally:
        os.chdir(previous)
    assert list(cwd.iterdir()) == [], "build wrote into the working directory"
    return manifest, lines


@pytest.fixture(scope="module")
def root(demo_dir) -> Path:
    """The quick demo build shared by every suite (tests/conftest.py)."""
    return Path(demo_dir).resolve()


@pytest.fixture(scope="module")
def manifest(root) -> dict:
    return json.loads((root / "manifest.json").read_text())


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory) -> tuple[dict, list[str]]:
    """A second, independent quick build: what build() returned and the progress lines it reported."""
    return _build(tmp_path_factory.mktemp("again"))


@pytest.fixture(scope="module")
def churn_frame(root) -> pd.DataFrame:
    return pd.read_parquet(root / "churn/data/churn.parquet")


@pytest.fixture(scope="module")
def heldout(churn_frame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Held-out inputs and labels per model, chosen the way the demo documents it."""
    from sklearn.datasets import load_digits

    test = churn_frame[churn_frame["split"] == "test"]
    images, labels = load_digits(return_X_y=True)
    every_fifth = np.arange(len(images)) % 5 == 0
    return {
        "churn": (test[FEATURES].to_numpy(np.float32), test["churn"].to_numpy()),
        "digits": (images[every_fifth].reshape(-1, 1, 8, 8).astype(np.float32), labels[every_fifth]),
    }


def _runners(model_root: Path) -> dict:
    """name -> callable(ndarray) -> probabilities, one per export format."""
    import onnxruntime
    import torch

    session = onnxruntime.InferenceSession(
        str(model_root / "onnx/model.onnx"), providers=["CPUExecutionProvider"]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated in torch 2.13
        scripted = torch.jit.load(str(model_root / "torchscript/model.pt"))
    exported = torch.export.load(str(model_root / "export/model.pt2")).module()

    def run_torch(module):
        def run(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return module(torch.from_numpy(x)).numpy()

        return run

    return {
        "onnx": lambda x: session.run(["probabilities"], {"input-0": x})[0],
        "torchscript": run_torch(scripted),
        "export": run_torch(exported),
    }


@pytest.fixture(scope="module")
def runners(root) -> dict:
    return {model: _runners(root / model) for model in ("churn", "digits")}


def test_every_artifact_exists(root):
    missing = [name for name in FILES if not (root / name).is_file()]
    assert missing == []
    # The ONNX files are self-contained: no external .onnx.data beside them.
    assert not list(root.rglob("*.onnx.data"))


def test_progress_reports_each_step(rebuilt):
    _, lines = rebuilt
    steps = [line for line in lines if line.startswith("[")]
    assert [line.split("]")[0] for line in steps] == [f"[{i}/10" for i in range(1, 11)]
    assert all(line.endswith("...") for line in steps)


def test_manifest_is_what_build_returned(rebuilt, manifest, root):
    returned, _ = rebuilt
    assert json.loads((Path(returned["root"]) / "manifest.json").read_text()) == returned
    assert manifest["quick"] is True
    assert manifest["mlflow"]["tracking_uri"] == f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"
    assert set(manifest["churn"]["model_dirs"]) == {"onnx", "torchscript", "export"}


@pytest.mark.parametrize("model", ["churn", "digits"])
def test_signature_files_match_the_onnx_graph(root, model):
    import onnx

    proto = onnx.load(str(root / model / "onnx/model.onnx"))
    graph = proto.graph
    for kind in ("onnx", "torchscript", "export"):
        signature = json.loads((root / model / kind / "ferry.json").read_text())
        assert signature["name"] == model
        assert [spec["name"] for spec in signature["inputs"]] == [node.name for node in graph.input]
        assert [spec["name"] for spec in signature["outputs"]] == [node.name for node in graph.output]
        assert signature["inputs"][0]["datatype"] == signature["outputs"][0]["datatype"] == "FP32"
        assert signature["outputs"][0]["shape"] == [-1, 2 if model == "churn" else 10]
        assert len(signature["class_names"]) == signature["outputs"][0]["shape"][1]
    assert [node.name for node in graph.input] == ["input-0"]
    assert [node.name for node in graph.output] == ["probabilities"]
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].dim_value  # dynamic batch axis
    assert [d.dim_value for d in dims[1:]] == ([4] if model == "churn" else [1, 8, 8])
    assert {entry.domain: entry.version for entry in proto.opset_import}[""] >= 17


@pytest.mark.parametrize("batch", [1, 7])
@pytest.mark.parametrize("model", ["churn", "digits"])
def test_the_three_exports_agree(runners, heldout, model, batch):
    x = np.ascontiguousarray(heldout[model][0][3 : 3 + batch])
    results = {kind: run(x) for kind, run in runners[model].items()}
    classes = 2 if model == "churn" else 10
    for kind, probabilities in results.items():
        assert probabilities.shape == (batch, classes), kind
        assert probabilities.dtype == np.float32, kind
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5, err_msg=kind)
    np.testing.assert_allclose(results["torchscript"], results["onnx"], atol=1e-5)
    np.testing.assert_allclose(results["export"], results["onnx"], atol=1e-5)


def test_churn_model_beats_chance_on_heldout_rows(runners, heldout, root, manifest):
    from sklearn.metrics import roc_auc_score

    x, y = heldout["churn"]
    probabilities = runners["churn"]["onnx"](x)
    auc = roc_auc_score(y, probabilities[:, 1])
    assert auc > 0.7
    assert auc == pytest.approx(manifest["churn"]["metrics"]["roc_auc"], abs=1e-4)
    # The outputs are probabilities, not just scores: on average they match the held-out churn rate.
    assert abs(probabilities[:, 1].mean() - y.mean()) < 0.1
    meta = json.loads((root / "churn/meta.json").read_text())
    assert meta["metrics"] == manifest["churn"]["metrics"]


def test_churn_model_takes_raw_feature_values(runners):
    """Standardisation is inside the model: raw values as the example clients send them give sensible answers."""
    run = runners["churn"]["onnx"]
    client_example = run(np.array([[24, 65.5, 1572.0, 1]], dtype=np.float32))[0]
    new_expensive_monthly = run(np.array([[1, 105.0, 105.0, 0]], dtype=np.float32))[0, 1]
    loyal_two_year = run(np.array([[70, 25.0, 1750.0, 2]], dtype=np.float32))[0, 1]
    assert 0.0 < client_example[1] < 1.0
    assert new_expensive_monthly > 0.5 > loyal_two_year


def test_digits_cnn_is_accurate_on_heldout_images(runners, heldout, manifest):
    x, y = heldout["digits"]
    accuracy = (runners["digits"]["onnx"](x).argmax(axis=1) == y).mean()
    assert accuracy > 0.9
    assert accuracy == pytest.approx(manifest["digits"]["metrics"]["accuracy"], abs=1e-6)


def test_churn_data_set(churn_frame):
    frame = churn_frame
    assert list(frame.columns) == [
        "customer_id",
        "customer_num",
        "event_timestamp",
        *FEATURES,
        "loyalty_score",
        "txn_count_7d",
        "churn",
        "split",
    ]
    assert len(frame) == 2000 and frame["customer_id"].is_unique
    assert frame["customer_id"].iloc[0] == "C00001" and frame["customer_num"].iloc[0] == 1
    assert str(frame["event_timestamp"].dt.tz) == "UTC"
    end = pd.Timestamp("2026-11-01", tz="UTC")
    assert frame["event_timestamp"].between(end - pd.Timedelta(days=30), end).all()
    assert frame["tenure"].between(0, 72).all() and frame["tenure"].median() < 36  # skewed to newer customers
    assert frame["monthly_charges"].between(18, 120).all()
    assert set(frame["contract"]) == {0, 1, 2}
    assert frame["loyalty_score"].between(0, 1).all() and (frame["txn_count_7d"] >= 0).all()
    assert 0.18 < frame["churn"].mean() < 0.32
    # The signal is the documented one: month-to-month customers churn far more than two-year ones.
    by_contract = frame.groupby("contract")["churn"].mean()
    assert by_contract[0] > 2 * by_contract[2]
    ratio = frame["total_charges"] / (frame["tenure"] * frame["monthly_charges"])
    assert ratio[frame["tenure"] > 0].between(0.7, 1.3).all()


def test_reference_sample_and_meta(root):
    reference = pd.read_csv(root / "churn/reference.csv")
    assert list(reference.columns) == FEATURES and len(reference) == 100
    meta = json.loads((root / "churn/meta.json").read_text())
    assert meta["feature_names"] == FEATURES
    assert meta["class_names"] == ["no_churn", "churn"]
    assert meta["categorical_names"] == {
        "contract": {"0": "month-to-month", "1": "one-year", "2": "two-year"}
    }
    digits = json.loads((root / "digits/meta.json").read_text())
    assert digits["class_names"] == [str(d) for d in range(10)]


def test_feast_offline_data_matches_the_churn_data(root, churn_frame):
    customers = pd.read_parquet(root / "feast/customer_stats.parquet")
    transactions = pd.read_parquet(root / "feast/transaction_stats.parquet")
    keys = ["customer_id", "customer_num", "event_timestamp"]
    expected_dtypes = {
        "customer_id": "object",
        "customer_num": "int64",
        "event_timestamp": "datetime64[ns, UTC]",
        "tenure": "int64",
        "monthly_charges": "float64",
        "total_charges": "float64",
        "contract": "int64",
        "loyalty_score": "float64",
        "txn_count_7d": "int64",
    }
    assert list(customers.columns) == [*keys, *FEATURES, "loyalty_score"]
    assert list(transactions.columns) == [*keys, "txn_count_7d"]
    for table in (customers, transactions):
        assert {column: str(dtype) for column, dtype in table.dtypes.items()} == {
            column: expected_dtypes[column] for column in table.columns
        }
        pd.testing.assert_frame_equal(table, churn_frame[list(table.columns)])


def test_mlflow_registry_serves_the_same_model(root, manifest, heldout, runners, monkeypatch):
    import mlflow
    import mlflow.pyfunc

    uri = manifest["mlflow"]["tracking_uri"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    # build() put mlflow's process-wide URI back, so the environment decides again.
    assert mlflow.get_tracking_uri() == uri
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    production = client.get_model_version_by_alias("churn-classifier", "Production")
    assert str(production.version) == "2"
    assert {str(v.version) for v in client.search_model_versions("name='churn-classifier'")} == {"1", "2"}
    # Both flavours' files live under the registry's own artifact folder (not ./mlruns).
    assert len(list((root / "mlflow/artifacts").rglob("model.pt2"))) == 1
    assert len(list((root / "mlflow/artifacts").rglob("model.onnx"))) == 1

    x = heldout["churn"][0][:25]
    expected = runners["churn"]["onnx"](x)
    onnx_flavour = mlflow.pyfunc.load_model("models:/churn-classifier@Production")
    assert "onnx" in onnx_flavour.metadata.flavors
    np.testing.assert_allclose(onnx_flavour.predict({"input-0": x})["probabilities"], expected, atol=1e-5)
    pytorch_flavour = mlflow.pyfunc.load_model("models:/churn-classifier/1")
    assert "pytorch" in pytorch_flavour.metadata.flavors
    np.testing.assert_allclose(pytorch_flavour.predict(x), expected, atol=1e-5)


def test_building_twice_writes_identical_data_and_metrics(manifest, root, rebuilt):
    again, _ = rebuilt
    other = Path(again["root"])
    for name in DATA_FILES:
        assert (root / name).read_bytes() == (other / name).read_bytes(), name
    assert again["churn"]["metrics"] == manifest["churn"]["metrics"]
    assert again["digits"]["metrics"] == manifest["digits"]["metrics"]
