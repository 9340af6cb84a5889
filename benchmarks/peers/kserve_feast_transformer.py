"""The reference shape of a Feast transformer: a plain ``kserve.Model`` whose ``preprocess`` calls the Feast SDK's
``get_online_features`` and whose ``predict`` is kserve's own call to the predictor over V1, as in KServe's Feast
example. What a user writes today; the transformer benchmark measures Ferry's against it on the same predictor
and the same feature store, after checking that both answer the same.

    python benchmarks/peers/kserve_feast_transformer.py --model_name churn --predictor_host H:P \\
        --feature_repo DIR --http_port P

The transformer's name is the predictor model's name: kserve.Model calls ``/v1/models/{name}:predict`` there.
(kserve reads sys.argv at import and always binds 0.0.0.0; the harness only connects over loopback.)
"""

from __future__ import annotations

import argparse

import kserve
from feast import FeatureStore
from kserve.model import PredictorConfig

FEATURES = [
    "customer_stats:tenure",
    "customer_stats:monthly_charges",
    "customer_stats:total_charges",
    "customer_stats:contract",
]
HIGH, MEDIUM = 0.7, 0.4  # the risk thresholds of the churn example


class FeastTransformer(kserve.Model):
    def __init__(self, name: str, predictor_host: str, feature_repo: str):
        super().__init__(name, PredictorConfig(predictor_host=predictor_host, predictor_protocol="v1"))
        self.store = FeatureStore(repo_path=feature_repo)
        self.ready = True

    def preprocess(self, payload, headers=None):
        ids = payload["instances"]
        found = self.store.get_online_features(
            features=FEATURES, entity_rows=[{"customer_id": i} for i in ids]
        ).to_dict()
        columns = [found[ref.split(":")[1]] for ref in FEATURES]
        return {"instances": [list(row) for row in zip(*columns, strict=True)]}

    def postprocess(self, result, headers=None, response_headers=None):
        churn = [row[1] for row in result["predictions"]]
        labels = [
            "High churn risk" if p > HIGH else "Medium churn risk" if p > MEDIUM else "Low churn risk"
            for p in churn
        ]
        return {"predictions": churn, "interpretations": labels}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--feature_repo", required=True)
    args, _ = parser.parse_known_args()
    model = FeastTransformer(args.model_name, args.predictor_host, args.feature_repo)
    kserve.ModelServer(http_port=args.http_port, grpc_port=args.grpc_port).start([model])
