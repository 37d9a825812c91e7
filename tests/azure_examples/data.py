"""Small inputs and models for the example-shaped entry scripts, made locally from scikit-learn's own data.

``load_digits`` (8x8 images) and ``load_iris`` ship inside scikit-learn, so nothing is downloaded.
Models are pickled scikit-learn estimators laid out as Azure's examples register theirs.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.datasets import load_digits, load_iris
from sklearn.linear_model import LogisticRegression

HERE = Path(__file__).resolve().parent


def digit_images(folder: Path, count: int) -> dict[str, int]:
    """Write ``count`` 8x8 digit PNGs into ``folder``; return each file name's true digit."""
    digits = load_digits()
    folder.mkdir(parents=True)
    truth = {}
    for i in range(count):
        name = f"digit{i:03d}.png"
        Image.fromarray((digits.images[i] * 15).astype(np.uint8), mode="L").save(folder / name)
        truth[name] = int(digits.target[i])
    return truth


def digit_model(folder: Path, file_name: str = "digits.pkl") -> Path:
    """Write a digit classifier (on 0-240 pixel values, as the PNGs hold) as ``folder/file_name``."""
    digits = load_digits()
    model = LogisticRegression(max_iter=2000).fit(digits.data * 15, digits.target)
    folder.mkdir(parents=True)
    with open(folder / file_name, "wb") as f:
        pickle.dump(model, f)
    return folder


def iris(folder: Path) -> tuple[Path, pd.DataFrame]:
    """Write the iris features as two csv files and a classifier of them; return the model and the frame."""
    data = load_iris(as_frame=True)
    features = data.frame.drop(columns="target")
    folder.mkdir(parents=True)
    features.iloc[:75].to_csv(folder / "iris0.csv", index=False)
    features.iloc[75:].to_csv(folder / "iris1.csv", index=False)
    model = folder.parent / "iris-model.pkl"
    with open(model, "wb") as f:
        varieties = np.array([f"Iris-{name}" for name in data.target_names])[data.target]
        pickle.dump(LogisticRegression(max_iter=1000).fit(features, varieties), f)
    return model, features


def incomes(folder: Path) -> pd.DataFrame:
    """Write a table of incomes by state (the shape of the partition-per-column sample)."""
    frame = pd.DataFrame({"STATE": [["WA", "OR", "CA"][i % 3] for i in range(30)], "INCOME": range(100, 130)})
    folder.mkdir(parents=True)
    frame.to_csv(folder / "incomes.csv", index=False)
    return frame


def sales(folder: Path) -> pd.DataFrame:
    """Write weekly sales of 2 stores x 2 brands (the orange-juice sample's shape), 40 weeks each."""
    rng = np.random.default_rng(7)
    rows = [
        {
            "WeekStarting": str(week.date()),
            "Store": store,
            "Brand": brand,
            "Quantity": 100 + rng.integers(0, 50),
        }
        for store in (1, 2)
        for brand in ("dominicks", "tropicana")
        for week in pd.date_range("2024-01-01", periods=40, freq="W-MON")
    ]
    frame = pd.DataFrame(rows).assign(Revenue=lambda f: f["Quantity"] * 2.5)
    folder.mkdir(parents=True)
    frame.to_csv(folder / "sales.csv", index=False)
    return frame


def audio_files(folder: Path) -> dict[str, int]:
    """Write files under ``<user>/<genres>/`` (the partition-per-folder sample's layout); return sizes."""
    sizes = {}
    for user, genres, count in (("alice", "disco", 2), ("alice", "piano", 1), ("bob", "disco", 3)):
        (folder / user / genres).mkdir(parents=True)
        for i in range(count):
            name = f"{user}-{genres}-{i}.wav"
            (folder / user / genres / name).write_bytes(b"x" * (10 * (i + 1)))
            sizes[name] = 10 * (i + 1)
    return sizes


def heart_csvs(folder: Path, model_folder: Path) -> list[str]:
    """Write three csv files of two features and a classifier of them in ``model_folder``."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(3)
    names = []
    for i in range(3):
        frame = pd.DataFrame({"age": rng.integers(30, 80, 5), "chol": rng.integers(150, 300, 5)})
        frame.to_csv(folder / f"heart{i}.csv", index=False)
        names.append(f"heart{i}.csv")
    train = pd.DataFrame({"age": [30, 70, 40, 80], "chol": [160, 290, 170, 280]})
    model_folder.mkdir(parents=True)
    with open(model_folder / "heart.pkl", "wb") as f:
        pickle.dump(LogisticRegression().fit(train, [0, 1, 0, 1]), f)
    return names
