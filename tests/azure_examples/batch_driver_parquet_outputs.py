"""Shape of azureml-examples' batch endpoint ``deploy-models/custom-outputs-parquet/code/batch_driver.py``.

As there: ``AZUREML_BI_OUTPUT_PATH`` is where the script writes one parquet file per input csv,
the pickled model is found with ``glob(f"{AZUREML_MODEL_DIR}/*/*.pkl")``, and ``run()`` returns
the mini-batch itself (one element per file done). The original's model is a scikit-learn
pipeline too, so the original runs unchanged here.
"""

import glob
import os
import pickle
from pathlib import Path
from typing import List

import pandas as pd


def init():
    global model, output_path
    output_path = os.environ["AZUREML_BI_OUTPUT_PATH"]
    model_file = glob.glob(f"{os.environ['AZUREML_MODEL_DIR']}/*/*.pkl")[-1]
    with open(model_file, "rb") as file:
        model = pickle.load(file)


def run(mini_batch: List[str]):
    for file_path in mini_batch:
        data = pd.read_csv(file_path)
        data["prediction"] = model.predict(data)
        data.to_parquet(os.path.join(output_path, Path(file_path).stem + ".parquet"))
    return mini_batch
