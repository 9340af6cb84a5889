# The user's Seldon client, verbatim. tests/demo/test_up.py runs it against `ferry up` with only SELDON_URL
# changed: predict and explain go to one address, the predictor's (which forwards explain to the explainer).
# seldon_client.py
import requests
import json

SELDON_URL = "http://sklearn-churn.seldon.svc.cluster.local/api/v1.0/predictions"

def predict(data: list, names: list = None) -> dict:
    """Make prediction using Seldon"""

    payload = {
        "data": {
            "ndarray": data
        }
    }

    if names:
        payload["data"]["names"] = names

    response = requests.post(
        SELDON_URL,
        headers={"Content-Type": "application/json"},
        data=json.dumps(payload)
    )

    return response.json()

def explain(data: list) -> dict:
    """Get model explanation"""

    payload = {"data": {"ndarray": data}}

    response = requests.post(
        SELDON_URL.replace("/predictions", "/explain"),
        headers={"Content-Type": "application/json"},
        data=json.dumps(payload)
    )

    return response.json()

# Usage
data = [[24, 65.5, 1572.0, 1]]
names = ["tenure", "monthly_charges", "total_charges", "contract"]

prediction = predict(data, names)
explanation = explain(data)

print(f"Prediction: {prediction}")
print(f"Explanation: {explanation}")
