"""Score iris-like rows: an Azure ML ParallelRunStep entry script for a TabularDataset.

Written as for Azure ML; each mini-batch is a pandas DataFrame with columns ``id, f0, f1, f2, f3``.
Returns a DataFrame with ``id`` and the predicted class ``prediction`` (int 0..2), in the input's row order.
Run with ``--model_path <model.joblib>`` (see ``parallelrun_examples.data.train_tabular_model``).
"""

import argparse
from typing import Any

import joblib
import pandas as pd

FEATURES = ["f0", "f1", "f2", "f3"]

model: Any = None  # loaded by init()


def init():
    """Load the model once per worker process."""
    global model
    parser = argparse.ArgumentParser()
    parser.add_argument("--model_path", required=True)
    args, _ = parser.parse_known_args()
    model = joblib.load(args.model_path)


def run(mini_batch):
    """Predict the class of each row of the mini-batch."""
    predictions = model.predict(mini_batch[FEATURES]) if len(mini_batch) else []
    return pd.DataFrame(
        {"id": mini_batch["id"].to_numpy(), "prediction": pd.Series(predictions, dtype="int64").to_numpy()}
    )
