"""Read one key group of a table (``partition_keys``): its pieces one at a time, keeping only its rows.

The worker holds one piece and the group's rows so far, never the whole table; the pieces come
from the partition step, which noted every piece holding a row of the group.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from airflow_parallelrun.core.inputs.byte_ranges import MAX_LISTED_LINES, TableRows
from airflow_parallelrun.core.inputs.key_groups import plain
from airflow_parallelrun.core.inputs.minibatch import MiniBatch
from airflow_parallelrun.core.inputs.reading import is_local, read_table_rows, stage_piece

if TYPE_CHECKING:
    import pandas as pd


def select_group(frame: pd.DataFrame, values: dict[str, Any]) -> pd.DataFrame:
    """Return the rows of ``frame`` whose key columns hold ``values`` (None: a missing value).

    >>> import pandas as pd
    >>> frame = pd.DataFrame({"Store": [1, 2, 1, None], "Brand": ["a", "a", "b", "a"]})
    >>> select_group(frame, {"Store": 1, "Brand": "a"}).index.tolist()
    [0]
    >>> select_group(frame, {"Store": None}).index.tolist()
    [3]
    """
    import pandas as pd

    mask = pd.Series(True, index=frame.index)
    for key, value in values.items():
        column = frame[key]
        if value is None:
            mask &= column.isna()
        elif column.dtype.kind in "iufbOSUT" or str(column.dtype) in ("string", "str"):
            mask &= column == value
        else:
            # Dates and other types: compared as the partition step wrote them down.
            mask &= column.map(plain) == value
    return frame[mask]


def read_key_group(mb: MiniBatch) -> TableRows:
    """Return the rows of a key group, read piece by piece, with the rejected rows it reports."""
    import pandas as pd

    values = mb.partition_key_value or {}
    frames, rejected, lines, messages = [], 0, [], []
    for number, piece in enumerate(mb.pieces):
        rows = read_table_rows(piece)
        frames.append(select_group(rows.frame, values))
        if number in mb.rejected_from and rows.rejected:
            rejected += rows.rejected
            lines += rows.rejected_lines
            messages.append(rows.message)
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True)
    return TableRows(frame, rejected, lines[:MAX_LISTED_LINES], "; ".join(messages))


def stage_key_group(mb: MiniBatch, scratch: str) -> MiniBatch:
    """Return ``mb`` with each remote piece of its group copied into ``scratch`` (a folder per piece)."""
    local = []
    for number, piece in enumerate(mb.pieces):
        if is_local(piece.path):
            local.append(piece)
            continue
        folder = os.path.join(scratch, f"piece-{number:06d}")
        os.makedirs(folder, exist_ok=True)
        local.append(stage_piece(piece, folder, mb.id))
    return replace(mb, pieces=tuple(local))
