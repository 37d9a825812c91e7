"""Score digit images with what the trigger form asks for: Azure's PipelineParameter, as Airflow Params.

"Trigger" in the UI opens a form built from the Params below (titles, descriptions, a drop-down of
model versions); the REST API takes the same values as the run's ``conf``. Airflow checks each value
against its Param's JSON schema before it creates the run, so a bad value is refused with a message
naming the Param, and no task starts.

What each field does:

- **Input folder** (``input_path``): the folder of PNG images scored, under the examples' data
  folder; the operator refuses a rendered path outside it.
- **Model version** (``model_version``): the model loaded by ``scripts/digits_score_versioned.py``;
  every output row names it, and the output goes to ``<data>/out/form/<version>/<run id>/``.
- **Mini-batch size** and **Error threshold** (``mini_batch_size``, ``error_threshold``): go to
  ``ParallelRunConfig`` as templates (``"{{ params.mini_batch_size }}"``); the partition task
  renders and checks them for each run, and every task of the run uses what it rendered.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param, task
from parallelrun_examples.model_versions import MODEL_VERSIONS
from parallelrun_examples.settings import examples_dir

from airflow_parallelrun import FileDataset, ParallelRunConfig, ParallelRunOperator

DATA = examples_dir()
MINI_BATCH_SIZE = "50"
ERROR_THRESHOLD = 0
# Folder names of letters, digits, "_", "." and "-", separated by "/": no absolute path, no "..".
RELATIVE_FOLDER = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$"

with DAG(
    dag_id="parallelrun_form",
    schedule=None,
    catchup=False,
    tags=["parallelrun", "example"],
    doc_md=__doc__,
    params={
        "input_path": Param(
            "digits/images/batch_3",
            type="string",
            title="Input folder",
            description=f"Folder of PNG digit images to score, relative to {DATA}.",
            minLength=1,
            maxLength=200,
            pattern=RELATIVE_FOLDER,
        ),
        "model_version": Param(
            "v1",
            type="string",
            title="Model version",
            description="Which digits model scores the images; each output row names it.",
            enum=list(MODEL_VERSIONS),
            values_display=MODEL_VERSIONS,
        ),
        "mini_batch_size": Param(
            MINI_BATCH_SIZE,
            type="string",
            title="Mini-batch size",
            description=("Number of image files per mini-batch (Azure's mini_batch_size for a FileDataset)."),
            pattern=r"^[1-9][0-9]{0,5}$",
            examples=["10", "50", "100"],
        ),
        "error_threshold": Param(
            ERROR_THRESHOLD,
            type="integer",
            title="Error threshold",
            description=("Failed images tolerated over the run before it fails; -1 ignores failures."),
            minimum=-1,
        ),
    },
) as dag:

    @task
    def prepare() -> dict[str, str]:
        """Make the example digit images and both model versions, if they are not there yet."""
        from parallelrun_examples.data import prepare_examples
        from parallelrun_examples.model_versions import prepare_model_versions

        return {**prepare_examples(DATA), **prepare_model_versions(DATA)}

    score = ParallelRunOperator(
        task_id="score",
        inputs=FileDataset(path=f"{DATA}/{{{{ params.input_path }}}}", pattern="**/*.png"),
        output_path=f"{DATA}/out/form/{{{{ params.model_version }}}}/{{{{ run_id }}}}",
        config=ParallelRunConfig(
            entry_script="scripts/digits_score_versioned.py",
            mini_batch_size="{{ params.mini_batch_size }}",
            error_threshold="{{ params.error_threshold }}",
            append_row_format="csv",
            run_invocation_timeout=60,
            process_count_per_node=2,
        ),
        arguments=[
            "--model_path",
            f"{DATA}/digits/models/{{{{ params.model_version }}}}.joblib",
            "--model_version",
            "{{ params.model_version }}",
        ],
    )
    prepare() >> score
