"""The SQL example's data (dags/parallelrun_examples/customers.py) and its entry script, on SQLite."""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import sys
import types
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture(scope="module")
def customers() -> types.ModuleType:
    """Import parallelrun_examples.customers the way Airflow does: with the dags folder on sys.path."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(DAGS))
        return importlib.import_module("parallelrun_examples.customers")


@pytest.fixture(scope="module")
def model_path(customers, tmp_path_factory) -> Path:
    return customers.train_customers_model(tmp_path_factory.mktemp("customers") / "model.joblib")


def test_the_module_doctests_pass(customers) -> None:
    result = doctest.testmod(customers, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 3 and result.failed == 0


def test_a_bigger_table_starts_with_a_smaller_one_whatever_the_blocks(customers) -> None:
    small = customers.customers_frame(1_000)
    big = pd.concat(list(customers.customer_blocks(150_000, block_rows=7_000)), ignore_index=True)
    assert list(big.columns) == customers.COLUMNS
    assert big["customer_id"].tolist() == list(range(1, 150_001))
    pd.testing.assert_frame_equal(big.iloc[:1_000], small)
    assert set(big["region"]) == set(customers.REGIONS)
    assert customers.customers_frame(0).empty


def test_a_negative_row_count_is_refused(customers) -> None:
    with pytest.raises(ValueError, match="rows >= 0"):
        list(customers.customer_blocks(-1))


def test_the_table_is_made_once_and_then_left_as_the_user_changed_it(customers, tmp_path) -> None:
    from sqlalchemy import create_engine, text

    url = customers.examples_database_url(tmp_path)
    assert customers.ensure_customers_table(url, "customers", rows=1_200) == 1_200
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE customers SET support_tickets = 99 WHERE customer_id = 5"))
        conn.execute(text("DELETE FROM customers WHERE customer_id > 1000"))
    assert customers.ensure_customers_table(url, "customers", rows=1_200) == 1_000
    stored = pd.read_sql(text("SELECT * FROM customers ORDER BY customer_id"), engine)
    engine.dispose()
    expected = customers.customers_frame(1_000)
    expected.loc[4, "support_tickets"] = 99
    pd.testing.assert_frame_equal(stored[customers.COLUMNS], expected, check_dtype=False)


def test_a_table_name_that_is_not_an_identifier_is_refused_before_any_sql(customers, tmp_path) -> None:
    with pytest.raises(ValueError, match=r"table='x; DROP TABLE customers' is not a table name"):
        customers.ensure_customers_table(customers.examples_database_url(tmp_path), "x; DROP TABLE customers")
    assert not (tmp_path / "examples.db").exists()


def test_the_entry_script_returns_each_customer_s_churn_probability_in_order(
    customers, model_path, monkeypatch
) -> None:
    spec = importlib.util.spec_from_file_location("customers_score", DAGS / "scripts" / "customers_score.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(sys, "argv", ["customers_score.py", "--model_path", str(model_path)])
    script.init()

    batch = customers.customers_frame(3_000).sample(frac=1.0, random_state=3).reset_index(drop=True)
    got = script.run(batch)
    assert list(got.columns) == ["customer_id", "score"]
    assert got["customer_id"].tolist() == batch["customer_id"].tolist()
    expected = joblib.load(model_path).predict_proba(batch[customers.FEATURES])[:, 1]
    np.testing.assert_array_equal(got["score"].to_numpy(), expected)
    assert 0.05 < got["score"].mean() < 0.95 and got["score"].between(0, 1).all()
    assert script.run(batch.iloc[:0]).empty
