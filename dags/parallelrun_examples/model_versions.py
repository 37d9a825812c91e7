"""Two versions of the digits model for the form example, the choice its ``model_version`` Param offers.

``v1`` is an SVC, the most accurate; ``v2`` a k-nearest-neighbours classifier, quicker to retrain.
Both read the same 64 features (:func:`parallelrun_examples.data.digits_features`) and are saved
with joblib at ``<base>/digits/models/<version>.joblib``. Plain Python, no Airflow; scikit-learn is
imported only to train, so a DAG file can import ``MODEL_VERSIONS`` and still parse fast.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

MODEL_VERSIONS = {
    "v1": "v1: support vector classifier (most accurate)",
    "v2": "v2: k-nearest neighbours (quicker to retrain)",
}


def digits_model_path(base: str | Path, version: str) -> Path:
    """Return where ``version`` of the digits model is saved under ``base``."""
    if version not in MODEL_VERSIONS:
        raise ValueError(f"model version {version!r} is unknown; use one of {', '.join(MODEL_VERSIONS)}")
    return Path(base) / "digits" / "models" / f"{version}.joblib"


def train_digits_model_version(base: str | Path, version: str) -> Path:
    """Train ``version`` of the digits model on the bundled digits and save it; return its path."""
    import joblib
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC

    from parallelrun_examples.data import digits_training_set

    path = digits_model_path(base, version)
    features, labels = digits_training_set()
    model = SVC(gamma="scale") if version == "v1" else KNeighborsClassifier(n_neighbors=5)
    model.fit(features, labels)
    # Saved under a temporary name and renamed: a run loading the model never reads half a file.
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        joblib.dump(model, partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def prepare_model_versions(base: str | Path) -> dict[str, str]:
    """Train whichever model versions are missing under ``base``; return ``{version: path}``."""
    paths = {}
    for version in MODEL_VERSIONS:
        path = digits_model_path(base, version)
        if not path.is_file():
            train_digits_model_version(base, version)
        paths[version] = str(path)
    return paths
