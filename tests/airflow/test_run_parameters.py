"""Per-run configuration from Params (Azure's PipelineParameter), and an operator whose input never came."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_parallelrun import ConfigError, ParallelRunConfig
from tests.airflow.conftest import task_instances

pytestmark = pytest.mark.airflow

SCRIPT = """
import os

def run(mini_batch):
    return [open(p).read() for p in mini_batch if "bad" not in os.path.basename(p)]
"""

DAG_SOURCE = """
from airflow.sdk import DAG, Param
from airflow_parallelrun import FileDataset, ParallelRunConfig, ParallelRunOperator

with DAG("{dag_id}", schedule=None, params={{
    "mini_batch_size": Param("10", type="string"),
    "error_threshold": Param(0, type="integer", minimum=-1),
}}) as dag:
    ParallelRunOperator(
        task_id="score",
        inputs=FileDataset(path="{input}", pattern="*.txt"),
        output_path="{output}/{{{{ run_id }}}}",
        config=ParallelRunConfig(
            entry_script="{script}",
            mini_batch_size="{{{{ params.mini_batch_size }}}}",
            error_threshold="{{{{ params.error_threshold }}}}",
            run_max_try=1,
            process_count_per_node=1,
        ),
    )
"""


@pytest.fixture
def form_dag(write_dag, tmp_path: Path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(5):
        (folder / f"item{i}.txt").write_text(f"v{i}")
    (folder / "item5_bad.txt").write_text("bad")
    script = tmp_path / "score.py"
    script.write_text(SCRIPT)
    return write_dag(
        DAG_SOURCE.format(
            dag_id=f"form_{tmp_path.name}", input=folder, output=tmp_path / "out", script=script
        )
    )


def _runs(dag_run) -> dict[tuple[str, int], str]:
    return {key: state for key, (state, _) in task_instances(dag_run).items()}


@pytest.mark.slow
def test_mini_batch_size_and_error_threshold_come_from_the_runs_params(form_dag) -> None:
    # mini_batch_size 2: six files in three mini-batches; error_threshold -1: the bad file is tolerated.
    dag_run = form_dag.test(run_conf={"mini_batch_size": "2", "error_threshold": -1})
    states = _runs(dag_run)
    assert sorted(k[1] for k in states if k[0] == "score.run") == [0, 1, 2]
    assert states[("score.aggregate", -1)] == "success"
    assert str(dag_run.state) == "success"
    # The partition resolved the configuration once, into the manifest header the run and
    # aggregate tasks read; no XCom carries it any more.
    (manifest,) = form_dag_output(form_dag).glob("*/_parallelrun/manifest.json")
    stored = json.loads(manifest.read_text())["config"]
    assert stored["mini_batch_size"] == {"unit": "files", "value": 2}
    assert stored["error_threshold"] == -1
    assert "config" not in _xcom_keys(dag_run) and "output_path" in _xcom_keys(dag_run)


def form_dag_output(dag) -> Path:
    partition = dag.task_dict["score.partition"]
    return Path(partition.output_path.split("/{{")[0])


def _xcom_keys(dag_run) -> set[str]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(XComModel.key).filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id)
        return {key for (key,) in rows}


def test_the_same_dag_with_other_params_partitions_and_counts_otherwise(form_dag) -> None:
    # Defaults: one mini-batch of ten files, and error_threshold 0 fails the run on the bad file.
    dag_run = form_dag.test()
    states = _runs(dag_run)
    assert sorted(k[1] for k in states if k[0] == "score.run") == [0]
    assert states[("score.aggregate", -1)] == "failed"


@pytest.mark.slow
def test_an_invalid_rendered_value_fails_the_partition_naming_field_and_value(form_dag, capfd) -> None:
    states = _runs(form_dag.test(run_conf={"mini_batch_size": "0"}))
    assert states[("score.partition", -1)] == "failed"
    logs = capfd.readouterr()
    assert "invalid ParallelRunConfig: mini_batch_size='0'" in logs.out + logs.err


def test_templated_fields_are_checked_once_rendered_and_the_others_at_parse_time() -> None:
    config = ParallelRunConfig(
        entry_script="s.py", error_threshold="{{ params.t }}", mini_batch_size="{{ x }}"
    )
    assert config.templates == {"error_threshold": "{{ params.t }}", "mini_batch_size": "{{ x }}"}
    rendered = config.rendered({"error_threshold": " -1 ", "mini_batch_size": "20"})
    assert (rendered.error_threshold, rendered.mini_batch_size, rendered.templates) == (-1, "20", {})
    with pytest.raises(ConfigError, match=r"error_threshold=-5 is invalid"):
        config.rendered({"error_threshold": "-5", "mini_batch_size": "20"})
    with pytest.raises(ConfigError, match=r"error_threshold='ten' is invalid"):
        config.rendered({"error_threshold": "ten", "mini_batch_size": "20"})
    with pytest.raises(ConfigError, match="run_max_try=0"):
        ParallelRunConfig(entry_script="s.py", error_threshold="{{ params.t }}", run_max_try=0)


SKIP_DAG = """
from airflow.sdk import DAG, task
try:
    from airflow.sdk.exceptions import AirflowSkipException
except ImportError:  # Airflow 3.1
    from airflow.exceptions import AirflowSkipException
from airflow_parallelrun import FileDataset, ParallelRunConfig, ParallelRunOperator

