from airflow.sdk import DAG

from airflow_parallelrun import FileDataset, ParallelRunConfig, ParallelRunOperator

with DAG("score_images", schedule=None) as dag:
    score = ParallelRunOperator(
        task_id="score",
        inputs=FileDataset(path="/data/images", pattern="**/*.png"),
        output_path="/data/out/{{ run_id }}",  # templated; a local path or any fsspec URL
        config=ParallelRunConfig(
            entry_script="scripts/score.py",  # relative to the DAG file's folder, or absolute
            mini_batch_size="10",  # files per mini-batch
            error_threshold=10,  # failed items tolerated over the run; -1 ignores them
            run_invocation_timeout=60,  # seconds per run() call
            run_max_try=3,  # tries per mini-batch, in all
            node_count=1,
            process_count_per_node=2,  # at most 2 run() calls per node; default: the node's CPU count
        ),
        arguments=["--model_path", "/data/model.joblib"],  # templated; the script reads sys.argv
    )
