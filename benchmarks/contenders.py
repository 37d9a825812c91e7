"""The contenders: each runs one job (a workload on an input) and says how long it took and what it used.

Every contender runs in processes of its own, started by the harness; only the work itself is
timed (set-up such as migrating an Airflow database or starting the scheduler is not, a fresh
Ray's start-up is). Outputs are read back after the clock stops, to check what was computed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import airflow_floor
from benchmarks.fixed_cost import breakdown
from benchmarks.measure import (
    Sampler,
    classify_ours,
    classify_ray,
    digest_lines,
    digest_tabular,
    lines_of_parquet,
    run_probe,
)
from benchmarks.remote import CONN_ID as S3_CONN_ID
from benchmarks.remote import RemoteStore
from benchmarks.sql_tables import CONN_ID, SqlTables, digest_scores
from benchmarks.workloads import FILES_PER_MINI_BATCH, INIT_SLEEP_SECONDS, REPO

HERE = Path(__file__).resolve().parent
SCRIPTS = HERE / "scripts"
#: One mini-batch per parquet file: each file is one row group of less than this.
TABULAR_MINI_BATCH_SIZE = "64MB"


@dataclass(frozen=True)
class Job:
    """One workload on one input: what every contender is asked to do."""

    workload: str  # "a", "b", "c", "d" or "f" (one tiny file of (a), (a)'s DAG)
    label: str  # "a", "b", "c", "d", or "a@4" for the scaling run on 4 files
    input: Path
    model: Path
    mini_batches: int
    items: int
    #: (d): the database and its tables; rows per mini-batch.
    tables: SqlTables | None = None
    rows_per_mini_batch: int = 0
    #: ``--store s3``: the store that holds this job's input (at ``input_url``) and its outputs.
    remote: RemoteStore | None = None
    input_url: str = ""

    @property
    def dag(self) -> str:
        workload = "a" if self.workload == "f" else self.workload
        return dag_id(f"{workload}_s3" if self.remote is not None else workload)

    def output_url(self, output: Path) -> str:
        """Return where a contender writes this job's output on the store (rep/contender/job)."""
        assert self.remote is not None
        return self.remote.url("runs", output.parent.parent.name, output.parent.name, output.name)

    @property
    def tabular(self) -> bool:
        return self.workload in ("a", "f")

    @property
    def slow_init(self) -> bool:
        return self.workload == "c"

    @property
    def sql(self) -> bool:
        return self.workload == "d"


DAG_TEMPLATE = '''\
"""Benchmark DAG for workload ({workload}), written by benchmarks/ (python -m benchmarks)."""

from airflow.sdk import DAG, Param

from airflow_parallelrun import {imports}

{opening}    ParallelRunOperator(
        task_id="score",
        inputs={dataset},{sink}
        output_path="{{{{ params.output }}}}",{output_conn}
        config=ParallelRunConfig(
            entry_script={script},
            mini_batch_size={mini_batch_size},
            error_threshold=0,
            run_invocation_timeout=3600,
            node_count=1,
            process_count_per_node=2,
            output_action={output_action},
            append_row_format={append_row_format},
        ),
        arguments=[
{arguments}
        ],
    )
'''


def dag_id(workload: str) -> str:
    return f"parallelrun_bench_{workload}"


