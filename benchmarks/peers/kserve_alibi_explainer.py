"""The reference shape of an explainer: a plain ``kserve.Model`` whose ``explain`` runs alibi's AnchorTabular or
KernelShap, each predictor call a V1 request (the shape of KServe's former Alibi explainer). Fitted as Ferry's
explainer fits its engines (the same reference sample, feature and category names, seed and k-means background),
so that the explainer benchmark can check both give the same explanation before it times them.

    python benchmarks/peers/kserve_alibi_explainer.py --model_name churn --predictor_host H:P \\
        --engine AnchorTabular --reference_csv FILE --meta_json FILE --http_port P --grpc_port G

The explainer's name is the predictor model's name, as in an InferenceService.
"""

from __future__ import annotations

import argparse
import csv
import json

import httpx
import kserve
import numpy as np

SEED, BACKGROUND_ROWS = 0, 20  # Ferry's explainer defaults (--seed, --background_size)


class AlibiExplainer(kserve.Model):
    def __init__(self, name: str, predictor_host: str, engine: str, reference: np.ndarray, meta: dict):
        super().__init__(name)
        self.url = f"http://{predictor_host}/v1/models/{name}:predict"
        self.client = httpx.Client(timeout=60)
        self.engine = engine
        names = meta["feature_names"]
        if engine == "AnchorTabular":
            from alibi.explainers import AnchorTabular

            categorical = {
                names.index(feature): [codes[str(i)] for i in range(len(codes))]
                for feature, codes in meta.get("categorical_names", {}).items()
            }
            self.explainer = AnchorTabular(
                self.predict_fn, feature_names=names, categorical_names=categorical, seed=SEED
            )
            self.explainer.fit(reference)
        else:
            import shap
            from alibi.explainers import KernelShap

            self.explainer = KernelShap(self.predict_fn, link="identity", feature_names=names, seed=SEED)
            self.explainer.fit(shap.kmeans(reference, BACKGROUND_ROWS))
        self.ready = True

    def predict_fn(self, rows: np.ndarray) -> np.ndarray:
        response = self.client.post(self.url, json={"instances": np.asarray(rows).tolist()})
        response.raise_for_status()
        return np.asarray(response.json()["predictions"], dtype=np.float64)

    def explain(self, payload, headers=None):
        instance = np.asarray(payload["instances"], dtype=np.float64)
        if self.engine == "AnchorTabular":
            explanation = self.explainer.explain(instance[0])
        else:
            explanation = self.explainer.explain(instance, silent=True)
        return json.loads(explanation.to_json())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--engine", choices=["AnchorTabular", "KernelShap"], required=True)
    parser.add_argument("--reference_csv", required=True)
    parser.add_argument("--meta_json", required=True)
    args, _ = parser.parse_known_args()
    with open(args.reference_csv) as handle:
        reference = np.array([[float(v) for v in row] for row in list(csv.reader(handle))[1:]])
    with open(args.meta_json) as handle:
        meta = json.load(handle)
    model = AlibiExplainer(args.model_name, args.predictor_host, args.engine, reference, meta)
    kserve.ModelServer(http_port=args.http_port, grpc_port=args.grpc_port).start([model])
