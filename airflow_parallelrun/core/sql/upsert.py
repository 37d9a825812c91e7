"""The statement that moves staged rows into the target: a plain insert, or each dialect's upsert.

PostgreSQL and SQLite: ``INSERT ... SELECT ... ON CONFLICT (key) DO UPDATE``; MySQL and MariaDB:
``INSERT ... SELECT ... ON DUPLICATE KEY UPDATE``. Built with SQLAlchemy Core, so identifiers are
quoted by the dialect and no value is pasted into SQL text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_parallelrun.core.errors import SqlOutputError

if TYPE_CHECKING:
    from sqlalchemy import Table


def insert_from(
    target: Table, source: Any, columns: Sequence[str], *, dialect: str, key: Sequence[str] = ()
) -> Any:
    """Return ``INSERT INTO target (columns) <source>``, an upsert on ``key`` when given.

    ``source`` is a SELECT of ``columns``, in that order. Without ``key``, a plain insert.
    """
    if not key:
        return target.insert().from_select(list(columns), source)
    updates = [c for c in columns if c not in key]
    if dialect in ("postgresql", "sqlite"):
        return _on_conflict(target, source, columns, key, updates, dialect)
    if dialect in ("mysql", "mariadb"):
        from sqlalchemy.dialects.mysql import insert

        stmt = insert(target).from_select(list(columns), source)
        # Every column a key column: a duplicate changes nothing, but must not fail.
        values = {c: stmt.inserted[c] for c in updates or key[:1]}
        return stmt.on_duplicate_key_update(values)
    raise SqlOutputError(
        f"upsert is not supported on the {dialect} dialect; use PostgreSQL, MySQL/MariaDB or SQLite, or "
        "if_exists='append' or 'replace'"
    )


def _on_conflict(
    target: Table, source: Any, columns: Sequence[str], key: Sequence[str], updates: list[str], dialect: str
) -> Any:
    from sqlalchemy.dialects import postgresql, sqlite

    insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(target).from_select(list(columns), source)
    if not updates:
        return stmt.on_conflict_do_nothing(index_elements=list(key))
    return stmt.on_conflict_do_update(index_elements=list(key), set_={c: stmt.excluded[c] for c in updates})


__all__ = ["insert_from"]
