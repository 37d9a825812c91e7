"""Score digit images and say which model version scored each: an entry script for a FileDataset.

Each mini-batch is a list of local PNG paths; each result is a row ``file, digit, model_version``,
merged into a csv file (``append_row_format="csv"``), so every score names the model behind it.
Run with ``--model_path <model.joblib> --model_version <version>``
(see ``parallelrun_examples.model_versions``).
"""

import argparse
import os
from typing import Any

import joblib
import numpy as np
from PIL import Image

from airflow_parallelrun import EntryScript

model: Any = None  # loaded by init()
model_version = None


def init():
    """Load the chosen model version once per worker process."""
    global model, model_version
    parser = argparse.ArgumentParser()
    parser.add_argument("--model_path", required=True)
    parser.add_argument("--model_version", required=True)
    args, _ = parser.parse_known_args()
    model = joblib.load(args.model_path)
    model_version = args.model_version
    EntryScript().logger.info("digits_score_versioned: loaded %s from %s", model_version, args.model_path)


def run(mini_batch):
    """Predict the digit in each PNG file of the mini-batch; one row per file."""
    if not mini_batch:
        return []
    rows = []
    for path in mini_batch:
        # Same preprocessing as parallelrun_examples.data.digits_features: 8x8 grey pixels, row by row, / 255.
        with Image.open(path) as img:
            rows.append(np.asarray(img.convert("L"), dtype=np.float64).reshape(64) / 255.0)
    digits = model.predict(np.stack(rows))
    return [
        {"file": os.path.basename(path), "digit": int(digit), "model_version": model_version}
        for path, digit in zip(mini_batch, digits, strict=True)
    ]
