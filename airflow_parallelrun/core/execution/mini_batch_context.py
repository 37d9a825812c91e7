"""Azure's ``mini_batch_context``: what an entry script's ``run(mini_batch, mini_batch_context)`` gets.

Azure ML passes it to a ``run()`` that takes a second positional parameter: the mini-batch's
``partition_key_value`` (key -> value, for ``partition_keys``), its ``minibatch_index``, and its
``dataset``, "the subset of the input dataset filtered by ``partition_key_value``". Azure's
``dataset`` is an Azure dataset object; ours describes the same subset: what kind of dataset,
which inputs the mini-batch covers (files, or table pieces), their format and the key values.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from airflow_parallelrun.core.inputs.minibatch import MiniBatch


@dataclass(frozen=True)
class MiniBatchDataset:
    """The part of the input one mini-batch is: Azure's ``mini_batch_context.dataset``, described.

    ``kind`` is ``"FileDataset"`` or ``"TabularDataset"`` (a SQL input arrives as a table);
    ``inputs`` the files or table pieces it covers (``t.csv[bytes=0:4194304]``), as the report
    names them; ``format`` the table format (None for files); ``partition_key_value`` the key
    group it is filtered to ({} without ``partition_keys``).
    """

    kind: str
    inputs: tuple[str, ...]
    format: str | None = None
    partition_key_value: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MiniBatchContext:
    """The second argument of ``run(mini_batch, mini_batch_context)``, with Azure's attribute names."""

    partition_key_value: dict[str, Any]
    minibatch_index: int
    dataset: MiniBatchDataset


def context_of(mb: MiniBatch) -> MiniBatchContext:
    """Return the context of a mini-batch, from what its manifest entry says.

    >>> mb = MiniBatch(index=3, kind="files", files=("/in/s1/a.csv",), partition_key_value={"Store": "s1"})
    >>> context = context_of(mb)
    >>> context.partition_key_value, context.minibatch_index, context.dataset.kind, context.dataset.inputs
    ({'Store': 's1'}, 3, 'FileDataset', ('/in/s1/a.csv',))
    """
    keys = dict(mb.partition_key_value or {})
    pieces = (mb.piece,) if mb.piece is not None else mb.pieces
    dataset = MiniBatchDataset(
        kind="TabularDataset" if mb.kind == "tabular" else "FileDataset",
        inputs=tuple(mb.inputs),
        format=pieces[0].format if pieces else None,
        partition_key_value=dict(keys),
    )
    return MiniBatchContext(partition_key_value=keys, minibatch_index=mb.index, dataset=dataset)


def takes_context(run: Callable[..., Any]) -> bool:
    """Tell whether ``run()`` takes ``mini_batch_context``: a second positional parameter without a default.

    One named ``mini_batch_context`` counts with a default too; ``run(mini_batch, debug=False)`` keeps
    getting one argument.

    >>> takes_context(lambda mini_batch: 0), takes_context(lambda mini_batch, mini_batch_context: 0)
    (False, True)
    >>> takes_context(lambda batch, ctx: 0), takes_context(lambda batch, debug=False: 0)
    (True, False)
    >>> takes_context(lambda mini_batch, mini_batch_context=None: 0)
    True
    """
    try:
        parameters = list(inspect.signature(run).parameters.values())
    except (TypeError, ValueError):
        return False
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    positional = [p for p in parameters if p.kind in kinds]
    if len(positional) < 2:
        return False
    second = positional[1]
    return second.default is inspect.Parameter.empty or second.name == "mini_batch_context"
