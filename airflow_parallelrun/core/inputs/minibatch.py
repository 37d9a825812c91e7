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
    """A list of files, or one piece of a table, with what is known of its item count.

    With ``partition_keys``, a mini-batch is one key group: ``partition_key_value`` names it
    (key -> value), and a table's group is the rows of ``pieces`` whose keys have those values
    (the rows a piece rejects are reported by the group whose ``rejected_from`` lists it).
    """

    index: int
    kind: Literal["files", "tabular"]
    files: tuple[str, ...] = ()
    piece: TabularPiece | None = None
    items: int | None = None
    sizes: tuple[int, ...] = field(default=(), compare=False)
    partition_key_value: dict[str, Any] | None = field(default=None, compare=False)
    pieces: tuple[TabularPiece, ...] = ()
    rejected_from: tuple[int, ...] = ()

    @classmethod
    def of_files(
        cls,
        index: int,
        listed: Sequence[tuple[str, int | None]],
        partition_key_value: dict[str, Any] | None = None,
    ) -> MiniBatch:
        """Return the mini-batch of listed ``(url, size)`` files; an unknown size is stored as -1."""
        return cls(
            index=index,
            kind="files",
            files=tuple(url for url, _ in listed),
            sizes=tuple(s if s is not None else -1 for _, s in listed),
            items=len(listed),
            partition_key_value=partition_key_value,
        )

    @property
    def id(self) -> str:
        return mini_batch_id(self.index)

    @property
    def inputs(self) -> list[str]:
        """Return the inputs covered, as a user would name them (file URLs, or a file and a range)."""
        pieces = (self.piece,) if self.piece is not None else self.pieces
        if pieces:
            return [p.path if p.unit == "file" else f"{p.path}[{p.unit}={p.start}:{p.end}]" for p in pieces]
        return list(self.files)

    @property
    def key_group(self) -> str:
        """Return the key group as a user would write it (``Store=1 Brand=A``), or "" without keys.

        >>> MiniBatch(index=0, kind="files", partition_key_value={"Store": 1, "Brand": "A"}).key_group
        'Store=1 Brand=A'
        """
        return " ".join(f"{key}={value}" for key, value in (self.partition_key_value or {}).items())

    @property
    def label(self) -> str:
        """Return the name shown for this mini-batch in the Airflow UI: the key group first, if any."""
        group = f"{self.key_group} " if self.key_group else ""
        return f"{self.id} {group}{describe_inputs([self])}"

    def descriptor(self) -> dict[str, Any]:
        """Return the small dict that travels through XCom to the mapped task: one mini-batch."""
        return {"id": self.id, "index": self.index, "count": 1, "label": self.label[:LABEL_LIMIT]}

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        # Only what a mini-batch has: a manifest of a million mini-batches stays small.
        for name in ("piece", "partition_key_value", "pieces", "rejected_from"):
            if data[name] in (None, (), []):
                data.pop(name)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MiniBatch:
        piece = data.get("piece")
        keys = data.get("partition_key_value")
        return cls(
            index=int(data["index"]),
            kind=data["kind"],
            files=tuple(data.get("files") or ()),
            piece=TabularPiece(**piece) if piece else None,
            items=data.get("items"),
            sizes=tuple(data.get("sizes") or ()),
            partition_key_value=dict(keys) if keys is not None else None,
            pieces=tuple(TabularPiece(**p) for p in data.get("pieces") or ()),
            rejected_from=tuple(data.get("rejected_from") or ()),
        )


def describe_inputs(batches: Sequence[MiniBatch]) -> str:
    """Describe what consecutive mini-batches cover: the first input of the first to the last of the last.

    >>> a = MiniBatch(index=0, kind="files", files=("/in/a.png", "/in/b.png"))
    >>> b = MiniBatch(index=1, kind="files", files=("/in/c.png",))
    >>> describe_inputs([a]), describe_inputs([a, b]), describe_inputs([b])
    ('2 files a.png .. b.png', '3 files a.png .. c.png', '1 file c.png')
    """
    pieces = [p for mb in batches for p in ((mb.piece,) if mb.piece is not None else mb.pieces)]
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
