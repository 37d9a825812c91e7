"""The process that hosts an entry script: ``init()`` once, ``run()`` per mini-batch, ``shutdown()``.

It runs as ``python -m airflow_parallelrun.core.execution.worker FD`` and talks to its parent over the
socket ``FD`` in JSON messages (a :class:`~.channel.Channel`), so the script's own prints and logs
stay on stdout and stderr. It reads only local files; the parent stages remote inputs and publishes
the parts. Killing it is how a ``run()`` stuck in C code is stopped.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from multiprocessing.connection import Connection
from types import ModuleType
from typing import Any

from airflow_parallelrun.core.errors import EntryScriptLoadError, InputError, StorageError
from airflow_parallelrun.core.execution.azureml_env import arrange_azureml
from airflow_parallelrun.core.execution.channel import Channel
from airflow_parallelrun.core.execution.entry_script import MINI_BATCH_ENV, TASK_PID_ENV
from airflow_parallelrun.core.execution.mini_batch_context import context_of, takes_context
from airflow_parallelrun.core.inputs.minibatch import MiniBatch

_OWN_FILES = (__file__, importlib.util.__file__ or "")

#: The exit code of a worker that stopped on an error of the framework's, not of the entry script's.
FRAMEWORK_EXIT = 70


def user_traceback(exc: BaseException) -> str:
    """Format ``exc`` without the engine's frames, so the user sees their own code first."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename in _OWN_FILES:
        tb = tb.tb_next
    frames = traceback.extract_tb(tb) if tb is not None else []
    frames = traceback.StackSummary.from_list(
        [f for f in frames if not f.filename.startswith("<frozen importlib")]
    )
    lines = ["Traceback (most recent call last):\n", *frames.format()]
    return "".join(lines + traceback.format_exception_only(type(exc), exc))


