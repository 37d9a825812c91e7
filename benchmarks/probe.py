"""Measure one engine step's peak memory in a fresh process: ``partition`` or ``aggregate``.

    python -m benchmarks.probe partition --dataset '{"kind": "tabular", "path": ..., "format": "parquet"}'
        --mini-batch-size 64MB --output SCRATCH
    python -m benchmarks.probe aggregate --output RUN_OUTPUT --config '{"append_row_format": "parquet", ...}'

Prints one JSON line: ``peak_rss_mb`` (the peak RSS during the step, VmHWM reset after the
imports), ``imports_rss_mb`` (the RSS after the imports, before the step: what any process of
ours pays anyway), ``step_mb`` (the difference), and the step's seconds. The aggregate probe
re-runs the merge on a finished run's output, which rewrites the same merged file, summary and
report.
"""

from __future__ import annotations

import argparse
import json
import time


def _status_mb(field: str) -> float:
    """Return a ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS; Linux 4.0+."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("step", choices=["partition", "aggregate"])
    parser.add_argument("--output", required=True)
    parser.add_argument("--dataset", default="{}")
    parser.add_argument("--mini-batch-size", default=None)
    parser.add_argument("--config", default="{}")
    args = parser.parse_args()

    from airflow_parallelrun.core import steps
    from airflow_parallelrun.core.config import ParallelRunConfig
    from airflow_parallelrun.core.inputs.datasets import FileDataset, TabularDataset
    from airflow_parallelrun.core.spec import RunSpec

    config_fields = json.loads(args.config)
    if args.mini_batch_size:
        config_fields["mini_batch_size"] = args.mini_batch_size
    config = ParallelRunConfig(entry_script="probe.py", **config_fields)
    spec = RunSpec(output_path=args.output, config=config, entry_script="", arguments=())
    # What a step needs beyond its imports shows after they are paid.
    import pandas  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    imports = _status_mb("VmRSS")
    # Not ru_maxrss: Linux carries the parent's peak over fork and exec into it. VmHWM belongs
    # to this process's own memory, and resetting it here leaves the step's peak alone.
    reset = _reset_peak()
    started = time.perf_counter()
    if args.step == "partition":
        fields = json.loads(args.dataset)
        kind = fields.pop("kind")
        dataset = TabularDataset(**fields) if kind == "tabular" else FileDataset(**fields)
        result = {"descriptors": len(steps.partition(dataset, spec, max_tasks=1024))}
    else:
        summary = steps.aggregate(spec)
        result = {"total_mini_batches": summary["total_mini_batches"], "status": summary["status"]}
    seconds = time.perf_counter() - started
    peak = _status_mb("VmHWM")
    print(
        json.dumps(
            {
                "peak_rss_mb": round(peak, 1),
                "imports_rss_mb": round(imports, 1),
                "step_mb": round(peak - imports, 1),
                "seconds": round(seconds, 3),
                "peak_is_step_only": reset,
                **result,
            }
        )
    )


if __name__ == "__main__":
    main()
