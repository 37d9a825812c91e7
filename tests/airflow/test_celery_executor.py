"""ParallelRunOperator with warm worker pools on a real CeleryExecutor deployment.

The scale-out shape of DESIGN.md ("Deployment shapes"): PostgreSQL as the metadata database (a
fresh database per test module, dropped at its end), Redis as the Celery broker (a queue of this
module's own), and two ``airflow celery worker`` processes with ``--concurrency 2`` each. The two
workers stand for two machines: each has its own Celery hostname, its own ``PARALLELRUN_POOL_DIR``
and a ``PARALLELRUN_TEST_NODE`` variable naming it, so each has warm worker pools of its own, as
two nodes would. Runs are triggered and watched through the REST API only.

Needs PostgreSQL at 127.0.0.1:5432 (trust auth, database ``test``) and Redis at 127.0.0.1:6379:
without them the module skips, unless ``CI=true``, where it fails.
"""

from __future__ import annotations

import contextlib
import csv
import os
import random
import re
import shutil
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path

import psutil
import pytest

from tests.airflow.real_airflow import (
    CeleryWorker,
    RealAirflow,
    delete_redis_keys,
    postgres_database,
    running_airflow,
    service_unavailable,
)
from tests.databases import skip_or_fail

pytestmark = [pytest.mark.slow, pytest.mark.airflow, pytest.mark.timeout(1200)]

NODES = ("node1", "node2")
PROCESS_COUNT_PER_NODE = 2
INPUTS = 12
SLEEP = 0.5
#: The input the retry case's entry script dies on, once.
KILL_ON = "item_05.txt"

ENTRY_SCRIPT = f"""\
import argparse
import os
import time

KILL_ON = {{kill_on!r}}


def init():
    global calls_dir, node, pool_dir
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls_dir")
    args, _ = parser.parse_known_args()
    calls_dir = args.calls_dir
    node = os.environ.get("PARALLELRUN_TEST_NODE", "?")
    pool_dir = os.environ.get("PARALLELRUN_POOL_DIR", "?")
    with open(os.path.join(calls_dir, "init.log"), "a") as f:
        f.write(f"{{{{node}}}},{{{{pool_dir}}}},{{{{os.getpid()}}}}\\n")


def run(mini_batch):
    name = os.path.basename(mini_batch[0])
    if name == KILL_ON:
        try:
            marker = os.open(os.path.join(calls_dir, "killed"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pass
        else:
            os.write(marker, f"{{{{node}}}},{{{{os.getpid()}}}}".encode())
            os.close(marker)
            os._exit(3)  # the worker process dies in the middle of run(), as if OOM-killed
    start = time.time()
    time.sleep({SLEEP})
    end = time.time()
    with open(os.path.join(calls_dir, name + ".call"), "a") as f:
        f.write(f"{{{{node}}}},{{{{pool_dir}}}},{{{{os.getpid()}}}},{{{{start}}}},{{{{end}}}}\\n")
    return list(mini_batch)
"""

DAG_SOURCE = """\
from airflow.sdk import DAG
from airflow_parallelrun import FileDataset, ParallelRunConfig, ParallelRunOperator

with DAG("{dag_id}", schedule=None, catchup=False):
    ParallelRunOperator(
        task_id="score",
        inputs=FileDataset(path={inputs!r}, pattern="*.txt"),
        output_path={output!r} + "/{{{{ run_id }}}}",
        config=ParallelRunConfig(
            entry_script={script!r},
            mini_batch_size="1",
            error_threshold=0,
            node_count=2,
            process_count_per_node={per_node},
        ),
        arguments=["--calls_dir", {calls!r}],
    )
"""


