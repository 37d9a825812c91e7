"""Read a SQL input once into a parquet snapshot under the run's state, and reuse it when it must.

The partition step streams the table or query in chunks (a server-side cursor) from one
read-only, consistent-snapshot transaction into one parquet file, row group by row group, so
the process holds one chunk at a time whatever the table's size. A marker written after the
file names the source it was read from (the database's safe URL, the table or query, the
columns, the key) and its row count: a cleared partition of the same DAG run, or a resumed
run, finds it and splits the same rows again instead of querying the database.
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow_parallelrun.core.errors import SqlSourceError
from airflow_parallelrun.core.sql.arrow_types import chunk_table, settle_schema
from airflow_parallelrun.core.sql.engine import database_message, make_engine
from airflow_parallelrun.core.sql.select import statement
from airflow_parallelrun.core.sql.transaction import read_only_snapshot

if TYPE_CHECKING:
    import pyarrow as pa

    from airflow_parallelrun.core.sizes import MiniBatchSize
    from airflow_parallelrun.core.sql.source import SqlDataset
    from airflow_parallelrun.core.storage.manifest import RunLayout

log = logging.getLogger(__name__)

#: Rows per chunk (and parquet row group) at most; a chunk of rows is a multiple of the mini-batch's.
CHUNK_ROWS = 50_000
#: Rows per chunk when mini-batches are sized in bytes: row groups small enough to pack finely.
BYTES_CHUNK_ROWS = 10_000


def chunk_rows(size: MiniBatchSize) -> int:
    """Return how many rows to fetch per chunk (one row group each) for mini-batches of ``size``.

    >>> from airflow_parallelrun.core.sizes import MiniBatchSize
    >>> [chunk_rows(MiniBatchSize("rows", n)) for n in (7, 50_000, 80_000)]
    [49994, 50000, 50000]
    """
    if size.unit != "rows":
        return BYTES_CHUNK_ROWS
    return size.value * (CHUNK_ROWS // size.value) if size.value <= CHUNK_ROWS else CHUNK_ROWS


def take_snapshot(dataset: SqlDataset, layout: RunLayout, path: str, rows_per_chunk: int) -> int:
    """Stream the input into the parquet file ``path`` of the run's storage; return its row count.

    Raise ``SqlSourceError`` naming the source and the database's message when the database
    refuses (no connection, no such table, a bad or writing query).
    """
    from sqlalchemy.exc import NoSuchTableError, SQLAlchemyError
    from sqlalchemy.pool import NullPool

    url = dataset.engine_url()
    engine = make_engine(url, poolclass=NullPool)
    try:
        with read_only_snapshot(engine) as conn:
            select, types = statement(conn, dataset)
            result = conn.execution_options(stream_results=True, yield_per=rows_per_chunk).execute(select)
            return _write_parquet(result, types, layout, path)
    except NoSuchTableError as exc:
        raise SqlSourceError(
            f"{dataset.describe()}: the database has no table {str(exc)!r} (or this user cannot see it); "
            "check the table's name and schema ('schema.name') and the Connection's database"
        ) from None
    except SQLAlchemyError as exc:
        message = _without(database_message(exc), getattr(_url(url), "password", None))
        raise SqlSourceError(
            f"{dataset.describe()}: the database refused the read: {message}; check the query or table, "
            "and that the Connection reaches the database"
        ) from None
    finally:
        engine.dispose()


def _url(url: Any) -> Any:
    from sqlalchemy.engine import make_url

    return make_url(url)


def _without(message: str, secret: str | None) -> str:
    return message.replace(secret, "***") if secret else message


def _write_parquet(result: Any, types: list[Any], layout: RunLayout, path: str) -> int:
    """Write the result's chunks as row groups of one parquet file; return the rows written."""
    import pyarrow.parquet as pq

    names = list(result.keys())
    types = types or [None] * len(names)
    scales = [_scale(d) for d in (result.cursor.description or [])] if result.cursor is not None else []
    pending: list[pa.Table] = []
    schema: pa.Schema | None = None
    rows = 0
    with layout.output.writer(path) as f:
        writer = None
        try:
            for chunk in result.partitions():
                table = _arrow_chunk(names, chunk, types)
                rows += table.num_rows
                if schema is None:
                    pending.append(table)
                    schema = settle_schema(pending, types, scales, final=False)
                    if schema is None:
                        continue
                    writer = pq.ParquetWriter(f, schema)
                    _write_all(writer, pending, schema)
                    pending = []
                else:
                    _write_all(writer, [table], schema)
            if writer is None:
                empty = pending or [_arrow_chunk(names, [], types)]
                schema = settle_schema(empty, types, scales, final=True)
                writer = pq.ParquetWriter(f, schema)
                _write_all(writer, empty, schema)
        finally:
            if writer is not None:
                writer.close()
    return rows


