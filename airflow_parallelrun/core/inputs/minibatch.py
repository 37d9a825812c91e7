"""One mini-batch: the unit of work handed to ``run()``, retried and counted on its own."""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

# Airflow stores a mapped task instance's name in a column of 250 characters.
LABEL_LIMIT = 250


def mini_batch_id(index: int) -> str:
    """Return the id of the mini-batch at ``index``: fixed-width, safe in any path or URL.

    >>> mini_batch_id(7)
    'mb-000007'
    """
    return f"mb-{index:06d}"


@dataclass(frozen=True)
class TabularPiece:
    """A contiguous part of one table file.

    ``unit`` says how ``start`` and ``end`` count: ``bytes`` (a range of a text file; a line
    belongs to the range its first byte falls in, the header line to none), ``row_groups`` or
    ``rows`` (of a parquet file), or ``file`` (the whole file, when its layout could not be read).
    """

    path: str
    format: str
    unit: Literal["bytes", "row_groups", "rows", "file"]
    start: int = 0
    end: int = 0

    def describe(self) -> str:
        name = posixpath.basename(self.path.rstrip("/"))
        if self.unit == "file":
            return f"{name} (whole file)"
        unit = self.unit.replace("_", " ")
        return f"{name} {unit} {self.start}-{self.end}"


@dataclass(frozen=True)
class MiniBatch:
    """A list of files, or one piece of a table, with what is known of its item count."""

    index: int
    kind: Literal["files", "tabular"]
    files: tuple[str, ...] = ()
    piece: TabularPiece | None = None
    items: int | None = None
    sizes: tuple[int, ...] = field(default=(), compare=False)

    @property
    def id(self) -> str:
        return mini_batch_id(self.index)

    @property
    def inputs(self) -> list[str]:
        """Return the inputs covered, as a user would name them (file URLs, or a file and a range)."""
        if self.piece is not None:
            p = self.piece
            return [p.path if p.unit == "file" else f"{p.path}[{p.unit}={p.start}:{p.end}]"]
        return list(self.files)

    @property
    def label(self) -> str:
        """Return the name shown for this mini-batch in the Airflow UI."""
        return f"{self.id} {describe_inputs([self])}"

    def descriptor(self) -> dict[str, Any]:
        """Return the small dict that travels through XCom to the mapped task: one mini-batch."""
        return {"id": self.id, "index": self.index, "count": 1, "label": self.label[:LABEL_LIMIT]}

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.piece is None:
            data.pop("piece")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MiniBatch:
        piece = data.get("piece")
        return cls(
            index=int(data["index"]),
            kind=data["kind"],
            files=tuple(data.get("files") or ()),
            piece=TabularPiece(**piece) if piece else None,
            items=data.get("items"),
            sizes=tuple(data.get("sizes") or ()),
        )


def describe_inputs(batches: Sequence[MiniBatch]) -> str:
    """Describe what consecutive mini-batches cover: the first input of the first to the last of the last.

    >>> a = MiniBatch(index=0, kind="files", files=("/in/a.png", "/in/b.png"))
    >>> b = MiniBatch(index=1, kind="files", files=("/in/c.png",))
    >>> describe_inputs([a]), describe_inputs([a, b]), describe_inputs([b])
    ('2 files a.png .. b.png', '3 files a.png .. c.png', '1 file c.png')
    """
    pieces = [mb.piece for mb in batches if mb.piece is not None]
    if pieces:
        if len(pieces) == 1:
            return pieces[0].describe()
        return f"{pieces[0].describe()} .. {pieces[-1].describe()}"
    names = [posixpath.basename(f.rstrip("/")) for mb in batches for f in mb.files]
    if not names:
        return "(no files)"
    if len(names) == 1:
        return f"1 file {names[0]}"
    return f"{len(names)} files {names[0]} .. {names[-1]}"
