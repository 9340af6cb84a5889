"""``ferry up --check``: the user's client requests against a running local stack, each answer compared with a
reference computed here, in-process, from the same demo artifacts the stack serves.

- the predictor's probabilities (V2 REST, V2 gRPC, V1, Seldon) against onnxruntime run on the demo ONNX model;
- the transformer's churn probabilities and risk labels against the newest feature rows of the demo's Feast
  data, run through the same model and labelled with the transformer's default thresholds;
- the explainer's predicted class against the model's, and its anchor against the model's feature names, asked
  of the explainer and of the predictor's address (which forwards it), as Seldon clients do.

Each check prints one line, PASS or FAIL with the reason; the exit code is 0 only if every check passed."""

from __future__ import annotations

import argparse
import functools
import json
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

EXAMPLE_ROW = [24, 65.5, 1572.0, 1]
FEATURE_NAMES = ["tenure", "monthly_charges", "total_charges", "contract"]
CUSTOMERS = ["C00001", "C00002"]
TOLERANCE = 1e-4


class Mismatch(Exception):
    """An answer that arrived but is not the reference's."""


@dataclass
class Reference:
    """What the stack must answer, computed from the demo artifacts in this process."""

    model_path: Path
    class_names: list[str]
    thresholds: tuple[float, float]  # the transformer's defaults (high, medium), which `ferry up` runs with
    feature_names: list[str]
    features_by_customer: dict[str, list[float]]

    @classmethod
    def load(cls, demo: Path) -> Reference:
        import pandas as pd

        meta = json.loads((demo / "churn" / "meta.json").read_text())
        stats = pd.read_parquet(demo / "feast" / "customer_stats.parquet")
        from ferry_feast.settings import TransformerSettings

        newest = stats.sort_values("event_timestamp").groupby("customer_id").tail(1).set_index("customer_id")
        fields = TransformerSettings.model_fields
        return cls(
            model_path=demo / "churn" / "onnx" / "model.onnx",
            class_names=list(meta["class_names"]),
            thresholds=(fields["high_risk_threshold"].default, fields["medium_risk_threshold"].default),
            feature_names=FEATURE_NAMES,
            features_by_customer={c: newest.loc[c, FEATURE_NAMES].astype(float).tolist() for c in CUSTOMERS},
        )

    @functools.cached_property
    def session(self):
        import onnxruntime

        return onnxruntime.InferenceSession(str(self.model_path), providers=["CPUExecutionProvider"])

    def probabilities(self, rows: list[list[float]]) -> np.ndarray:
        return self.session.run(["probabilities"], {"input-0": np.asarray(rows, dtype=np.float32)})[0]

    def risk(self, churn: float) -> str:
        """Strictly above the high threshold is high risk, above the medium one medium (as the transformer)."""
        high, medium = self.thresholds
        if churn > high:
            return "High churn risk"
        if churn > medium:
            return "Medium churn risk"
        return "Low churn risk"


def _same(got, expected: np.ndarray, what: str) -> str:
    got = np.asarray(got, dtype=np.float64).reshape(expected.shape)
    if not np.allclose(got, expected, atol=TOLERANCE):
        raise Mismatch(f"{what}: got {got.tolist()}, expected {np.round(expected, 6).tolist()}")
    return f"{what} = {np.round(got, 4).tolist()} (matches the in-process model)"


def _ok(response: httpx.Response) -> dict:
    if response.status_code != 200:
        raise Mismatch(f"HTTP {response.status_code}: {response.text[:300]}")
    return response.json()