def _write_all(writer: Any, tables: list[pa.Table], schema: pa.Schema) -> None:
    import pyarrow as pa

    for table in tables:
        try:
            writer.write_table(table.cast(schema))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise SqlSourceError(
                f"a column's values do not fit the type of its first rows ({schema}): {exc}; cast the "
                "column to one type in a query (e.g. CAST(x AS TEXT))"
            ) from None


def _arrow_chunk(names: list[str], rows: Any, types: list[Any]) -> pa.Table:
    import pyarrow as pa

    try:
        return chunk_table(names, rows, types)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise SqlSourceError(
            f"the rows read cannot be stored as a table ({type(exc).__name__}: {exc}); cast the column "
            "to a plain type in a query (e.g. CAST(x AS TEXT))"
        ) from None


def _scale(description: Any) -> int | None:
    try:
        scale = description[5]
    except (IndexError, TypeError):
        return None
    return int(scale) if isinstance(scale, int) and scale >= 0 else None


def source_fingerprint(dataset: SqlDataset) -> str:
    """Return a hash of what identifies the input's rows (see ``SqlDataset.fingerprint``)."""
    return hashlib.sha256(json.dumps(dataset.fingerprint(), sort_keys=True).encode()).hexdigest()


def reusable_snapshot(
    layout: RunLayout, source: str, owner: dict[str, Any] | None, resume: bool
) -> dict[str, Any] | None:
    """Return the marker of a complete snapshot of ``source`` this run must reuse, or None.

    It must: when this partition runs again for the same owner (its task cleared), or resumes.
    """
    marker_path = layout.state("input", "snapshot.json")
    if not layout.output.exists(marker_path):
        return None
    marker = dict(layout.output.read_json(marker_path))
    same_owner = owner is not None and marker.get("owner") == owner
    if marker.get("source") != source or not (resume or same_owner):
        return None
    path = layout.state("input", str(marker.get("file")))
    if not layout.output.exists(path) or _parquet_rows(layout, path) != marker.get("rows"):
        log.warning("the snapshot at %s is incomplete; reading the input again", layout.output.url_of(path))
        return None
    return marker


def _parquet_rows(layout: RunLayout, path: str) -> int | None:
    import pyarrow.parquet as pq

    try:
        with layout.output.fs.open(path, "rb") as f:
            return int(pq.ParquetFile(f).metadata.num_rows)
    except Exception:
        return None


def fresh_snapshot(
    dataset: SqlDataset, layout: RunLayout, size: MiniBatchSize, run_key: str, owner: dict[str, Any] | None
) -> dict[str, Any]:
    """Read the input into a new snapshot file, then mark it complete and drop older snapshots."""
    name = f"snapshot-{run_key[:12]}.parquet"
    rows = take_snapshot(dataset, layout, layout.state("input", name), chunk_rows(size))
    marker = {
        "source": source_fingerprint(dataset),
        "describes": dataset.describe(),
        "file": name,
        "rows": rows,
        "owner": owner,
        "run_key": run_key,
        "taken_at": datetime.now(UTC).isoformat(),
    }
    layout.output.write_json(layout.state("input", "snapshot.json"), marker)
    for old in layout.output.listdir(layout.state("input")):
        base = posixpath.basename(old)
        if base.startswith("snapshot-") and base != name:
            layout.output.remove(layout.state("input", base))
    return marker
