"""Take new files once: list them, wait until they settle, and claim each one in the ledger.

A file is new when no claim names it (see ``claims.py``); it has settled once a listing has seen
its size and modification time unchanged for ``settle_seconds``. Each poll makes one listing
call. A claim older than ``claim_retention`` (default 7 days, from the claim's own timestamp) is
pruned by the next poll, unless its file is still in the watched folder: removing that claim
would make the file new again and score it a second time, so such claims stay until the file goes.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import Any

from airflow_parallelrun.core.errors import ConfigError
from airflow_parallelrun.core.inputs.paths import is_relative_glob
from airflow_parallelrun.core.storage.claims import (
    ClaimLedger,
    FileStat,
    claim_entries,
    claim_key,
    default_state_path,
)
from airflow_parallelrun.core.storage.location import Location, Storage, call_with_retries

#: How many files one trigger event or one sensor's XCom carries unless told otherwise.
DEFAULT_MAX_FILES = 1000
#: How long a claim is kept (seconds) unless told otherwise: 7 days.
DEFAULT_CLAIM_RETENTION = 7 * 24 * 3600.0


def check_watch(path: Any, pattern: Any, settle_seconds: Any, max_files: Any) -> None:
    """Raise a ConfigError naming the argument, its value and the fix when one is invalid."""
    if not isinstance(path, str) or not path.strip():
        raise ConfigError(f"path={path!r} must be a folder: a local path or an fsspec URL, e.g. '/data/in'")
    if not is_relative_glob(pattern):
        raise ConfigError(
            f"pattern={pattern!r} must be a glob relative to path, without '..', e.g. pattern='**/*.png'"
        )
    if isinstance(settle_seconds, bool) or not isinstance(settle_seconds, (int, float)) or settle_seconds < 0:
        raise ConfigError(
            f"settle_seconds={settle_seconds!r} must be a number of seconds >= 0: how long a file must keep "
            "its size and modification time before it is taken, e.g. settle_seconds=10"
        )
    if max_files is not None and (
        isinstance(max_files, bool) or not isinstance(max_files, int) or max_files < 1
    ):
        raise ConfigError(f"max_files={max_files!r} must be a positive whole number, or None for no cap")


def retention_seconds(claim_retention: Any) -> float | None:
    """Return ``claim_retention`` (a timedelta or seconds; None keeps claims forever) in seconds.

    >>> retention_seconds(timedelta(days=1)), retention_seconds(3600), retention_seconds(None)
    (86400.0, 3600.0, None)
    """
    if claim_retention is None:
        return None
    if isinstance(claim_retention, timedelta):
        claim_retention = claim_retention.total_seconds()
    if (
        isinstance(claim_retention, bool)
        or not isinstance(claim_retention, (int, float))
        or claim_retention <= 0
    ):
        raise ConfigError(
            f"claim_retention={claim_retention!r} must be a timedelta or a number of seconds > 0 (how long "
            "a claim is kept after its file left the folder), e.g. claim_retention=timedelta(days=7), "
            "or None to keep every claim"
        )
    return float(claim_retention)


def _stamp(info: dict[str, Any]) -> str:
    for key in ("mtime", "LastModified", "updated", "last_modified", "ETag", "created"):
        if info.get(key) not in (None, ""):
            return str(info[key])
    return ""


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Translate a glob to a regex over paths relative to the watched folder.

    ``*`` and ``?`` stay inside one folder, ``**/`` spans any number of folders, none included.

    >>> [bool(glob_regex("**/*.png").match(p)) for p in ("c.png", "a/b/c.png", "a/c.txt")]
    [True, True, False]
    >>> [bool(glob_regex("x/*.png").match(p)) for p in ("x/c.png", "x/y/c.png", "c.png")]
    [True, False, False]
    """
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 2 :]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1 : end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def list_files(
    path: str,
    pattern: str,
    *,
    exclude: str | None = None,
    storage_options: Storage | None = None,
) -> dict[str, FileStat]:
    """Return every file under ``path`` matching ``pattern``, by URL, with one listing call.

    Files under ``exclude`` (the claims folder, when it is inside ``path``) are left out. A
    missing folder lists as empty: files may simply not have arrived yet. A symlink is never a
    candidate: it could lead out of the folder.
    """
    loc = Location(path, storage_options)
    return _select(loc, find_files(loc), pattern, exclude, storage_options)


