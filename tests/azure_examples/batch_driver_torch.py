"""Shape of azureml-examples' batch endpoint ``mnist-classifier/deployment-torch/code/batch_driver.py``.

As there: a model class imported from a module beside the script (``mnist_classifier``), its
weights found with ``glob(f"{AZUREML_MODEL_DIR}/*/*.pt")`` (here ``*.pkl``), and a DataFrame of
file, class and probability returned. The original needs torch and torchvision.
"""

import glob
import os
from os.path import basename
from typing import List

import numpy as np
import pandas as pd
from mnist_classifier import MnistClassifier
from PIL import Image


def init():
    global model
    model = MnistClassifier()
    model.load_state_dict(glob.glob(f"{os.environ['AZUREML_MODEL_DIR']}/*/*.pkl")[-1])


def run(mini_batch: List[str]) -> pd.DataFrame:
    print(f"Executing run method over batch of {len(mini_batch)} files.")
    results = []
    for image_path in mini_batch:
        probabilities = model(np.array(Image.open(image_path), dtype=float).reshape((1, 64)))[0]
        results.append(
            {
                "file": basename(image_path),
                "class": int(probabilities.argmax()),
                "probability": probabilities.max(),
            }
        )
    return pd.DataFrame(results)
