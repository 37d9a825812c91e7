"""An Azure-style tabular entry script: init() reads --model, run() returns one row per flower."""

import argparse
import json
import os

import pandas as pd

threshold = None


def init():
    global threshold
    parser = argparse.ArgumentParser(allow_abbrev=False)
    parser.add_argument("--model", required=True)
    args, _ = parser.parse_known_args()
    with open(os.path.join(args.model, "threshold.json")) as handle:
        threshold = json.load(handle)["petal_length"]


def run(mini_batch):
    prefix = os.environ["IRIS_LABEL_PREFIX"]
    labels = [
        f"{prefix}-{'large' if length > threshold else 'small'}" for length in mini_batch["petal_length"]
    ]
    return pd.DataFrame({"flower_id": mini_batch["flower_id"], "label": labels})
