"""The example data on an object store: made in the local examples folder, then uploaded once.

The models stay in the local examples folder (an entry script loads its model from a local
path, as on Azure ML); the inputs go to folders under ``data_dir`` on the store (for instance
``<data_dir>/digits/images``), through the Connection ``$PARALLELRUN_EXAMPLES_CONN_ID``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from parallelrun_examples.data import prepare_examples
from parallelrun_examples.settings import examples_conn_id, examples_dir, is_on_store

#: The inputs that go to the store, by their key in ``prepare_examples``'s answer.
INPUTS = {"digits_images": "digits/images", "tabular_input": "tabular/input"}


def local_dir(data_dir: str) -> str:
    """Return the local folder the example makes its data and models in: ``data_dir`` or the examples one."""
    return examples_dir() if is_on_store(data_dir) else data_dir


def prepare_examples_at(data_dir: str) -> dict[str, str]:
    """Make whatever is missing of the example data at ``data_dir`` (a local folder or a store URL).

    Returns ``prepare_examples``'s paths: on a store, the inputs' URLs and the local models' paths.
    """
    paths = prepare_examples(local_dir(data_dir))
    for key, folder in INPUTS.items():
        paths[key] = publish(data_dir, paths[key], folder)
    return paths


def publish(data_dir: str, local_folder: str | Path, folder: str, *, unless_delivered: bool = False) -> str:
    """Return where ``<data_dir>/<folder>`` is read from; on a store, upload the files it lacks first.

    ``local_folder`` holds the files made locally. On a local ``data_dir`` it is the answer.
    ``unless_delivered``: a store folder that holds any file already is a delivery, left untouched.
    """
    if not is_on_store(data_dir):
        return str(local_folder)
    url = f"{data_dir.rstrip('/')}/{folder}"
    fs = store_filesystem(url)
    remote = fs._strip_protocol(url)
    if not (unless_delivered and fs.exists(remote) and fs.find(remote)):
        upload_missing(fs, str(local_folder), remote)
    return url


def store_filesystem(url: str) -> Any:
    """Return the filesystem of ``url`` on the store, through ``$PARALLELRUN_EXAMPLES_CONN_ID``."""
    from airflow_parallelrun.hooks.storage import ParallelRunStorageHook

    conn_id = examples_conn_id()
    if not conn_id:
        raise ValueError(
            f"{url!r} is on an object store but PARALLELRUN_EXAMPLES_CONN_ID is not set; "
            "set it to the Airflow Connection that reaches the store (e.g. aws_default, wasb_default)"
        )
    return ParallelRunStorageHook(conn_id).filesystem(url)


def upload_missing(fs: Any, local_folder: str, remote_folder: str) -> int:
    """Upload the files of ``local_folder`` that ``remote_folder`` lacks (one listing); return how many."""
    present: set[str] = set()
    if fs.exists(remote_folder):
        present = {p[len(remote_folder) + 1 :] for p in fs.find(remote_folder)}
    local, remote = [], []
    for folder, _, names in os.walk(local_folder):
        for name in sorted(names):
            relative = os.path.relpath(os.path.join(folder, name), local_folder).replace(os.sep, "/")
            if relative not in present:
                local.append(os.path.join(folder, name))
                remote.append(f"{remote_folder}/{relative}")
    if local:
        fs.put(local, remote)
    return len(local)