with DAG("{dag_id}", schedule=None) as dag:
    @task
    def wait_for_input():
        {body}

    wait_for_input() >> ParallelRunOperator(
        task_id="score",
        inputs=FileDataset(path="{input}", pattern="*.txt"),
        output_path="{output}/{{{{ run_id }}}}",
        config=ParallelRunConfig(entry_script="{script}", process_count_per_node=1),
    )
"""


@pytest.mark.parametrize(
    ("body", "aggregate", "message"),
    [
        ("raise AirflowSkipException('no new files')", "skipped", "was skipped: nothing ran"),
        ("raise RuntimeError('the source is down')", "failed", "did not run because a task before it failed"),
    ],
)
def test_an_input_that_never_came_skips_or_fails_the_aggregate_saying_why(
    write_dag, tmp_path: Path, capfd, body: str, aggregate: str, message: str
) -> None:
    script = tmp_path / "score.py"
    script.write_text(SCRIPT)
    dag = write_dag(
        SKIP_DAG.format(
            dag_id=f"skip_{tmp_path.name}", body=body, input=tmp_path, output=tmp_path / "out", script=script
        )
    )
    states = _runs(dag.test())
    assert states[("score.aggregate", -1)] == aggregate
    logs = capfd.readouterr()
    assert message in logs.out + logs.err


# --- every bad rendered value fails the partition once, naming the field, the value and the fix -----

RETRIED_DAG = """
from datetime import timedelta

from airflow.sdk import DAG, Param
from airflow_parallelrun import FileDataset, ParallelRunConfig, ParallelRunOperator

with DAG("{dag_id}", schedule=None, params={{
    "size": Param("2", type="string"),
    "folder": Param("ok", type="string"),
    "files": Param('["a.txt", "b.txt"]', type="string"),
    "argument": Param("size", type="string"),
    "variable": Param("{variable}", type="string"),
}}) as dag:
    ParallelRunOperator(
        task_id="score",
        inputs=FileDataset(path="{root}/{{{{ params.folder }}}}", files="{{{{ params.files }}}}"),
        output_path="{output}/{{{{ params.folder }}}}/{{{{ run_id }}}}",
        arguments=["--model", "{{{{ params[params.argument] }}}}"],
        config=ParallelRunConfig(
            entry_script="{script}",
            mini_batch_size="{{{{ params.size }}}}",
            run_max_try=1,
            process_count_per_node=1,
            environment_variables={{"API_TOKEN": "{{{{ var.value[params.variable] }}}}"}},
        ),
        retries=2,
        retry_delay=timedelta(0),
    )
"""

BAD_VALUES = [
    # (run conf, what the error must say)
    ({"size": "1MB"}, "mini_batch_size='1MB' has an unknown unit 'MB'"),
    ({"size": "ten"}, "invalid ParallelRunConfig: mini_batch_size='ten'"),
    ({"folder": "../private"}, "has a '..' segment"),
    ({"files": '{"a.txt": 1}'}, "is a string but not a JSON list of paths"),
    ({"files": '["../private/p.txt"]'}, "files='../private/p.txt' has a '..' segment"),
    ({"files": '["/etc/hostname"]'}, "files entry '/etc/hostname' is outside the input folder"),
    ({"files": '[["a.txt"]]'}, "files entry ['a.txt'] is not a path"),
    (
        {"argument": "no_such_param"},
        "arguments=['--model', '{{ params[params.argument] }}'] could not be rendered",
    ),
    (
        {"variable": "no_such_variable"},
        "environment_variables['API_TOKEN']='{{ var.value[params.variable] }}'",
    ),
]


@pytest.fixture
def retried_dag(write_dag, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    root = tmp_path / "data" / "in"
    (root / "ok").mkdir(parents=True)
    for name in ("a.txt", "b.txt"):
        (root / "ok" / name).write_text(name)
    (tmp_path / "data" / "private").mkdir()
    (tmp_path / "data" / "private" / "p.txt").write_text("p")
    script = tmp_path / "score.py"
    script.write_text(
        "import os\n\ndef run(mini_batch):\n    return [os.environ['API_TOKEN'] for _ in mini_batch]\n"
    )
    variable = f"pr_token_{tmp_path.name[-8:]}".lower()
    monkeypatch.setenv(f"AIRFLOW_VAR_{variable.upper()}", "tok")
    return write_dag(
        RETRIED_DAG.format(
            dag_id=f"retried_{tmp_path.name}",
            root=root,
            output=tmp_path / "out",
            script=script,
            variable=variable,
        )
    )


def _tries(dag_run, task_id: str) -> int:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        ti = (
            session.query(TaskInstance)
            .filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id, task_id=task_id, map_index=-1)
            .one()
        )
        return ti.try_number


def test_the_dag_with_good_values_runs(retried_dag, tmp_path: Path) -> None:
    dag_run = retried_dag.test()
    assert str(dag_run.state) == "success", _runs(dag_run)
    assert (tmp_path / "out" / "ok").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("conf", "message"), BAD_VALUES, ids=[next(iter(c)) + "=" + next(iter(c.values())) for c, _ in BAD_VALUES]
)
def test_a_bad_rendered_value_fails_once_without_retries_naming_field_and_value(
    retried_dag, tmp_path: Path, capfd, conf: dict, message: str
) -> None:
    dag_run = retried_dag.test(run_conf=conf)
    states = _runs(dag_run)
    # retries=2 without delay, but a retry would render the same value again: one try only.
    assert states[("score.partition", -1)] == "failed", states
    assert _tries(dag_run, "score.partition") == 1
    logs = capfd.readouterr()
    assert message in logs.out + logs.err
    assert not (tmp_path / "data" / "private" / "out").exists()
