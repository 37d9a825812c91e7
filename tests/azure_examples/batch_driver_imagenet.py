"""Shape of azureml-examples' batch endpoint ``imagenet-classifier/code/score-by-file/batch_driver.py``.

As there: ``load_model(os.path.join(AZUREML_MODEL_DIR, "model"))`` in ``init()``, each image
resized with PIL and scaled to [0, 1], and a DataFrame of ``[file, class, probability]`` lists
(no column names) returned. The original's model is a TensorFlow Keras ImageNet classifier.
"""

import os
from os.path import basename

import numpy as np
import pandas as pd
from mnist_classifier import load_model
from PIL import Image


def init():
    global model, input_width, input_height
    model = load_model(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model"))
    input_width = input_height = 8


def run(mini_batch):
    results = []
    for image in mini_batch:
        data = np.array(Image.open(image).resize((input_width, input_height))) / 255.0
        prediction = model(data.reshape((1, 64)) * 255.0)
        results.append([basename(image), int(prediction.argmax()), float(prediction.max())])
    return pd.DataFrame(results)
