"""Workload (d): score customers' churn risk with the SQL example's model, one thread per process.

An Azure ML ParallelRunStep entry script for a ``SqlDataset``. Run with ``--model_path <model.joblib>``.
Returns ``customer_id`` and ``score`` (the probability of churning), one row per input row, in order:
what ``dags/scripts/customers_score.py`` returns, with scikit-learn held to one thread as every
scorer of the benchmark is (the operator runs one process per core, as the process pool does).
"""

import argparse

import joblib
import pandas as pd
from threadpoolctl import threadpool_limits

FEATURES = [
    "age",
    "tenure_months",
    "monthly_spend",
    "orders_last_year",
    "days_since_last_order",
    "support_tickets",
    "region",
]

model = None


def init():
    """Load the model once per worker process."""
    global model
    parser = argparse.ArgumentParser()
    parser.add_argument("--model_path", required=True)
    args, _ = parser.parse_known_args()
    model = joblib.load(args.model_path)
    # After loading: threadpoolctl limits only libraries already loaded.
    threadpool_limits(1)


def run(mini_batch):
    """Return the probability of churning for each row."""
    scores = model.predict_proba(mini_batch[FEATURES])[:, 1]
    return pd.DataFrame({"customer_id": mini_batch["customer_id"].to_numpy(), "score": scores})