def dag_source(workload: str, tables: SqlTables | None = None, contender: str = "") -> str:
    """Return the DAG file of one workload: its paths come in as Params (the run's conf).

    ``a_s3`` is (a) with its input and output on the S3 store of ``--store s3``, reached through
    the Airflow Connection ``S3_CONN_ID``.

    (d) reads ``tables``' customers table and writes the contender's own scores table through the
    Airflow Connection ``CONN_ID``; the names are in the file, as a user's nightly DAG has them.
    """
    sink = output_conn = ""
    if workload == "d":
        if tables is None:
            raise ValueError("workload d needs its tables")
        dataset_class = "SqlDataset, SqlTable"
        dataset = f"SqlDataset(conn_id={json.dumps(CONN_ID)}, table={json.dumps(tables.customers)})"
        sink = (
            f"\n        output=SqlTable(conn_id={json.dumps(CONN_ID)}, "
            f'table={json.dumps(tables.scores(contender))}, if_exists="append"),'
        )
        script, size, fmt = SCRIPTS / "customers_proba.py", f"{tables.mini_batch_rows} rows", "parquet"
        arguments = ["--model_path", "{{ params.model }}"]
    elif workload in ("a", "a_s3"):
        conn = f", conn_id={json.dumps(S3_CONN_ID)}" if workload == "a_s3" else ""
        dataset_class, dataset = (
            "TabularDataset",
            f'TabularDataset(path="{{{{ params.input }}}}", format="parquet"{conn})',
        )
        if workload == "a_s3":
            output_conn = f"\n        output_conn_id={json.dumps(S3_CONN_ID)},"
        script, size, fmt = SCRIPTS / "tabular_proba.py", TABULAR_MINI_BATCH_SIZE, "parquet"
        arguments = ["--model_path", "{{ params.model }}"]
    else:
        dataset_class, dataset = "FileDataset", 'FileDataset(path="{{ params.input }}", pattern="**/*.png")'
        script, size, fmt = SCRIPTS / "digits_lines.py", str(FILES_PER_MINI_BATCH), "text"
        arguments = ["--model_path", "{{ params.model }}"]
        if workload == "c":
            arguments += ["--init_sleep", str(INIT_SLEEP_SECONDS), "--counts_dir", "{{ params.counts }}"]
    return DAG_TEMPLATE.format(
        workload=workload,
        opening=airflow_floor.DAG_OPENING.format(dag_id=dag_id(workload)),
        imports=", ".join(sorted([dataset_class, "ParallelRunConfig", "ParallelRunOperator"])),
        dataset=dataset,
        sink=sink,
        output_conn=output_conn,
        # JSON strings are Python string literals, quoted as ruff format quotes them.
        script=json.dumps(str(script)),
        mini_batch_size=json.dumps(size),
        # (d)'s output is its table, as the baseline's: no merged file.
        output_action=json.dumps("summary_only" if workload == "d" else "append_row"),
        append_row_format=json.dumps(fmt),
        arguments="\n".join(f"            {json.dumps(a)}," for a in arguments),
    )


def _conf(job: Job, output: Path, counts: Path) -> dict[str, str]:
    if job.remote is not None:
        return {
            "input": job.input_url,
            "output": job.output_url(output),
            "model": str(job.model),
            "counts": "",
        }
    return {"input": str(job.input), "output": str(output), "model": str(job.model), "counts": str(counts)}


def _fetch_output(job: Job, output: Path) -> None:
    """Copy a remote job's output next to the local ones, to be read the same way (not timed)."""
    if job.remote is not None:
        job.remote.download(job.output_url(output), output)


def _init_calls(counts: Path) -> int | None:
    path = counts / "init-calls.txt"
    return len(path.read_text().splitlines()) if path.is_file() else None


