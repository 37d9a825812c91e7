"""Stage the run's models on this node once, under Azure ML's layout, for the workers to find.

The node's *model root* holds ``<name>/<version>/<file or folder>`` for each model, each a
symbolic link: to a local source itself (used in place, never copied), or to its download in the
node's model cache. A remote source is downloaded once per node, into a cache entry keyed by its
URL and by what its store says of its files (size, ETag or modification time), so a model
rewritten at the same URL is downloaded again and an unchanged one never is. Two tasks staging
the same model at once take a lock file: one downloads, into a temporary folder renamed into
place when complete, and the other waits and uses it. A cache entry is never changed once made.

Workers get the root in ``PARALLELRUN_MODELS_DIR`` (linked as ``./azureml-models`` in their
working directory, where ``azureml.core.Model.get_model_path`` looks) and ``AZUREML_MODEL_DIR``
as Azure sets it: the model's ``<name>/<version>`` folder when the run has one model, the root
when it has several.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import posixpath
import shutil
import socket
import tempfile
from collections.abc import Iterator, Mapping
from typing import Any

from airflow_parallelrun.core.execution.azureml_env import MODEL_DIR_ENV, MODELS_DIR_ENV
from airflow_parallelrun.core.models.refs import ModelError, ModelRef, model_refs
from airflow_parallelrun.core.storage.atomic import move_into_place
from airflow_parallelrun.core.storage.location import filesystem_of

MODEL_CACHE_ENV = "PARALLELRUN_MODEL_CACHE"


def model_cache() -> str:
    """Return this user's model cache on this node: ``$PARALLELRUN_MODEL_CACHE``, else a user cache folder.

    The default is ``$XDG_CACHE_HOME/airflow-parallelrun/models`` (``~/.cache/...``), not the
    temporary folder whose ``parallelrun-*`` leftovers are swept: a model costs a download.
    """
    cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = os.environ.get(MODEL_CACHE_ENV) or os.path.join(cache_home, "airflow-parallelrun", "models")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def model_environment(models: Mapping[str, str]) -> dict[str, str]:
    """Stage ``models`` on this node; return the variables that tell a worker where they are ({} for none)."""
    refs = model_refs(models)
    if not refs:
        return {}
    root = stage_models(refs)
    single = os.path.join(root, refs[0].name, refs[0].version)
    return {MODELS_DIR_ENV: root, MODEL_DIR_ENV: single if len(refs) == 1 else root}


def stage_models(refs: list[ModelRef], cache: str | None = None) -> str:
    """Return this node's model root for ``refs``, staging what is not here yet.

    Asked again, it costs a look at each local path and one metadata call per remote model (to
    tell a model rewritten at its URL), and downloads nothing already here.
    """
    cache = cache or model_cache()
    targets = [(ref, _stage_one(ref, cache)) for ref in refs]
    roots = os.path.join(cache, "roots")
    os.makedirs(roots, exist_ok=True)
    root = os.path.join(roots, _hash([(ref.name, ref.version, target) for ref, target in targets]))
    if not os.path.isdir(root):
        building = tempfile.mkdtemp(prefix=os.path.basename(root) + ".tmp-", dir=roots)
        for ref, target in targets:
            folder = os.path.join(building, ref.name, ref.version)
            os.makedirs(folder)
            os.symlink(target, os.path.join(folder, os.path.basename(target.rstrip("/"))))
        try:
            move_into_place(building, root)
        except OSError:  # another task made the same root meanwhile: identical, keep theirs
            shutil.rmtree(building, ignore_errors=True)
    return root


def _stage_one(ref: ModelRef, cache: str) -> str:
    """Return the local file or folder of one model: its own path, or its download in ``cache``."""
    if not ref.is_remote:
        path = os.path.abspath(ref.local_path)
        if not os.path.exists(path):
            raise ModelError(
                f"model {ref.name}:{ref.version}: {ref.source!r} does not exist on this node "
                f"({socket.gethostname()}); put the model's file or folder there on every worker node, "
                "or give an fsspec URL they all reach (s3://..., abfs://...)"
            )
        return path
    fs, path = filesystem_of(ref.source)
    files = _remote_files(ref, fs, path)
    entry = os.path.join(cache, "downloads", _hash([ref.source, _fingerprint(files)]))
    target = os.path.join(entry, posixpath.basename(path.rstrip("/")) or "model")
    if os.path.isdir(entry):
        return target
    os.makedirs(os.path.dirname(entry), exist_ok=True)
    with _locked(entry + ".lock"):
        if not os.path.isdir(entry):  # the task holding the lock before us may have made it
            _download(ref, fs, path, files, entry, target)
    return target


def _remote_files(ref: ModelRef, fs: Any, path: str) -> dict[str, dict[str, Any]]:
    """Return the model's files with what the store says of each (one file, or a folder's files)."""
    try:
        info = fs.info(path)
        files = {path: info} if info.get("type") != "directory" else fs.find(path, detail=True)
    except FileNotFoundError:
        files = {}
    except Exception as exc:
        raise ModelError(
            f"model {ref.name}:{ref.version}: cannot read {ref.source!r}: {type(exc).__name__}: {exc}; "
            "check the URL and that this node can reach the store (its Connection or credentials)"
        ) from exc
    if not files:
        raise ModelError(
            f"model {ref.name}:{ref.version}: {ref.source!r} does not exist or is an empty folder; "
            "give the URL of the model's file or folder"
        )
    return dict(files)


def _fingerprint(files: Mapping[str, Mapping[str, Any]]) -> list[list[Any]]:
    """Return what tells this version of the files from another: names, sizes, ETags or times."""
    stamp_keys = ("ETag", "etag", "LastModified", "last_modified", "mtime", "created")
    return sorted(
        [name, info.get("size"), next((str(info[k]) for k in stamp_keys if info.get(k)), "")]
        for name, info in files.items()
    )


def _download(ref: ModelRef, fs: Any, path: str, files: Mapping[str, Any], entry: str, target: str) -> None:
    """Download the model's files into a temporary folder, renamed to ``entry`` once complete."""
    building = tempfile.mkdtemp(prefix=os.path.basename(entry) + ".tmp-", dir=os.path.dirname(entry))
    try:
        for name in files:
            base = os.path.join(building, os.path.basename(target))
            local = base if name == path else os.path.join(base, posixpath.relpath(name, path))
            os.makedirs(os.path.dirname(local), exist_ok=True)
            fs.get_file(name, local)
        move_into_place(building, entry)
    except Exception as exc:
        shutil.rmtree(building, ignore_errors=True)
        raise ModelError(
            f"model {ref.name}:{ref.version}: downloading {ref.source!r} failed: {type(exc).__name__}: "
            f"{exc}; check the store and the free space of {os.path.dirname(entry)}"
        ) from exc


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    """Hold the lock file ``path``: one task of the node downloads a model, the others wait for it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]
