"""The baseline: a plain process pool doing the benchmark's work, as a user would write it by hand.

One worker process per core (``--workers``, default 2), each scoring with one thread.

``tabular``: one task per parquet file; each task loads the model, reads its file, predicts,
and writes one parquet file (``id``, ``proba``) to the output folder. That is the pattern AWS
recommends for SageMaker Processing, and the one the issue timed.

    python benchmarks/baseline_process_pool.py tabular --input DIR --output DIR --model model.joblib

``files``: one task per mini-batch of ``--batch`` files (sorted paths); each worker process loads
the model once (the pool's initializer, the same place as an entry script's ``init()``), and the
parent writes the ``"<file name>: <digit>"`` lines to one text file in input order.
``--init-sleep`` and ``--counts-dir`` make the initializer slow and counted, as for workload (c).

    python benchmarks/baseline_process_pool.py files --input DIR --output out.txt --model model.joblib

Prints one JSON line: the seconds from creating the pool to the last output written, the items
and the tasks.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

FEATURES = [f"f{i:02d}" for i in range(20)]

_model = None


def _one_thread() -> None:
    """Score with one thread: called after loading the model, since threadpoolctl limits only the
    libraries already loaded, and scikit-learn's OpenMP runtime loads with the model's classes."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def score_parquet_file(source: str, target: str, model_path: str) -> int:
    """Load the model, score one parquet file and write its ``id, proba`` parquet file."""
    import joblib
    import pandas as pd

    model = joblib.load(model_path)
    _one_thread()
    frame = pd.read_parquet(source)
    proba = model.predict_proba(frame[FEATURES].to_numpy())[:, 1]
    pd.DataFrame({"id": frame["id"].to_numpy(), "proba": proba}).to_parquet(target, index=False)
    return len(frame)


def load_model(model_path: str, init_sleep: float, counts_dir: str) -> None:
    """Pool initializer: load the model once per worker process (optionally slowly, and counted)."""
    global _model
    import joblib

    if counts_dir:
        with open(os.path.join(counts_dir, "init-calls.txt"), "a") as f:
            f.write(f"{os.getpid()} {time.time():.3f}\n")
    time.sleep(init_sleep)
    _model = joblib.load(model_path)
    _one_thread()


def score_images(paths: list[str]) -> list[str]:
    """Return ``"<file name>: <digit>"`` for each PNG of one mini-batch."""
    import numpy as np
    from PIL import Image

    rows = []
    for path in paths:
        with Image.open(path) as img:
            rows.append(np.asarray(img.convert("L"), dtype=np.float64).reshape(64) / 255.0)
    digits = _model.predict(np.stack(rows))  # type: ignore[attr-defined]
    return [f"{os.path.basename(p)}: {int(d)}" for p, d in zip(paths, digits, strict=True)]


def run_tabular(args: argparse.Namespace) -> dict:
    sources = sorted(Path(args.input).rglob("*.parquet"))
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures = [pool.submit(score_parquet_file, str(s), str(output / s.name), args.model) for s in sources]
        rows = sum(f.result() for f in futures)
    return {"items": rows, "tasks": len(sources)}


def run_files(args: argparse.Namespace) -> dict:
    paths = sorted(str(p) for p in Path(args.input).rglob("*.png"))
    batches = [paths[i : i + args.batch] for i in range(0, len(paths), args.batch)]
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    with (
        ProcessPoolExecutor(
            max_workers=args.workers,
            initializer=load_model,
            initargs=(args.model, args.init_sleep, args.counts_dir),
        ) as pool,
        open(args.output, "w") as out,
    ):
        for lines in pool.map(score_images, batches, chunksize=1):
            out.writelines(f"{line}\n" for line in lines)
    return {"items": len(paths), "tasks": len(batches)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=["tabular", "files"])
    parser.add_argument("--input", required=True, help="folder of parquet files or PNG files")
    parser.add_argument("--output", required=True, help="tabular: a folder; files: a text file")
    parser.add_argument("--model", required=True, help="a joblib file")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=10, help="files per task (files mode)")
    parser.add_argument("--init-sleep", type=float, default=0.0, help="seconds the initializer sleeps")
    parser.add_argument("--counts-dir", default="", help="the initializer appends a line here per call")
    args = parser.parse_args()
    started = time.perf_counter()
    result = run_tabular(args) if args.mode == "tabular" else run_files(args)
    print(json.dumps({"seconds": round(time.perf_counter() - started, 3), **result}), flush=True)


if __name__ == "__main__":
    main()
