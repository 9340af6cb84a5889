"""Demo artifacts for Ferry, built offline and deterministically: ``ferry demo --out DIR`` or ``build(DIR)``.

Layout of ``DIR`` (every ``onnx/``, ``torchscript/`` and ``export/`` folder is a KServe-style model_dir that
the predictor serves as it is; ``ferry.json`` beside each model file is its signature)::

    manifest.json                       what build() returned: paths, held-out metrics, the MLflow URIs
    churn/
      data/churn.parquet                synthetic customers: customer_id ("C00001"…), customer_num (int64),
                                        event_timestamp (UTC, the 30 days before 2026-11-01), tenure,
                                        monthly_charges, total_charges, contract (0/1/2), loyalty_score,
                                        txn_count_7d, churn (0/1), split ("train" | "test")
      onnx/model.onnx + ferry.json      MLP, input "input-0" FP32 [batch, 4] raw
      torchscript/model.pt + ferry.json   [tenure, monthly_charges, total_charges, contract]
      export/model.pt2 + ferry.json     (standardised inside), output "probabilities" FP32
                                        [batch, 2] = [no_churn, churn]
      reference.csv                     explainer background sample of the 4 features, with a header
      meta.json                         feature and class names, categorical names, held-out metrics
    digits/
      onnx/model.onnx, torchscript/model.pt, export/model.pt2 (+ ferry.json each)
                                        CNN on sklearn's load_digits: "input-0" FP32 [batch, 1, 8, 8] with
                                        pixel values 0–16, "probabilities" FP32 [batch, 10]
      meta.json                         class names, held-out accuracy
    feast/
      customer_stats.parquet            customer_id, customer_num, event_timestamp, tenure, monthly_charges,
                                        total_charges, contract, loyalty_score (the churn data's values)
      transaction_stats.parquet         customer_id, customer_num, event_timestamp, txn_count_7d
    mlflow/
      mlflow.db                         SQLite tracking store and registry (sqlite:///DIR/mlflow/mlflow.db)
      artifacts/                        model artifacts; churn-classifier v1 = pytorch flavour,
                                        v2 = onnx flavour, alias Production -> v2
    triton/                             Triton model repository (ferry_tools.demo.triton):
      preprocessing/config.pbtxt, 1/model.py
                                        Python backend: the 4 features as FP32 [batch, 1] inputs named
                                        like the columns -> "input-0" (contract clipped to 0..2)
      classifier/config.pbtxt, 1/model.onnx
                                        onnxruntime_onnx: a copy of churn/onnx/model.onnx
      ensemble/config.pbtxt, 1/         preprocessing -> classifier: the 4 features in, "probabilities" out

Held-out rows are every fifth customer (``split == "test"``) and every fifth digit image. Timestamps are
relative to a fixed date and every random draw is seeded, so two builds write identical data files and metrics.
A build replaces the folders above inside ``DIR`` and leaves anything else there alone.
"""

from ferry_tools.demo.build import build

__all__ = ["build"]
