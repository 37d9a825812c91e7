"""Shape of azureml-examples' ``cli/jobs/parallel/3a_mnist_batch_identification/.../digit_identification.py``.

As there: the model folder comes as ``--model`` in the program arguments (``parse_known_args``,
``allow_abbrev=False``), not from a registry; images are read with PIL and ``run()`` returns
``"<file>: <digit>"`` each. The original uses TensorFlow 1's graph API; a pickled scikit-learn
classifier stands in.
"""

import argparse
import os
import pickle

import numpy as np
from PIL import Image


def init():
    global classifier
    parser = argparse.ArgumentParser(allow_abbrev=False, description="ParallelRunStep Agent")
    parser.add_argument("--model", type=str, default=0)
    args, _ = parser.parse_known_args()
    with open(os.path.join(args.model, "digits.pkl"), "rb") as f:
        classifier = pickle.load(f)


def run(mini_batch):
    results = []
    for image in mini_batch:
        pixels = np.array(Image.open(image)).reshape((1, 64))
        results.append("{}: {}".format(os.path.basename(image), int(classifier.predict(pixels)[0])))
    return results