@pytest.fixture(scope="module")
def pool_dirs() -> Iterator[dict[str, Path]]:
    """One ``PARALLELRUN_POOL_DIR`` per node (short paths: they hold Unix sockets)."""
    dirs = {node: Path(tempfile.mkdtemp(prefix=f"prp-{node}-")) for node in NODES}
    yield dirs
    for folder in dirs.values():
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def celery_airflow(
    tmp_path_factory: pytest.TempPathFactory, pool_dirs: dict[str, Path]
) -> Iterator[RealAirflow]:
    """A started CeleryExecutor ``RealAirflow`` with two workers, on a PostgreSQL database of its own."""
    reason = service_unavailable()
    if reason:
        skip_or_fail(f"cannot run a CeleryExecutor deployment here: {reason}")
    home = tmp_path_factory.mktemp("celery-airflow")
    broker = f"redis://127.0.0.1:6379/{random.randint(1, 15)}"
    workers = [
        CeleryWorker(
            node,
            concurrency=2,
            env={"PARALLELRUN_POOL_DIR": str(pool_dirs[node]), "PARALLELRUN_TEST_NODE": node},
        )
        for node in NODES
    ]
    started: list[RealAirflow] = []
    with postgres_database() as database:
        try:
            for airflow in running_airflow(
                home,
                executor="CeleryExecutor",
                sql_alchemy_conn=database,
                celery_broker_url=broker,
                celery_result_backend=f"db+{database}",
                celery_workers=workers,
            ):
                started.append(airflow)
                yield airflow
        finally:
            for airflow in started:
                delete_redis_keys(broker, airflow.token)
    # stop() killed what it found; nothing started on a node may have escaped it.
    escaped = [
        f"{p.pid} {' '.join(p.cmdline())}"
        for p in _processes_naming(pool_dirs.values())
        if p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    ]
    assert escaped == [], f"processes of the nodes survived stop(): {escaped}"


def _processes_naming(folders: Iterable[Path]) -> list[psutil.Process]:
    """Return the processes whose environment's PARALLELRUN_POOL_DIR is one of ``folders``.

    That is every process of the two nodes: the Celery workers and their prefork children, the
    task processes, the warm worker pools and their entry-script workers.
    """
    wanted = {str(f) for f in folders}
    found = []
    for process in psutil.process_iter(["environ"]):
        with contextlib.suppress(psutil.Error):
            if (process.info.get("environ") or {}).get("PARALLELRUN_POOL_DIR") in wanted:
                found.append(process)
    return found