def _read_report(output: Path) -> list[dict[str, str]]:
    import csv

    path = output / "_parallelrun" / "processed_mini_batches.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def ours_figures(job: Job, output: Path, contender: str) -> dict[str, Any]:
    """Read what the operator wrote: the summary, the per-mini-batch report, the merged output."""
    figures: dict[str, Any] = {}
    summary_path = output / "_parallelrun" / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    figures["summary"] = {
        key: summary.get(key)
        for key in (
            "status",
            "total_mini_batches",
            "succeeded_mini_batches",
            "failed_mini_batches",
            "total_items",
            "succeeded_items",
            "failed_items",
            "run_seconds",
        )
    }
    rows = _read_report(output)
    if rows:
        totals = [float(r["seconds_total"]) for r in rows]
        runs = [float(r["seconds_run"]) for r in rows]
        figures["report"] = {
            "mini_batches": len(rows),
            "seconds_total_sum": round(sum(totals), 3),
            "seconds_run_sum": round(sum(runs), 3),
            # What the engine spends around run() inside a task: read, start or reuse a worker, write.
            "engine_overhead_ms_per_mini_batch": round(1000 * (sum(totals) - sum(runs)) / len(rows), 1),
        }
    if job.tables is not None:
        figures["digest"] = digest_scores(job.tables.url, job.tables.scores(contender))
    elif job.tabular:
        merged = output / "parallel_run_step.parquet"
        figures["digest"] = digest_tabular([merged]) if merged.is_file() else {"rows": 0, "sha256": None}
    else:
        merged = output / "parallel_run_step.txt"
        figures["digest"] = digest_lines(merged.read_text().splitlines() if merged.is_file() else [])
    figures["ok"] = summary.get("status") == "succeeded"
    # Re-running the aggregate of (d) would merge into its table again: its merge is not probed.
    # A remote job's merge is probed on local disk by the local job.
    if summary and not job.sql and job.remote is None:
        figures["merge_probe"] = run_probe(
            [
                "aggregate",
                "--output",
                str(output),
                "--config",
                json.dumps(
                    {
                        "append_row_format": "parquet" if job.tabular else "text",
                        "error_threshold": 0,
                        "mini_batch_size": TABULAR_MINI_BATCH_SIZE
                        if job.tabular
                        else str(FILES_PER_MINI_BATCH),
                    }
                ),
            ]
        )
    return figures


