"""Entry script that records how the worker calls it, one result row per item.

Each row says which process ran it, how many times ``init()`` had been called by then, what type
``run()`` received and whether Airflow is loaded in the worker. ``shutdown()`` appends a line to
the file named by ``$SHUTDOWN_MARKER``.
"""

import json
import os
import sys

import pandas as pd

INIT_CALLS = 0
RUN_CALLS = 0
MODEL = None


def init():
    global INIT_CALLS, MODEL
    INIT_CALLS += 1
    MODEL = "loaded-in-init"


def run(mini_batch):
    global RUN_CALLS
    RUN_CALLS += 1
    if isinstance(mini_batch, pd.DataFrame):
        items = [json.dumps(row, sort_keys=True) for row in mini_batch.to_dict("records")]
        local = [False] * len(items)
    else:
        items = list(mini_batch)
        local = [os.path.isabs(p) and os.path.isfile(p) for p in items]
    return [
        {
            "item": item,
            "local_file": is_local,
            "input_type": type(mini_batch).__name__,
            "columns": "|".join(mini_batch.columns) if isinstance(mini_batch, pd.DataFrame) else "",
            "init_calls": INIT_CALLS,
            "run_calls": RUN_CALLS,
            "model": MODEL,
            "pid": os.getpid(),
            "airflow_loaded": "airflow" in sys.modules,
        }
        for item, is_local in zip(items, local, strict=True)
    ]


def shutdown():
    with open(os.environ["SHUTDOWN_MARKER"], "a") as f:
        f.write(f"pid={os.getpid()} init_calls={INIT_CALLS} run_calls={RUN_CALLS}\n")
