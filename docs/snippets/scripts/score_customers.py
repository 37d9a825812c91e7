import argparse

import joblib
import pandas as pd

FEATURES = ["age", "tenure_months", "monthly_spend", "orders_last_year", "days_since_last_order"]
FEATURES += ["support_tickets", "region"]

model = None


def init():
    global model
    parser = argparse.ArgumentParser()
    parser.add_argument("--model_path", required=True)
    args, _ = parser.parse_known_args()
    model = joblib.load(args.model_path)


def run(mini_batch):
    # A DataFrame of rows of the customers table, with its column names.
    scores = model.predict_proba(mini_batch[FEATURES])[:, 1]
    return pd.DataFrame({"customer_id": mini_batch["customer_id"], "score": scores})
