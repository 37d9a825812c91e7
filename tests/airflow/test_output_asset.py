"""The aggregate task emits the run's output asset event, with metadata a downstream DAG can read."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

DAG_SOURCE = """
from airflow.sdk import DAG, Asset
from airflow_parallelrun import FileDataset, ParallelRunConfig, ParallelRunOperator

with DAG("{dag_id}", schedule=None) as dag:
    ParallelRunOperator(
        task_id="score",
        inputs=FileDataset(path="{input}", pattern="*.txt"),
        output_path="{output}/{{{{ run_id }}}}",
        output_asset=Asset("{asset}"),
        config=ParallelRunConfig(entry_script="{script}", mini_batch_size="2", error_threshold={bound},
                                 run_max_try=1, process_count_per_node=1),
    )
"""


def _events(asset_name: str) -> list[dict]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = (
            session.query(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetModel.name == asset_name)
            .all()
        )
        return [dict(row.extra) for row in rows]


@pytest.mark.parametrize("bad", [False, True])
def test_a_succeeded_run_emits_its_asset_event_with_the_runs_metadata(write_dag, tmp_path: Path, bad: bool):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(5):
        (folder / f"item{i}.txt").write_text("bad" if bad and i == 4 else f"v{i}")
    script = tmp_path / "score.py"
    script.write_text(
        "def run(mini_batch):\n"
        "    rows = [open(p).read() for p in mini_batch]\n"
        "    if 'bad' in rows:\n"
        "        raise ValueError('bad row')\n"
        "    return rows\n"
    )
    asset = f"scores_{'bad' if bad else 'ok'}_{tmp_path.name}"
    dag = write_dag(
        DAG_SOURCE.format(
            dag_id=asset, input=folder, output=tmp_path / "out", asset=asset, script=script, bound=0
        )
    )
    dag_run = dag.test()
    events = _events(asset)
    if bad:
        # A run that fails its bound publishes nothing downstream.
        assert dag_run.state == "failed" and events == []
        return
    assert dag_run.state == "success"
    (extra,) = events
    out = tmp_path / "out" / dag_run.run_id
    assert extra["run_id"] == dag_run.run_id
    assert extra["output"] == str(out / "parallel_run_step.txt")
    assert extra["summary"] == str(out / "_parallelrun" / "summary.json")
    assert (extra["total_items"], extra["succeeded_items"], extra["failed_items"]) == (5, 5, 0)
    assert (extra["total_mini_batches"], extra["succeeded_mini_batches"], extra["failed_mini_batches"]) == (
        3,
        3,
        0,
    )
