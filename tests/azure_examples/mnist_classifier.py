"""The model code the batch-driver shapes import from beside them, as Azure's torch example does.

``MnistClassifier`` stands in for the torch example's own ``mnist_classifier.MnistClassifier``
(``load_state_dict`` then called); ``load_model`` for ``tensorflow.keras.models.load_model`` of a
model folder. Both load a pickled scikit-learn classifier of 8x8 digits.
"""

import os
import pickle


class MnistClassifier:
    def load_state_dict(self, path):
        with open(path, "rb") as f:
            self.classifier = pickle.load(f)

    def __call__(self, pixels):
        return self.classifier.predict_proba(pixels)


def load_model(folder):
    model = MnistClassifier()
    model.load_state_dict(os.path.join(folder, "digits.pkl"))
    return model
