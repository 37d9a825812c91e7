"""Shape of MachineLearningNotebooks' parallel-run ``Code/total_income.py`` (partition per column).

As there: a one-argument ``run(mini_batch)`` although the step has ``partition_keys`` (the
context is optional), a new column on the DataFrame it was given, and that DataFrame returned.
"""


def init():
    print("Init")


def run(mini_batch):
    total_income = mini_batch["INCOME"].sum()
    print(f"total_income = {total_income}")
    mini_batch["total_income"] = total_income
    return mini_batch
