"""Workload (a): score a DataFrame of 20 features with a HistGradientBoostingClassifier.

An Azure ML ParallelRunStep entry script. Run with ``--model_path <model.joblib>``.
Returns ``id`` and ``proba`` (the probability of class 1), one row per input row, in order.
One thread per process: the operator runs one process per core, as the process pool does.
"""

import argparse

import joblib
import pandas as pd
from threadpoolctl import threadpool_limits

FEATURES = [f"f{i:02d}" for i in range(20)]

model = None


def init():
    """Load the model once per worker process."""
    global model
    parser = argparse.ArgumentParser()
    parser.add_argument("--model_path", required=True)
    args, _ = parser.parse_known_args()
    model = joblib.load(args.model_path)
    # After loading: threadpoolctl limits only libraries already loaded, and scikit-learn's
    # OpenMP runtime loads with the model's classes.
    threadpool_limits(1)


def run(mini_batch):
    """Return the probability of class 1 for each row."""
    proba = model.predict_proba(mini_batch[FEATURES].to_numpy())[:, 1]
    return pd.DataFrame({"id": mini_batch["id"].to_numpy(), "proba": proba})
