"""Entry scripts shaped like Microsoft's published examples run unchanged in real DAG runs.

The scripts in ``tests/azure_examples/`` each have the shape of one of Microsoft's ParallelRunStep,
parallel-job or batch-endpoint examples (see docs/azure-migration.md#microsofts-example-scripts).
Two DAGs run them with ``dag.test()`` and warm workers: one in Airflow's interpreter (partition
keys of files and tables, program arguments, ``AZUREML_MODEL_DIR``, ``AZUREML_BI_OUTPUT_PATH``, a
module beside the script), one in a kept environment with the real azureml-core and pandas 2
(``python=``: ``Model.get_model_path`` and ``azureml_user``). Each check compares a script's merged
output and the run's counts with what the test computes itself from the same data and models.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.airflow.conftest import task_instances
from tests.azure_examples import data
from tests.python_envs import AZUREML_ENV, python_with

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

OPERATOR = """
    ParallelRunOperator(
        task_id="{name}",
        inputs={inputs},
        output_path="{out}/{name}",
        arguments={arguments},
        config=ParallelRunConfig(entry_script="{script}", run_max_try=1, process_count_per_node=2, {config}),
    )
"""

DAG_HEAD = """
from airflow.sdk import DAG
from airflow_parallelrun import FileDataset, ParallelRunConfig, ParallelRunOperator, TabularDataset

