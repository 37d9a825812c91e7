"""A customers table and a churn model for the SQL example (``parallelrun_sql``) and the SQL benchmark.

Plain Python, no Airflow, no network. The table is synthetic and deterministic: row ``i`` is the
same whatever the number of rows asked for (rows are drawn in blocks of ``BLOCK_ROWS``, block ``k``
from ``default_rng([seed, k])``), so a bigger table starts with a smaller one. The model is a
scikit-learn pipeline (scaled numbers, one-hot region, logistic regression) that gives each
customer the probability that they churn; ``dags/scripts/customers_score.py`` applies it.

The examples' database is SQLite, a file in the examples folder (:func:`examples_database_url`);
any SQLAlchemy URL works (an Airflow Connection's, for PostgreSQL or MySQL).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

NUMERIC = [
    "age",
    "tenure_months",
    "monthly_spend",
    "orders_last_year",
    "days_since_last_order",
    "support_tickets",
]
REGIONS = ["north", "south", "east", "west", "online"]
FEATURES = [*NUMERIC, "region"]
COLUMNS = ["customer_id", *FEATURES]
BLOCK_ROWS = 100_000
SEED = 20240612
EXAMPLE_ROWS = 10_000
TRAINING_ROWS = 20_000
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def examples_database_url(base: str | Path) -> str:
    """Return the SQLAlchemy URL of the examples' SQLite database under ``base``.

    >>> examples_database_url("/data/examples")
    'sqlite:////data/examples/examples.db'
    """
    return f"sqlite:///{Path(base) / 'examples.db'}"


def check_table_name(name: str, *, field: str = "table") -> str:
    """Return ``name`` if it is a plain SQL identifier, else raise ``ValueError`` saying what to give.

    >>> check_table_name("customer_scores")
    'customer_scores'
    >>> check_table_name("scores; DROP TABLE customers")
    Traceback (most recent call last):
    ...
    ValueError: table='scores; DROP TABLE customers' is not a table name; use letters, digits and _ ...
    """
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise ValueError(
            f"{field}={name!r} is not a table name; use letters, digits and _ (not first), "
            "at most 63 characters, e.g. 'customers'"
        )
    return name


def _block(k: int, seed: int) -> Any:
    """Return block ``k`` of the table: customers ``k * BLOCK_ROWS`` to ``(k + 1) * BLOCK_ROWS - 1``."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng([seed, k])
    n = BLOCK_ROWS
    tenure = rng.integers(0, 120, n)
    frame = pd.DataFrame(
        {
            "customer_id": np.arange(k * n, (k + 1) * n, dtype=np.int64) + 1,
            "age": rng.integers(18, 90, n),
            "tenure_months": tenure,
            "monthly_spend": np.round(rng.gamma(2.0, 30.0, n), 2),
            "orders_last_year": rng.poisson(6, n),
            "days_since_last_order": rng.integers(0, 365, n),
            "support_tickets": rng.poisson(1.2, n),
            "region": np.asarray(REGIONS)[rng.integers(0, len(REGIONS), n)],
        }
    )
    for column in ("age", "tenure_months", "orders_last_year", "days_since_last_order", "support_tickets"):
        frame[column] = frame[column].astype(np.int64)
    return frame


def customer_blocks(rows: int, *, seed: int = SEED, block_rows: int = BLOCK_ROWS) -> Iterator[Any]:
    """Yield the first ``rows`` customers as DataFrames of at most ``block_rows`` rows, ids from 1.

    Memory stays at one generated block, whatever ``rows`` is.
    """
    if rows < 0 or block_rows < 1:
        raise ValueError(f"need rows >= 0 and block_rows >= 1, got rows={rows}, block_rows={block_rows}")
    done = 0
    for k in range(-(-rows // BLOCK_ROWS)):
        block = _block(k, seed).iloc[: rows - k * BLOCK_ROWS]
        for start in range(0, len(block), block_rows):
            part = block.iloc[start : start + block_rows].reset_index(drop=True)
            done += len(part)
            yield part
    assert done == rows


def customers_frame(rows: int, *, seed: int = SEED) -> Any:
    """Return the first ``rows`` customers as one DataFrame (for small tables and tests)."""
    import pandas as pd

    blocks = list(customer_blocks(rows, seed=seed))
    return pd.concat(blocks, ignore_index=True) if blocks else _block(0, seed).iloc[:0]


def churn_labels(frame: Any, *, seed: int = SEED) -> Any:
    """Return a synthetic churn label (0/1) per customer: tickets and idle days raise it, tenure lowers it."""
    import numpy as np

    rng = np.random.default_rng([seed, 999_999])
    logit = (
        0.6 * frame["support_tickets"]
        + 0.008 * frame["days_since_last_order"]
        - 0.03 * frame["tenure_months"]
        - 0.08 * frame["orders_last_year"]
        + 0.4 * (frame["region"] == "online")
        - 0.5
    )
    return (logit + rng.logistic(size=len(frame)) > 0).astype(np.int64).to_numpy()


def train_customers_model(model_path: str | Path, *, rows: int = TRAINING_ROWS) -> Path:
    """Train the churn model on ``rows`` customers drawn with another seed; save it with joblib."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    training = customers_frame(rows, seed=SEED + 1)
    model = Pipeline(
        [
            (
                "features",
                ColumnTransformer(
                    [
                        ("numbers", StandardScaler(), NUMERIC),
                        ("region", OneHotEncoder(categories=[REGIONS]), ["region"]),
                    ]
                ),
            ),
            ("classifier", LogisticRegression(max_iter=1000)),
        ]
    ).fit(training[FEATURES], churn_labels(training))
    # Imported here: this module is read when the SQL example's DAG file is parsed.
    from parallelrun_examples.data import save_model

    return save_model(model, Path(model_path))


def ensure_customers_model(base: str | Path) -> Path:
    """Train the churn model at ``<base>/customers/model.joblib`` if it is not there; return its path."""
    path = Path(base) / "customers" / "model.joblib"
    if not path.is_file():
        train_customers_model(path)
    return path


def customers_table(name: str, metadata: Any) -> Any:
    """Return the SQLAlchemy ``Table`` of the customers: ``customer_id`` is the primary key."""
    from sqlalchemy import BigInteger, Column, Float, Integer, String, Table

    integers = [Column(c, Integer, nullable=False) for c in NUMERIC if c != "monthly_spend"]
    return Table(
        check_table_name(name),
        metadata,
        Column("customer_id", BigInteger, primary_key=True, autoincrement=False),
        *integers,
        Column("monthly_spend", Float, nullable=False),
        Column("region", String(16), nullable=False),
    )


def ensure_customers_table(url: Any, table: str = "customers", *, rows: int = EXAMPLE_ROWS) -> int:
    """Create ``table`` with ``rows`` customers at ``url`` unless it exists; return its row count.

    A table that exists is the customers' data and is never touched (a user's changes stay). A new
    one is created and filled in one transaction: on PostgreSQL and SQLite, whose DDL is
    transactional, another task sees the whole table or none of it.
    """
    from sqlalchemy import MetaData, create_engine, func, inspect, select

    check_table_name(table)
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            metadata = MetaData()
            target = customers_table(table, metadata)
            if not inspect(conn).has_table(table):
                metadata.create_all(conn, checkfirst=True)
                for block in customer_blocks(rows, block_rows=5_000):
                    conn.execute(target.insert(), block.to_dict("records"))
            return int(conn.execute(select(func.count()).select_from(target)).scalar_one())
    finally:
        engine.dispose()
