import argparse
import os

import joblib
import numpy as np
from PIL import Image

from airflow_parallelrun import EntryScript  # Azure: from azureml_user.parallel_run import EntryScript

model = None


def init():
    global model
    parser = argparse.ArgumentParser()
    parser.add_argument("--model_path", required=True)
    args, _ = parser.parse_known_args()
    model = joblib.load(args.model_path)
    EntryScript().logger.info("model loaded from %s", args.model_path)


def run(mini_batch):  # FileDataset: a list of local file paths
    rows = []
    for path in mini_batch:
        with Image.open(path) as image:  # 8x8 grey digits, as the model was trained on
            rows.append(np.asarray(image.convert("L"), dtype=np.float64).reshape(-1) / 255)
    digits = model.predict(np.stack(rows)) if rows else []
    return [f"{os.path.basename(path)}: {int(digit)}" for path, digit in zip(mini_batch, digits, strict=True)]