def _parse_time(value: str | None) -> float | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class Contender:
    """A way to run a job. ``session()`` wraps the set-up it needs across jobs (not timed)."""

    name = ""
    workloads = ("a", "b", "c")

    def __init__(
        self,
        work: Path,
        *,
        timeout: float,
        sample_interval: float,
        tables: SqlTables | None = None,
        store: RemoteStore | None = None,
        airflow_settings: dict[str, str] | None = None,
    ) -> None:
        self.work = work
        #: ``--airflow-setting``: Airflow settings over the defaults of the Airflows a contender starts.
        self.airflow_settings = dict(airflow_settings or {})
        self.timeout = timeout
        self.sample_interval = sample_interval
        self.tables = tables
        self.store = store

    def dag_workloads(self) -> tuple[str, ...]:
        """Return the workloads whose DAG files a session of ours writes: d with tables, a_s3 with a store."""
        return (
            ("a", "b", "c")
            + (("d",) if self.tables is not None else ())
            + (("a_s3",) if self.store is not None else ())
        )

    def connection_env(self) -> dict[str, str]:
        """Return the Airflow Connections of (d)'s database and of the S3 store as users set them."""
        env = self.store.connection_env() if self.store is not None else {}
        if self.tables is None:
            return env
        return {**env, f"AIRFLOW_CONN_{CONN_ID.upper()}": self.tables.connection_json()}

    def unavailable(self) -> str | None:
        """Return why this contender cannot run here, or None."""
        return None

    @contextlib.contextmanager
    def session(self, label: str):
        yield self

    def measure(self, job: Job, output: Path, counts: Path) -> dict[str, Any]:
        raise NotImplementedError

    def _subprocess(
        self, command: list[str], log: Path, sampler: Sampler, *, env: dict[str, str] | None = None
    ) -> tuple[float, int, str]:
        """Run ``command``, sampling its tree; return (wall seconds, exit code, last stdout line)."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as err, contextlib.ExitStack() as stack:
            started = time.perf_counter()
            process = subprocess.Popen(
                command,
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,
            )
            sampler.root = process.pid
            stack.enter_context(sampler)
            try:
                stdout, _ = process.communicate(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, 9)
                stdout, _ = process.communicate()
            wall = time.perf_counter() - started
        # Whatever the job left in its session (a Ray raylet after a crash) goes with it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, 9)
        lines = stdout.decode(errors="replace").strip().splitlines()
        return wall, process.returncode, lines[-1] if lines else ""


class ProcessPool(Contender):
    """The baseline: ``baseline_process_pool.py`` as a subprocess, timed from start to exit."""

    name = "process-pool"
    workloads = ("a", "b", "c", "d", "f")

    def measure(self, job: Job, output: Path, counts: Path) -> dict[str, Any]:
        script = str(HERE / "baseline_process_pool.py")
        common = ["--input", str(job.input), "--model", str(job.model), "--workers", "2"]
        if job.tables is not None:
            command = [sys.executable, script, "sql", "--url", job.tables.url, "--model", str(job.model)]
            command += ["--input", job.tables.customers, "--output", job.tables.scores(self.name)]
            command += ["--workers", "2", "--batch", str(job.tables.mini_batch_rows)]
        elif job.remote is not None:
            command = [sys.executable, script, "tabular", "--input", job.input_url, "--model", str(job.model)]
            command += ["--workers", "2", "--output", job.output_url(output)]
        elif job.tabular:
            command = [sys.executable, script, "tabular", *common, "--output", str(output)]
        else:
            command = [sys.executable, script, "files", *common, "--output", str(output / "out.txt")]
            command += ["--batch", str(FILES_PER_MINI_BATCH)]
            if job.slow_init:
                command += ["--init-sleep", str(INIT_SLEEP_SECONDS), "--counts-dir", str(counts)]
        sampler = Sampler(interval=self.sample_interval)
        env = {**os.environ, **job.remote.baseline_env()} if job.remote is not None else None
        wall, code, last = self._subprocess(command, output.parent / f"{output.name}.log", sampler, env=env)
        inner = json.loads(last) if last.startswith("{") else {}
        _fetch_output(job, output)
        if job.tables is not None:
            digest = digest_scores(job.tables.url, job.tables.scores(self.name))
        elif job.tabular:
            digest = digest_tabular([output])
        else:
            digest = digest_lines((output / "out.txt").read_text().splitlines() if code == 0 else [])
        return {
            "ok": code == 0,
            "wall_s": wall,
            "inner_s": inner.get("seconds"),
            "worker_peak_rss_mb": sampler.peak_mb("worker"),
            "driver_peak_rss_mb": sampler.peak_mb("root"),
            "workers_seen": sampler.count("worker"),
            **sampler.tree_mb(),
            "digest": digest,
            "init_calls": _init_calls(counts),
            "error": None if code == 0 else f"exit {code}; see {output.name}.log",
        }


class RayData(Contender):
    """Ray Data ``map_batches``, 2 actors: ``ray_data_job.py`` as a subprocess, Ray's start-up included."""

    name = "ray-data"

    def unavailable(self) -> str | None:
        if importlib.util.find_spec("ray") is None or importlib.util.find_spec("ray.data") is None:
            return (
                f"ray[data] is not installed for {sys.executable}; "
                "pip install -e '.[benchmark]' to include it"
            )
        return None

    def measure(self, job: Job, output: Path, counts: Path) -> dict[str, Any]:
        script = str(HERE / "ray_data_job.py")
        command = [sys.executable, script, "tabular" if job.tabular else "files"]
        command += ["--input", str(job.input), "--model", str(job.model), "--output", str(output)]
        command += ["--cpus", "2", "--actors", "2", "--batch", str(FILES_PER_MINI_BATCH)]
        if job.tabular:
            command += ["--rows", str(job.items // max(job.mini_batches, 1))]
        if job.slow_init:
            command += ["--init-sleep", str(INIT_SLEEP_SECONDS), "--counts-dir", str(counts)]
        env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
        sampler = Sampler(classify=classify_ray, interval=self.sample_interval)
        wall, code, last = self._subprocess(command, output.parent / f"{output.name}.log", sampler, env=env)
        inner = json.loads(last) if last.startswith("{") else {}
        ok = code == 0 and output.is_dir()
        digest = (
            (digest_tabular([output]) if job.tabular else digest_lines(lines_of_parquet(output)))
            if ok
            else {"rows": 0, "sha256": None}
        )
        return {
            "ok": ok,
            "wall_s": wall,
            "inner_s": inner.get("seconds"),
            "worker_peak_rss_mb": sampler.peak_mb("worker"),
            "driver_peak_rss_mb": sampler.peak_mb("root"),
            "workers_seen": sampler.count("worker"),
            "digest": digest,
            "init_calls": _init_calls(counts),
            "error": None if ok else f"exit {code}; see {output.name}.log",
        }


class Floor(Contender):
    """``predict_proba`` on all rows in memory, both cores: only the call is timed (workload a only)."""

    name = "floor"
    workloads = ("a",)

    def measure(self, job: Job, output: Path, counts: Path) -> dict[str, Any]:
        output.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, str(HERE / "floor_predict.py"), "--input", str(job.input)]
        command += ["--model", str(job.model), "--output", str(output / "out.parquet")]
        sampler = Sampler(interval=self.sample_interval)
        _, code, last = self._subprocess(command, output.parent / f"{output.name}.log", sampler)
        inner = json.loads(last) if last.startswith("{") else {}
        return {
            "ok": code == 0,
            "wall_s": inner.get("seconds"),
            "worker_peak_rss_mb": sampler.peak_mb("root"),
            "digest": digest_tabular([output]) if code == 0 else {"rows": 0, "sha256": None},
            "error": None if code == 0 else f"exit {code}; see {output.name}.log",
        }


class OursDagsTest(Contender):
    """The operator under ``airflow dags test`` (one process runs the whole DAG) on a temporary home."""

    name = "ours-dags-test"
    workloads = ("a", "b", "c", "d", "f")

    def __init__(self, work: Path, **kwargs: Any) -> None:
        super().__init__(work, **kwargs)
        self.env: dict[str, str] = {}
        self.home = work / "airflow-dags-test"

    @contextlib.contextmanager
    def session(self, label: str):
        if not self.env:
            self._prepare()
        yield self

    def _prepare(self) -> None:
        from tests.airflow.real_airflow import RealAirflow, free_port

        shutil.rmtree(self.home, ignore_errors=True)
        (self.home / "dags").mkdir(parents=True)
        for workload in self.dag_workloads():
            source = dag_source(workload, self.tables, self.name)
            (self.home / "dags" / f"{dag_id(workload)}.py").write_text(source)
        airflow = RealAirflow(self.home, self.home / "dags", self.connection_env())
        airflow.port = free_port()
        self.env = airflow.build_env()
        subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            env=self.env,
            cwd=self.home,
            capture_output=True,
            check=True,
            timeout=600,
        )

    def measure(self, job: Job, output: Path, counts: Path) -> dict[str, Any]:
        conf = json.dumps(_conf(job, output, counts))
        command = [sys.executable, "-m", "airflow", "dags", "test", job.dag, "-c", conf]
        sampler = Sampler(classify=classify_ours, interval=self.sample_interval)
        wall, code, _ = self._subprocess(command, output.parent / f"{output.name}.log", sampler, env=self.env)
        _fetch_output(job, output)
        figures = ours_figures(job, output, self.name)
        return {
            "ok": code == 0 and figures.pop("ok"),
            "wall_s": wall,
            "worker_peak_rss_mb": sampler.peak_mb("worker"),
            # The dags-test process runs partition, every run task and the aggregate itself.
            "driver_peak_rss_mb": sampler.peak_mb("root"),
            "workers_seen": sampler.count("worker"),
            **sampler.tree_mb(),
            "init_calls": _init_calls(counts),
            "error": None if code == 0 else f"exit {code}; see {output.name}.log",
            **figures,
        }


