"""ParallelRunOperator as a DAG author meets it: the tasks it adds, how it composes, parse-time errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from airflow.sdk import DAG
from airflow.sdk.bases.operator import BaseOperator

from airflow_parallelrun import (
    ConfigError,
    FileDataset,
    ParallelRunConfig,
    ParallelRunOperator,
    TabularDataset,
)
from tests.airflow.airflow_versions import airflow_conf, dag_serialization
from tests.airflow.conftest import task_instances

pytestmark = pytest.mark.airflow


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "score.py"
    path.write_text("def run(mini_batch):\n    return mini_batch\n")
    return path


def _operator(script: Path, **overrides):
    kwargs = {
        "task_id": "score",
        "inputs": FileDataset(path="/data/in", pattern="**/*.png"),
        "output_path": "/data/out/{{ run_id }}",
    }
    kwargs.update(overrides)
    if "config" not in kwargs:
        kwargs["config"] = ParallelRunConfig(entry_script=str(script), node_count=2, process_count_per_node=3)
    return ParallelRunOperator(**kwargs)


def test_one_call_adds_partition_mapped_run_and_aggregate(script: Path) -> None:
    with DAG("structure", schedule=None) as dag:
        group = _operator(script)
    assert set(dag.task_dict) == {"score.partition", "score.run", "score.aggregate"}
    run = dag.task_dict["score.run"]
    assert run.is_mapped
    assert run.upstream_task_ids == {"score.partition"}
    assert dag.task_dict["score.aggregate"].upstream_task_ids == {"score.run"}
    # Aggregate counts whatever happened upstream, failed mini-batches included.
    assert dag.task_dict["score.aggregate"].trigger_rule == "all_done"
    # At most node_count x process_count_per_node run() calls at once: the warm pools bound the
    # calls, and one more task instance per worker may start up and wait for a free one.
    assert run.partial_kwargs["max_active_tis_per_dagrun"] == 12
    with DAG("structure_cold", schedule=None) as cold_dag:
        config = ParallelRunConfig(
            entry_script=str(script), node_count=2, process_count_per_node=3, warm_workers=False
        )
        _operator(script, config=config)
    assert cold_dag.task_dict["score.run"].partial_kwargs["max_active_tis_per_dagrun"] == 6
    assert "mini_batch" in run.partial_kwargs["map_index_template"]
    assert group.output.operator is dag.task_dict["score.aggregate"]


def test_composes_with_shift_operators_like_a_task(script: Path) -> None:
    with DAG("compose", schedule=None) as dag:
        before = BaseOperator(task_id="before")
        after = BaseOperator(task_id="after")
        before >> _operator(script) >> after
    assert dag.task_dict["score.partition"].upstream_task_ids == {"before"}
    assert dag.task_dict["after"].upstream_task_ids == {"score.aggregate"}
    with DAG("compose_left", schedule=None) as dag:
        first = BaseOperator(task_id="first")
        _operator(script) << first
    assert dag.task_dict["score.partition"].upstream_task_ids == {"first"}


def test_templated_fields_are_the_input_and_output_paths_and_arguments(script: Path) -> None:
    with DAG("templated", schedule=None) as dag:
        _operator(script, arguments=["--model", "{{ params.model }}"])
    assert set(dag.task_dict["score.partition"].template_fields) == {
        "input_path",
        "input_files",
        "input_table",  # a SqlDataset's table and query
        "input_query",
        "input_sql_conn_id",  # a SqlDataset's conn_id, which may be a template (url: its fallback)
        "output_path",
        "config_templates",  # ParallelRunConfig's fields given as templates, if any
        "arguments",  # to warm the run's workers with the same arguments the run tasks use
    }
    assert dag.task_dict["score.partition"].arguments == ["--model", "{{ params.model }}"]
    assert dag.task_dict["score.run"].partial_kwargs["arguments"] == ["--model", "{{ params.model }}"]


def test_entry_script_is_resolved_relative_to_the_dag_files_folder(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "score.py").write_text("def run(mb):\n    return mb\n")
    with DAG("relative", schedule=None) as dag:
        dag.fileloc = str(tmp_path / "my_dag.py")
        group = _operator(tmp_path, config=ParallelRunConfig(entry_script="scripts/score.py"))
    assert group.entry_script == str(tmp_path / "scripts" / "score.py")


def test_missing_entry_script_is_refused_when_the_dag_is_parsed(tmp_path: Path) -> None:
    with DAG("missing", schedule=None) as dag:
        dag.fileloc = str(tmp_path / "my_dag.py")
        with pytest.raises(
            ConfigError, match=r"entry_script='scripts/nope.py' does not exist.*scripts/nope.py"
        ):
            _operator(tmp_path, config=ParallelRunConfig(entry_script="scripts/nope.py"))


@pytest.mark.parametrize(
    ("inputs", "size", "message"),
    [
        (FileDataset(path="/in"), "1MB", r"mini_batch_size='1MB' has an unknown unit 'MB'"),
        (FileDataset(path="/in"), "500 rows", r"mini_batch_size='500 rows'"),
        (TabularDataset(path="/in", format="csv"), "10XB", r"mini_batch_size='10XB'"),
    ],
)
def test_a_size_in_the_wrong_unit_is_refused_when_the_dag_is_parsed(
    script: Path, inputs, size: str, message: str
) -> None:
    with DAG("unit", schedule=None), pytest.raises(ConfigError, match=message):
        _operator(
            script, inputs=inputs, config=ParallelRunConfig(entry_script=str(script), mini_batch_size=size)
        )


def test_wrong_argument_types_get_errors_that_say_what_to_give(script: Path) -> None:
    with DAG("types", schedule=None):
        with pytest.raises(ConfigError, match="is not a dataset; give FileDataset"):
            _operator(script, inputs="/data/in")
        with pytest.raises(ConfigError, match="must be a list of strings"):
            _operator(script, arguments="--model iris")
        with pytest.raises(ConfigError, match="is not a ParallelRunConfig"):
            _operator(script, config={"entry_script": "x.py"})


def test_extra_keyword_arguments_reach_the_three_tasks(script: Path) -> None:
    with DAG("kwargs", schedule=None) as dag:
        _operator(script, retries=2, pool="scoring")
    assert dag.task_dict["score.partition"].retries == 2
    assert dag.task_dict["score.aggregate"].pool == "scoring"
    assert dag.task_dict["score.run"].partial_kwargs["pool"] == "scoring"


def test_run_task_args_reach_only_the_run_tasks_of_the_serialized_dag(script: Path) -> None:
    conf, serializer = airflow_conf(), dag_serialization()

    with DAG("per_task_args", schedule=None) as dag:
        _operator(script, retries=1, run_task_args={"queue": "gpu", "pool": "scoring", "retries": 0})
    # What the scheduler and the workers get: the DAG as serialized, read back.
    loaded = serializer.from_dict(serializer.to_dict(dag))
    run = loaded.task_dict["score.run"]
    assert (run.partial_kwargs["queue"], run.partial_kwargs["pool"]) == ("gpu", "scoring")
    assert run.retries == 0
    default_queue = conf.get("operators", "default_queue")
    for task_id in ("score.partition", "score.aggregate"):
        task = loaded.task_dict[task_id]
        assert task.queue == default_queue != "gpu", task_id
        assert task.pool != "scoring" and task.retries == 1, task_id


def test_run_task_args_that_are_not_a_mapping_or_name_the_groups_own_arguments_are_refused(
    script: Path,
) -> None:
    with pytest.raises(ConfigError, match=r"run_task_args=\['gpu'\] is not a mapping.*\{'queue': 'gpu'"):
        _operator(script, run_task_args=["gpu"])
    with pytest.raises(ConfigError, match="run_task_args names config, task_id, which the task group sets"):
        _operator(script, run_task_args={"task_id": "x", "config": None})


def test_without_process_count_per_node_the_bound_takes_this_machines_cpu_count(script: Path) -> None:
    import os

    config = ParallelRunConfig(entry_script=str(script), node_count=2, warm_workers=False)
    with DAG("cpu_bound", schedule=None) as dag:
        group = _operator(script, config=config)
    assert group.config.process_count_per_node is None  # each node's pool takes its own CPU count
    assert dag.task_dict["score.run"].partial_kwargs["max_active_tis_per_dagrun"] == 2 * (os.cpu_count() or 1)


@pytest.mark.slow
def test_a_param_cannot_move_the_input_out_of_its_templated_folder(write_dag, tmp_path: Path) -> None:
    root = tmp_path / "data" / "in"
    (root / "ok").mkdir(parents=True)
    (root / "ok" / "a.txt").write_text("a")
    (tmp_path / "data" / "private").mkdir()
    (tmp_path / "data" / "private" / "p.txt").write_text("p")
    script = tmp_path / "score.py"
    script.write_text("def run(mini_batch):\n    return mini_batch\n")
    dag = write_dag(
        f"""
        from airflow.sdk import DAG, Param
        from airflow_parallelrun import FileDataset, ParallelRunConfig, ParallelRunOperator

        with DAG("param_escape", schedule=None, params={{"folder": Param("ok", type="string")}}) as dag:
            ParallelRunOperator(
                task_id="score",
                inputs=FileDataset(path="{root}/{{{{ params.folder }}}}"),
                output_path="{tmp_path}/out/{{{{ params.folder }}}}",
                config=ParallelRunConfig(entry_script="{script}", process_count_per_node=1),
            )
        """
    )
    escaped = dag.test(run_conf={"folder": "../private"})
    assert escaped.state == "failed"
    assert task_instances(escaped)[("score.partition", -1)][0] == "failed"
    assert not (tmp_path / "private").exists() and not (tmp_path / "out").exists()

    fine = dag.test(run_conf={"folder": "ok"})
    assert fine.state == "success"
    assert (tmp_path / "out" / "ok" / "parallel_run_step.txt").read_text() == f"{root}/ok/a.txt\n"


class _TaskInstance:
    """What the aggregate task asks of its task instance about the partition: its state, or an error."""

    dag_id = "truth"

    def __init__(self, state: str | None = None, error: Exception | None = None) -> None:
        self.state, self.error = state, error

    def get_task_states(self, **_: object) -> dict:
        if self.error is not None:
            raise self.error
        return {"run": {"score.partition": self.state}}


@pytest.mark.parametrize(
    ("ti", "says"),
    [
        (
            _TaskInstance(error=ConnectionError("the API server is down")),
            "its state could not be read (ConnectionError: the API server is down)",
        ),
        (_TaskInstance(state="success"), "succeeded but its output path is not in XCom"),
        (_TaskInstance(state="failed"), "did not finish (its state is failed)"),
        (_TaskInstance(state=None), "did not finish (its state is unknown)"),
    ],
)
def test_an_aggregate_without_a_partition_says_what_is_known_and_nothing_else(
    script: Path, ti: _TaskInstance, says: str
) -> None:
    with DAG("truth", schedule=None) as dag:
        _operator(script)
    error = dag.task_dict["score.aggregate"]._no_partition({"ti": ti, "run_id": "run"})
    # AirflowFailException, from airflow.sdk.exceptions (3.2+) or airflow.exceptions (3.1).
    assert type(error).__name__ == "AirflowFailException"
    assert says in str(error)
    assert "state None" not in str(error)


def test_a_deleted_dag_run_reads_as_not_found_both_under_a_supervisor_and_in_dag_test():
    """The two shapes of the Execution API's 404 that get_dagrun_state raises."""
    import httpx
    from airflow.sdk.api.client import ServerResponseError
    from airflow.sdk.exceptions import AirflowRuntimeError, ErrorType
    from airflow.sdk.execution_time.comms import ErrorResponse

    from airflow_parallelrun.operators.task_sdk import http_status as _http_status

    under_supervisor = AirflowRuntimeError(
        ErrorResponse(
            error=ErrorType.API_SERVER_ERROR,
            detail={
                "status_code": 404,
                "message": "Server returned error",
                "detail": {"reason": "not_found"},
            },
        )
    )
    request = httpx.Request("GET", "http://in-process/dag-runs/d/r/state")
    in_dag_test = ServerResponseError(
        "Server returned error", request=request, response=httpx.Response(404, request=request)
    )
    assert _http_status(under_supervisor) == 404
    assert _http_status(in_dag_test) == 404
    assert _http_status(RuntimeError("Dag run not found in the text only")) is None
