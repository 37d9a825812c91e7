"""Recovery under a real scheduler: tasks SIGKILLed at every point, and resume by clearing failed tasks.

Each kill is real: a task process reaching an armed failpoint (see ``core/failpoints.py``) stops
and writes its process id; the test SIGKILLs that process and Airflow retries the task.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.airflow.real_airflow import RealAirflow, running_airflow, trigger_and_kill

# The timeouts only bound a hang (Airflow's start-up and a run take long on a busy machine).
pytestmark = [pytest.mark.airflow, pytest.mark.slow, pytest.mark.timeout(1200)]

SCRIPT = """
import json, os, time

def _pause(point):
    # The entry script's own failpoints: stop in init() or run() once, for the test to kill the task.
    spec = json.load(open(os.environ["PARALLELRUN_FAILPOINTS"])) if os.path.exists(
        os.environ.get("PARALLELRUN_FAILPOINTS", "")) else {{}}
    marker = spec.get(point)
    if not marker:
        return
    try:
        os.close(os.open(marker + ".claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    with open(marker + ".tmp", "w") as f:
        # The task process this worker serves; a worker the partition task warmed ahead of the
        # run tasks serves none yet, and is itself the process to kill.
        f.write(os.environ.get("PARALLELRUN_TASK_PID") or str(os.getpid()))
    os.replace(marker + ".tmp", marker)
    time.sleep(3600)

def init():
    _pause("script_init")

def run(mini_batch):
    _pause("script_run")
    with open({calls!r}, "a") as log:
        log.writelines(os.path.basename(p) + "\\n" for p in mini_batch)
    if os.path.exists({flag!r}) and any(p.endswith("item05.txt") for p in mini_batch):
        raise RuntimeError("item05 is not ready")
    return [open(p).read() for p in mini_batch]
"""

DAG = """
from datetime import timedelta
from airflow.sdk import DAG
from airflow_parallelrun import FileDataset, ParallelRunConfig, ParallelRunOperator

retry_fast = {{"retries": 2, "retry_delay": timedelta(seconds=1)}}
with DAG("{dag_id}", schedule=None, default_args=retry_fast) as dag:
    ParallelRunOperator(
        task_id="score",
        inputs=FileDataset(path="{input}", pattern="*.txt"),
        output_path="{output}/{{{{ run_id }}}}",
        config=ParallelRunConfig(entry_script="{script}", mini_batch_size="2", run_max_try=1,
                                 error_threshold=-1, process_count_per_node=2),
    )
"""


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealAirflow]:
    home = tmp_path_factory.mktemp("recovery-airflow")
    yield from running_airflow(home, {"PARALLELRUN_FAILPOINTS": str(home / "failpoints.json")})


def _setup(airflow: RealAirflow, tmp_path: Path, dag_id: str) -> tuple[Path, Path, Path]:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(12):
        (folder / f"item{i:02d}.txt").write_text(f"v{i:02d}")
    calls, flag = tmp_path / "calls.txt", tmp_path / "fail-item05"
    script = tmp_path / "score.py"
    script.write_text(textwrap.dedent(SCRIPT.format(calls=str(calls), flag=str(flag))))
    airflow.add_dag(dag_id, DAG.format(dag_id=dag_id, input=folder, output=tmp_path / "out", script=script))
    airflow.wait_for_dag(dag_id)
    return calls, flag, tmp_path / "out"


def _lines(out: Path, run_id: str) -> list[str]:
    return (out / run_id / "parallel_run_step.txt").read_text().split()


def test_tasks_sigkilled_at_every_point_leave_every_row_exactly_once(
    airflow: RealAirflow, tmp_path: Path
) -> None:
    _, _, out = _setup(airflow, tmp_path, "recovery_kills")
    points = {
        "script_init": "in init()",
        "script_run": "in run()",
        "replace:mb-000001.*.txt": "while the part is written",  # parts are named with the run key
        "part_published:mb-000002": "between the part and the status",
        "replace:mb-000003.json": "while the status is written",
    }
    run_id, killed = trigger_and_kill(
        airflow, "recovery_kills", list(points), tmp_path, airflow.home / "failpoints.json"
    )
    assert set(killed) == set(points), f"not every point was reached: {set(points) - set(killed)}"
    assert airflow.dag_run("recovery_kills", run_id)["state"] == "success"
    # Every row exactly once, in order, although five task processes died mid-way.
    assert _lines(out, run_id) == [f"v{i:02d}" for i in range(12)]
    summary = json.loads((out / run_id / "_parallelrun" / "summary.json").read_text())
    assert (summary["total_items"], summary["succeeded_items"], summary["failed_items"]) == (12, 12, 0)
    assert (summary["total_mini_batches"], summary["succeeded_mini_batches"]) == (6, 6)
    # Airflow retried the killed task instances. The part, published and status points name
    # mini-batches 1, 2 and 3, each its own task instance; init() and run() may hit any one.
    tis = airflow.task_instances("recovery_kills", run_id)
    retried = {t["map_index"] for t in tis if t["task_id"] == "score.run" and t["try_number"] > 1}
    assert {1, 2, 3} <= retried, retried


def test_clearing_only_the_failed_tasks_reruns_just_those_and_completes_the_output(
    airflow: RealAirflow, tmp_path: Path
) -> None:
    calls, flag, out = _setup(airflow, tmp_path, "recovery_clear")
    flag.touch()
    run_id = airflow.trigger("recovery_clear")
    assert airflow.wait_for_run("recovery_clear", run_id, timeout=600) == "success"
    summary = json.loads((out / run_id / "_parallelrun" / "summary.json").read_text())
    assert (summary["failed_mini_batches"], summary["succeeded_items"]) == (1, 10)
    assert "v05" not in _lines(out, run_id)

    # The README's REST steps: clear the failed run task instances, then the aggregate.
    flag.unlink()
    calls.write_text("")
    cleared = airflow.clear_task_instances("recovery_clear", run_id, ["score.run"], only_failed=True)
    assert [(t["task_id"], t["map_index"]) for t in cleared] == [("score.run", 2)]
    airflow.clear_task_instances("recovery_clear", run_id, ["score.aggregate"], only_failed=False)
    assert airflow.wait_for_run("recovery_clear", run_id, timeout=600) == "success"

    assert calls.read_text().split() == ["item04.txt", "item05.txt"]
    assert _lines(out, run_id) == [f"v{i:02d}" for i in range(12)]
    summary = json.loads((out / run_id / "_parallelrun" / "summary.json").read_text())
    assert (summary["failed_mini_batches"], summary["succeeded_items"]) == (0, 12)