class OursScheduler(Contender):
    """The operator under a real scheduler (LocalExecutor, parallelism 32, SQLite), triggered by REST."""

    name = "ours-scheduler"
    workloads = ("a", "b", "c", "d", "f")
    #: The Airflow home of a session is ``<work>/<home_prefix>-<label>``, its logs under it.
    home_prefix = "airflow-scheduler"

    def __init__(self, work: Path, **kwargs: Any) -> None:
        super().__init__(work, **kwargs)
        self.airflow: Any = None
        self.startup_s: list[float] = []

    @contextlib.contextmanager
    def session(self, label: str):
        from tests.airflow.real_airflow import RealAirflow

        home = self.work / f"{self.home_prefix}-{label}"
        shutil.rmtree(home, ignore_errors=True)
        # Airflow's own defaults, as `airflow standalone` runs, where the test harness polls
        # faster to keep tests short: the LocalExecutor runs up to 32 task instances (how many
        # of a run's mini-batches run at once is the operator's to say), and the scheduler,
        # dag-processor and task supervisors wake up at their default intervals. The DAG files
        # are in place before Airflow starts, as in a deployment.
        extra = {
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "300",
            "AIRFLOW__DAG_PROCESSOR__BUNDLE_REFRESH_CHECK_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
            "AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL": "30",
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "1",
            "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "5",
        }
        env = {**extra, **self.airflow_settings, **self.connection_env()}
        airflow = RealAirflow(home, home / "dags", env, parallelism=32)
        try:
            airflow.dags_folder.mkdir(parents=True, exist_ok=True)
            dags = self.dag_files()
            for name, source in dags.items():
                airflow.add_dag(name, source)
            airflow.start(timeout=300)
            for name in dags:
                airflow.wait_for_dag(name, timeout=120)
                airflow.unpause(name)
            self.startup_s.append(airflow.startup_seconds)
            self.airflow = airflow
            yield self
        finally:
            self.airflow = None
            try:
                airflow.stop()
            except Exception as exc:  # a leftover process is worth a line, not the benchmark
                print(f"ours-scheduler: stop: {exc}", file=sys.stderr)

    def dag_files(self) -> dict[str, str]:
        """Return the DAG files of a session by DAG id: ours per workload, and Airflow's floor for (f).

        ``airflow-floor`` runs on the same files, so both Airflows parse and schedule alike.
        """
        ours = {dag_id(w): dag_source(w, self.tables, self.name) for w in self.dag_workloads()}
        return {**ours, airflow_floor.DAG_ID: airflow_floor.DAG_SOURCE}

    def measure(self, job: Job, output: Path, counts: Path) -> dict[str, Any]:
        airflow = self.airflow
        dag = job.dag
        # The tree: every process of this Airflow, its idle components included (tree_first).
        sampler = Sampler(classify=classify_ours, interval=self.sample_interval, member=airflow.owns)
        with sampler:
            started_wall, started = time.time(), time.perf_counter()
            run_id = airflow.trigger(dag, conf=_conf(job, output, counts))
            deadline = started + self.timeout
            while True:
                run = airflow.dag_run(dag, run_id)
                if run["state"] in ("success", "failed") or time.perf_counter() > deadline:
                    break
                time.sleep(1.0)
            polled = time.perf_counter() - started
        ended = _parse_time(run.get("end_date"))
        # The scheduler's end_date is exact; polling every second is not.
        wall = ended - started_wall if ended else polled
        _fetch_output(job, output)
        tis = airflow.task_instances(dag, run_id)
        runs = [t for t in tis if t["task_id"].endswith(".run")]
        by_id = {t["task_id"].rsplit(".", 1)[-1]: t for t in tis if t["map_index"] == -1}
        durations = [float(t["duration"] or 0.0) for t in runs]
        # Read before ours_figures: its merge probe re-runs the aggregate, which rewrites the summary.
        summary_path = output / "_parallelrun" / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        figures = ours_figures(job, output, self.name)
        report = figures.get("report") or {}
        ti_overhead = None
        if durations and report:
            run_seconds = report["seconds_run_sum"]
            ti_overhead = round(1000 * (sum(durations) - run_seconds) / report["mini_batches"], 1)
        aggregate_ti = by_id.get("aggregate", {}).get("id")
        partition_ti = by_id.get("partition", {}).get("id")
        run_ids = {t["id"] for t in runs}
        task_peaks = [sampler.peaks[p] for p, k in sampler.kinds.items() if k[5:] in run_ids]
        return {
            "ok": run["state"] == "success" and figures.pop("ok"),
            "wall_s": wall,
            "polled_s": polled,
            "worker_peak_rss_mb": sampler.peak_mb("worker"),
            "workers_seen": sampler.count("worker"),
            "run_task_peak_rss_mb": round(max(task_peaks) / 1024**2, 1) if task_peaks else None,
            **sampler.tree_mb(),
            "aggregate_task_peak_rss_mb": sampler.peak_mb(f"task:{aggregate_ti}") if aggregate_ti else None,
            "partition_task_peak_rss_mb": sampler.peak_mb(f"task:{partition_ti}") if partition_ti else None,
            "init_calls": _init_calls(counts),
            "task_instances": {
                "run": len(runs),
                "run_duration_mean_s": round(sum(durations) / len(durations), 3) if durations else None,
                # A run task instance's duration minus its run() time, per mini-batch.
                "ti_overhead_ms_per_mini_batch": ti_overhead,
                "partition_s": by_id.get("partition", {}).get("duration"),
                "aggregate_s": by_id.get("aggregate", {}).get("duration"),
            },
            "run_id": run_id,
            "error": None if run["state"] == "success" else f"run {run['state']}; logs in {airflow.logs}",
            **figures,
            **(
                _fixed_cost_parts((started_wall, ended), tis, output, summary, report)
                if job.workload == "f"
                else {}
            ),
        }


