"""The example data on an object store: made in the local examples folder, then uploaded once.

The models stay in the local examples folder (an entry script loads its model from a local
path, as on Azure ML); the inputs go to ``<data_dir>/digits/images`` and
``<data_dir>/tabular/input`` on the store, through the Connection ``$PARALLELRUN_EXAMPLES_CONN_ID``.
"""

from __future__ import annotations

import os
from typing import Any

from parallelrun_examples.data import prepare_examples
from parallelrun_examples.settings import examples_conn_id, examples_dir, is_on_store

#: The inputs that go to the store, by their key in ``prepare_examples``'s answer.
INPUTS = {"digits_images": "digits/images", "tabular_input": "tabular/input"}


def prepare_examples_at(data_dir: str) -> dict[str, str]:
    """Make whatever is missing of the example data at ``data_dir`` (a local folder or a store URL).

    Returns ``prepare_examples``'s paths: on a store, the inputs' URLs and the local models' paths.
    """
    if not is_on_store(data_dir):
        return prepare_examples(data_dir)
    from airflow_parallelrun.hooks.storage import ParallelRunStorageHook

    conn_id = examples_conn_id()
    if not conn_id:
        raise ValueError(
            f"data_dir={data_dir!r} is on an object store but PARALLELRUN_EXAMPLES_CONN_ID is not set; "
            "set it to the Airflow Connection that reaches the store (e.g. aws_default, wasb_default)"
        )
    paths = prepare_examples(examples_dir())
    fs = ParallelRunStorageHook(conn_id).filesystem(data_dir)
    for key, folder in INPUTS.items():
        url = f"{data_dir.rstrip('/')}/{folder}"
        upload_missing(fs, paths[key], fs._strip_protocol(url))
        paths[key] = url
    return paths


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
