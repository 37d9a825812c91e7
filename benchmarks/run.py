"""Run the benchmark: every contender on every workload, interleaved, then print and save the figures.

    python -m benchmarks --size small            # from the repository root
    python benchmarks/run.py --size full --reps 3

See benchmarks/README.md for the workloads, the contenders and what each figure means.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # python benchmarks/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.contenders import CONTENDERS, TABULAR_MINI_BATCH_SIZE, Contender, Job
from benchmarks.fixed_cost import ROWS as FIXED_ROWS
from benchmarks.fixed_cost import fixed_cost
from benchmarks.measure import machine, run_probe
from benchmarks.remote import RemoteStore
from benchmarks.report import render_markdown, summarize
from benchmarks.sql_tables import POSTGRES_URL, SqlTables, drop_tables, safe_url, unreachable
from benchmarks.workloads import FILES_PER_MINI_BATCH, REPO, SIZES, Paths, Size, link_tabular_prefix, prepare

DEFAULT_CONTENDERS = (
    "ours-scheduler",
    "airflow-floor",
    "ours-dags-test",
    "process-pool",
    "ray-data",
    "floor",
)
RESULTS = Path(__file__).resolve().parent / "results"


def jobs_for(
    size: Size,
    paths: Paths,
    workloads: list[str],
    tables: SqlTables | None = None,
    tabular_files: int | None = None,
) -> list[Job]:
    jobs = []
    if "a" in workloads:
        files = tabular_files or size.tabular_files
        # A prefix of the size's files (hard links, made once, not timed): (a) at 40 files of full.
        folder = paths.tabular_input if files == size.tabular_files else link_tabular_prefix(paths, files)
        jobs.append(Job("a", "a", folder, paths.tabular_model, files, files * size.rows_per_file))
    if "b" in workloads:
        mini_batches = -(-size.images // FILES_PER_MINI_BATCH)
        jobs.append(Job("b", "b", paths.images, paths.digits_model, mini_batches, size.images))
    if "c" in workloads:
        jobs.append(
            Job(
                "c",
                "c",
                paths.slow_init_input,
                paths.digits_model,
                size.slow_init_mini_batches,
                size.slow_init_images,
            )
        )
    if "f" in workloads:
        jobs.append(Job("f", "f", paths.fixed_input, paths.tabular_model, 1, FIXED_ROWS))
    if "d" in workloads and tables is not None:
        mini_batches = -(-size.sql_rows // size.sql_mini_batch_rows)
        jobs.append(
            Job("d", "d", paths.root / "d", paths.customers_model, mini_batches, size.sql_rows, tables)
        )
    return jobs


def scaling_jobs(size: Size, paths: Paths) -> list[Job]:
    return [
        Job("a", f"a@{n}", paths.scaling_input(n), paths.tabular_model, n, n * size.rows_per_file)
        for n in size.scaling_files
    ]


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def measure_one(contender: Contender, job: Job, rep: int, runs: Path, keep: bool) -> dict[str, Any]:
    """Run one job on one contender with a clean output and counts folder; never raises."""
    output = runs / f"rep{rep}" / contender.name / job.label
    counts = runs / f"rep{rep}" / contender.name / f"{job.label}.counts"
    for folder in (output, counts):
        shutil.rmtree(folder, ignore_errors=True)
    scores = [job.tables.scores(contender.name)] if job.tables is not None else []
    if scores:  # every job writes into no table, as the baseline's to_sql starts
        drop_tables(job.tables.url, scores)
    counts.mkdir(parents=True)
    output.parent.mkdir(parents=True, exist_ok=True)
    _log(f"rep {rep}: {contender.name} on {job.label} ({job.mini_batches} mini-batches, {job.items} items)")
    base = {
        "workload": job.workload,
        "job": job.label,
        "contender": contender.name,
        "rep": rep,
        "mini_batches": job.mini_batches,
        "items": job.items,
    }
    try:
        result = contender.measure(job, output, counts)
    except Exception as exc:
        result = {"ok": False, "wall_s": None, "error": f"{type(exc).__name__}: {exc}"}
    if result.get("wall_s") is not None:
        result["wall_s"] = round(result["wall_s"], 3)
    if job.workload == "f":  # the pool reports no run() time: 100 rows take milliseconds
        result["fixed_cost_s"] = fixed_cost(
            result.get("wall_s"), (result.get("report") or {}).get("seconds_run_sum")
        )
    _log(
        f"  -> {'ok' if result.get('ok') else 'FAILED'} in {result.get('wall_s')} s"
        + (f": {result['error']}" if result.get("error") else "")
    )
    if not keep:
        shutil.rmtree(output, ignore_errors=True)
        if scores:
            drop_tables(job.tables.url, scores)
    return {**base, **result}


def partition_probes(paths: Paths, size: Size, jobs: list[Job], scratch: Path) -> list[dict[str, Any]]:
    """Measure ``steps.partition``'s peak memory on each input, in a fresh process each."""
    probes = []
    for job in jobs:
        if job.tabular:
            dataset = {"kind": "tabular", "path": str(job.input), "format": "parquet"}
            mbs = TABULAR_MINI_BATCH_SIZE
        else:
            dataset = {"kind": "files", "path": str(job.input), "pattern": "**/*.png"}
            mbs = str(FILES_PER_MINI_BATCH)
        out = scratch / f"partition-{job.label}"
        shutil.rmtree(out, ignore_errors=True)
        _log(f"partition probe on {job.label}")
        result = run_probe(
            ["partition", "--dataset", json.dumps(dataset), "--mini-batch-size", mbs, "--output", str(out)]
        )
        shutil.rmtree(out, ignore_errors=True)
        probes.append({"job": job.label, "input_files": job.mini_batches, "items": job.items, **result})
    return probes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument(
        "--workloads",
        default="a,b,c,f",
        help="comma-separated: a (tabular), b (files), c (slow init), d (SQL: PostgreSQL table to table), "
        "f (fixed cost: one tiny file)",
    )
    parser.add_argument("--postgres-url", default=POSTGRES_URL, help="(d)'s database, a SQLAlchemy URL")
    parser.add_argument("--sql-prefix", default="parallelrun_bench", help="(d)'s table names start with it")
    parser.add_argument(
        "--contenders",
        default=",".join(DEFAULT_CONTENDERS),
        help=f"comma-separated, of {', '.join(CONTENDERS)}",
    )
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default: 1 tiny/small, 3 full)")
    parser.add_argument("--data-dir", type=Path, default=REPO / ".benchmarks", help="inputs, models, scratch")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    parser.add_argument(
        "--scaling",
        choices=["on", "off"],
        default="on",
        help="run (a) at 1x, 2x, 4x input (ours and baseline)",
    )
    parser.add_argument("--timeout", type=float, default=7200, help="seconds one job may take")
    parser.add_argument("--sample-interval", type=float, default=0.1, help="seconds between RSS samples")
    parser.add_argument("--keep-outputs", action="store_true", help="keep every contender's output")
    parser.add_argument(
        "--store",
        choices=["local", "s3"],
        default="local",
        help="s3: also run (a) with input and output on moto's S3 server, behind a proxy adding latency",
    )
    parser.add_argument("--latency-ms", type=float, default=20.0, help="--store s3: ms added per request")
    parser.add_argument(
        "--tabular-files",
        type=int,
        default=None,
        help="(a) on the first N of the size's files (default: all of them)",
    )
    parser.add_argument(
        "--airflow-setting",
        action="append",
        default=[],
        metavar="AIRFLOW__SECTION__KEY=VALUE",
        help="an Airflow setting over the defaults of the Airflows that ours-scheduler and airflow-floor "
        "start (repeatable), e.g. AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME=0.2",
    )
    args = parser.parse_args(argv)
    args.airflow_settings = {}
    for setting in args.airflow_setting:
        name, equals, value = setting.partition("=")
        if not equals or not name.startswith("AIRFLOW__") or name.count("__") < 2:
            parser.error(
                f"--airflow-setting {setting!r} is not AIRFLOW__SECTION__KEY=VALUE; "
                "e.g. AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME=0.2"
            )
        args.airflow_settings[name] = value
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    args.contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    for w in args.workloads:
        if w not in ("a", "b", "c", "d", "f"):
            parser.error(f"unknown workload {w!r}; use a, b, c, d, f")
    for c in args.contenders:
        if c not in CONTENDERS:
            parser.error(f"unknown contender {c!r}; use {', '.join(CONTENDERS)}")
    if args.tabular_files is not None and not 0 < args.tabular_files <= SIZES[args.size].tabular_files:
        parser.error(
            f"--tabular-files {args.tabular_files}: size {args.size} has "
            f"{SIZES[args.size].tabular_files} files of (a); give 1 to that many"
        )
    if args.store == "s3" and "a" not in args.workloads:
        parser.error("--store s3 runs workload a on S3 beside its local run: include a in --workloads")
    return args


