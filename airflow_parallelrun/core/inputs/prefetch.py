"""Fetch the remote inputs of a task's next mini-batches while ``run()`` scores the current one.

A slow store would otherwise idle the worker: each mini-batch's download would wait for the one
before it to be scored, and the scoring for the download. Here the fetch of the next
``prefetch_mini_batches`` mini-batches starts when the current one's ``run()`` starts, each in a
thread of the task process (the download waits on the network, so it costs the scoring little).

Bounded: at most ``ahead`` mini-batches are fetched ahead, each into its own folder of the task's
local scratch disk, so the disk holds at most ``ahead + 1`` mini-batches' inputs at once (and a
table piece's fetch holds one piece in memory while it writes it). Only remote inputs are
fetched; a mini-batch whose inputs are all local is left alone, its files checked at its turn.

Cancellable: a mini-batch dropped before its turn (the run was aborted) or a task that ends with
fetches in flight (it failed, or was stopped) stops them between two files and removes what
they wrote. A task killed outright leaves its scratch folder behind: the next try uses a new
one, and the sweep of leftovers removes the old.

A failed fetch is its own mini-batch's: what it raised is raised again when that mini-batch's
turn comes, exactly as if it had been fetched then; the mini-batch before it is not touched.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterable

from airflow_parallelrun.core.inputs.minibatch import MiniBatch
from airflow_parallelrun.core.inputs.reading import is_local, stage_mini_batch

log = logging.getLogger(__name__)

#: How long closing waits for a cancelled fetch to finish its current file before leaving it.
_CLOSE_WAIT = 10.0


def needs_fetch(mb: MiniBatch) -> bool:
    """Tell whether a mini-batch has an input on a remote filesystem (one staging would copy)."""
    if mb.piece is not None:
        return not is_local(mb.piece.path)
    if mb.pieces:
        return any(not is_local(piece.path) for piece in mb.pieces)
    return any(not is_local(url) for url in mb.files)


class _Fetch:
    """One mini-batch's fetch in a thread: what it gave or raised, and its timestamps."""

    def __init__(self, mb: MiniBatch, folder: str) -> None:
        self.mb, self.folder = mb, folder
        self.stop = threading.Event()
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.dropped = False
        self.staged: MiniBatch | None = None
        self.error: BaseException | None = None
        self.started_at = self.finished_at = 0.0
        self.thread = threading.Thread(target=self._run, name=f"prefetch-{mb.id}", daemon=True)

    def _run(self) -> None:
        self.started_at = time.time()
        log.info("fetching the inputs of %s ahead, while the mini-batch before it runs", self.mb.id)
        try:
            self.staged = stage_mini_batch(self.mb, self.folder, stop=self.stop)
        except BaseException as exc:  # raised again at the mini-batch's turn, in the task's thread
            self.error = exc
        self.finished_at = time.time()
        with self.lock:
            self.done.set()
            dropped = self.dropped
        if dropped:
            shutil.rmtree(self.folder, ignore_errors=True)
        elif self.error is None:
            seconds = self.finished_at - self.started_at
            log.info("fetched the inputs of %s ahead in %.2fs", self.mb.id, seconds)

    def drop(self) -> None:
        """Stop the fetch between two files; remove its folder now, or when it stops."""
        self.stop.set()
        with self.lock:
            self.dropped = True
            finished = self.done.is_set()
        if finished:
            shutil.rmtree(self.folder, ignore_errors=True)


class Prefetch:
    """Fetch up to ``ahead`` next mini-batches in threads; hand each over at its turn.

    ``folder_of(mb)`` names the local folder a mini-batch's inputs go to (made on demand); the
    caller removes it once the mini-batch is done, as it does for one fetched at its turn.
    """

    def __init__(self, folder_of: Callable[[MiniBatch], str], ahead: int = 1) -> None:
        self.folder_of = folder_of
        self.ahead = max(0, int(ahead))
        self._fetches: dict[str, _Fetch] = {}

    def start(self, upcoming: Iterable[MiniBatch]) -> None:
        """Start fetching the first mini-batches of ``upcoming`` that need it, up to ``ahead`` in all.

        ``upcoming`` are the next mini-batches this task will run, in order; the caller stops
        listing them once ``ahead`` need fetching, or whatever fetch it has started is dropped.
        """
        wanted: list[MiniBatch] = []
        for mb in upcoming:
            if len(wanted) >= self.ahead:
                break
            if needs_fetch(mb):
                wanted.append(mb)
        keep = {mb.id for mb in wanted}
        for mb_id in [i for i in self._fetches if i not in keep]:
            self.drop(mb_id)
        for mb in wanted:
            if mb.id not in self._fetches:
                fetch = _Fetch(mb, self.folder_of(mb))
                self._fetches[mb.id] = fetch
                fetch.thread.start()

    def take(self, mb: MiniBatch) -> MiniBatch:
        """Return ``mb`` with its inputs local: wait for its fetch, or fetch it now.

        Raise what its fetch raised, as :func:`stage_mini_batch` would have raised it.
        """
        fetch = self._fetches.pop(mb.id, None)
        if fetch is None:
            return stage_mini_batch(mb, self.folder_of(mb))
        if not fetch.done.is_set():
            waited = time.time() - fetch.started_at
            log.info("waiting for the inputs of %s, fetched ahead since %.2fs", mb.id, waited)
        fetch.done.wait()
        if fetch.error is not None:
            raise fetch.error
        assert fetch.staged is not None
        return fetch.staged

    def drop(self, mb_id: str) -> None:
        """Forget a mini-batch that will not run here: stop its fetch and remove its files."""
        fetch = self._fetches.pop(mb_id, None)
        if fetch is not None:
            log.info("dropped the inputs of %s fetched ahead", mb_id)
            fetch.drop()

    def close(self) -> None:
        """Drop every fetch still pending; wait a little for those in flight to stop."""
        fetches = list(self._fetches.values())
        for fetch in fetches:
            self.drop(fetch.mb.id)
        deadline = time.monotonic() + _CLOSE_WAIT
        for fetch in fetches:
            fetch.thread.join(max(0.0, deadline - time.monotonic()))

    @property
    def pending(self) -> list[str]:
        """The ids of the mini-batches fetched ahead and not yet taken, in the order started."""
        return list(self._fetches)


__all__ = ["Prefetch", "needs_fetch"]
