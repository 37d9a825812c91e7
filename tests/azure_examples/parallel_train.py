"""Shape of azureml-examples' ``cli/jobs/parallel/1a_oj_sales_prediction/.../parallel_train.py``.

As there: many models, one per ``partition_keys`` group of a table: options read in ``init()``
with ``parse_known_args``, ``run(input_data, mini_batch_context)`` training a scikit-learn
``GradientBoostingRegressor`` on lag features, pickling it under ``--model_folder/<key values>``,
and returning a one-row DataFrame of the keys and the error. The original also imports
``mltable`` (unused by its code), which is not installed here; this one does not.
"""

import argparse
import os
import pickle

import numpy as np
import pandas as pd
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.model_selection import train_test_split


def init():
    global target_col, date_col, lagging_orders, model_folder, drop_cols
    parser = argparse.ArgumentParser()
    for name in ("--drop_cols", "--target_col", "--date_col", "--lagging_orders", "--model_folder"):
        parser.add_argument(name, type=str)
    args, _ = parser.parse_known_args()
    target_col, date_col, model_folder = args.target_col, args.date_col, args.model_folder
    lagging_orders = [int(i) for i in args.lagging_orders.split(",")]
    drop_cols = args.drop_cols.split(",")


def run(input_data, mini_batch_context):
    if not isinstance(input_data, pd.DataFrame) or target_col not in input_data.columns:
        raise Exception("Not a valid DataFrame input with the target column.")
    keys = mini_batch_context.partition_key_value
    data = input_data.assign(**{date_col: pd.to_datetime(input_data[date_col])})
    data = data.set_index(date_col).sort_index().drop(columns=drop_cols, errors="ignore")
    for order in lagging_orders:
        data["lag_" + str(order)] = data[target_col].shift(order)
    data = data.dropna()
    x, y = data[data.columns.drop(target_col)].values, data[target_col].values
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=12, shuffle=False)
    model = GradientBoostingRegressor(random_state=12).fit(x_train, y_train)
    error = round(float(np.mean(np.abs((y_test - model.predict(x_test)) / y_test)) * 100), 2)
    folder = os.path.join(model_folder, *[str(v) for v in keys.values()])
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "my_model.pkl"), "wb") as f:
        pickle.dump(model, f)
    result = pd.DataFrame({key: [value] for key, value in keys.items()})
    result["MAPE"] = error
    return result
