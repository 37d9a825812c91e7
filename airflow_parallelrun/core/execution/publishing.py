"""Publish a task's finished mini-batches in a background thread while its worker runs the next.

Publishing a mini-batch is a few requests to the run's storage (the run-key check, the part,
the ``summary_only`` files, the dead letter or its removal, and last the status). On an object
store each waits a round trip; made in the task's thread, they idled the worker between two
``run()`` calls. Here one thread of the task publishes them, one mini-batch after another in the
order they finished, while the task starts the next ``run()``. The rules of state stay those of
a synchronous publish:

- Within a mini-batch the writes keep their order: its status is written after its part and its
  dead letter, so a status that says succeeded always has its part. A task killed at any instant
  leaves each mini-batch with its status (it is done) or without (it runs again, replacing its
  own part): every row exactly once.
- Bounded: at most ``depth`` mini-batches are handed over and not yet published; handing over
  one more waits for the oldest. Each holds only its local part and its folder of
  ``summary_only`` files, which the next try of the worker no longer writes into.
- Loud: a publish that fails is raised in the task's thread, at the next hand-over or check,
  and at the latest when the task waits for every publish before it returns (:meth:`wait`); the
  publishes handed over before and after it still complete, so no other mini-batch's output is
  lost. A task never reports a mini-batch before its publish is done.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from airflow_parallelrun.core.errors import StorageError
from airflow_parallelrun.core.execution.script_outputs import upload_tree
from airflow_parallelrun.core.failpoints import failpoint
from airflow_parallelrun.core.storage.manifest import check_run_key

if TYPE_CHECKING:
    from airflow_parallelrun.core.inputs.minibatch import MiniBatch
    from airflow_parallelrun.core.outputs.status import BatchStatus
    from airflow_parallelrun.core.storage.manifest import RunLayout

log = logging.getLogger(__name__)

#: Mini-batches handed over to publishing and not yet published, at most.
PUBLISHES_IN_FLIGHT = 2


@dataclass
class Finished:
    """A mini-batch that has run, and what of it is left to publish.

    ``part_local`` is its part on local disk (None: no part wanted, or none made);
    ``outputs`` the local folder holding the ``summary_only`` files (and the user's logs) its
    worker wrote, set aside for it alone (None: the output is local, written in place);
    ``started`` when it started (``time.perf_counter``), for its ``seconds_total``.
    """

    mb: MiniBatch
    status: BatchStatus
    part_local: str | None
    extension: str
    outputs: str | None
    started: float


def publish(layout: RunLayout, run_key: str | None, done: Finished) -> None:
    """Publish one mini-batch: check the run is still ours, then its part, files, dead letter, status.

    Raises ``RunSuperseded`` (publishing nothing) when another run owns the output path by now,
    and ``StorageError`` naming the mini-batch when a write keeps failing.
    """
    mb, status, out = done.mb, done.status, layout.output
    try:
        if run_key is not None:
            check_run_key(layout, run_key)
    except Exception:
        if done.outputs is not None:
            shutil.rmtree(done.outputs, ignore_errors=True)
        raise
    try:
        _publish_outputs(layout, done)
        status.seconds_total = round(time.perf_counter() - done.started, 6)
        out.write_json(layout.status(mb.id), status.to_dict())
    except Exception as exc:
        raise StorageError(
            f"{mb.id} was run ({status.status}), but publishing its results to "
            f"{out.url_of(layout.state())} failed: {type(exc).__name__}: {exc}. This is an error of "
            "the run's storage or of this framework, not of the entry script; check the storage, then "
            "clear the task (the mini-batch runs again)"
        ) from exc


def _publish_outputs(layout: RunLayout, done: Finished) -> None:
    """Publish a mini-batch's part, its ``summary_only`` files and its dead letter (not its status)."""
    mb, status, out = done.mb, done.status, layout.output
    if status.succeeded and done.part_local is not None:
        status.part = layout.part(mb.id, done.extension, status.run_key)
        out.put_file(done.part_local, status.part)
        os.unlink(done.part_local)
        failpoint(f"part_published:{mb.id}")
    if done.outputs is not None:
        upload_tree(done.outputs, out)
        shutil.rmtree(done.outputs, ignore_errors=True)
    if status.items_failed or not status.succeeded:
        out.write_json(layout.error(mb.id), status.dead_letter())
    else:
        # One delete, no lookup first: a mini-batch rarely has a dead letter of an earlier try.
        out.discard(layout.error(mb.id))


class Publisher:
    """Run each mini-batch's publish in one background thread, in order, at most ``depth`` pending.

    ``depth`` 0 publishes in the caller's thread at hand-over, as a plain loop would.
    """

    def __init__(self, depth: int = PUBLISHES_IN_FLIGHT) -> None:
        self.depth = max(0, depth)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="parallelrun-publish") if self.depth else None
        self._pending: deque[tuple[str, Future[None]]] = deque()
        self._failures: list[BaseException] = []

    def submit(self, mb_id: str, publish: Callable[[], None]) -> None:
        """Hand over ``mb_id``'s publish, once fewer than ``depth`` are pending.

        Then raise what an earlier publish raised, if one is found finished and failed: the
        mini-batch handed over here is published all the same (it ran; its output is not lost).
        """
        if self._pool is None:
            publish()
            return
        while len(self._pending) >= self.depth:
            self._settle_oldest()
        self._pending.append((mb_id, self._pool.submit(publish)))
        self.check()

    def check(self) -> None:
        """Raise what a finished publish raised, without waiting for those in flight."""
        while self._pending and self._pending[0][1].done():
            self._settle_oldest()
        self._raise_first()

    def wait(self) -> None:
        """Wait for every publish handed over; then raise the first that failed."""
        while self._pending:
            self._settle_oldest()
        self._raise_first()

    def close(self) -> None:
        """Wait for every publish (the task is ending); log the failures no one saw raised."""
        while self._pending:
            self._settle_oldest()
        for error in self._failures:  # the task is failing with another error already
            log.error("publishing a mini-batch failed: %s: %s", type(error).__name__, error)
        self._failures.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    @property
    def pending(self) -> list[str]:
        """The ids of the mini-batches handed over and not yet settled, oldest first."""
        return [mb_id for mb_id, _ in self._pending]

    def _settle_oldest(self) -> None:
        _, future = self._pending.popleft()
        if (error := future.exception()) is not None:
            self._failures.append(error)

    def _raise_first(self) -> None:
        if not self._failures:
            return
        first, *others = self._failures
        self._failures.clear()  # raised once: the task fails with it
        for error in others:
            log.error("publishing a mini-batch also failed: %s: %s", type(error).__name__, error)
        raise first


__all__ = ["PUBLISHES_IN_FLIGHT", "Finished", "Publisher", "publish"]
