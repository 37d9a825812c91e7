"""Ray Data doing the benchmark's work: the peer most users would pick instead of Airflow.

A fresh local Ray (``ray.init(num_cpus=2, include_dashboard=False)``) per call, its start-up
included in the time; ``map_batches`` with a pool of 2 actors, each loading the model once in
``__init__`` and scoring with one thread; results written as parquet.

``tabular``: ``read_parquet`` of the folder, batches of one file's rows, ``id, proba`` out.
``files``: ``read_images`` (grey, with paths) in batches of ``--batch``, a ``line`` column out
(``"<file name>: <digit>"``). ``--init-sleep`` and ``--counts-dir`` make ``__init__`` slow and
counted, as for workload (c); then the paths come from ``from_items`` and the actors open the
files themselves, as the entry script does.

    python benchmarks/ray_data_job.py tabular --input DIR --output DIR --model model.joblib

Prints one JSON line: the seconds from ``ray.init`` to ``ray.shutdown`` and the items.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

FEATURES = [f"f{i:02d}" for i in range(20)]


def _load(model_path: str, init_sleep: float = 0.0, counts_dir: str = ""):
    import joblib
    from threadpoolctl import threadpool_limits

    if counts_dir:
        with open(os.path.join(counts_dir, "init-calls.txt"), "a") as f:
            f.write(f"{os.getpid()} {time.time():.3f}\n")
    time.sleep(init_sleep)
    model = joblib.load(model_path)
    # After loading: threadpoolctl limits only libraries already loaded, and scikit-learn's
    # OpenMP runtime loads with the model's classes.
    threadpool_limits(1)
    return model


class TabularScorer:
    """Score a pandas batch of rows: ``id, proba``."""

    def __init__(self, model_path: str) -> None:
        self.model = _load(model_path)

    def __call__(self, batch):
        import pandas as pd

        proba = self.model.predict_proba(batch[FEATURES].to_numpy())[:, 1]
        return pd.DataFrame({"id": batch["id"].to_numpy(), "proba": proba})


class ImageScorer:
    """Score a batch of decoded 8x8 grey images (``image``, ``path``): one ``line`` each."""

    def __init__(self, model_path: str) -> None:
        self.model = _load(model_path)

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        images = np.asarray(batch["image"], dtype=np.float64)
        digits = self.model.predict(images.reshape(len(images), 64) / 255.0)
        names = [os.path.basename(p) for p in batch["path"]]
        return {"line": np.array([f"{n}: {int(d)}" for n, d in zip(names, digits, strict=True)])}


class PathScorer:
    """Open and score a batch of PNG paths (``item``): one ``line`` each; a slow, counted __init__."""

    def __init__(self, model_path: str, init_sleep: float, counts_dir: str) -> None:
        self.model = _load(model_path, init_sleep, counts_dir)

    def __call__(self, batch: dict) -> dict:
        import numpy as np
        from PIL import Image

        rows = []
        for path in batch["item"]:
            with Image.open(path) as img:
                rows.append(np.asarray(img.convert("L"), dtype=np.float64).reshape(64) / 255.0)
        digits = self.model.predict(np.stack(rows))
        lines = [f"{os.path.basename(p)}: {int(d)}" for p, d in zip(batch["item"], digits, strict=True)]
        return {"line": np.array(lines)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=["tabular", "files"])
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True, help="a folder of parquet files")
    parser.add_argument("--model", required=True)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument(
        "--actor-cpus",
        type=float,
        default=0.5,
        help="logical CPUs each actor asks for; with 1, two actors hold both CPUs and the read tasks "
        "never get one (the job hangs)",
    )
    parser.add_argument("--batch", type=int, default=10, help="files per batch (files mode)")
    parser.add_argument("--rows", type=int, default=100_000, help="rows per batch (tabular mode)")
    parser.add_argument("--init-sleep", type=float, default=0.0)
    parser.add_argument("--counts-dir", default="")
    args = parser.parse_args()

    started = time.perf_counter()
    import ray
    import ray.data

    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    pool = ray.data.ActorPoolStrategy(size=args.actors)
    if args.mode == "tabular":
        # One block per file, so that both actors get work from the start.
        files = len(list(Path(args.input).rglob("*.parquet")))
        ds = ray.data.read_parquet(args.input, override_num_blocks=files)
        ds = ds.map_batches(
            TabularScorer,
            fn_constructor_args=(args.model,),
            batch_size=args.rows,
            batch_format="pandas",
            compute=pool,
            num_cpus=args.actor_cpus,
        )
    elif args.init_sleep or args.counts_dir:
        paths = sorted(str(p) for p in Path(args.input).rglob("*.png"))
        ds = ray.data.from_items(paths).map_batches(
            PathScorer,
            fn_constructor_args=(args.model, args.init_sleep, args.counts_dir),
            batch_size=args.batch,
            batch_format="numpy",
            compute=pool,
            num_cpus=args.actor_cpus,
        )
    else:
        paths = sorted(str(p) for p in Path(args.input).rglob("*.png"))
        ds = ray.data.read_images(paths, mode="L", include_paths=True).map_batches(
            ImageScorer,
            fn_constructor_args=(args.model,),
            batch_size=args.batch,
            batch_format="numpy",
            compute=pool,
            num_cpus=args.actor_cpus,
        )
    ds.write_parquet(args.output)
    ray.shutdown()
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": round(seconds, 3)}), flush=True)


if __name__ == "__main__":
    main()
