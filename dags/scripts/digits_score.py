"""Score digit images: an Azure ML ParallelRunStep entry script for a FileDataset.

Written as for Azure ML; only the ``EntryScript`` import differs
(Azure: ``from azureml_user.parallel_run import EntryScript``).

Each mini-batch is a list of local PNG paths; each result line is ``"<file name>: <digit>"``.
Run with ``--model_path <model.joblib>`` (see ``parallelrun_examples.data.train_digits_model``).
"""

import argparse
import os
from typing import Any

import joblib
import numpy as np
from PIL import Image

from airflow_parallelrun import EntryScript

model: Any = None  # loaded by init()


def init():
    """Load the model once per worker process."""
    global model
    parser = argparse.ArgumentParser()
    parser.add_argument("--model_path", required=True)
    args, _ = parser.parse_known_args()
    model = joblib.load(args.model_path)
    EntryScript().logger.info("digits_score: loaded model from %s", args.model_path)


def run(mini_batch):
    """Predict the digit in each PNG file of the mini-batch; one result line per file."""
    if not mini_batch:
        return []
    rows = []
    for path in mini_batch:
        # Same preprocessing as parallelrun_examples.data.digits_features: 8x8 grey pixels, row by row, / 255.
        with Image.open(path) as img:
            rows.append(np.asarray(img.convert("L"), dtype=np.float64).reshape(64) / 255.0)
    digits = model.predict(np.stack(rows))
    return [f"{os.path.basename(path)}: {int(digit)}" for path, digit in zip(mini_batch, digits, strict=True)]
