"""Overlap the requests of many small reads from a remote store, in order and in a bounded window.

On an object store each request waits a round trip (tens of milliseconds behind a real
network); reading a run's statuses, parts or parquet footers one after another pays it once per
object. :func:`map_ahead` keeps several of them in flight, in threads, and hands the results
back in the order of the items, so the caller's result is the same as a plain loop's.

Calling fsspec's filesystems from several threads is supported: s3fs and adlfs are both
``AsyncFileSystem`` subclasses whose blocking methods hand their coroutine to fsspec's one I/O
event loop (``fsspec.asyn.get_loop()``, a thread of its own) and wait for it, whatever thread
calls them; adlfs builds its filesystem on that same loop (``loop=loop or get_loop()``).
Local disk gains nothing from threads: callers pass ``ahead=0`` there and keep their plain loop.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: Small reads (statuses, parquet footers) in flight at once on a remote store.
READS_IN_FLIGHT = 16
#: Parts fetched ahead of the one being merged (each a local temporary file until merged).
PARTS_AHEAD = 8


def map_ahead(fn: Callable[[T], R], items: Iterable[T], ahead: int) -> Generator[R, None, None]:
    """Yield ``fn(item)`` for each item in order, computing up to ``ahead`` of them at once in threads.

    Bounded: ``items`` is consumed lazily and at most ``ahead`` calls are in flight or done and
    not yet taken, besides the result the caller holds. An error of one call is raised when its
    turn comes, as a plain loop would raise it (the calls after it that already started finish;
    the others are cancelled). ``ahead`` below 1 is the plain loop, in the caller's thread.

    >>> list(map_ahead(lambda x: x * x, range(5), 2)), list(map_ahead(str, [], 4))
    ([0, 1, 4, 9, 16], [])
    """
    if ahead < 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(ahead, thread_name_prefix="parallelrun-ahead") as pool:
        window: deque[Future[R]] = deque()
        try:
            for item in items:
                if len(window) >= ahead:
                    yield window.popleft().result()
                window.append(pool.submit(fn, item))
            while window:
                yield window.popleft().result()
        finally:
            for future in window:
                future.cancel()


__all__ = ["PARTS_AHEAD", "READS_IN_FLIGHT", "map_ahead"]
