"""Where the example DAGs keep their data: ``$PARALLELRUN_EXAMPLES_DIR``, else under ``$AIRFLOW_HOME``.

A deployment may also let the examples' ``data_dir`` point at an object store: the store URL in
``$PARALLELRUN_EXAMPLES_STORE`` (e.g. ``s3://my-bucket/parallelrun-examples`` or
``abfs://my-container/parallelrun-examples``), reached with the Airflow Connection named by
``$PARALLELRUN_EXAMPLES_CONN_ID``. Only that URL and folders under it are accepted, never any URL.
"""

from __future__ import annotations

import os
from typing import Any


def examples_dir() -> str:
    """Return the folder the examples make their data and models in."""
    explicit = os.environ.get("PARALLELRUN_EXAMPLES_DIR")
    if explicit:
        return explicit
    home = os.environ.get("AIRFLOW_HOME", os.path.expanduser("~/airflow"))
    return os.path.join(home, "parallelrun-examples")


def examples_store() -> str | None:
    """Return the object-store URL the deployment allows the examples' data on, or None."""
    url = os.environ.get("PARALLELRUN_EXAMPLES_STORE", "").strip().rstrip("/")
    if url and "://" not in url:
        raise ValueError(
            f"PARALLELRUN_EXAMPLES_STORE={url!r} is not a URL; give the examples' folder on a store, "
            "e.g. s3://my-bucket/parallelrun-examples, or unset it"
        )
    return url or None


def examples_conn_id() -> str | None:
    """Return the Connection that reaches ``examples_store()``: ``$PARALLELRUN_EXAMPLES_CONN_ID``, or None."""
    return os.environ.get("PARALLELRUN_EXAMPLES_CONN_ID") or None


def is_on_store(data_dir: str) -> bool:
    """Tell whether ``data_dir`` is on the examples' object store (not the local examples folder)."""
    return "://" in data_dir


def _escaped(root: str) -> str:
    # Escaped by hand: JavaScript (the trigger form) refuses Python's "\-" in a unicode pattern.
    return "".join("\\" + c if c in r"\^$.|?*+()[]{}" else c for c in root)


def data_dir_pattern(on_store: bool = False) -> str:
    """Return the JSON-schema pattern of a ``data_dir`` Param: the examples folder or a folder under it.

    Folder names are letters, digits, "_", "." and "-", and never start with "." (so no ".."): a
    run's input and output cannot be pointed outside the examples folder from the trigger form.
    With ``on_store`` and ``$PARALLELRUN_EXAMPLES_STORE`` set, that URL and the folders under it
    are accepted too.
    """
    roots = [examples_dir().rstrip("/") or "/", *filter(None, [examples_store() if on_store else None])]
    choice = "|".join(_escaped(root) for root in roots)
    # The look-ahead refuses any line break: Python's "$" also matches before a final newline.
    return r"^(?![\s\S]*[\n\r])(?:" + choice + r")(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*/?$"


def data_dir_param(on_store: bool = False, store_by_default: bool = False) -> Any:
    """Return the ``data_dir`` Param of the examples: the examples folder or a folder under it.

    ``on_store``: the example can run on ``$PARALLELRUN_EXAMPLES_STORE`` too, when it is set.
    ``store_by_default``: that store folder is the default (what scheduled runs take), when set.
    """
    from airflow.sdk import Param

    roots = list(filter(None, [examples_dir(), examples_store() if on_store else None]))
    return Param(
        roots[-1] if store_by_default else roots[0],
        type="string",
        title="Folder of the example data and models",
        description=" or ".join(roots) + ", or a folder under it.",
        pattern=data_dir_pattern(on_store),
    )