class AirflowFloor(OursScheduler):
    """Airflow's floor for (f): our run's shape of no-op tasks (``airflow_floor.py``), timed as ours.

    The same Airflow as ``ours-scheduler``'s (settings, DAG files, start per rep), the same REST
    trigger and conf; the wall time from the trigger to the run's ``end_date``, broken down into
    the same hops and task spans.
    """

    name = "airflow-floor"
    workloads = ("f",)
    home_prefix = "airflow-floor"

    def measure(self, job: Job, output: Path, counts: Path) -> dict[str, Any]:
        airflow = self.airflow
        dag = airflow_floor.DAG_ID
        started_wall, started = time.time(), time.perf_counter()
        run_id = airflow.trigger(dag, conf=_conf(job, output, counts))
        run = airflow.dag_run(dag, run_id)
        while run["state"] not in ("success", "failed") and time.perf_counter() < started + self.timeout:
            time.sleep(1.0)
            run = airflow.dag_run(dag, run_id)
        polled = time.perf_counter() - started
        ended = _parse_time(run.get("end_date"))
        tis = airflow.task_instances(dag, run_id)
        states = sorted({t["state"] for t in tis})
        ok = run["state"] == "success" and states == ["success"] and len(tis) == 3
        return {
            "ok": ok,
            "wall_s": ended - started_wall if ended else polled,
            "polled_s": polled,
            "task_instances": {"run": len([t for t in tis if t["task_id"].endswith(".run")])},
            "run_id": run_id,
            "fixed_cost_parts": breakdown(started_wall, ended, tis, {}, 0.0),
            "error": None if ok else f"run {run['state']}, task states {states}; logs in {airflow.logs}",
        }


def _fixed_cost_parts(
    wall: tuple[float, float | None],
    tis: list[dict[str, Any]],
    output: Path,
    summary: dict[str, Any],
    report: dict[str, Any],
) -> dict[str, Any]:
    """Return where (f)'s wall time went, and the parts of its aggregate re-run in a fresh process."""
    config = {
        "append_row_format": "parquet",
        "error_threshold": 0,
        "mini_batch_size": TABULAR_MINI_BATCH_SIZE,
    }
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.fixed_cost", str(output), json.dumps(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    return {
        "fixed_cost_parts": breakdown(*wall, tis, summary, report.get("seconds_run_sum", 0.0)),
        "aggregate_parts": json.loads(lines[-1])
        if done.returncode == 0 and lines
        else {"error": done.stderr[-1500:]},
    }


CONTENDERS: dict[str, type[Contender]] = {
    c.name: c for c in (OursScheduler, AirflowFloor, OursDagsTest, ProcessPool, RayData, Floor)
}
