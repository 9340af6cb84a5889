"""``ferry up --check``: the seed's client requests against a running stack (local, or a cluster's ingress).

Each check prints one line, PASS or FAIL with the reason; the exit code is 0 only if every check passed."""

from __future__ import annotations

import argparse
import math

import httpx

SEED_ROW = [24, 65.5, 1572.0, 1]
SEED_NAMES = ["tenure", "monthly_charges", "total_charges", "contract"]


def _probabilities_ok(values) -> bool:
    flat = [float(v) for v in values]
    return len(flat) == 2 and all(0 <= v <= 1 for v in flat) and math.isclose(sum(flat), 1, abs_tol=1e-4)


def run_checks(args: argparse.Namespace) -> int:
    predictor = f"http://127.0.0.1:{args.predictor_port}"
    transformer = f"http://127.0.0.1:{args.transformer_port}"
    explainer = f"http://127.0.0.1:{args.explainer_port}"
    client = httpx.Client(timeout=30, headers={"Content-Type": "application/json"})
    results: list[tuple[str, bool, str]] = []

    def check(name: str, action) -> None:
        try:
            ok, detail = action()
        except (httpx.HTTPError, KeyError, ValueError, TypeError, IndexError) as exc:
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        results.append((name, ok, detail))
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")

    def kserve_v2():
        body = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [SEED_ROW]}]}
        response = client.post(f"{predictor}/v2/models/churn/infer", json=body)
        data = response.json()["outputs"][0]["data"]
        return response.status_code == 200 and _probabilities_ok(data), f"{response.status_code} {data}"

    def kserve_v1():
        response = client.post(f"{predictor}/v1/models/churn:predict", json={"instances": [SEED_ROW]})
        prediction = response.json()["predictions"][0]
        return response.status_code == 200 and _probabilities_ok(
            prediction
        ), f"{response.status_code} {prediction}"

    def seldon_predict():
        body = {"data": {"ndarray": [SEED_ROW], "names": SEED_NAMES}}
        response = client.post(f"{predictor}/api/v1.0/predictions", json=body)
        row = response.json()["data"]["ndarray"][0]
        return response.status_code == 200 and _probabilities_ok(row), f"{response.status_code} {row}"

    def transformer_enrich():
        response = client.post(
            f"{transformer}/v1/models/churn-transformer:predict", json={"instances": ["C00001", "C00002"]}
        )
        body = response.json()
        ok = (
            response.status_code == 200
            and len(body["predictions"]) == 2
            and all(
                label in ("High churn risk", "Medium churn risk", "Low churn risk")
                for label in body["interpretations"]
            )
        )
        return ok, f"{response.status_code} {body}"

    def seldon_explain():
        response = client.post(
            f"{explainer}/api/v1.0/explain", json={"data": {"ndarray": [SEED_ROW]}}, timeout=120
        )
        body = response.json()
        return response.status_code == 200 and bool(
            body.get("summary")
        ), f"{response.status_code} {body.get('summary')}"

    check("KServe V2 predict (seed verification request)", kserve_v2)
    check("KServe V1 predict", kserve_v1)
    check("Seldon predict (seed client)", seldon_predict)
    check("Transformer enrichment (customer ids -> Feast -> predictor)", transformer_enrich)
    check("Seldon explain (seed client)", seldon_explain)
    failed = [name for name, ok, _ in results if not ok]
    print(f"\n{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0
