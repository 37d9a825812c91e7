"""NewFilesSensor in DAG runs: poke, reschedule and deferrable modes; a file goes to one run only."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from airflow_parallelrun.core.storage.claims import ClaimLedger, FileStat, default_state_path

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

SENSOR_DAG = """
import json
from pathlib import Path
from airflow.sdk import DAG, task
from airflow_parallelrun import NewFilesSensor

with DAG("{dag_id}", schedule=None) as dag:
    waits = [
        NewFilesSensor(
            task_id=f"wait{{i}}", path="{folder}", pattern="*.png", settle_seconds=0.3, poke_interval=0.2,
            timeout=600, max_files={max_files}, **{sensor_kwargs}
        )
        for i in range({sensors})
    ]

    @task
    def record(*taken):
        Path("{out}").write_text(json.dumps(list(taken)))

    record(*[w.output for w in waits])
"""


def _sensor_dag(
    write_dag: Any,
    tmp_path: Path,
    name: str,
    sensors: int = 1,
    max_files: Any = None,
    folder: Path | None = None,
    **kwargs: Any,
):
    out = tmp_path / f"{name}.json"
    dag = write_dag(
        SENSOR_DAG.format(
            dag_id=f"{name}_{tmp_path.name}"[:200],
            folder=folder or f"watchedmem:///{tmp_path.name}/incoming",
            out=out,
            sensors=sensors,
            max_files=max_files,
            sensor_kwargs=repr(kwargs),
        )
    )
    return dag, out


class WatchedMemory(MemoryFileSystem):
    """An in-memory store of its own that counts how often a folder is listed.

    ``dag.test()`` runs tasks and triggers in the test process, so the test sees the sensor poll.
    """

    protocol = ("watchedmem",)
    root_marker = "/"
    store: dict[str, Any] = {}
    pseudo_dirs = [""]
    listings: dict[str, int] = {}

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        return super()._strip_protocol(path.removeprefix("watchedmem://"))

    def find(self, path, *args, **kwargs):
        self.listings[path] = self.listings.get(path, 0) + 1
        return super().find(path, *args, **kwargs)


class Dropper(threading.Thread):
    """Writes files once the sensor has listed ``folder`` ``polls`` times and found nothing."""

    def __init__(self, folder: str, names: list[str], polls: int) -> None:
        super().__init__()
        self.folder, self.names, self.polls = folder, names, polls
        self.listed_before = 0

    def run(self) -> None:
        deadline = time.monotonic() + 300  # only bounds a hang; the polls are what is waited for
        while WatchedMemory.listings.get(self.folder, 0) < self.polls and time.monotonic() < deadline:
            time.sleep(0.02)
        self.listed_before = WatchedMemory.listings.get(self.folder, 0)
        for name in self.names:
            WatchedMemory().pipe_file(f"{self.folder}/{name}", name.encode())


def _drop_after_polls(folder: str, names: list[str], polls: int) -> Dropper:
    thread = Dropper(folder, names, polls)
    thread.start()
    return thread


@pytest.mark.parametrize(
    "kwargs",
    [
        {"deferrable": False, "mode": "poke"},
        {"deferrable": False, "mode": "reschedule"},
        {"deferrable": True},
    ],
    ids=["poke", "reschedule", "deferrable"],
)
def test_the_sensor_waits_for_new_files_and_returns_their_paths(
    write_dag: Any, tmp_path: Path, kwargs: dict[str, Any]
) -> None:
    fsspec.register_implementation("watchedmem", WatchedMemory, clobber=True)
    folder = f"/{tmp_path.name}/incoming"
    dag, out = _sensor_dag(write_dag, tmp_path, f"sensor_{kwargs.get('mode', 'deferred')}", **kwargs)
    # The first polls find nothing: the files come while the sensor waits in its mode.
    dropper = _drop_after_polls(folder, ["b.png", "a.png", "skip.txt"], polls=3)
    dag_run = dag.test()
    dropper.join()
    assert dropper.listed_before >= 3, "the files were written before the sensor had waited"
    assert dag_run.state == "success"
    urls = [f"watchedmem://{folder}/a.png", f"watchedmem://{folder}/b.png"]
    assert json.loads(out.read_text()) == [urls]
    ledger = ClaimLedger(default_state_path(f"watchedmem://{folder}"))
    assert ledger.record(urls[0])["owner"] == f"{dag.dag_id}/{dag_run.run_id}/wait0/-1"
    assert ledger.record(f"watchedmem://{folder}/skip.txt") is None
    if kwargs.get("mode") == "reschedule":
        from airflow.models.taskreschedule import TaskReschedule
        from airflow.utils.session import create_session

        with create_session() as session:
            assert (
                session.query(TaskReschedule)
                .join(TaskReschedule.task_instance)
                .filter_by(dag_id=dag.dag_id)
                .count()
                >= 1
            )


def test_two_sensors_and_two_runs_never_take_the_same_file(write_dag: Any, tmp_path: Path) -> None:
    folder = tmp_path / "incoming"
    folder.mkdir()
    dag, out = _sensor_dag(write_dag, tmp_path, "overlap", sensors=2, max_files=2, folder=folder)
    taken: list[list[str]] = []
    for batch in ("first", "second"):
        for i in range(4):
            (folder / f"{batch}{i}.png").write_bytes(b"png")
        assert dag.test().state == "success"
        taken.extend(json.loads(out.read_text()))
    assert [len(files) for files in taken] == [2, 2, 2, 2]
    every = [url for files in taken for url in files]
    assert len(set(every)) == 8 and sorted(every) == sorted(str(p) for p in folder.glob("*.png"))


def _context(dag_id: str = "d", run_id: str = "r", task_id: str = "wait") -> dict[str, Any]:
    return {"ti": SimpleNamespace(dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=-1)}


def test_when_a_rival_takes_the_reported_files_the_sensor_defers_again(tmp_path: Path) -> None:
    import asyncio

    from airflow.sdk.exceptions import TaskDeferred

    from airflow_parallelrun import NewFilesSensor, NewFilesTrigger

    (tmp_path / "a.png").write_bytes(b"a")
    sensor = NewFilesSensor(task_id="wait", path=str(tmp_path), pattern="*.png", settle_seconds=0.2)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(_context())
    trigger = deferred.value.trigger
    assert isinstance(trigger, NewFilesTrigger) and trigger.claim is False

    async def first_event() -> Any:
        return await anext(trigger.run())

    event = asyncio.run(asyncio.wait_for(first_event(), 120))  # only bounds a hang
    url = str(tmp_path / "a.png")
    ledger = ClaimLedger(default_state_path(str(tmp_path)))
    assert ledger.claim(FileStat(url, 1, event.payload["stats"][url][1]), "rival") is True
    with pytest.raises(TaskDeferred):
        sensor.execute_complete(_context(), event.payload)
    ledger.release([url])
    assert sensor.execute_complete(_context(), event.payload) == [url]


def test_a_retried_or_cleared_sensor_returns_the_files_its_task_took(tmp_path: Path) -> None:
    from airflow_parallelrun import NewFilesSensor

    (tmp_path / "a.png").write_bytes(b"a")
    kwargs = {"path": str(tmp_path), "pattern": "*.png", "settle_seconds": 0, "deferrable": False}
    first = NewFilesSensor(task_id="wait", **kwargs).execute(_context())
    assert first == [str(tmp_path / "a.png")]
    (tmp_path / "b.png").write_bytes(b"b")
    # The same task instance again (a retry, or a clear of the failed run): the same files.
    assert NewFilesSensor(task_id="wait", **kwargs).execute(_context()) == first
    # Another run's sensor gets only the new one.
    assert NewFilesSensor(task_id="wait", **kwargs).execute(_context(run_id="r2")) == [
        str(tmp_path / "b.png")
    ]


def test_a_failed_trigger_event_fails_the_task_with_the_cause(tmp_path: Path) -> None:
    from airflow.sdk.exceptions import AirflowException

    from airflow_parallelrun import NewFilesSensor

    sensor = NewFilesSensor(task_id="wait", path=str(tmp_path), pattern="*.png", conn_id="store")
    with pytest.raises(
        AirflowException, match=r"watching .* failed: PermissionError: denied; check the path"
    ):
        sensor.execute_complete(_context(), {"status": "error", "message": "PermissionError: denied"})


def test_a_rendered_path_must_stay_in_the_folder_its_template_pins(tmp_path: Path) -> None:
    from airflow_parallelrun import NewFilesSensor
    from airflow_parallelrun.core.errors import ConfigError

    (tmp_path / "in" / "ok").mkdir(parents=True)
    (tmp_path / "in" / "ok" / "a.png").write_bytes(b"a")
    (tmp_path / "secret.png").write_bytes(b"secret")

    def sensor(**kwargs: Any) -> Any:
        kwargs = {"path": f"{tmp_path}/in/{{{{ params.folder }}}}", "pattern": "*.png", **kwargs}
        return NewFilesSensor(task_id="wait", settle_seconds=0, deferrable=False, **kwargs)

    escaping = sensor()
    escaping.render_template_fields({"params": {"folder": ".."}})
    assert escaping.path == f"{tmp_path}/in/.."
    with pytest.raises(ConfigError, match=r"path='.*/in/\.\.' has a '\.\.' segment"):
        escaping.execute(_context())
    assert ClaimLedger(default_state_path(str(tmp_path))).record(str(tmp_path / "secret.png")) is None
    # As the operator does: whatever renders must be inside the literal folder of the template.
    outside = sensor()
    outside.path = "/etc"  # what a template pinning {tmp_path}/in/ rendered, by any means
    with pytest.raises(ConfigError, match=r"path='/etc' is outside '.*/in', the folder its template"):
        outside.execute(_context())
    pinned_state = sensor(state_path=f"{tmp_path}/claims/{{{{ params.folder }}}}")
    pinned_state.render_template_fields({"params": {"folder": "ok"}})
    pinned_state.state_path = f"{tmp_path}/elsewhere"
    with pytest.raises(ConfigError, match=r"state_path='.*/elsewhere' is outside '.*/claims'"):
        pinned_state.execute(_context())
    fine = sensor()
    fine.render_template_fields({"params": {"folder": "ok"}})
    assert fine.execute(_context()) == [str(tmp_path / "in" / "ok" / "a.png")]
    assert fine.max_files == 1000  # one XCom carries at most 1000 files unless told otherwise


SCORE_DAG = """
from airflow.sdk import DAG
from airflow_parallelrun import FileDataset, NewFilesSensor, ParallelRunConfig, ParallelRunOperator

