"""Shape of azureml-examples' batch endpoint ``mnist-classifier/deployment-keras/code/batch_driver.py``.

As there: the model folder is ``os.path.join(AZUREML_MODEL_DIR, "model")`` (one model, so
``AZUREML_MODEL_DIR`` is its ``<name>/<version>`` folder), loaded with a ``load_model`` of that
folder, and a DataFrame of file, class and probability returned. The original's ``load_model``
is TensorFlow's; this one comes from ``mnist_classifier`` beside the script.
"""

import os
from os.path import basename
from typing import List

import numpy as np
import pandas as pd
from mnist_classifier import load_model
from PIL import Image


def init():
    global model
    model = load_model(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model"))


def run(mini_batch: List[str]) -> pd.DataFrame:
    results = []
    for image_path in mini_batch:
        prediction = model(np.array(Image.open(image_path)).reshape((1, 64)))
        results.append(
            {
                "file": basename(image_path),
                "class": int(prediction.argmax()),
                "probability": float(prediction.max()),
            }
        )
    return pd.DataFrame(results)
