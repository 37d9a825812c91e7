"""Connect to a database through SQLAlchemy, and say what went wrong without showing a password.

A database is named by a SQLAlchemy URL. The URL, which may hold a password, lives only in the
memory of the process that uses it: what is written to the run's storage, a log or an error
message is its :func:`safe_url` or the Airflow Connection id it came from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_parallelrun.core.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Engine


def parse_url(url: str | URL, *, named: str = "url") -> URL:
    """Return ``url`` as a SQLAlchemy URL, or raise ``ConfigError`` naming it (password hidden).

    >>> parse_url("postgresql+psycopg://scorer:s3cret@db:5432/test").render_as_string()
    'postgresql+psycopg://scorer:***@db:5432/test'
    >>> parse_url("not a url")
    Traceback (most recent call last):
    ...
    airflow_parallelrun.core.errors.ConfigError: url='not a url' is not a SQLAlchemy URL; ...
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url)
    except ArgumentError:
        shown = url if isinstance(url, str) and "@" not in url else "<hidden>"
        raise ConfigError(
            f"{named}={shown!r} is not a SQLAlchemy URL; give one such as "
            "'postgresql+psycopg://user@host/db', 'mysql+pymysql://user@host/db' or 'sqlite:////path/to.db', "
            "or use conn_id= with an Airflow Connection"
        ) from None


def safe_url(url: str | URL) -> str:
    """Return ``url`` with its password replaced by ``***``, fit for logs, reports and errors.

    >>> safe_url("mysql+pymysql://root:pw@127.0.0.1:3306/test")
    'mysql+pymysql://root:***@127.0.0.1:3306/test'
    """
    return parse_url(url).render_as_string(hide_password=True)


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    """Return an engine for ``url``; connections are checked before use (``pool_pre_ping``).

    SQLite waits up to 60 s for a lock instead of failing at once, since several run tasks may
    write the same file.
    """
    from sqlalchemy import create_engine

    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        kwargs.setdefault("connect_args", {}).setdefault("timeout", 60)
    return create_engine(parsed, pool_pre_ping=True, **kwargs)


def database_message(exc: BaseException) -> str:
    """Return the database's own message for ``exc`` (the driver's error), on one line, without SQL.

    SQLAlchemy's text appends the statement and its parameters, which may hold data; only the
    driver's message is kept.

    >>> from sqlalchemy.exc import OperationalError
    >>> database_message(OperationalError("SELECT 1", {}, Exception('relation "x" does not exist\\nLINE 1')))
    'relation "x" does not exist LINE 1'
    """
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc)
    return " ".join(text.split())
