"""partition_keys in real DAG runs: one mapped mini-batch per key group, for files, tables and SQL.

One DAG with three operators (a FileDataset by its partition_format, a csv TabularDataset and a
SqlDataset by columns) runs with ``dag.test()`` and warm workers; an Azure-style entry script
``run(mini_batch, mini_batch_context)`` writes what each call got, and the test checks that each
group arrived whole and alone, named by its keys in the UI and in the report.
"""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from airflow_parallelrun.core.errors import ConfigError
from tests.airflow.conftest import task_instances

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

SCRIPT = """
import json, os

def run(mini_batch, mini_batch_context):
    keys = mini_batch_context.partition_key_value
    if hasattr(mini_batch, "columns"):
        ids = sorted(int(i) for i in mini_batch["id"])
        alone = all(len(set(mini_batch[k].astype(str))) == 1 for k in keys)
    else:
        ids, alone = sorted(os.path.basename(p) for p in mini_batch), True
    # The table's and the SQL input's groups differ by their keys: one file per group of each.
    name = f"{mini_batch_context.dataset.kind}-{'-'.join(keys)}-{mini_batch_context.minibatch_index}.json"
    with open(os.path.join(SEEN, name), "w") as f:
        json.dump({"keys": keys, "ids": ids, "alone": alone}, f)
    return [str(i) for i in ids]
"""

DAG_SOURCE = """
from airflow.sdk import DAG
from airflow_parallelrun import FileDataset, ParallelRunConfig, ParallelRunOperator
from airflow_parallelrun import SqlDataset, TabularDataset

def config(*keys):
    return ParallelRunConfig(entry_script="{script}", partition_keys=list(keys), process_count_per_node=2)

with DAG("partition_keys_kinds", schedule=None) as dag:
    ParallelRunOperator(
        task_id="files",
        inputs=FileDataset(path="{files}", pattern="**/*.txt", partition_format="{{Store}}/{{Brand}}/*.txt"),
        output_path="{out}/files",
        config=config("Store", "Brand"),
    )
    ParallelRunOperator(
        task_id="table",
        inputs=TabularDataset(path="{table}"),
        output_path="{out}/table",
        config=config("Store", "Brand"),
    )
    ParallelRunOperator(
        task_id="sql",
        inputs=SqlDataset(url="sqlite:///{database}", table="sales", key="id"),
        output_path="{out}/sql",
        config=config("Brand"),
    )
"""


def _sales(rows: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": range(rows),
            "Store": [i % 3 for i in range(rows)],
            "Brand": ["ab"[(i // 3) % 2] for i in range(rows)],
        }
    )


def _records(folder: Path, kind: str) -> dict[str, dict]:
    found = [json.loads(p.read_text()) for p in folder.glob(f"{kind}-*.json")]
    return {json.dumps(r["keys"], sort_keys=True): r for r in found}


def test_each_key_group_runs_whole_and_alone_in_a_dag_run(write_dag, tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    seen.mkdir()
    for store in ("s1", "s2"):
        for brand in ("a", "b"):
            (tmp_path / "files" / store / brand).mkdir(parents=True)
            for day in range(2):
                (tmp_path / "files" / store / brand / f"{store}{brand}{day}.txt").write_text("x")
    frame = _sales(120)
    (tmp_path / "table").mkdir()
    frame.iloc[:60].to_csv(tmp_path / "table" / "t0.csv", index=False)
    frame.iloc[60:].to_csv(tmp_path / "table" / "t1.csv", index=False)
    with sqlite3.connect(tmp_path / "shop.db") as connection:
        frame.to_sql("sales", connection, index=False)
    script = tmp_path / "score.py"
    script.write_text(SCRIPT.replace("SEEN", repr(str(seen))))
    out = tmp_path / "out"
    dag = write_dag(
        DAG_SOURCE.format(
            script=script,
            files=tmp_path / "files",
            table=tmp_path / "table",
            database=tmp_path / "shop.db",
            out=out,
        )
    )
    dag_run = dag.test()
    assert dag_run.state == "success"

    files = _records(seen, "FileDataset")
    assert set(files) == {
        json.dumps({"Brand": b, "Store": s}, sort_keys=True) for s in ("s1", "s2") for b in "ab"
    }
    for record in files.values():
        prefix = record["keys"]["Store"] + record["keys"]["Brand"]
        assert record["ids"] == [f"{prefix}0.txt", f"{prefix}1.txt"]
    for kind in ("table", "sql"):
        summary = json.loads((out / kind / "_parallelrun" / "summary.json").read_text())
        assert (summary["total_items"], summary["succeeded_items"]) == (120, 120)
    tables = [r for r in (json.loads(p.read_text()) for p in seen.glob("TabularDataset-*.json"))]
    by_keys = {json.dumps(r["keys"], sort_keys=True): r for r in tables if len(r["keys"]) == 2}
    for (store, brand), group in frame.groupby(["Store", "Brand"]):
        record = by_keys[json.dumps({"Brand": brand, "Store": store}, sort_keys=True)]
        assert record["ids"] == sorted(group["id"]) and record["alone"]
    sql = [r for r in tables if list(r["keys"]) == ["Brand"]]
    assert sorted((r["keys"]["Brand"], r["ids"]) for r in sql) == [
        (brand, sorted(group["id"])) for brand, group in frame.groupby("Brand")
    ]

    # The UI names each mapped task instance by its group, and so does the report.
    labels = sorted(label for (task, _), (_, label) in task_instances(dag_run).items() if task == "table.run")
    assert len(labels) == 6 and all(" Store=" in label and " Brand=" in label for label in labels)
    with open(out / "files" / "_parallelrun" / "processed_mini_batches.csv") as f:
        named = [json.loads(row["partition_key_value"]) for row in csv.DictReader(f)]
    assert sorted(json.dumps(k, sort_keys=True) for k in named) == sorted(files)


def test_partition_keys_with_mini_batch_size_fail_when_the_dag_is_parsed(write_dag, tmp_path: Path) -> None:
    source = """
        from airflow.sdk import DAG
        from airflow_parallelrun import ParallelRunConfig, ParallelRunOperator, TabularDataset

        with DAG("partition_keys_and_size", schedule=None) as dag:
            ParallelRunOperator(
                task_id="score",
                inputs=TabularDataset(path="/data"),
                output_path="/out",
                config=ParallelRunConfig(
                    entry_script="s.py", partition_keys=["Store"], mini_batch_size="1MB"
                ),
            )
    """
    with pytest.raises(
        ConfigError, match=r"partition_keys=\['Store'\] and mini_batch_size='1MB' exclude each other"
    ):
        write_dag(source)
