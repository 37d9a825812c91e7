"""The floor: ``model.predict_proba`` on every row of workload (a), already in memory, both cores.

Reading the files and loading the model are not timed; only the one ``predict_proba`` call is,
with scikit-learn's own threads (OpenMP, one per core). No framework can score faster than this
on the machine.

    python benchmarks/floor_predict.py --input DIR --model model.joblib [--output out.parquet]

Prints one JSON line: the seconds of the call and the rows scored.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

FEATURES = [f"f{i:02d}" for i in range(20)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--input", required=True, help="folder of parquet files")
    parser.add_argument("--model", required=True, help="a joblib file")
    parser.add_argument("--output", default="", help="write id, proba here (not timed)")
    args = parser.parse_args()

    import joblib
    import pandas as pd

    frame = pd.concat(
        [pd.read_parquet(p) for p in sorted(Path(args.input).rglob("*.parquet"))], ignore_index=True
    )
    features = frame[FEATURES].to_numpy()
    model = joblib.load(args.model)
    started = time.perf_counter()
    proba = model.predict_proba(features)[:, 1]
    seconds = time.perf_counter() - started
    if args.output:
        pd.DataFrame({"id": frame["id"].to_numpy(), "proba": proba}).to_parquet(args.output, index=False)
    print(json.dumps({"seconds": round(seconds, 3), "items": len(frame), "tasks": 1}), flush=True)


if __name__ == "__main__":
    main()
