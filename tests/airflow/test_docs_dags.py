"""The DAG snippets of README.md and docs/ (docs/snippets/*_dag.py): the README's DAG runs, every one parses.

Each runs from a folder of its own in the test DAG bundle, next to a copy of the entry script it
names, with its ``/data/`` folder moved to a temporary one (``tests/test_docs.py`` says why).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.airflow.airflow_versions import dag_bag, sdk_has_timetables
from tests.airflow.conftest import load_dag_module
from tests.conftest import DAGS, TEST_DAGS
from tests.test_docs import ALL_BLOCKS, SNIPPETS, snippet_source

pytestmark = pytest.mark.airflow


@pytest.fixture
def snippet_folder(tmp_path: Path):
    """Return a new folder in the test DAG bundle holding the snippets' entry scripts; removed after."""
    folder = TEST_DAGS / f"docs_{uuid.uuid4().hex[:10]}"
    (folder / "scripts").mkdir(parents=True)
    for script in sorted((SNIPPETS / "scripts").glob("*.py")):
        name = f"scripts/{script.name}"
        (folder / name).write_text(snippet_source(name, tmp_path / "data"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _write(folder: Path, name: str, data: Path) -> Path:
    path = folder / name
    path.write_text(snippet_source(name, data))
    return path


@pytest.mark.slow
def test_the_readme_dag_scores_every_image_with_the_readme_entry_script(
    airflow_db: None, tmp_path: Path, snippet_folder: Path
) -> None:
    sys.path.insert(0, str(DAGS))
    from parallelrun_examples.data import make_digits_images, train_digits_model

    data = tmp_path / "data"
    images = make_digits_images(data / "images", count=25)
    train_digits_model(data / "model.joblib")

    dag = load_dag_module(_write(snippet_folder, "score_images_dag.py", data)).dag
    dag_run = dag.test()
    assert dag_run.state == "success"

    out = data / "out" / dag_run.run_id
    lines = (out / "parallel_run_step.txt").read_text().splitlines()
    assert [line.split(": ")[0] for line in lines] == [p.name for p in sorted(images, key=str)]
    assert all(line.split(": ")[1].isdigit() for line in lines)
    summary = json.loads((out / "_parallelrun" / "summary.json").read_text())
    assert (summary["status"], summary["total_mini_batches"], summary["succeeded_items"]) == (
        "succeeded",
        3,
        25,
    )


DAG_SNIPPETS = sorted(p.name for p in SNIPPETS.glob("*_dag.py"))


def test_every_dag_snippet_is_one_a_page_shows() -> None:
    shown = {Path(b.marker).name for b in ALL_BLOCKS if b.marker}
    assert set(DAG_SNIPPETS) <= shown
    assert "score_images_dag.py" in DAG_SNIPPETS


@pytest.mark.parametrize("name", DAG_SNIPPETS)
def test_every_dag_snippet_parses_as_the_dag_processor_parses_it(
    airflow_db: None, tmp_path: Path, snippet_folder: Path, name: str
) -> None:
    source = snippet_source(name, tmp_path / "data")
    if "CronTriggerTimetable" in source and not sdk_has_timetables():
        pytest.skip(
            f"{name} imports CronTriggerTimetable from airflow.sdk, which has it from Airflow 3.2 on "
            "(docs/install.md says where Airflow 3.1 has it)"
        )
    path = _write(snippet_folder, name, tmp_path / "data")
    bag = dag_bag(dag_folder=str(path))
    assert bag.import_errors == {}
    (dag,) = bag.dags.values()
    assert {t.task_id for t in dag.tasks} >= {"score.partition", "score.run", "score.aggregate"} or (
        name == "report_dag.py" and [t.task_id for t in dag.tasks] == ["report"]
    )


@pytest.mark.slow
def test_providers_list_block_finds_the_provider() -> None:
    (block,) = [b for b in ALL_BLOCKS if b.first_line.startswith("airflow providers list")]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", block.code], capture_output=True, text=True, env=env, timeout=180
    )
    assert done.returncode == 0, done.stderr
    assert "airflow-provider-parallelrun" in done.stdout
    assert "0.1.0" in done.stdout


@pytest.mark.slow
def test_the_sql_dag_scores_every_customer_into_the_table_and_a_second_run_upserts(
    airflow_db: None, tmp_path: Path, snippet_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/sql.md's DAG and entry script, run on a SQLite warehouse named by its Connection."""
    import pandas as pd
    from sqlalchemy import create_engine, text

    sys.path.insert(0, str(DAGS))
    from parallelrun_examples.customers import ensure_customers_table, train_customers_model

    data, warehouse = tmp_path / "data", tmp_path / "warehouse.db"
    url = f"sqlite:///{warehouse}"
    assert ensure_customers_table(url, "customers", rows=3_000) == 3_000
    train_customers_model(data / "churn.joblib")
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(warehouse)}))
    dag = load_dag_module(_write(snippet_folder, "sql_dag.py", data)).dag

    def scores() -> pd.DataFrame:
        return pd.read_sql(text("SELECT customer_id, score FROM customer_scores ORDER BY customer_id"), url)

    assert dag.test().state == "success"
    first = scores()
    assert first["customer_id"].tolist() == list(range(1, 3_001))
    assert first["score"].between(0, 1).all()
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE customers SET support_tickets = 20 WHERE customer_id <= 100"))
    engine.dispose()
    assert dag.test().state == "success"
    second = scores()
    assert second["customer_id"].tolist() == list(range(1, 3_001)), "the second run added rows"
    assert (second["score"][:100] > first["score"][:100]).all()
    pd.testing.assert_series_equal(second["score"][100:], first["score"][100:])
