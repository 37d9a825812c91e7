"""Count the object-store requests of each step of a run of parquet files, and how many were sequential.

Runs ``steps.partition``, ``steps.run_mini_batches`` and ``steps.aggregate`` (the core steps, no
Airflow) on moto's S3 server behind the test proxy adding ``--delay`` seconds to every request,
with an input shaped as the benchmark's workload (a): parquet files of one row group each, a
mini-batch per file. For each step it prints the requests made, the round trips on its
critical path (the longest chain of requests each starting after the one before it ended: a
plain loop of N requests gives N, N requests all at once give 1), and the time during which at
least one request was in flight. ``--verbose`` lists the
requests of each step, their mini-batch and run key parts folded.

    PYTHONPATH=$PWD python tools/count_requests.py --files 30 [--delay 0.02] [--verbose]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def in_flight_seconds(spans: list[tuple[float, float, str, str]]) -> float:
    """Return the time during which at least one of ``spans`` was in flight."""
    total, end = 0.0, float("-inf")
    for s, e, _, _ in sorted(spans):
        if e > end:
            total += e - max(s, end)
            end = e
    return total


def critical_path(spans: list[tuple[float, float, str, str]]) -> set[tuple[float, float, str, str]]:
    """Return the requests of a longest chain of ``spans`` each starting after the one before ended."""
    chain, ended = set(), float("-inf")
    for span in sorted(spans, key=lambda s: s[1]):
        if span[0] >= ended:
            chain.add(span)
            ended = span[1]
    return chain


def fold(method: str, path: str) -> str:
    path, _, query = path.partition("?")
    path = re.sub(r"^/parallelrun-[0-9a-f]+", "/B", path)
    path = re.sub(r"/t-[0-9a-f]+/", "/T/", path)
    path = re.sub(r"mb-\d+", "mb-N", path)
    path = re.sub(r"\.[0-9a-f]{12}\.", ".KEY.", path)
    path = re.sub(r"t\d+\.parquet", "tN.parquet", path)
    path = re.sub(r"task-\d+", "task-N", path)
    keys = "&".join(sorted(k.split("=")[0] for k in query.split("&") if k))
    return f"{method} {path}" + (f"?{keys}" if keys else "")


def measured(proxy: Any, delay: float, name: str, fn: Callable[[], Any], verbose: bool | str) -> Any:
    started = time.monotonic()
    result = fn()
    wall = time.monotonic() - started
    spans = [s for s in proxy.spans if s[0] >= started]
    busy = in_flight_seconds(spans)
    print(
        f"{name:10s} requests {len(spans):4d}  one after another {proxy.sequential(started):4d}  "
        f"in flight {busy:5.2f} s = {busy / delay:5.1f} x the delay, of {wall:5.2f} s wall",
        flush=True,
    )
    if verbose == "timeline":
        chain = critical_path(spans)
        for s, e, m, p in sorted(spans):
            mark = "*" if (s, e, m, p) in chain else " "
            print(f"  {mark} {s - started:6.3f} {e - s:5.3f}  {fold(m, p)}")
    elif verbose:
        for what, n in sorted(Counter(fold(m, p) for _, _, m, p in spans).items()):
            print(f"    {n:4d}  {what}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=30)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--delay", type=float, default=0.02)
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--timeline", action="store_true", help="list each request in order")
    parser.add_argument("--twice", action="store_true", help="partition and aggregate again at the same path")
    args = parser.parse_args()

    from airflow_parallelrun.core import steps
    from airflow_parallelrun.core.inputs.datasets import TabularDataset
    from tests.object_stores import make_store, stop_servers
    from tests.parquet_runs import parquet_bytes, scoring_spec

    store = make_store("s3")
    os.environ.update(store.env())
    fs = store.fs()
    for f in range(args.files):
        fs.pipe_file(store.path(f"in/t{f:03d}.parquet"), parquet_bytes(f * args.rows, args.rows))
    slow = store.behind_proxy(delay=args.delay)
    os.environ.update(slow.env())
    proxy = slow.proxies[0]
    with tempfile.TemporaryDirectory() as tmp:
        spec = scoring_spec(slow, Path(tmp))
        verbose = "timeline" if args.timeline else args.verbose
        dataset = TabularDataset(path=slow.url("in"), format="parquet")
        try:
            for turn in range(2 if args.twice else 1):
                print(f"--- run {turn + 1}: {args.files} files, {args.delay * 1000:.0f} ms a request")
                descriptors = measured(
                    proxy, args.delay, "partition", lambda: steps.partition(dataset, spec), verbose
                )
                indexes = range(sum(d["count"] for d in descriptors))
                measured(proxy, args.delay, "run", partial(steps.run_mini_batches, indexes, spec), verbose)
                summary = measured(proxy, args.delay, "aggregate", lambda: steps.aggregate(spec), verbose)
                assert summary["succeeded_items"] == args.files * args.rows, summary
        finally:
            proxy.close()
            stop_servers()


if __name__ == "__main__":
    main()
