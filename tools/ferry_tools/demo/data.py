"""The synthetic churn data set: customers, their features, and a churn label from a known logistic signal."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

#: Timestamps are relative to this date, not to "now", so two builds write the same bytes.
REFERENCE_TIME = datetime(2026, 11, 1, tzinfo=timezone.utc)
FEATURES = ["tenure", "monthly_charges", "total_charges", "contract"]
CLASSES = ["no_churn", "churn"]
CONTRACTS = {0: "month-to-month", 1: "one-year", 2: "two-year"}
BASE_RATE = 0.25
#: Every fifth customer is held out from training (the ``split`` column says which).
HELDOUT_EVERY = 5


def churn_frame(n: int, seed: int = 7) -> pd.DataFrame:
    """``n`` customers with features and a ``churn`` label (about 25% positive).

    Churn is drawn from a logistic model a telco analyst would recognise: short tenure, month-to-month
    contracts, high monthly charges, low loyalty and few recent transactions raise the odds. The model only
    sees four of these features, so it cannot be perfect, just as in real life."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    num = np.arange(1, n + 1, dtype=np.int64)

    # Tenure in months: many new customers and a long tail of loyal ones, piling up at the 72-month cap.
    tenure = np.clip(np.round(rng.gamma(shape=0.8, scale=30.0, size=n)), 0, 72).astype(np.int64)

    # Longer-tenured customers are more likely to be on one- or two-year contracts.
    logits = np.stack([1.2 - 0.045 * tenure, np.zeros(n), -1.8 + 0.05 * tenure], axis=1)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    contract = (rng.random(n)[:, None] > np.cumsum(probs, axis=1)).sum(axis=1).astype(np.int64)

    # Monthly charges: a cheap basic plan around $20 and a spread of bundles/fibre plans around $75.
    basic = rng.random(n) < 0.22
    monthly = np.where(basic, rng.normal(21.0, 2.5, n), rng.normal(76.0, 19.0, n))
    monthly = np.round(np.clip(monthly, 18.0, 120.0), 2)
    # Total charges: roughly tenure × monthly, with price changes along the way.
    total = np.round(np.maximum(tenure * monthly * rng.normal(1.0, 0.05, n), 0.0), 2)

    loyalty = np.round(_sigmoid(-1.0 + 0.045 * tenure + rng.normal(0.0, 0.9, n)), 4)
    txn_count_7d = rng.poisson(1.0 + 7.0 * loyalty).astype(np.int64)

    signal = (
        -0.035 * (tenure - 24)
        + 1.1 * (contract == 0)
        - 0.9 * (contract == 2)
        + 0.028 * (monthly - 65.0)
        - 1.8 * (loyalty - 0.5)
        - 0.06 * (txn_count_7d - 4)
    )
    # Shift the signal so the average churn probability is the base rate we want.
    probability = _sigmoid(signal + _intercept(signal, BASE_RATE))
    churn = (rng.random(n) < probability).astype(np.int64)

    # Last activity within the 30 days before the reference date, whole seconds.
    seconds_ago = rng.integers(0, 30 * 24 * 3600, size=n)
    timestamps = pd.to_datetime([REFERENCE_TIME - timedelta(seconds=int(s)) for s in seconds_ago], utc=True)

    return pd.DataFrame(
        {
            "customer_id": [f"C{i:05d}" for i in num],
            "customer_num": num,
            "event_timestamp": timestamps,
            "tenure": tenure,
            "monthly_charges": monthly,
            "total_charges": total,
            "contract": contract,
            "loyalty_score": loyalty,
            "txn_count_7d": txn_count_7d,
            "churn": churn,
            "split": np.where(num % HELDOUT_EVERY == 0, "test", "train"),
        }
    )


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _intercept(signal: np.ndarray, rate: float) -> float:
    """The shift that makes mean(sigmoid(signal + shift)) equal ``rate`` (bisection; it is monotonic)."""
    low, high = -20.0, 20.0
    for _ in range(60):
        middle = (low + high) / 2
        if _sigmoid(signal + middle).mean() < rate:
            low = middle
        else:
            high = middle
    return (low + high) / 2