def remote_job(store: RemoteStore, size: Size, paths: Paths, local: Job) -> Job:
    """Return (a) on the files of its local job ``local``, uploaded to the store (not timed)."""
    url = store.url("inputs", size.name, "a")
    _log(f"uploading (a)'s {local.mini_batches} input files to {url} (not timed)")
    store.upload(local.input, url)
    return Job(
        "a",
        "a-s3",
        local.input,
        paths.tabular_model,
        local.mini_batches,
        local.items,
        remote=store,
        input_url=url,
    )


def sql_tables(args: argparse.Namespace, size: Size) -> SqlTables | None:
    """Return (d)'s tables when it is asked for; exit with the reason when its database is not there."""
    if "d" not in args.workloads:
        return None
    tables = SqlTables(args.postgres_url, args.sql_prefix, size.name, size.sql_mini_batch_rows)
    reason = unreachable(tables.url)
    if reason:
        raise SystemExit(
            f"workload d needs PostgreSQL at {safe_url(tables.url)} ({reason}); start it, give "
            "--postgres-url, or leave d out of --workloads"
        )
    return tables


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    size = SIZES[args.size]
    reps = args.reps or size.reps
    started = time.time()
    tables = sql_tables(args, size)
    _log(f"preparing size {size.name} under {args.data_dir} (cached, not timed)")
    paths = prepare(size, args.data_dir, set(args.workloads), tables)
    work = paths.root / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    store = RemoteStore(args.latency_ms).start() if args.store == "s3" else None
    try:
        return _run(args, size, reps, started, tables, paths, work, store, argv)
    finally:
        if store is not None:
            store.stop()


