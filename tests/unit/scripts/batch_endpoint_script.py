"""An entry script shaped like Azure ML's batch-endpoint and ParallelRunStep examples, unedited.

It imports EntryScript from Azure's own module path, loads its model from AZUREML_MODEL_DIR in
init(), writes one output file per mini-batch into AZUREML_BI_OUTPUT_PATH (summary_only style)
and returns one line per input file.
"""

import argparse
import glob
import os

from azureml_user.parallel_run import EntryScript


def init():
    global model, output_path, logger, args
    parser = argparse.ArgumentParser()
    parser.add_argument("--prefix", default="scored")
    args, _ = parser.parse_known_args()
    logger = EntryScript().logger
    output_path = os.environ["AZUREML_BI_OUTPUT_PATH"]
    model_dir = os.environ["AZUREML_MODEL_DIR"]
    (model_file,) = glob.glob(os.path.join(model_dir, "*", "*.txt"))
    with open(model_file) as f:
        model = f.read().strip()
    logger.info("model %s loaded from %s", model, model_file)


def run(mini_batch):
    logger.info("scoring %d files", len(mini_batch))
    results = []
    for path in mini_batch:
        with open(path) as f:
            results.append(f"{args.prefix} {os.path.basename(path)} {f.read().strip()} with {model}")
    name = f"{EntryScript().mini_batch_id}.txt"
    with open(os.path.join(output_path, name), "w") as f:
        f.write("\n".join(results) + "\n")
    return results