def pool_processes(pool_dir: Path) -> list[psutil.Process]:
    """Return the live warm worker pools of one node and their entry-script workers."""
    pools = [
        p
        for p in _processes_naming([pool_dir])
        if "airflow_parallelrun.core.execution.pool" in " ".join(p.cmdline())
    ]
    found = {p.pid: p for p in pools}
    for pool in pools:
        with contextlib.suppress(psutil.Error):
            found.update({c.pid: c for c in pool.children(recursive=True)})
    return [p for p in found.values() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """Return the largest number of intervals open at one moment (an end before a start at a tie)."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    open_now = peak = 0
    for _, step in events:
        open_now += step
        peak = max(peak, open_now)
    return peak


def make_run(airflow: RealAirflow, tmp_path: Path, dag_id: str, kill_on: str | None) -> dict:
    """Write the inputs, the entry script and the DAG; trigger it through the REST API; wait for the end."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    paths = [inputs / f"item_{i:02d}.txt" for i in range(INPUTS)]
    for i, path in enumerate(paths):
        path.write_text(f"item {i}\n")
    calls = tmp_path / "calls"
    calls.mkdir()
    script = tmp_path / f"{dag_id}_entry.py"
    script.write_text(ENTRY_SCRIPT.format(kill_on=kill_on))
    output = tmp_path / "out"
    airflow.add_dag(
        dag_id,
        DAG_SOURCE.format(
            dag_id=dag_id,
            inputs=str(inputs),
            output=str(output),
            script=str(script),
            calls=str(calls),
            per_node=PROCESS_COUNT_PER_NODE,
        ),
    )
    airflow.wait_for_dag(dag_id)
    started = time.monotonic()
    run_id = airflow.trigger(dag_id)
    state = airflow.wait_for_run(dag_id, run_id, timeout=600)
    seconds = time.monotonic() - started
    tis = airflow.task_instances(dag_id, run_id)
    assert state == "success", [(t["task_id"], t["map_index"], t["state"], t["try_number"]) for t in tis]
    merged = output / run_id / "parallel_run_step.txt"
    inits = [line.split(",") for line in (calls / "init.log").read_text().splitlines()]
    records = [line.split(",") for f in sorted(calls.glob("*.call")) for line in f.read_text().splitlines()]
    return {
        "paths": paths,
        "run_id": run_id,
        "tis": tis,
        "seconds": seconds,
        "merged": merged.read_text().splitlines(),
        "inits": [(node, pool, int(pid)) for node, pool, pid in inits],
        "calls": [(n, pool, int(pid), float(s), float(e)) for n, pool, pid, s, e in records],
        "calls_dir": calls,
        "report": list(csv.DictReader((output / run_id / "_parallelrun/processed_mini_batches.csv").open())),
    }


def check_nodes(run: dict, pool_dirs: dict[str, Path], extra_inits: int = 0) -> dict[str, int]:
    """Check init() and run() per node; return how many run() calls each node made."""
    # Each node's processes saw that node's pool folder: pools are per node.
    for node, pool, _ in run["inits"] + [c[:3] for c in run["calls"]]:
        assert pool == str(pool_dirs[node]), (node, pool)
    # init() at most process_count_per_node times per node (the warm workers), far fewer than
    # the mini-batches; extra_inits for a worker replaced after it died.
    inits_per_node: dict[str, list[int]] = defaultdict(list)
    for node, _, pid in run["inits"]:
        inits_per_node[node].append(pid)
    for node, pids in inits_per_node.items():
        assert len(pids) == len(set(pids)), (node, pids)  # once per process
        assert len(pids) <= PROCESS_COUNT_PER_NODE + extra_inits, (node, pids)
    assert len(run["inits"]) < INPUTS, run["inits"]
    # Every run() call was made by a warm worker whose init() ran on the same node.
    for node, _, pid, _, _ in run["calls"]:
        assert pid in inits_per_node[node], (node, pid, dict(inits_per_node))
    # At most process_count_per_node run() calls at once on one node.
    per_node: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for node, _, _, start, end in run["calls"]:
        per_node[node].append((start, end))
    for node, intervals in per_node.items():
        assert max_overlap(intervals) <= PROCESS_COUNT_PER_NODE, (node, sorted(intervals))
    counts = {node: len(per_node.get(node, [])) for node in NODES}
    if min(counts.values()) == 0:
        # Celery hands each task to whichever worker asks first; both were ready before the
        # trigger, so this is rare, but it is Celery's choice, not the operator's.
        warnings.warn(f"Celery put every mini-batch on one worker: {counts}", stacklevel=2)
    return counts


def test_mini_batches_run_on_two_celery_workers_with_warm_pools(
    celery_airflow: RealAirflow, tmp_path: Path, pool_dirs: dict[str, Path]
) -> None:
    airflow = celery_airflow
    dag_id = "celery_parallel_run"
    run = make_run(airflow, tmp_path, dag_id, kill_on=None)

    # The merged output has every input exactly once, in input order.
    assert run["merged"] == [str(p) for p in run["paths"]]
    # One run() call per mini-batch, none repeated; every task instance succeeded at its first try.
    assert sorted(os.path.basename(p) for p in run["paths"]) == sorted(
        f.name.removesuffix(".call") for f in run["calls_dir"].glob("*.call")
    )
    assert len(run["calls"]) == INPUTS, run["calls"]
    runs = [t for t in run["tis"] if t["task_id"] == "score.run"]
    assert len(runs) == INPUTS and all(t["state"] == "success" and t["try_number"] == 1 for t in runs)
    counts = check_nodes(run, pool_dirs)
    all_calls = [(s, e) for *_, s, e in run["calls"]]
    assert max_overlap(all_calls) <= 2 * PROCESS_COUNT_PER_NODE

    # stop() will find every process the nodes started: Celery's pool children, the task
    # processes, and the warm worker pools and their workers (sessions of their own).
    found = {p.pid for p in airflow.airflow_processes()}
    celery_children = [
        child
        for name, proc in airflow.processes.items()
        if name.startswith("celery-worker-")
        for child in psutil.Process(proc.pid).children(recursive=True)
    ]
    assert celery_children, "the celery workers have no prefork children"
    assert {c.pid for c in celery_children} <= found
    # The aggregate task stopped the run's pool on its node; a pool on the other node stays warm
    # until worker_idle_timeout (60 s) unless that node also ran the aggregate (README: "the
    # aggregate task stops the run's pools on its node"). stop() finds both kinds.
    # A pool that stopped cleanly removes its files, log included: the aggregate's log says it
    # stopped one, and that node's pool folder is left with no socket.
    logs = airflow.logs.glob(f"dag_id={dag_id}/**/task_id=score.aggregate/*")
    aggregate_logs = "".join(log.read_text(errors="replace") for log in logs)
    assert re.search(r"stopped [1-9]\d* warm-worker pool\(s\) of this run on this node", aggregate_logs), (
        aggregate_logs[-3000:]
    )
    stopped = wait_for_stopped_pool(pool_dirs, timeout=120)
    assert stopped, "no node's pool was stopped by the aggregate task"
    alive_pools = {node: pool_processes(pool_dirs[node]) for node in NODES}
    for node, processes in alive_pools.items():
        assert {p.pid for p in processes} <= found, (node, [(p.pid, p.cmdline()) for p in processes])
    warm = {node: len(ps) for node, ps in alive_pools.items() if ps}
    print(
        f"\nCeleryExecutor: start-up {airflow.startup_seconds:.1f}s, run {run['seconds']:.1f}s, "
        f"run() calls per node {counts}, init() calls {len(run['inits'])}; pools stopped by the "
        f"aggregate on {stopped}, pool processes (pool + warm workers) still up after the run: {warm}"
    )


def wait_for_stopped_pool(pool_dirs: dict[str, Path], timeout: float) -> list[str]:
    """Wait until some node's pool folder holds no pool socket (its pool stopped); return those nodes."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = [node for node in NODES if not list(pool_dirs[node].glob("*.sock"))]
        if nodes or time.monotonic() > deadline:
            return nodes
        time.sleep(0.2)


def test_a_worker_killed_mid_run_is_replaced_and_the_item_counted_once(
    celery_airflow: RealAirflow, tmp_path: Path, pool_dirs: dict[str, Path]
) -> None:
    dag_id = "celery_parallel_run_kill"
    run = make_run(celery_airflow, tmp_path, dag_id, kill_on=KILL_ON)

    killed_node, killed_pid = (run["calls_dir"] / "killed").read_text().split(",")
    assert run["merged"] == [str(p) for p in run["paths"]]  # the item exactly once, in its place
    (call,) = (run["calls_dir"] / f"{KILL_ON}.call").read_text().splitlines()
    node, _, pid, _, _ = call.split(",")
    # The second try ran inside the same task instance, in another worker of the same node's pool
    # (the dead one is never leased again; the pool starts a replacement, hence extra_inits=1).
    assert node == killed_node and int(pid) != int(killed_pid), (call, killed_pid)
    (row,) = [r for r in run["report"] if KILL_ON in r["inputs"]]
    assert (row["status"], row["tries"]) == ("succeeded", "2"), row
    index = run["report"].index(row)
    (ti,) = [t for t in run["tis"] if t["task_id"] == "score.run" and t["map_index"] == index]
    assert (ti["state"], ti["try_number"]) == ("success", 1), ti
    others = [r for r in run["report"] if r is not row]
    assert all((r["status"], r["tries"]) == ("succeeded", "1") for r in others), others
    check_nodes(run, pool_dirs, extra_inits=1)
    print(f"\nCeleryExecutor, a worker killed once: run {run['seconds']:.1f}s, died on {killed_node}")
