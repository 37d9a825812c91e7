"""Azure's import path and environment: ``azureml_user.parallel_run``, ``AZUREML_BI_OUTPUT_PATH``.

An entry script shaped like Azure's batch-endpoint examples (``scripts/batch_endpoint_script.py``)
runs unedited through real worker processes, warm and not.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from airflow_parallelrun.core import steps
from airflow_parallelrun.core.config import ParallelRunConfig
from airflow_parallelrun.core.inputs.datasets import FileDataset
from airflow_parallelrun.core.models.staging import MODEL_CACHE_ENV
from airflow_parallelrun.core.spec import RunSpec

SCRIPTS = Path(__file__).resolve().parent / "scripts"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def model_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(MODEL_CACHE_ENV, str(tmp_path / "model-cache"))
    return tmp_path / "model-cache"


def test_the_import_azure_documents_gives_the_engines_entry_script_without_airflow() -> None:
    code = (
        "import sys\n"
        "from azureml_user.parallel_run import EntryScript\n"
        "from airflow_parallelrun import EntryScript as ours\n"
        "assert EntryScript is ours, (EntryScript, ours)\n"
        "print(EntryScript().logger.name)\n"
        "sys.exit(1 if any(m == 'airflow' or m.startswith('airflow.') for m in sys.modules) else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "parallelrun.entry_script"


def _run(tmp_path: Path, *, warm: bool, env: dict[str, str] | None = None) -> RunSpec:
    (tmp_path / "in").mkdir()
    for i in range(4):
        (tmp_path / "in" / f"f{i}.txt").write_text(f"v{i}")
    model = tmp_path / "models" / "heart-classifier"
    model.mkdir(parents=True)
    (model / "weights.txt").write_text("w-42")
    spec = RunSpec(
        output_path=str(tmp_path / "out"),
        config=ParallelRunConfig(
            entry_script="x.py",
            mini_batch_size="2",
            output_action="summary_only",
            warm_workers=warm,
            process_count_per_node=1,
            models={"heart-classifier": str(model)},
            environment_variables=env or {},
        ),
        entry_script=str(SCRIPTS / "batch_endpoint_script.py"),
        arguments=("--prefix", "p"),
    )
    steps.partition(FileDataset(path=str(tmp_path / "in")), spec)
    return spec


@pytest.mark.parametrize("warm", [True, False], ids=["warm", "own-worker"])
def test_a_batch_endpoint_script_finds_its_model_and_output_folder_as_on_azure(
    tmp_path: Path, warm: bool, capfd: pytest.CaptureFixture[str]
) -> None:
    spec = _run(tmp_path, warm=warm)
    statuses = steps.run_mini_batches([0, 1], spec)
    assert [s.status for s in statuses] == ["succeeded", "succeeded"], statuses
    # AZUREML_BI_OUTPUT_PATH is EntryScript().output_dir: what the script wrote there is under output_path.
    out = tmp_path / "out"
    assert (out / "mb-000000.txt").read_text().splitlines() == [
        "p f0.txt v0 with w-42",
        "p f1.txt v1 with w-42",
    ]
    assert (out / "mb-000001.txt").read_text().splitlines()[-1] == "p f3.txt v3 with w-42"
    logged = capfd.readouterr().err
    assert "entry_script: model w-42 loaded from " in logged
    assert "entry_script: scoring 2 files" in logged


def test_a_run_that_sets_azureml_bi_output_path_itself_keeps_its_value(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    spec = _run(tmp_path, warm=False, env={"AZUREML_BI_OUTPUT_PATH": str(elsewhere)})
    assert steps.run_mini_batch(0, spec).succeeded
    assert (elsewhere / "mb-000000.txt").exists()
    assert not (tmp_path / "out" / "mb-000000.txt").exists()