with DAG("{dag_id}", schedule=None) as dag:
"""


def _dag_source(dag_id: str, out: Path, steps: dict[str, dict[str, str]]) -> str:
    """Write a DAG of one ParallelRunOperator per example script (``steps``: name to its fields)."""
    operators = [
        OPERATOR.format(
            name=name,
            out=out,
            script=data.HERE / f"{step.get('script', name)}.py",
            inputs=step["inputs"],
            arguments=step.get("arguments", "[]"),
            config=step.get("config", ""),
        )
        for name, step in steps.items()
    ]
    return DAG_HEAD.format(dag_id=dag_id) + "".join(operators)


def _lines(out: Path, name: str) -> list[str]:
    return (out / name / "parallel_run_step.txt").read_text().splitlines()


def _counts(out: Path, name: str) -> tuple[int, int, int]:
    summary = json.loads((out / name / "_parallelrun" / "summary.json").read_text())
    return summary["total_items"], summary["succeeded_items"], summary["failed_items"]


def _predicted_digits(model_file: Path, images: Path) -> dict[str, int]:
    """What the digit model says of each image, computed here as the scripts should."""
    from PIL import Image

    with open(model_file, "rb") as f:
        model = pickle.load(f)
    return {
        p.name: int(model.predict(np.array(Image.open(p)).reshape((1, 64)))[0])
        for p in sorted(images.iterdir())
    }


def test_example_scripts_run_unchanged_in_airflows_interpreter(
    write_dag, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("PARALLELRUN_MODEL_CACHE", str(tmp_path / "model-cache"))
    sizes = data.audio_files(tmp_path / "audio")
    incomes = data.incomes(tmp_path / "incomes")
    sales = data.sales(tmp_path / "sales")
    data.digit_images(tmp_path / "digits", 12)
    digits_model = data.digit_model(tmp_path / "mnist" / "model")
    heart_model = tmp_path / "heart-model" / "model"
    hearts = data.heart_csvs(tmp_path / "heart", heart_model)
    trained = tmp_path / "trained"
    digits = f'FileDataset(path="{tmp_path / "digits"}", pattern="*.png")'
    mnist_model = f'models={{"mnist": "{digits_model}"}}, mini_batch_size="5"'
    steps = {
        "total_file_size": {
            "inputs": f'FileDataset(path="{tmp_path / "audio"}", pattern="**/*.wav", '
            'partition_format="{user}/{genres}/*.wav")',
            "config": 'partition_keys=["user", "genres"]',
        },
        "total_income": {
            "inputs": f'TabularDataset(path="{tmp_path / "incomes"}")',
            "config": 'partition_keys=["STATE"]',
        },
        "parallel_train": {
            "inputs": f'TabularDataset(path="{tmp_path / "sales"}")',
            "config": 'partition_keys=["Store", "Brand"], error_threshold=-1',
            "arguments": repr(
                [
                    *("--drop_cols", "Revenue,Store,Brand", "--target_col", "Quantity"),
                    *("--date_col", "WeekStarting", "--lagging_orders", "1,2,3"),
                    *("--model_folder", str(trained), "--partition_keys", "Store,Brand"),
                ]
            ),
        },
        "digit_identification_args": {
            "inputs": digits,
            "arguments": repr(["--model", str(digits_model)]),
            "config": 'mini_batch_size="5"',
        },
        "batch_driver_parquet_outputs": {
            "inputs": f'FileDataset(path="{tmp_path / "heart"}", pattern="*.csv")',
            "config": f'models={{"heart": "{heart_model}"}}, output_action="summary_only"',
        },
        "batch_driver_torch": {"inputs": digits, "config": mnist_model},
        "batch_driver_keras": {"inputs": digits, "config": mnist_model},
        "batch_driver_imagenet": {"inputs": digits, "config": mnist_model},
    }
    out = tmp_path / "out"
    dag_run = write_dag(_dag_source(f"azure_examples_{tmp_path.name}", out, steps)).test()
    assert str(dag_run.state) == "success", task_instances(dag_run)

    # Partition per folder: each line's user and genres are its file's folders, its total its group's.
    lines = [line.split(",") for line in _lines(out, "total_file_size")]
    assert sorted(fields[0] for fields in lines) == sorted(sizes)
    for name, size, _, user, genres, total in lines:
        group = [s for n, s in sizes.items() if n.startswith(f"{user}-{genres}-")]
        assert (name.split("-")[:2], int(size), int(total)) == ([user, genres], sizes[name], sum(group))
    assert _counts(out, "total_file_size") == (6, 6, 0)

    # Partition per column with a one-argument run(): each row carries its own state's total income.
    rows = [line.split() for line in _lines(out, "total_income")]
    totals = incomes.groupby("STATE")["INCOME"].sum()
    assert sorted((s, int(i), int(t)) for s, i, t in rows) == sorted(
        (s, i, int(totals[s])) for s, i in zip(incomes["STATE"], incomes["INCOME"], strict=True)
    )

    # Many models: one model pickled per (Store, Brand) under --model_folder, one result row each.
    groups = sorted(sales.groupby(["Store", "Brand"]).groups)
    assert sorted(tuple(line.split()[:2]) for line in _lines(out, "parallel_train")) == [
        (str(s), b) for s, b in groups
    ]
    assert sorted(p.relative_to(trained).parts for p in trained.rglob("my_model.pkl")) == [
        (str(s), b, "my_model.pkl") for s, b in groups
    ]
    # Azure's count: 160 rows in, 4 returned; the shortfall counts as failed items (threshold -1).
    assert _counts(out, "parallel_train") == (160, 4, 156)

    expected = _predicted_digits(digits_model / "digits.pkl", tmp_path / "digits")
    assert sorted(_lines(out, "digit_identification_args")) == [f"{n}: {d}" for n, d in expected.items()]
    for name in ("batch_driver_torch", "batch_driver_keras", "batch_driver_imagenet"):
        found = {line.split()[0]: int(line.split()[1]) for line in _lines(out, name)}
        assert found == expected, name
        assert _counts(out, name) == (12, 12, 0)

    # Batch endpoint writing its own files into AZUREML_BI_OUTPUT_PATH: they end up in the output.
    written = {p.stem: pd.read_parquet(p) for p in (out / "batch_driver_parquet_outputs").rglob("*.parquet")}
    assert sorted(written) == sorted(Path(h).stem for h in hearts)
    assert all(
        list(frame.columns) == ["age", "chol", "prediction"] and len(frame) == 5 for frame in written.values()
    )
    assert _counts(out, "batch_driver_parquet_outputs") == (3, 3, 0)


def test_example_scripts_run_unchanged_with_the_real_azureml_core_and_pandas_2(
    write_dag, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("PARALLELRUN_MODEL_CACHE", str(tmp_path / "model-cache"))
    python = python_with(AZUREML_ENV)
    data.digit_images(tmp_path / "digits", 12)
    digits_model = data.digit_model(tmp_path / "mnist-prs")
    iris_model, iris = data.iris(tmp_path / "iris")
    environment = f'python="{python}"'
    steps = {
        "digit_identification": {
            "inputs": f'FileDataset(path="{tmp_path / "digits"}", pattern="*.png")',
            "config": f'{environment}, models={{"mnist-prs": "{digits_model}"}}, mini_batch_size="5"',
        },
        "iris_score": {
            "inputs": f'TabularDataset(path="{tmp_path / "iris"}")',
            "arguments": repr(["--model_name", "iris"]),
            "config": f'{environment}, models={{"iris": "{iris_model}"}}, mini_batch_size="40 rows"',
        },
    }
    out = tmp_path / "out"
    dag_run = write_dag(_dag_source(f"azure_examples_azureml_{tmp_path.name}", out, steps)).test()
    assert str(dag_run.state) == "success", task_instances(dag_run)

    expected = _predicted_digits(digits_model / "digits.pkl", tmp_path / "digits")
    assert sorted(_lines(out, "digit_identification")) == [f"{n}: {d}" for n, d in expected.items()]
    assert _counts(out, "digit_identification") == (12, 12, 0)

    # iris_score sets a column from an (n, 1) array of strings: pandas 2's way, refused by pandas 3.
    with open(iris_model, "rb") as f:
        varieties = pickle.load(f).predict(iris)
    assert [line.split()[-1] for line in _lines(out, "iris_score")] == list(varieties)
    assert _counts(out, "iris_score") == (150, 150, 0)
