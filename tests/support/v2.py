"""One V2 REST inference checked against a reference: the request every served form of the churn model must answer."""

from __future__ import annotations

import httpx
import numpy as np


def assert_v2_answers(base_url: str, model: str, rows: np.ndarray, expected: np.ndarray) -> None:
    """POST ``rows`` as one FP32 tensor ``input-0`` to ``/v2/models/{model}/infer``; the first output must equal
    ``expected`` (to float32 rounding)."""
    body = {
        "inputs": [
            {"name": "input-0", "shape": list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}
        ]
    }
    response = httpx.post(f"{base_url}/v2/models/{model}/infer", json=body, timeout=30)
    assert response.status_code == 200, response.text
    got = np.reshape(response.json()["outputs"][0]["data"], (len(rows), -1))
    np.testing.assert_allclose(got, expected, atol=1e-5)