def run_checks(args: argparse.Namespace) -> int:
    reference = Reference.load(Path(args.demo_dir))
    example_probabilities = reference.probabilities([EXAMPLE_ROW])
    predictor = f"http://127.0.0.1:{args.predictor_port}"
    transformer = f"http://127.0.0.1:{args.transformer_port}"
    explainer = f"http://127.0.0.1:{args.explainer_port}"
    client = httpx.Client(timeout=30, headers={"Content-Type": "application/json"})
    failures = 0

    def check(name: str, action) -> None:
        nonlocal failures
        try:
            detail, ok = action(), True
        except (
            Exception
        ) as exc:  # any failure of a check is that check's FAIL line, never a crash of the rest
            detail, ok = f"{type(exc).__name__}: {exc}", False
        failures += not ok
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")

    def kserve_v2():
        body = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [EXAMPLE_ROW]}]}
        outputs = _ok(client.post(f"{predictor}/v2/models/churn/infer", json=body))["outputs"]
        return _same(outputs[0]["data"], example_probabilities, "probabilities")

    def grpc_v2():
        import grpc
        from ferry.protocol import grpc_predict_v2_pb2 as pb
        from ferry.protocol.oip_grpc import Stub

        request = pb.ModelInferRequest(model_name="churn")
        request.inputs.add(name="input-0", datatype="FP32", shape=[1, 4])
        request.raw_input_contents.append(np.asarray([EXAMPLE_ROW], dtype=np.float32).tobytes())
        with grpc.insecure_channel(f"127.0.0.1:{args.predictor_grpc_port}") as channel:
            response = Stub(channel).ModelInfer(request, timeout=30)
        got = np.frombuffer(response.raw_output_contents[0], dtype=np.float32)
        return _same(got, example_probabilities, "probabilities")

    def kserve_v1():
        predictions = _ok(
            client.post(f"{predictor}/v1/models/churn:predict", json={"instances": [EXAMPLE_ROW]})
        )
        return _same(predictions["predictions"], example_probabilities, "predictions")

    def seldon_predict():
        body = {"data": {"ndarray": [EXAMPLE_ROW], "names": FEATURE_NAMES}}
        data = _ok(client.post(f"{predictor}/api/v1.0/predictions", json=body))["data"]
        if data.get("names") != reference.class_names:
            raise Mismatch(f"names: got {data.get('names')}, expected {reference.class_names}")
        return _same(data["ndarray"], example_probabilities, "ndarray")

    def transformer_enrich():
        body = _ok(
            client.post(f"{transformer}/v1/models/churn-transformer:predict", json={"instances": CUSTOMERS})
        )
        rows = [reference.features_by_customer[c] for c in CUSTOMERS]
        churn = reference.probabilities(rows)[:, 1]
        labels = [reference.risk(float(p)) for p in churn]
        if body["interpretations"] != labels:
            raise Mismatch(f"interpretations: got {body['interpretations']}, expected {labels}")
        return f"{_same(body['predictions'], churn, 'churn probabilities')}, {labels}"

    def explained(base: str) -> str:
        body = _ok(
            client.post(f"{base}/api/v1.0/explain", json={"data": {"ndarray": [EXAMPLE_ROW]}}, timeout=120)
        )
        summary = body["summary"]
        expected = reference.class_names[int(np.argmax(example_probabilities))]
        if summary["prediction"] != expected:
            raise Mismatch(f"explained prediction {summary['prediction']!r}, the model predicts {expected!r}")
        strangers = [c for c in summary["anchor"] if not any(name in c for name in reference.feature_names)]
        if strangers or not 0 <= summary["precision"] <= 1:
            raise Mismatch(
                f"anchor {summary['anchor']} (precision {summary['precision']}) names no known feature"
            )
        return summary["text"]

    check("KServe V2 predict (REST)", kserve_v2)
    check("KServe V2 predict (gRPC)", grpc_v2)
    check("KServe V1 predict", kserve_v1)
    check("Seldon predict", seldon_predict)
    check("Transformer enrichment (customer ids -> Feast -> predictor)", transformer_enrich)
    check("Seldon explain (the explainer)", lambda: explained(explainer))
    check("Seldon explain at the predictor's address (seldon_client.py)", lambda: explained(predictor))
    total = 7
    print(f"\n{total - failures} passed, {failures} failed")
    return 1 if failures else 0
