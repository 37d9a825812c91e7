"""Workloads (b) and (c): classify 8x8 PNG digits; one ``"<file name>: <digit>"`` line per file.

An Azure ML ParallelRunStep entry script. Run with ``--model_path <model.joblib>``; with
``--init_sleep S`` init() sleeps S seconds first (a model that is slow to load), and with
``--counts_dir DIR`` each init() call appends a line to ``DIR/init-calls.txt``.
"""

import argparse
import os
import time

import joblib
import numpy as np
from PIL import Image
from threadpoolctl import threadpool_limits

model = None


def init():
    """Load the model once per worker process, and count the call."""
    global model
    parser = argparse.ArgumentParser()
    parser.add_argument("--model_path", required=True)
    parser.add_argument("--init_sleep", type=float, default=0.0)
    parser.add_argument("--counts_dir", default="")
    args, _ = parser.parse_known_args()
    if args.counts_dir:
        # One short append per call: O_APPEND keeps concurrent lines whole.
        with open(os.path.join(args.counts_dir, "init-calls.txt"), "a") as f:
            f.write(f"{os.getpid()} {time.time():.3f}\n")
    time.sleep(args.init_sleep)
    model = joblib.load(args.model_path)
    # After loading: threadpoolctl limits only libraries already loaded, and scikit-learn's
    # OpenMP runtime loads with the model's classes.
    threadpool_limits(1)


def run(mini_batch):
    """Predict the digit in each PNG file of the mini-batch."""
    if not mini_batch:
        return []
    rows = []
    for path in mini_batch:
        with Image.open(path) as img:
            rows.append(np.asarray(img.convert("L"), dtype=np.float64).reshape(64) / 255.0)
    digits = model.predict(np.stack(rows))
    return [f"{os.path.basename(p)}: {int(d)}" for p, d in zip(mini_batch, digits, strict=True)]