with DAG("{dag_id}", schedule=None) as dag:
    wait = NewFilesSensor(
        task_id="wait", path="{folder}", pattern="*.txt", settle_seconds=0.2, poke_interval=0.2
    )
    score = ParallelRunOperator(
        task_id="score",
        inputs=FileDataset(files=wait.output),
        output_path="{output}/{{{{ run_id }}}}",
        config=ParallelRunConfig(entry_script="{script}", mini_batch_size="2", run_max_try=1,
                                 process_count_per_node=1),
    )
"""


def test_the_sensor_output_feeds_a_parallel_run_that_scores_exactly_those_files(
    write_dag: Any, tmp_path: Path
) -> None:
    folder = tmp_path / "incoming"
    folder.mkdir()
    for name in ("old0.txt", "old1.txt"):
        (folder / name).write_text(name)
    # An earlier run took these two.
    ledger = ClaimLedger(default_state_path(str(folder)))
    for name in ("old0.txt", "old1.txt"):
        assert ledger.claim(FileStat(str(folder / name), 8, "0"), "earlier-run")
    for i in range(3):
        (folder / f"new{i}.txt").write_text(f"new{i}")
    script = tmp_path / "score.py"
    script.write_text("def run(mini_batch):\n    return [open(p).read() for p in mini_batch]\n")
    dag = write_dag(
        SCORE_DAG.format(
            dag_id=f"sensor_score_{tmp_path.name}", folder=folder, output=tmp_path / "out", script=script
        )
    )
    assert "wait" in dag.task_dict["score.partition"].upstream_task_ids
    dag_run = dag.test()
    assert dag_run.state == "success"
    merged = tmp_path / "out" / dag_run.run_id / "parallel_run_step.txt"
    assert merged.read_text().splitlines() == ["new0", "new1", "new2"]


def test_the_sensor_example_scores_the_new_images_once(
    airflow_db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from parallelrun_examples.data import make_digits_images

    from tests.airflow.conftest import load_dag_module
    from tests.conftest import DAGS

    incoming = tmp_path / "incoming" / "sensor"
    images = make_digits_images(incoming / "batch", count=3)
    # The example's data_dir Param only takes the examples folder or a folder under it.
    monkeypatch.setenv("PARALLELRUN_EXAMPLES_DIR", str(tmp_path))
    dag = load_dag_module(DAGS / "parallelrun_sensor.py").dag
    dag_run = dag.test(run_conf={"data_dir": str(tmp_path)})
    assert dag_run.state == "success"
    merged = tmp_path / "out" / "sensor" / dag_run.run_id / "parallel_run_step.txt"
    assert [line.split(":")[0] for line in merged.read_text().splitlines()] == [p.name for p in images]
    ledger = ClaimLedger(default_state_path(str(incoming)))
    assert all(ledger.record(str(p))["owner"].startswith("parallelrun_sensor/") for p in images)
