"""Choose the database of a SQL input or output once its ``conn_id`` template is rendered.

``conn_id`` may be a template (``"{{ params.conn_id }}"``), rendered by the task that reads the
database. Then ``url``, when given too, is what a run uses when ``conn_id`` renders empty: a DAG
can default to a database of its own (a SQLite file) and let a Param point a run elsewhere.
Without a template, ``SqlDataset`` and ``SqlTable`` take exactly one of the two.
"""

from __future__ import annotations

from typing import Any

from airflow_parallelrun.core.errors import ConfigError


def rendered_database(owner: str, conn_id: Any, url: Any) -> tuple[str | None, Any]:
    """Return ``(conn_id, url)`` of a run once ``conn_id`` is rendered: one of them, the other None.

    A rendered ``conn_id`` that is not empty wins; an empty one leaves ``url``.

    >>> rendered_database("SqlDataset", " warehouse ", "sqlite:////data/examples.db")
    ('warehouse', None)
    >>> rendered_database("SqlDataset", "", "sqlite:////data/examples.db")
    (None, 'sqlite:////data/examples.db')
    >>> rendered_database("SqlDataset", "", None)
    Traceback (most recent call last):
    ...
    airflow_parallelrun.core.errors.ConfigError: SqlDataset conn_id rendered empty and no url= is given ...
    """
    if conn_id is not None and not isinstance(conn_id, str):
        raise ConfigError(f"{owner} conn_id={conn_id!r} must be an Airflow Connection id, e.g. 'warehouse'")
    if conn_id is not None and conn_id.strip():
        return conn_id.strip(), None
    if url is None:
        raise ConfigError(
            f"{owner} conn_id rendered empty and no url= is given to fall back on; set the Param or value "
            "the template uses to an Airflow Connection id, or give url= as the default database"
        )
    return None, url
