"""The explanation engines. Each explains ONE instance ([1, features]) through a predict function and returns
``(explanation, summary)``: the explanation as JSON-ready data (alibi's ``Explanation.to_json()``, or the same
layout for shap) and a short readable summary.

- ``AnchorTabular`` (alibi, Business Source Licence 1.1): an IF-THEN rule with precision and coverage.
- ``KernelShap`` (alibi, BSL 1.1): Kernel SHAP attributions, through alibi's wrapper of shap.
- ``shap`` (the shap library's KernelExplainer, MIT): the same attributions with no alibi involved at all,
  for users who cannot accept alibi's licence (alibi is not even imported).

Engine objects hold per-explanation state (alibi's and shap's explainers are not thread-safe), so the
handler builds one per worker thread. alibi and shap are imported inside the builders: the module itself is
cheap to import and the shap engine never loads alibi."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import orjson

from ferry_explain.artifacts import Features
from ferry_explain.inputs import Param

log = logging.getLogger(__name__)

PredictFn = Callable[[np.ndarray], np.ndarray]


class Engine(Protocol):
    def explain(self, instance: np.ndarray, params: dict[str, Any]) -> tuple[dict, dict]: ...


def parameter_specs(kind: str, settings, features: Features) -> dict[str, Param]:
    """The per-request parameters each engine accepts, with the operator's defaults and bounds."""
    if kind == "AnchorTabular":
        return {
            "threshold": Param(float, settings.threshold, settings.min_threshold, settings.max_threshold),
            "batch_size": Param(int, settings.batch_size, 1, settings.max_batch_size),
            "coverage_samples": Param(int, settings.coverage_samples, 1, settings.max_coverage_samples),
            "beam_size": Param(int, settings.beam_size, 1, settings.max_beam_size),
            "max_anchor_size": Param(int, None, 1, features.count),
            "delta": Param(float, None, 1e-6, 0.5),
            "tau": Param(float, None, 1e-6, 0.5),
            "min_samples_start": Param(int, None, 1, settings.max_batch_size),
        }
    # Kernel SHAP's cost is nsamples coalitions x background rows, in one predictor request.
    return {"nsamples": Param(int, settings.nsamples or None, 1, settings.max_nsamples)}


def _json(explanation) -> dict:
    return orjson.loads(explanation.to_json())


class AnchorEngine:
    def __init__(self, explainer, features: Features):
        self.explainer = explainer
        self.features = features

    @classmethod
    def fit(cls, predict: PredictFn, features: Features, reference: np.ndarray, seed: int) -> AnchorEngine:
        from alibi.explainers import AnchorTabular

        explainer = AnchorTabular(
            predict,
            feature_names=list(features.names),
            categorical_names=dict(features.categorical),
            seed=seed,
        )
        explainer.fit(reference)
        return cls(explainer, features)

    def explain(self, instance: np.ndarray, params: dict[str, Any]) -> tuple[dict, dict]:
        explanation = self.explainer.explain(instance[0], **params)
        payload = _json(explanation)
        data = explanation.data
        predicted = int(np.asarray(data["raw"]["prediction"]).reshape(-1)[0])
        label = self.features.class_name(predicted)
        anchor = list(data["anchor"])
        precision, coverage = float(np.mean(data["precision"])), float(np.mean(data["coverage"]))
        rule = " AND ".join(anchor) if anchor else "(any input)"
        summary = {
            "engine": "AnchorTabular",
            "prediction": label,
            "anchor": anchor,
            "precision": round(precision, 4),
            "coverage": round(coverage, 4),
            "text": f"IF {rule} THEN {label} (precision {precision:.2f}, coverage {coverage:.2f})",
        }
        return payload, summary


def _shap_summary(
    engine: str, features: Features, instance: np.ndarray, raw: np.ndarray, shap_values, expected
) -> dict:
    """Per-feature attributions for the predicted class, largest first."""
    raw = np.asarray(raw, dtype=np.float64).reshape(-1)
    if isinstance(shap_values, list):  # one [n, features] array per output
        predicted = int(np.argmax(raw))
        values = np.asarray(shap_values[predicted]).reshape(-1)
        base = float(np.asarray(expected).reshape(-1)[predicted])
        label, score = features.class_name(predicted), float(raw[predicted])
    else:  # a single output (regression or one score)
        values = np.asarray(shap_values).reshape(-1)
        base = float(np.asarray(expected).reshape(-1)[0])
        label, score = None, float(raw[0])
    order = np.argsort(-np.abs(values))
    attributions = [
        {
            "feature": features.names[i],
            "value": _display(features, i, float(instance[0, i])),
            "attribution": round(float(values[i]), 6),
        }
        for i in order
    ]
    parts = ", ".join(f"{a['feature']}={a['value']} {a['attribution']:+.4f}" for a in attributions)
    head = (
        f"{label} (score {score:.3f}, base {base:.3f})" if label else f"score {score:.3f} (base {base:.3f})"
    )
    return {
        "engine": engine,
        "prediction": label,
        "score": round(score, 6),
        "expected_value": round(base, 6),
        "attributions": attributions,
        "text": f"{head}: {parts}",
    }