def find_files(loc: Location) -> dict[str, dict[str, Any]]:
    """List every file under a location with details, in one call; a missing folder is empty."""
    try:
        return dict(call_with_retries(loc.fs.find, loc.path, withdirs=False, detail=True))
    except FileNotFoundError:
        return {}


def _select(
    loc: Location,
    found: dict[str, dict[str, Any]],
    pattern: str,
    exclude: str | None,
    storage_options: Storage | None,
) -> dict[str, FileStat]:
    skip = Location(exclude, storage_options).path.rstrip("/") + "/" if exclude else None
    root, wanted = loc.path.rstrip("/") + "/", glob_regex(pattern)
    listed: dict[str, FileStat] = {}
    for name, info in sorted(found.items()):
        # fsspec lists a local symlink as type "other" (and "islink"): it is not a file here.
        if info.get("type") != "file" or not name.startswith(root) or (skip and name.startswith(skip)):
            continue
        if wanted.match(name[len(root) :]):
            url = loc.url_of(name)
            listed[url] = FileStat(url=url, size=info.get("size"), mtime=_stamp(info))
    return listed


class SettleWatch:
    """Remember each file's size and modification time between listings.

    A file has settled once a listing has seen it unchanged for ``settle_seconds``; a file still
    being written changes between listings and starts over.
    """

    def __init__(self, settle_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.settle_seconds = float(settle_seconds)
        self.clock = clock
        self._seen: dict[str, tuple[FileStat, float]] = {}

    def update(self, listing: dict[str, FileStat]) -> list[FileStat]:
        """Record a listing; return the files that have settled, in URL order."""
        now = self.clock()
        seen: dict[str, tuple[FileStat, float]] = {}
        for url, stat in listing.items():
            before = self._seen.get(url)
            seen[url] = before if before is not None and before[0] == stat else (stat, now)
        self._seen = seen
        return [stat for stat, since in seen.values() if now - since >= self.settle_seconds]

    def seconds_to_settle(self, exclude: Iterable[str] = ()) -> float | None:
        """Return how long until the next pending file (not in ``exclude``) could settle, or None."""
        skip, now = set(exclude), self.clock()
        waits = [
            self.settle_seconds - (now - since)
            for url, (_, since) in self._seen.items()
            if url not in skip and now - since < self.settle_seconds
        ]
        return max(0.0, min(waits)) if waits else None


class NewFiles:
    """Find files under ``path`` matching ``pattern`` that have settled and no one has claimed.

    Keep one instance between polls: it remembers what earlier listings saw, so a file settles
    without waiting inside a poll. Each poll makes one listing call: of the folder, which holds
    the ledger when ``state_path`` is the default; otherwise one more of the ledger. A take claims
    at most ``max_files`` files (default 1000); the rest wait for the next poll. Claims older than
    ``claim_retention`` of files no longer in the folder are pruned (see the module docstring).
    """

    def __init__(
        self,
        path: str,
        pattern: str = "**/*",
        *,
        state_path: str | None = None,
        settle_seconds: float = 10.0,
        max_files: int | None = DEFAULT_MAX_FILES,
        claim_retention: timedelta | float | None = DEFAULT_CLAIM_RETENTION,
        storage_options: Storage | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        check_watch(path, pattern, settle_seconds, max_files)
        self.retention = retention_seconds(claim_retention)
        self.path, self.pattern, self.max_files = path, pattern, max_files
        self.state_path = state_path or default_state_path(path)
        self.storage_options = storage_options
        self.loc = Location(path, storage_options)
        self.ledger = ClaimLedger(self.state_path, storage_options)
        self.watch = SettleWatch(settle_seconds, clock)
        self.sleep = sleep
        self._next_prune: float | None = None
        folder = self.ledger.files_folder
        # The default ledger is inside the folder: the folder's listing lists the claims too.
        self._ledger_in_listing = type(self.ledger.loc.fs) is type(self.loc.fs) and folder.startswith(
            self.loc.path.rstrip("/") + "/"
        )

    @property
    def key(self) -> dict[str, str]:
        """Name this watch in its batches: the trigger of the same path and pattern takes them over."""
        return {"path": self.path, "pattern": self.pattern}

    def settled(self, *, wait: bool = False) -> list[FileStat]:
        """Return the settled files no one has claimed, in URL order.

        With ``wait``, when none has settled yet but some are pending, sleep until the first one
        could settle and list again (a poll that remembers nothing still takes a file).
        """
        for attempt in range(2):
            found = find_files(self.loc)
            listing = _select(self.loc, found, self.pattern, self.state_path, self.storage_options)
            if self._ledger_in_listing:
                entries = claim_entries(self.ledger.files_folder, found)
            else:
                entries = self.ledger.entries()
            self._prune(entries, found)
            fresh = {url: stat for url, stat in listing.items() if claim_key(url) not in entries}
            ready = self.watch.update(fresh)
            pause = self.watch.seconds_to_settle(exclude=[s.url for s in ready])
            if ready or not wait or attempt or pause is None:
                return ready
            self.sleep(pause)
        return []

    def _prune(self, entries: dict[str, float | None], found: dict[str, dict[str, Any]]) -> None:
        """Prune expired claims, at most every tenth of the retention (and every 10 minutes at most)."""
        if self.retention is None:
            return
        now = self.watch.clock()
        if self._next_prune is not None and now < self._next_prune:
            return
        self._next_prune = now + min(600.0, self.retention / 10)
        present = [claim_key(self.loc.url_of(name)) for name in found]
        root = self.loc.url_of(self.loc.path)
        cutoff = time.time() - self.retention
        for url in self.ledger.prune(entries, present, cutoff, root):
            entries.pop(claim_key(url), None)
        self.ledger.prune_runs(cutoff)

    def take(self, owner: str, *, wait: bool = False, remember: bool = False) -> list[str]:
        """Claim the settled, unclaimed files for ``owner`` (at most ``max_files``); return their URLs."""
        ready = self.settled(wait=wait)
        return self.claim(ready, owner, remember=remember) if ready else []

    def claim(self, stats: Sequence[FileStat], owner: str, *, remember: bool = False) -> list[str]:
        """Claim the given files for ``owner``; return the URLs taken.

        With ``remember``, the files are noted under ``owner`` first, so that ``owner`` (one task
        of one DAG run) retried or cleared gets back what it took, see :meth:`ClaimLedger.claimed_by`.
        """
        if remember:
            self.ledger.note_intent(owner, [s.url for s in stats])
        return self.ledger.claim_all(stats, owner, self.max_files)

    def take_batch(self, owner: str) -> tuple[str, list[str]] | None:
        """Claim settled files for ``owner`` as one batch; return ``(batch, files)``, or None if none.

        The batch is recorded before any of its files is claimed and stays recorded until
        :meth:`ClaimLedger.close_batch`: whatever stops the caller before it fires the files,
        :meth:`ClaimLedger.unfired_batches` finds them.
        """
        ready = self.settled()
        if not ready:
            return None
        batch = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        cap = self.max_files or len(ready)
        won: list[str] = []
        for start in range(0, len(ready), cap):
            # The record names every file this batch may claim before it claims any of them.
            chunk = ready[start : start + cap]
            named = [s.url for s in ready[: start + cap]]
            self.ledger.write_batch(batch, self.key, owner, named)
            won += self.ledger.claim_all(chunk, owner, cap - len(won), batch=batch)
            if len(won) >= cap:
                break
        if not won:
            self.ledger.close_batch(batch)
            return None
        self.ledger.write_batch(batch, self.key, owner, won)
        return batch, won
