"""Shape of MachineLearningNotebooks' parallel-run ``Code/iris_score.py`` (TabularDataset).

As there: Azure's ``azureml_user`` import and ``EntryScript().logger``, ``--model_name`` read
with ``parse_known_args``, the real azureml-core's ``Model.get_model_path``, a pickled
scikit-learn model, pandas 2's ``reshape((n, 1))`` into a new column, and a DataFrame returned.
"""

import argparse
import pickle

from azureml.core.model import Model

from azureml_user.parallel_run import EntryScript


def init():
    global iris_model
    EntryScript().logger.info("init() is called.")
    parser = argparse.ArgumentParser(description="Iris model serving")
    parser.add_argument("--model_name", dest="model_name", required=True)
    args, _ = parser.parse_known_args()
    with open(Model.get_model_path(args.model_name), "rb") as model_file:
        iris_model = pickle.load(model_file)


def run(input_data):
    EntryScript().logger.info("run() is called with %d rows.", len(input_data))
    num_rows, _ = input_data.shape
    pred = iris_model.predict(input_data).reshape((num_rows, 1))
    result = input_data.drop(input_data.columns[4:], axis=1)
    result["variety"] = pred
    return result
