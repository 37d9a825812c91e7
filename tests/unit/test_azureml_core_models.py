"""The real ``azureml.core.Model.get_model_path`` finds the run's models, in an environment of its own.

azureml-core (from the package index) is installed into a test environment
(``tests/python_envs.py``), never into the project's: the run's workers run in that interpreter
through ``ParallelRunConfig(python=...)``, warm, and an Azure-shaped entry script asks for its
models by name, by name and version, and through ``AZUREML_MODEL_DIR``, exactly as on Azure.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_parallelrun.core import steps
from airflow_parallelrun.core.config import ParallelRunConfig
from airflow_parallelrun.core.inputs.datasets import FileDataset
from airflow_parallelrun.core.models.staging import MODEL_CACHE_ENV
from airflow_parallelrun.core.spec import RunSpec
from tests.python_envs import AZUREML_ENV, python_with
from tests.unit.test_pool import pool_dir  # noqa: F401 (fixture: the warm pool dies with the test)

pytestmark = pytest.mark.slow

AZUREML_CORE = AZUREML_ENV[0]

SCRIPT = """
import os
import sys

from azureml.core import Model
from azureml_user.parallel_run import EntryScript


def init():
    global found
    mnist = Model.get_model_path("mnist-prs")  # a folder model, as in Azure's MNIST sample
    latest = Model.get_model_path("scaler")  # no version: the latest
    first = Model.get_model_path("scaler", version=1)
    with open(os.path.join(mnist, "mnist-tf.model")) as f, open(latest) as g, open(first) as h:
        found = [f.read(), g.read(), h.read(), mnist, latest]
    EntryScript().logger.info("models at %s", found[3:])


def run(mini_batch):
    import azureml.core

    model_dir = os.environ["AZUREML_MODEL_DIR"]
    return [
        "|".join([os.path.basename(p), *found, model_dir, sys.prefix, azureml.core.VERSION])
        for p in mini_batch
    ]
"""


@pytest.fixture(scope="module")
def azureml_python() -> Path:
    return Path(python_with(AZUREML_ENV))


def test_model_get_model_path_of_the_real_azureml_core_finds_the_staged_models(
    tmp_path: Path,
    azureml_python: Path,
    monkeypatch: pytest.MonkeyPatch,
    pool_dir: Path,  # noqa: F811 (the fixture imported above)
) -> None:
    monkeypatch.setenv(MODEL_CACHE_ENV, str(tmp_path / "cache"))
    mnist = tmp_path / "registered" / "models"
    mnist.mkdir(parents=True)
    (mnist / "mnist-tf.model").write_text("tf-weights")
    (mnist / "mnist-tf.model.meta").write_text("meta")
    for version in (1, 2):
        (tmp_path / "registered" / f"scaler-v{version}.pkl").write_text(f"scaler {version}")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_text("x")
    script = tmp_path / "digit_identification.py"
    script.write_text(SCRIPT)
    spec = RunSpec(
        output_path=str(tmp_path / "out"),
        config=ParallelRunConfig(
            entry_script="x.py",
            python=str(azureml_python),
            models={
                "mnist-prs": str(mnist),
                "scaler:1": str(tmp_path / "registered" / "scaler-v1.pkl"),
                "scaler:2": str(tmp_path / "registered" / "scaler-v2.pkl"),
            },
        ),
        entry_script=str(script),
    )
    steps.partition(FileDataset(path=str(tmp_path / "in")), spec)
    status = steps.run_mini_batch(0, spec)
    assert status.succeeded, (status.error_message, status.error_traceback)
    (part,) = (tmp_path / "out" / "_parallelrun" / "parts").glob("mb-000000.*")
    fields = part.read_text().strip().split("|")
    name, weights, latest, first, mnist_path, latest_path, model_dir, prefix, version = fields
    assert (name, weights, latest, first) == ("a.png", "tf-weights", "scaler 2", "scaler 1")
    # Azure's offline layout, relative to the worker's working directory, as azureml-core returns it.
    assert mnist_path == "azureml-models/mnist-prs/1/models"
    assert latest_path == "azureml-models/scaler/2/scaler-v2.pkl"
    # Several models: AZUREML_MODEL_DIR is the folder holding <name>/<version> of each.
    assert sorted(p.name for p in Path(model_dir).iterdir()) == ["mnist-prs", "scaler"]
    assert Path(prefix) == azureml_python.parent.parent
    assert AZUREML_CORE.split("==")[1].startswith(version)
