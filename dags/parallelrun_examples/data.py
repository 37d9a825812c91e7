"""Prepare the example inputs and models: plain Python, no Airflow, no network.

Everything comes from scikit-learn's bundled datasets (``load_digits``, ``load_iris``). Files are written to a
temporary name and then renamed, so a concurrent reader (another task calling :func:`prepare_examples`) never
sees a half-written file.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from PIL import Image
from sklearn.datasets import load_digits, load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC

DIGITS_PER_FOLDER = 500
TABULAR_FEATURES = ["f0", "f1", "f2", "f3"]
_TABULAR_SEED = 7
_TABULAR_NOISE = 0.05


@contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` and rename it to ``path`` once the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """Return the digits as the PNG files hold them: uint8 images (n, 8, 8) scaled to 0..255, and labels."""
    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def _digit_path(folder: Path, i: int) -> Path:
    return folder / f"batch_{i // DIGITS_PER_FOLDER}" / f"digit_{i:04d}.png"


def _limit(count: int | None, total: int) -> int:
    return total if count is None else max(0, min(count, total))


def digits_features(png_path: str | Path) -> np.ndarray:
    """Read one digit PNG as the model sees it: 64 float64 features, the 8x8 grey pixels row by row, / 255.

    Entry scripts repeat these lines inline (they are standalone files); keep both in step.
    """
    with Image.open(png_path) as img:
        return np.asarray(img.convert("L"), dtype=np.float64).reshape(64) / 255.0


def digits_training_set() -> tuple[np.ndarray, np.ndarray]:
    """Return ``(features (n, 64), labels (n,))`` exactly as :func:`digits_features` reads them from PNG."""
    images, labels = _digits()
    return images.reshape(len(images), 64).astype(np.float64) / 255.0, labels.copy()


def make_digits_images(folder: str | Path, *, count: int | None = None) -> list[Path]:
    """Write the bundled digits as 8x8 grayscale PNG files, ``folder/batch_{i // 500}/digit_{i:04d}.png``.

    ``count`` keeps the first N. Existing files are overwritten.
    """
    images, _ = _digits()
    paths = []
    for i in range(_limit(count, len(images))):
        path = _digit_path(Path(folder), i)
        with _atomic(path) as tmp:
            Image.fromarray(images[i]).save(tmp, format="PNG")
        paths.append(path)
    return paths


def digits_labels(count: int | None = None) -> dict[str, int]:
    """Map each digit file name (``digit_0003.png``) to its true label."""
    _, labels = _digits()
    return {f"digit_{i:04d}.png": int(labels[i]) for i in range(_limit(count, len(labels)))}


def train_digits_model(model_path: str | Path) -> Path:
    """Train an SVC on the digits as read back from PNG (:func:`digits_features`); save it with joblib."""
    features, labels = digits_training_set()
    model = SVC(gamma="scale").fit(features, labels)
    return save_model(model, Path(model_path))


def _tabular_frame(rows: int) -> pd.DataFrame:
    iris = load_iris()
    rng = np.random.default_rng(_TABULAR_SEED)
    picked = iris.data[rng.integers(0, len(iris.data), size=rows)]
    noisy = np.round(picked + rng.normal(0.0, _TABULAR_NOISE, size=picked.shape), 3)
    frame = pd.DataFrame(noisy, columns=TABULAR_FEATURES)
    frame.insert(0, "id", np.arange(rows, dtype=np.int64))
    return frame


def make_tabular_table(
    folder: str | Path, *, rows: int = 20000, files: int = 3, fmt: str = "csv"
) -> list[Path]:
    """Write a synthetic iris-like table (``id``, ``f0..f3``) split over ``folder/part-{k:03d}.{fmt}``.

    Rows are iris rows drawn with ``default_rng(7)`` plus small noise; ``id`` runs 0..rows-1 across the
    files in order. Parquet files use row groups of 2000 rows. Deterministic given the arguments.
    """
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"fmt must be 'csv' or 'parquet', not {fmt!r}")
    if rows < 0 or files < 1:
        raise ValueError(f"need rows >= 0 and files >= 1, got rows={rows}, files={files}")
    frame = _tabular_frame(rows)
    bounds = np.linspace(0, rows, files + 1).astype(int)
    paths = []
    for k in range(files):
        part = frame.iloc[bounds[k] : bounds[k + 1]]
        path = Path(folder) / f"part-{k:03d}.{fmt}"
        with _atomic(path) as tmp:
            if fmt == "csv":
                part.to_csv(tmp, index=False)
            else:
                part.to_parquet(tmp, index=False, engine="pyarrow", row_group_size=2000)
        paths.append(path)
    return paths


def train_tabular_model(model_path: str | Path) -> Path:
    """Train a classifier on the iris features (named ``f0..f3``); save it with joblib. It predicts 0..2."""
    iris = load_iris()
    features = pd.DataFrame(iris.data, columns=TABULAR_FEATURES)
    model = LogisticRegression(max_iter=1000).fit(features, iris.target)
    return save_model(model, Path(model_path))


def save_model(model: object, path: Path) -> Path:
    """Save ``model`` with joblib at ``path``, written under a temporary name and renamed into place."""
    with _atomic(path) as tmp:
        joblib.dump(model, tmp)
    return path


def prepare_examples(base: str | Path) -> dict[str, str]:
    """Create whatever is missing of the example inputs and models under ``base``; return their paths.

    Each output is checked on its own (a deleted model is retrained, nothing else is rewritten), so a second
    call touches no file. Keys: ``digits_images``, ``digits_model``, ``tabular_input``, ``tabular_model``.
    """
    base = Path(base)
    paths = {
        "digits_images": base / "digits" / "images",
        "digits_model": base / "digits" / "model.joblib",
        "tabular_input": base / "tabular" / "input",
        "tabular_model": base / "tabular" / "model.joblib",
    }
    images, _ = _digits()
    if not all(_digit_path(paths["digits_images"], i).is_file() for i in range(len(images))):
        make_digits_images(paths["digits_images"])
    if not paths["digits_model"].is_file():
        train_digits_model(paths["digits_model"])
    if not all((paths["tabular_input"] / f"part-{k:03d}.csv").is_file() for k in range(3)):
        make_tabular_table(paths["tabular_input"], rows=20000, files=3, fmt="csv")
    if not paths["tabular_model"].is_file():
        train_tabular_model(paths["tabular_model"])
    return {key: str(path) for key, path in paths.items()}
