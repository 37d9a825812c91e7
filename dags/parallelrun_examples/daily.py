"""A day's input for the nightly example: ``<base>/tabular/daily/<YYYY-MM-DD>/part-*.csv``. Plain Python.

In production an upstream export drops each day's files there; the example makes them when they are
missing, so it runs anywhere. A folder that already holds csv files is the day's delivery and is
never touched.
"""

from __future__ import annotations

import datetime
import os
import shutil
import tempfile
from pathlib import Path

from parallelrun_examples.data import make_tabular_table, train_tabular_model

DAILY_ROWS = 1500
DAILY_FILES = 2


def daily_folder(base: str | Path, day: str) -> Path:
    """Return the folder of ``day``'s input; ``day`` must be an ISO date such as ``2024-06-01``.

    >>> daily_folder("/data", "2024-06-01").as_posix()
    '/data/tabular/daily/2024-06-01'
    >>> daily_folder("/data", "../etc")
    Traceback (most recent call last):
    ...
    ValueError: day='../etc' is not a date; expected YYYY-MM-DD, e.g. '2024-06-01'
    """
    try:
        datetime.date.fromisoformat(day)
    except (TypeError, ValueError):
        raise ValueError(f"day={day!r} is not a date; expected YYYY-MM-DD, e.g. '2024-06-01'") from None
    if len(day) != 10:
        raise ValueError(f"day={day!r} is not a date; expected YYYY-MM-DD, e.g. '2024-06-01'")
    return Path(base) / "tabular" / "daily" / day


def materialise_daily_input(base: str | Path, day: str) -> Path:
    """Make ``day``'s example input unless it was delivered; return its folder.

    The files are written to a hidden folder and renamed into place, so a run that reads the day's
    folder never sees half of it.
    """
    folder = daily_folder(base, day)
    if folder.is_dir() and any(folder.glob("*.csv")):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{day}.", dir=folder.parent))
    try:
        make_tabular_table(staging, rows=DAILY_ROWS, files=DAILY_FILES, fmt="csv")
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        try:
            os.rename(staging, folder)
        except OSError:
            # Another run delivered the day first: keep theirs.
            if not any(folder.glob("*.csv")):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def ensure_tabular_model(base: str | Path) -> Path:
    """Train the tabular example model at ``<base>/tabular/model.joblib`` if it is not there; return it."""
    path = Path(base) / "tabular" / "model.joblib"
    if not path.is_file():
        train_tabular_model(path)
    return path
