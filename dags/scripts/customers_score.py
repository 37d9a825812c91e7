"""Score customers' churn risk: an Azure ML ParallelRunStep entry script for a SQL input (``SqlDataset``).

Each mini-batch is a pandas DataFrame of rows of the customers table (``customer_id``, ``age``,
``tenure_months``, ``monthly_spend``, ``orders_last_year``, ``days_since_last_order``,
``support_tickets``, ``region``). Returns a DataFrame with ``customer_id`` and ``score``, the
probability that the customer churns, one row per input row, in the input's order.
Run with ``--model_path <model.joblib>`` (see ``parallelrun_examples.customers.train_customers_model``).
"""

import argparse
from typing import Any

import joblib
import pandas as pd

FEATURES = [
    "age",
    "tenure_months",
    "monthly_spend",
    "orders_last_year",
    "days_since_last_order",
    "support_tickets",
    "region",
]

model: Any = None  # loaded by init()


def init():
    """Load the model once per worker process."""
    global model
    parser = argparse.ArgumentParser()
    parser.add_argument("--model_path", required=True)
    args, _ = parser.parse_known_args()
    model = joblib.load(args.model_path)


def run(mini_batch):
    """Return each customer's probability of churning."""
    scores = model.predict_proba(mini_batch[FEATURES])[:, 1] if len(mini_batch) else []
    return pd.DataFrame(
        {
            "customer_id": mini_batch["customer_id"].to_numpy(),
            "score": pd.Series(scores, dtype="float64").to_numpy(),
        }
    )
