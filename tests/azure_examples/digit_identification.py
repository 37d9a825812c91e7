"""Shape of MachineLearningNotebooks' parallel-run ``Code/digit_identification.py`` (FileDataset, MNIST).

As there: ``Model.get_model_path("mnist-prs")`` of the real azureml-core returns a folder model,
each image is read with PIL and reshaped by numpy, and ``run()`` returns ``"<file>: <digit>"`` per
image. The original restores a TensorFlow 1 graph from that folder; a pickled scikit-learn
classifier of 8x8 digits stands in.
"""

import os
import pickle

import numpy as np
from azureml.core import Model
from PIL import Image


def init():
    global classifier
    model_path = Model.get_model_path("mnist-prs")
    with open(os.path.join(model_path, "digits.pkl"), "rb") as f:
        classifier = pickle.load(f)


def run(mini_batch):
    print(f"run method start: {__file__}, run({mini_batch})")
    results = []
    for image in mini_batch:
        pixels = np.array(Image.open(image)).reshape((1, 64))
        digit = int(np.argmax(classifier.predict_proba(pixels)))
        results.append("{}: {}".format(os.path.basename(image), digit))
    return results