def _run(
    args: argparse.Namespace,
    size: Size,
    reps: int,
    started: float,
    tables: SqlTables | None,
    paths: Paths,
    work: Path,
    store: RemoteStore | None,
    argv: list[str] | None,
) -> dict[str, Any]:
    options = {
        "timeout": args.timeout,
        "sample_interval": args.sample_interval,
        "tables": tables,
        "store": store,
        "airflow_settings": args.airflow_settings,
    }
    contenders = [CONTENDERS[name](work, **options) for name in args.contenders]
    unavailable = {c.name: reason for c in contenders if (reason := c.unavailable())}
    for name, reason in unavailable.items():
        _log(f"{name} unavailable: {reason}")
    active = [c for c in contenders if c.name not in unavailable]
    jobs = jobs_for(size, paths, args.workloads, tables, args.tabular_files)
    if store is not None:
        jobs.append(remote_job(store, size, paths, next(j for j in jobs if j.label == "a")))

    results: list[dict[str, Any]] = []
    # A B A B: every rep runs every contender, so drift on a shared machine hits them alike.
    for rep in range(1, reps + 1):
        for contender in active:
            mine = [j for j in jobs if j.workload in contender.workloads]
            if not mine:
                continue
            with contender.session(f"rep{rep}"):
                results.extend(
                    measure_one(contender, job, rep, work / "runs", args.keep_outputs) for job in mine
                )

    scaling: list[dict[str, Any]] = []
    probes: list[dict[str, Any]] = []
    if args.scaling == "on" and "a" in args.workloads:
        ours = next((c for c in active if c.name.startswith("ours")), None)
        pool = next((c for c in active if c.name == "process-pool"), None)
        for contender in [c for c in (ours, pool) if c is not None]:
            with contender.session("scaling"):
                scaling.extend(
                    measure_one(contender, job, 0, work / "runs", args.keep_outputs)
                    for job in scaling_jobs(size, paths)
                )
        local = [j for j in jobs if j.remote is None]
        probes = partition_probes(paths, size, scaling_jobs(size, paths) + local, work)

    record = {
        "command": " ".join(
            ["python -m benchmarks"]
            + [safe_url(a) if "://" in a else a for a in (argv if argv is not None else sys.argv[1:])]
        ),
        "size": size.name,
        "size_parameters": size.__dict__,
        "sql_tables": {"customers": tables.customers, "prefix": tables.prefix} if tables else None,
        "store": {"kind": "s3", "latency_ms": store.latency_ms} if store is not None else None,
        "reps": reps,
        "workloads": args.workloads,
        "contenders": args.contenders,
        "airflow_settings": args.airflow_settings,
        "unavailable": unavailable,
        "machine": machine(),
        "seconds": round(time.time() - started, 1),
        "results": results,
        "scaling": scaling,
        "partition_probes": probes,
    }
    for contender in active:
        startup = getattr(contender, "startup_s", None)
        if startup:
            record.setdefault("airflow_startup_s", {})[contender.name] = [round(s, 1) for s in startup]
    record["summary"] = summarize(record)
    markdown = render_markdown(record)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    json_path = args.results_dir / f"{stamp}.json"
    json_path.write_text(json.dumps(record, indent=1, default=str))
    (args.results_dir / "latest.md").write_text(markdown)
    print(markdown)
    _log(f"saved {json_path} and {args.results_dir / 'latest.md'} ({record['seconds']} s in all)")
    record["json_path"] = str(json_path)
    if not args.keep_outputs:
        shutil.rmtree(work / "runs", ignore_errors=True)
    return record


if __name__ == "__main__":
    main()