def _display(features: Features, index: int, value: float):
    labels = features.categorical.get(index)
    if labels is not None and value == int(value) and 0 <= value < len(labels):
        return labels[int(value)]
    return int(value) if value == int(value) else value


class AlibiKernelShapEngine:
    def __init__(self, explainer, features: Features):
        self.explainer = explainer
        self.features = features

    @classmethod
    def fit(cls, predict: PredictFn, features: Features, background, seed: int) -> AlibiKernelShapEngine:
        from alibi.explainers import KernelShap

        explainer = KernelShap(predict, link="identity", feature_names=list(features.names), seed=seed)
        explainer.fit(background)  # the background is summarised already (see background_rows)
        return cls(explainer, features)

    def explain(self, instance: np.ndarray, params: dict[str, Any]) -> tuple[dict, dict]:
        explanation = self.explainer.explain(instance, silent=True, **params)
        data = explanation.data
        summary = _shap_summary(
            "KernelShap",
            self.features,
            instance,
            np.asarray(data["raw"]["raw_prediction"])[0],
            [np.asarray(v) for v in data["shap_values"]],
            data["expected_value"],
        )
        return _json(explanation), summary


class ShapEngine:
    """shap.KernelExplainer directly (MIT). Its output is laid out like alibi's KernelShap explanation."""

    def __init__(self, explainer, predict: PredictFn, features: Features, background_rows: int):
        self.explainer = explainer
        self.predict = predict
        self.features = features
        self.background_rows = background_rows

    @classmethod
    def fit(cls, predict: PredictFn, features: Features, background, seed: int) -> ShapEngine:
        import shap

        np.random.seed(seed)  # shap samples coalitions with numpy's global generator
        explainer = shap.KernelExplainer(predict, background, link="identity")
        return cls(explainer, predict, features, int(explainer.data.data.shape[0]))

    def explain(self, instance: np.ndarray, params: dict[str, Any]) -> tuple[dict, dict]:
        import shap

        nsamples = params.get("nsamples", "auto")
        values = self.explainer.shap_values(instance, nsamples=nsamples, silent=True)
        raw = np.asarray(self.predict(instance))
        expected = np.asarray(self.explainer.expected_value, dtype=np.float64)
        as_list = [np.asarray(v).tolist() for v in values] if isinstance(values, list) else values.tolist()
        payload = {
            "meta": {
                "name": "KernelExplainer",
                "library": "shap",
                "version": shap.__version__,
                "type": ["blackbox"],
                "explanations": ["local"],
                "params": {"link": "identity", "nsamples": nsamples, "background_rows": self.background_rows},
            },
            "data": {
                "shap_values": as_list,
                "expected_value": expected.reshape(-1).tolist(),
                "feature_names": list(self.features.names),
                "raw": {
                    "raw_prediction": raw.tolist(),
                    "prediction": np.argmax(raw, axis=-1).tolist() if raw.ndim == 2 else raw.tolist(),
                    "instances": instance.tolist(),
                },
            },
        }
        summary = _shap_summary("shap", self.features, instance, raw[0], values, expected)
        return payload, summary


def background_rows(reference: np.ndarray, method: str, size: int, seed: int):
    """Kernel SHAP's background: k-means centres weighted by cluster size (a ``shap`` DenseData, which both
    alibi's KernelShap and shap's KernelExplainer take as is) or a random sample of rows."""
    if len(reference) <= size:
        return reference
    if method == "kmeans":
        import shap

        return shap.kmeans(reference, size)
    rng = np.random.default_rng(seed)
    return reference[rng.choice(len(reference), size, replace=False)]


def load_saved(directory: Path, predict: PredictFn, features: Features) -> Engine:
    """A saved alibi explainer (the caller has checked the unpickle gate)."""
    from alibi.saving import load_explainer

    explainer = load_explainer(str(directory), predictor=predict)
    name = type(explainer).__name__
    if name == "AnchorTabular":
        return AnchorEngine(explainer, features)
    if name == "KernelShap":
        return AlibiKernelShapEngine(explainer, features)
    raise ValueError(f"saved explainer {directory} is a {name}; Ferry serves AnchorTabular and KernelShap")
