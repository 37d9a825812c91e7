"""Score digit images with what the trigger form asks for: Azure's PipelineParameter, as Airflow Params.

"Trigger" in the UI opens a form built from the Params below (titles, descriptions, a drop-down of
model versions); the REST API takes the same values as the run's ``conf``. Airflow checks each value
against its Param's JSON schema before it creates the run, so a bad value is refused with a message
naming the Param, and no task starts.

What each field does:

- **Folder of the example data and models** (``data_dir``): the local examples folder, or the
  deployment's store folder (``$PARALLELRUN_EXAMPLES_STORE``, through
  ``$PARALLELRUN_EXAMPLES_CONN_ID``) when one is set, or a folder under either; on a store
  ``prepare`` uploads the images, and the models stay local.
- **Input folder** (``input_path``): the folder of PNG images scored, relative to the data folder;
  no absolute path and no "..", so it stays under it.
- **Model version** (``model_version``): the model loaded by ``scripts/digits_score_versioned.py``;
  every output row names it, and the output goes to ``<data>/out/form/<version>/<run id>/``.
- **Mini-batch size** and **Error threshold** (``mini_batch_size``, ``error_threshold``): go to
  ``ParallelRunConfig`` as templates (``"{{ params.mini_batch_size }}"``); the partition task
  renders and checks them for each run, and every task of the run uses what it rendered.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param, task
from parallelrun_examples.model_versions import MODEL_VERSIONS
from parallelrun_examples.settings import data_dir_param, examples_conn_id

from airflow_parallelrun import FileDataset, ParallelRunConfig, ParallelRunOperator

DATA = "{{ params.data_dir }}"
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
        "data_dir": data_dir_param(on_store=True),
        "input_path": Param(
            "digits/images/batch_3",
            type="string",
            title="Input folder",
            description="Folder of PNG digit images to score, relative to the data folder.",
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
    def prepare(params: dict | None = None) -> dict[str, str]:
        """Make the example digit images and both model versions, if they are not there yet."""
        from parallelrun_examples.model_versions import prepare_model_versions
        from parallelrun_examples.on_store import local_dir, prepare_examples_at

        assert params is not None, "Airflow passes the DAG's params to a task that asks for them"
        data_dir = params["data_dir"]
        return {**prepare_examples_at(data_dir), **prepare_model_versions(local_dir(data_dir))}

    score = ParallelRunOperator(
        task_id="score",
        inputs=FileDataset(
            path=f"{DATA}/{{{{ params.input_path }}}}", pattern="**/*.png", conn_id=examples_conn_id()
        ),
        output_path=f"{DATA}/out/form/{{{{ params.model_version }}}}/{{{{ run_id }}}}",
        output_conn_id=examples_conn_id(),
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
            # The models are local, also when the data is on a store: prepare says where.
            "{{ ti.xcom_pull(task_ids='prepare')[params.model_version] }}",
            "--model_version",
            "{{ params.model_version }}",
        ],
    )
    prepare() >> score