def load_entry_script(path: str, arguments: list[str]) -> ModuleType:
    """Import the entry script as a module with ``sys.argv`` set to its arguments."""
    if not os.path.isfile(path):
        raise EntryScriptLoadError(f"entry_script {path!r} does not exist on this worker")
    sys.argv = [path, *arguments]
    folder = os.path.dirname(os.path.abspath(path))
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location("parallelrun_entry_script", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        raise EntryScriptLoadError(
            f"entry_script {path!r} failed to import: {type(exc).__name__}: {exc}", user_traceback(exc)
        ) from exc
    if not callable(getattr(module, "run", None)):
        raise EntryScriptLoadError(
            f"entry_script {path!r} has no run(mini_batch) function; define `def run(mini_batch):` "
            "returning a list or a DataFrame"
        )
    return module


def read_input(mb: MiniBatch) -> tuple[Any, dict[str, Any]]:
    """Return what ``run()`` receives, and what the reply says of the rows rejected while reading.

    Raise ``InputReadError`` (with the items it fails) for an input that cannot be read at all.
    """
    if mb.piece is None and not mb.pieces:
        return list(mb.files), {}
    from airflow_parallelrun.core.inputs.group_reading import read_key_group
    from airflow_parallelrun.core.inputs.reading import read_table_rows

    rows = read_table_rows(mb.piece) if mb.piece is not None else read_key_group(mb)
    if not rows.rejected:
        return rows.frame, {}
    return rows.frame, {
        "rejected": rows.rejected,
        "rejected_lines": rows.rejected_lines,
        "category": "rejected_rows",
        "message": rows.message,
    }


def _error(category: str, exc: BaseException, **extra: Any) -> dict[str, Any]:
    return {
        "ok": False,
        "category": category,
        "message": str(exc) or type(exc).__name__,
        "traceback": getattr(exc, "traceback", "") or user_traceback(exc),
        **extra,
    }


@contextlib.contextmanager
def task_output(conn: Connection, request: dict[str, Any]) -> Iterator[None]:
    """Send this process's stdout and stderr to the requesting task's while the request runs.

    A warm worker outlives the task that started it: each task sends its own stdout and stderr
    (``attach_output``) right after its request, so the script's prints and logs land in the log
    of the task whose mini-batch they belong to.
    """
    if request.get("task_pid"):
        os.environ[TASK_PID_ENV] = str(request["task_pid"])
    if not request.get("attach_output"):
        yield
        return
    with socket.socket(fileno=os.dup(conn.fileno())) as sock:
        _, fds, _, _ = socket.recv_fds(sock, 1, 2)
    saved = [os.dup(1), os.dup(2)]
    _flush()
    for fd, target in zip(fds, (1, 2), strict=False):
        os.dup2(fd, target)
        os.close(fd)
    try:
        yield
    finally:
        _flush()
        for fd, target in zip(saved, (1, 2), strict=True):
            os.dup2(fd, target)
            os.close(fd)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def serve(conn: Connection) -> None:
    """Answer the parent's requests until it asks to shut down or goes away."""
    setup = conn.recv()
    os.environ.update(setup["env"])
    arrange_azureml(setup["env"])
    with task_output(conn, setup):
        module = _load_and_init(conn, setup)
    if module is None:
        return
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        if request["cmd"] == "shutdown":
            shutdown = getattr(module, "shutdown", None)
            reply: dict[str, Any] = {"ok": True}
            if callable(shutdown):
                try:
                    shutdown()
                except BaseException as exc:
                    reply = _error(
                        "entry_script", exc, message=f"shutdown() raised {type(exc).__name__}: {exc}"
                    )
            conn.send(reply)
            return
        with task_output(conn, request):
            reply = run_one(module, request, conn)
        conn.send(reply)


def _load_and_init(conn: Connection, setup: dict[str, Any]) -> ModuleType | None:
    """Import the entry script and call ``init()``; reply ready, or the error and return None."""
    try:
        module = load_entry_script(setup["entry_script"], setup["arguments"])
    except EntryScriptLoadError as exc:
        conn.send(_error(exc.category, exc))
        return None
    init = getattr(module, "init", None)
    started = time.perf_counter()
    if callable(init):
        try:
            init()
        except BaseException as exc:
            conn.send(_error("entry_script_load", exc, message=f"init() raised {type(exc).__name__}: {exc}"))
            return None
    seconds = time.perf_counter() - started if callable(init) else 0.0
    conn.send({"ok": True, "event": "ready", "init_seconds": seconds})
    return module


def run_one(module: ModuleType, request: dict[str, Any], conn: Connection) -> dict[str, Any]:
    """Read a mini-batch, call ``run()``, check and write what it returned."""
    from airflow_parallelrun.core.outputs.parts import write_part

    mb = MiniBatch.from_dict(request["mini_batch"])
    try:
        data, rejected = read_input(mb)
    except Exception as exc:
        return _read_error(mb, exc)
    # Rows rejected while reading are items of the mini-batch that run() never sees.
    items = len(data) + rejected.get("rejected", 0)
    conn.send({"ok": True, "event": "started", "items": items})
    if mb.kind == "tabular" and not items:
        # A byte range inside one long row holds no row: a succeeded mini-batch of 0 items. Many
        # models raise on an empty DataFrame, so run() is not called; the part is empty.
        if request.get("part_path"):
            write_part([], request["format"], request["part_path"])
        return {"ok": True, "items": 0, "returned": 0, "run_seconds": 0.0}
    os.environ[MINI_BATCH_ENV] = mb.id
    started = time.perf_counter()
    try:
        # Azure's run(mini_batch, mini_batch_context): a second positional parameter gets the context.
        result = module.run(data, context_of(mb)) if takes_context(module.run) else module.run(data)
    except BaseException as exc:
        return _error(
            "entry_script",
            exc,
            items=items,
            run_seconds=time.perf_counter() - started,
            message=f"run() raised {type(exc).__name__}: {exc}",
        )
    finally:
        os.environ.pop(MINI_BATCH_ENV, None)
    run_seconds = time.perf_counter() - started
    conn.send({"ok": True, "event": "returned"})
    return _write_results(mb, request, result, items=items, run_seconds=run_seconds, rejected=rejected)


def _read_error(mb: MiniBatch, exc: Exception) -> dict[str, Any]:
    """Reply to a mini-batch whose input could not be read; call it while handling ``exc``."""
    if isinstance(exc, InputError):
        return _error("input", exc, items=getattr(exc, "items", None))
    # Not the input's fault: the storage kept failing, or the engine has a bug. Say which,
    # with the engine's whole traceback; the mini-batch's tries go on.
    category = "storage" if isinstance(exc, StorageError) else "framework"
    return _error(
        category,
        exc,
        message=f"reading {mb.id} failed, a {category} error: {type(exc).__name__}: {exc}",
        traceback=traceback.format_exc(),
    )


def _write_results(
    mb: MiniBatch,
    request: dict[str, Any],
    result: Any,
    *,
    items: int,
    run_seconds: float,
    rejected: dict[str, Any],
) -> dict[str, Any]:
    """Count what ``run()`` returned and write it as the mini-batch's part; return the reply."""
    from airflow_parallelrun.core.outputs.parts import count_results, write_part

    try:
        returned = count_results(result)
        if request.get("part_path"):
            write_part(result, request["format"], request["part_path"])
    except Exception as exc:
        return _write_error(mb, request, exc, items=items, run_seconds=run_seconds)
    return {"ok": True, "items": items, "returned": returned, "run_seconds": run_seconds, **rejected}


def _write_error(
    mb: MiniBatch, request: dict[str, Any], exc: Exception, *, items: int, run_seconds: float
) -> dict[str, Any]:
    """Reply to a part that could not be written, saying whose fault; call it while handling ``exc``."""
    from airflow_parallelrun.core.errors import RunOutputError

    if isinstance(exc, RunOutputError):
        return _error(exc.category, exc, items=items, run_seconds=run_seconds, traceback="")
    if isinstance(exc, OSError):
        # The worker's own disk (full, read-only, gone): not what run() returned.
        return _error(
            "storage",
            exc,
            items=items,
            run_seconds=run_seconds,
            message=f"cannot write the part of {mb.id} to local disk, a storage error: "
            f"{type(exc).__name__}: {exc}; free space under {os.path.dirname(request['part_path'])}",
            traceback=traceback.format_exc(),
        )
    # pyarrow and pandas refuse values they cannot store: that is what run() returned.
    if type(exc).__module__.split(".")[0] in ("pyarrow", "pandas") or isinstance(
        exc, (TypeError, ValueError)
    ):
        return _error(
            "run_output",
            exc,
            items=items,
            run_seconds=run_seconds,
            message=f"cannot write what run() returned: {type(exc).__name__}: {exc}",
        )
    return _error(
        "framework",
        exc,
        items=items,
        run_seconds=run_seconds,
        message=f"writing the part of {mb.id} failed, an airflow-parallelrun error: "
        f"{type(exc).__name__}: {exc}",
        traceback=traceback.format_exc(),
    )


def _exit_with_parent(parent_pid: int, interval: float = 1.0) -> None:
    """Exit when the task process that started this worker is gone, so no worker outlives its task."""
    while True:
        time.sleep(interval)
        if os.getppid() != parent_pid:
            os._exit(70)


def main() -> None:
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    conn = Channel(int(sys.argv[1]))
    try:
        serve(conn)
    except Exception as exc:
        # Not the entry script's fault (its errors are answered above): a failure of this engine,
        # told to the parent as one, with the whole traceback, before the worker exits.
        trace = traceback.format_exc()
        sys.stderr.write(f"parallelrun worker {os.getpid()}: framework error\n{trace}")
        with contextlib.suppress(Exception):
            conn.send(
                {
                    "ok": False,
                    "category": "framework",
                    "message": f"the worker process failed: {type(exc).__name__}: {exc} (an error of "
                    "airflow-parallelrun, not of the entry script; its traceback is in the task log)",
                    "traceback": trace,
                }
            )
        sys.exit(FRAMEWORK_EXIT)
    finally:
        conn.close()


if __name__ == "__main__":
    main()
