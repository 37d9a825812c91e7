"""The baseline: a plain process pool doing the benchmark's work, as a user would write it by hand.

One worker process per core (``--workers``, default 2), each scoring with one thread.

``tabular``: one task per parquet file; each task loads the model, reads its file, predicts,
and writes one parquet file (``id``, ``proba``) to the output folder. That is the pattern AWS
recommends for SageMaker Processing, and the one the issue timed.

    python benchmarks/baseline_process_pool.py tabular --input DIR --output DIR --model model.joblib

With ``s3://`` URLs as input and output, each task reads and writes through s3fs, its options
(credentials, endpoint) taken from ``$PARALLELRUN_BENCH_S3_OPTIONS`` (JSON).

``files``: one task per mini-batch of ``--batch`` files (sorted paths); each worker process loads
the model once (the pool's initializer, the same place as an entry script's ``init()``), and the
parent writes the ``"<file name>: <digit>"`` lines to one text file in input order.
``--init-sleep`` and ``--counts-dir`` make the initializer slow and counted, as for workload (c).

    python benchmarks/baseline_process_pool.py files --input DIR --output out.txt --model model.joblib

``sql``: a plain loop of ``pandas.read_sql(..., chunksize=--batch)`` over the table ``--input`` (a
server-side cursor, ``stream_results``, so the parent holds one chunk, not the table) feeds the
pool; each worker process loads the model and makes its engine once (the initializer), scores
its chunk and ``to_sql``-appends ``customer_id, score`` to the table ``--output``, which the parent
creates first. At most two chunks per worker are in flight, so memory does not grow with the table.

    python benchmarks/baseline_process_pool.py sql --url postgresql+psycopg://... --input customers
        --output scores --model model.joblib --batch 50000

Prints one JSON line: the seconds from creating the pool to the last output written, the items
and the tasks.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

FEATURES = [f"f{i:02d}" for i in range(20)]
CUSTOMER_FEATURES = [
    "age",
    "tenure_months",
    "monthly_spend",
    "orders_last_year",
    "days_since_last_order",
    "support_tickets",
    "region",
]

_model = None
_engine = None
_table = ""


def _one_thread() -> None:
    """Score with one thread: called after loading the model, since threadpoolctl limits only the
    libraries already loaded, and scikit-learn's OpenMP runtime loads with the model's classes."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def score_parquet_file(source: str, target: str, model_path: str, options: dict | None = None) -> int:
    """Load the model, score one parquet file and write its ``id, proba`` parquet file.

    ``options``: s3fs's options, when ``source`` and ``target`` are ``s3://`` URLs.
    """
    import joblib
    import pandas as pd

    model = joblib.load(model_path)
    _one_thread()
    frame = pd.read_parquet(source, storage_options=options)
    proba = model.predict_proba(frame[FEATURES].to_numpy())[:, 1]
    result = pd.DataFrame({"id": frame["id"].to_numpy(), "proba": proba})
    result.to_parquet(target, index=False, storage_options=options)
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


def load_sql_worker(model_path: str, url: str, table: str) -> None:
    """Pool initializer for ``sql``: load the model and make this process's engine, once."""
    global _model, _engine, _table
    import joblib
    from sqlalchemy import create_engine

    _model = joblib.load(model_path)
    _one_thread()
    _engine, _table = create_engine(url), table


def score_and_write(chunk) -> int:  # type: ignore[no-untyped-def]
    """Score one chunk of customers and append ``customer_id, score`` to the output table."""
    import pandas as pd

    scores = _model.predict_proba(chunk[CUSTOMER_FEATURES])[:, 1]  # type: ignore[attr-defined]
    frame = pd.DataFrame({"customer_id": chunk["customer_id"].to_numpy(), "score": scores})
    frame.to_sql(_table, _engine, if_exists="append", index=False)
    return len(frame)


def run_sql(args: argparse.Namespace) -> dict:
    import pandas as pd
    from sqlalchemy import create_engine, text

    engine = create_engine(args.url)
    empty = pd.DataFrame({"customer_id": pd.Series(dtype="int64"), "score": pd.Series(dtype="float64")})
    empty.to_sql(args.output, engine, if_exists="fail", index=False)
    rows = tasks = 0
    pending: set = set()
    with (
        ProcessPoolExecutor(
            max_workers=args.workers,
            initializer=load_sql_worker,
            initargs=(args.model, args.url, args.output),
        ) as pool,
        engine.connect().execution_options(stream_results=True) as conn,
    ):
        query = text(f'SELECT * FROM "{args.input}"')
        for chunk in pd.read_sql(query, conn, chunksize=args.batch):
            if len(pending) >= 2 * args.workers:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                rows += sum(f.result() for f in done)
            pending.add(pool.submit(score_and_write, chunk))
            tasks += 1
        rows += sum(f.result() for f in pending)
    engine.dispose()
    return {"items": rows, "tasks": tasks}


def run_tabular_s3(args: argparse.Namespace) -> dict:
    """``tabular`` with ``s3://`` input and output: s3fs, options from $PARALLELRUN_BENCH_S3_OPTIONS."""
    import s3fs

    options = json.loads(os.environ["PARALLELRUN_BENCH_S3_OPTIONS"])
    fs = s3fs.S3FileSystem(**options)
    sources = sorted(k for k in fs.find(args.input.split("://", 1)[1]) if k.endswith(".parquet"))
    output = args.output.rstrip("/")
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures = [
            pool.submit(
                score_parquet_file, f"s3://{s}", f"{output}/{s.rsplit('/', 1)[1]}", args.model, options
            )
            for s in sources
        ]
        rows = sum(f.result() for f in futures)
    return {"items": rows, "tasks": len(sources)}


def run_tabular(args: argparse.Namespace) -> dict:
    if args.input.startswith("s3://"):
        return run_tabular_s3(args)
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
    parser.add_argument("mode", choices=["tabular", "files", "sql"])
    parser.add_argument("--input", required=True, help="folder of parquet or PNG files; sql: a table")
    parser.add_argument("--output", required=True, help="tabular: a folder; files: a text file; sql: a table")
    parser.add_argument("--url", default="", help="sql: the database's SQLAlchemy URL")
    parser.add_argument("--model", required=True, help="a joblib file")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=10, help="files per task (files); rows per chunk (sql)")
    parser.add_argument("--init-sleep", type=float, default=0.0, help="seconds the initializer sleeps")
    parser.add_argument("--counts-dir", default="", help="the initializer appends a line here per call")
    args = parser.parse_args()
    started = time.perf_counter()
    modes = {"tabular": run_tabular, "files": run_files, "sql": run_sql}
    result = modes[args.mode](args)
    print(json.dumps({"seconds": round(time.perf_counter() - started, 3), **result}), flush=True)


if __name__ == "__main__":
    main()
