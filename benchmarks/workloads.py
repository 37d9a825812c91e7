"""Make the benchmark's inputs and models with fixed seeds, once, under the data folder.

Nothing here is timed. Each size lives in a folder of its own (``<data_dir>/<size>/``) with a
``ready.json`` that records what was made; a second call with the same parameters touches no file.

- (a) ``tabular``: parquet files of ``rows_per_file`` rows x 20 float64 features (``f00..f19``)
  and an ``id`` column, one row group per file, scored by a HistGradientBoostingClassifier.
- (b) ``files``: 8x8 grey PNG digits (scikit-learn's bundled digits, a little seeded noise on
  each copy), scored in mini-batches of 10 by a LogisticRegression.
- (c) ``slow_init``: the first images of (b), scored by the same model behind an ``init()`` that
  sleeps 1 s first, and that appends a line to a file in a counts folder each time it is called.
- (d) ``sql``: a customers table in PostgreSQL (``benchmarks/sql_tables.py``), scored by the SQL
  example's churn model (``parallelrun_examples.customers``), the scores written to a table.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.sql_tables import SqlTables, ensure_customers

REPO = Path(__file__).resolve().parent.parent

FEATURES = [f"f{i:02d}" for i in range(20)]
FILES_PER_MINI_BATCH = 10
INIT_SLEEP_SECONDS = 1.0
DATA_SEED = 20240501
MODEL_SEED = 7


@dataclass(frozen=True)
class Size:
    """How big each workload is at one ``--size``."""

    name: str
    tabular_files: int
    rows_per_file: int
    model_iterations: int
    model_leaves: int
    training_rows: int
    images: int
    slow_init_mini_batches: int
    # Files of (a) at 1x, 2x, 4x for the scaling runs: a prefix of (a)'s files.
    scaling_files: tuple[int, int, int]
    reps: int
    # (d): rows of the customers table, and rows per mini-batch (the baseline's chunksize).
    sql_rows: int = 0
    sql_mini_batch_rows: int = 50_000

    @property
    def slow_init_images(self) -> int:
        return self.slow_init_mini_batches * FILES_PER_MINI_BATCH


SIZES = {
    # A few seconds of data: proves that every contender runs end to end (the test suite's size).
    "tiny": Size("tiny", 4, 2_000, 20, 15, 4_000, 40, 3, (1, 2, 4), 1, 20_000, 5_000),
    # A few minutes: the shape of the full run at about a tenth of its work.
    "small": Size("small", 8, 100_000, 200, 63, 50_000, 2_000, 12, (2, 4, 8), 1, 200_000, 50_000),
    # The workload: about 65 s of pure scoring on 2 cores (0.54 s per 100,000 rows).
    "full": Size("full", 120, 100_000, 200, 63, 50_000, 20_000, 60, (15, 30, 60), 3, 2_000_000, 50_000),
}


@dataclass(frozen=True)
class Paths:
    """Where one size's inputs and models are."""

    root: Path

    @property
    def tabular_input(self) -> Path:
        return self.root / "a" / "input"

    @property
    def tabular_model(self) -> Path:
        return self.root / "a" / "model.joblib"

    def scaling_input(self, files: int) -> Path:
        return self.root / "a" / f"scale-{files}"

    @property
    def fixed_input(self) -> Path:
        """(f)'s one tiny file (``benchmarks/fixed_cost.py``)."""
        return self.root / "f" / "input"

    @property
    def images(self) -> Path:
        return self.root / "b" / "images"

    @property
    def digits_model(self) -> Path:
        return self.root / "b" / "model.joblib"

    @property
    def slow_init_input(self) -> Path:
        return self.root / "c" / "images"

    @property
    def customers_model(self) -> Path:
        return self.root / "d" / "model.joblib"


def _synthetic(rng, rows: int):
    """Return ``(X, y)``: 20 standard normal features and a binary label with interactions and noise."""
    import numpy as np

    x = rng.standard_normal((rows, len(FEATURES)))
    signal = x[:, :8].sum(axis=1) + np.sin(3 * x[:, 8]) * x[:, 9] + x[:, 10] * x[:, 11] - x[:, 12] ** 2
    y = (signal + rng.normal(0.0, 1.0, rows) > -1).astype(np.int64)
    return x, y


