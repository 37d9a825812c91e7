"""An entry script written the way Azure ML's ParallelRunStep examples are, bar one import.

Module globals set in init(), arguments parsed with argparse's parse_known_args (the extra
arguments Azure passes are ignored), the EntryScript logger and folders.
"""

import argparse
import os
import sys

from airflow_parallelrun import EntryScript  # Azure: from azureml_user.parallel_run import EntryScript


def init():
    global args, unknown_args, logger
    parser = argparse.ArgumentParser(description="batch scoring")
    parser.add_argument("--model_name", required=True)
    parser.add_argument("--threshold", type=float, default=0.5)
    args, unknown_args = parser.parse_known_args()
    entry_script = EntryScript()
    logger = entry_script.logger
    logger.info("init: model_name=%s threshold=%s", args.model_name, args.threshold)
    with open(os.path.join(entry_script.log_dir, "init.log"), "w") as f:
        f.write(f"model_name={args.model_name}\n")


def run(mini_batch):
    entry_script = EntryScript()
    logger.info("run: %d files in %s", len(mini_batch), entry_script.mini_batch_id)
    results = []
    for path in mini_batch:
        results.append(
            {
                "file": os.path.basename(path),
                "model_name": args.model_name,
                "threshold": args.threshold,
                "unknown_args": " ".join(unknown_args),
                "argv": " ".join(sys.argv[1:]),
                "greeting": os.environ.get("GREETING", "<unset>"),
                "output_dir": entry_script.output_dir,
                "log_dir": entry_script.log_dir,
                "mini_batch_id": entry_script.mini_batch_id,
                "airflow_loaded": "airflow" in sys.modules,
            }
        )
    return results