def _atomic_path(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def make_tabular(size: Size, paths: Paths) -> None:
    """Write (a)'s parquet files (one row group each) and train its model."""
    import joblib
    import numpy as np
    import pandas as pd
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(MODEL_SEED)
    x, y = _synthetic(rng, size.training_rows)
    model = HistGradientBoostingClassifier(
        max_iter=size.model_iterations,
        max_leaf_nodes=size.model_leaves,
        early_stopping=False,
        random_state=MODEL_SEED,
    ).fit(x, y)
    tmp = _atomic_path(paths.tabular_model)
    joblib.dump(model, tmp)
    os.replace(tmp, paths.tabular_model)

    rng = np.random.default_rng(DATA_SEED)
    for k in range(size.tabular_files):
        x, _ = _synthetic(rng, size.rows_per_file)
        frame = pd.DataFrame(x, columns=FEATURES)
        frame.insert(0, "id", np.arange(k * size.rows_per_file, (k + 1) * size.rows_per_file, dtype=np.int64))
        path = paths.tabular_input / f"part-{k:05d}.parquet"
        tmp = _atomic_path(path)
        frame.to_parquet(tmp, index=False, engine="pyarrow", row_group_size=size.rows_per_file)
        os.replace(tmp, path)
    for count in size.scaling_files:
        _link_prefix(sorted(paths.tabular_input.glob("*.parquet")), count, paths.scaling_input(count))


def link_tabular_prefix(paths: Paths, count: int) -> Path:
    """Return a folder holding (a)'s first ``count`` files, linking them in on first use."""
    _link_prefix(sorted(paths.tabular_input.glob("*.parquet")), count, paths.scaling_input(count))
    return paths.scaling_input(count)


def _link_prefix(files: list[Path], count: int, folder: Path) -> None:
    """Hard-link the first ``count`` files into ``folder``: the same bytes, no copy, no symlink to refuse."""
    if count > len(files):
        raise ValueError(f"asked for {count} files, only {len(files)} were made")
    folder.mkdir(parents=True, exist_ok=True)
    for path in files[:count]:
        target = folder / path.name
        if not target.exists():
            os.link(path, target)


def make_images(size: Size, paths: Paths) -> None:
    """Write (b)'s PNG digits, 500 per sub-folder, train the digits model, and link (c)'s prefix."""
    import joblib
    import numpy as np
    from PIL import Image
    from sklearn.linear_model import LogisticRegression

    if str(REPO / "dags") not in sys.path:
        sys.path.insert(0, str(REPO / "dags"))
    from parallelrun_examples.data import _digits, digits_training_set

    images, _ = _digits()
    rng = np.random.default_rng(DATA_SEED)
    written = []
    for i in range(size.images):
        noise = rng.integers(-12, 13, size=(8, 8))
        pixels = np.clip(images[i % len(images)].astype(np.int64) + noise, 0, 255).astype(np.uint8)
        path = paths.images / f"batch_{i // 500:03d}" / f"digit_{i:06d}.png"
        tmp = _atomic_path(path)
        Image.fromarray(pixels).save(tmp, format="PNG")
        os.replace(tmp, path)
        written.append(path)
    features, labels = digits_training_set()
    model = LogisticRegression(max_iter=2000).fit(features, labels)
    tmp = _atomic_path(paths.digits_model)
    joblib.dump(model, tmp)
    os.replace(tmp, paths.digits_model)
    _link_prefix(written, size.slow_init_images, paths.slow_init_input)


def prepare_sql(size: Size, paths: Paths, tables: SqlTables) -> None:
    """Train (d)'s model unless it is there, and make its customers table unless it holds its rows."""
    if not paths.customers_model.is_file():
        if str(REPO / "dags") not in sys.path:
            sys.path.insert(0, str(REPO / "dags"))
        from parallelrun_examples.customers import train_customers_model

        train_customers_model(paths.customers_model)
    if ensure_customers(tables, size.sql_rows):
        print(f"made table {tables.customers} ({size.sql_rows:,} rows)", file=sys.stderr, flush=True)


def prepare(size: Size, data_dir: Path, workloads: set[str], sql: SqlTables | None = None) -> Paths:
    """Make whatever is missing of the inputs of ``workloads`` at ``size``; return where they are."""
    paths = Paths(Path(data_dir).resolve() / size.name)
    marker = paths.root / "ready.json"
    ready = json.loads(marker.read_text()) if marker.is_file() else {}
    fields = asdict(size)
    tabular = ("tabular_files", "rows_per_file", "model_iterations", "model_leaves", "training_rows")
    # Compared as JSON reads it back (tuples come back as lists).
    wanted = json.loads(
        json.dumps(
            {
                "tabular": {k: fields[k] for k in (*tabular, "scaling_files")} | {"seed": DATA_SEED},
                "images": {k: fields[k] for k in ("images", "slow_init_mini_batches")} | {"seed": DATA_SEED},
            }
        )
    )
    made = False
    if workloads & {"a", "f"} and ready.get("tabular") != wanted["tabular"]:
        print(f"making workload a at size {size.name} under {paths.root} ...", file=sys.stderr, flush=True)
        shutil.rmtree(paths.root / "a", ignore_errors=True)
        shutil.rmtree(paths.root / "f", ignore_errors=True)
        make_tabular(size, paths)
        ready["tabular"] = wanted["tabular"]
        made = True
    if workloads & {"b", "c"} and ready.get("images") != wanted["images"]:
        print(
            f"making workloads b, c at size {size.name} under {paths.root} ...", file=sys.stderr, flush=True
        )
        shutil.rmtree(paths.root / "b", ignore_errors=True)
        shutil.rmtree(paths.root / "c", ignore_errors=True)
        make_images(size, paths)
        ready["images"] = wanted["images"]
        made = True
    if made:
        paths.root.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps(ready, indent=1))
    if "f" in workloads:
        from benchmarks.fixed_cost import make_input

        make_input(paths.tabular_input, paths.fixed_input)
    if "d" in workloads:
        if sql is None:
            raise ValueError("workload d needs the database's tables (SqlTables)")
        prepare_sql(size, paths, sql)
    return paths
