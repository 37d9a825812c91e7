"""Take new files once: list them, wait until they settle, and claim each one exclusively in storage.

A file is identified by its full URL (a local file by its absolute path, as the partition step
names it). The ledger lives in storage, under ``state_path`` (by default
``<path>/_parallelrun_claims``), never on one worker's disk, so sensors and triggers on any
machine see the same claims. It holds one object per claimed file, named by the SHA-256 of the
file's URL and created with an exclusive create, so of two runs racing for a file exactly one
wins; it records who took the file, when, and the file's size and modification time.

A claimed file stays taken whatever becomes of the run that took it. A failed run keeps its
files: clearing its tasks scores the same list again (the list is in XCom, and a cleared sensor
takes back the files its own run claimed). :meth:`ClaimLedger.release` returns files to the pool,
so the next sensor or trigger takes them again.

A claim older than ``claim_retention`` (default 7 days, from the claim's own timestamp) is pruned
by the next poll, unless its file is still in the watched folder: removing that claim would make
the file new again and score it a second time, so such claims stay until the file goes.

A trigger claims in batches: before it claims, it writes a batch record (``batches/<id>.json``)
naming the files it is about to take, and each claim names its batch. The record is removed once
the trigger has handed the batch's event to the triggerer. A trigger stopped in between (a
triggerer restart, a failover, a cancelled task) leaves the record behind, and the next trigger
of the same watch (same ``state_path``, ``path`` and ``pattern``) fires those files first.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem

from airflow_parallelrun.core.errors import ConfigError
from airflow_parallelrun.core.inputs.paths import has_parent_segment
from airflow_parallelrun.core.storage.location import Location, call_with_retries, write_local_file

CLAIMS_FOLDER = "_parallelrun_claims"
#: How many files one trigger event or one sensor's XCom carries unless told otherwise.
DEFAULT_MAX_FILES = 1000
#: How long a claim is kept (seconds) unless told otherwise: 7 days.
DEFAULT_CLAIM_RETENTION = 7 * 24 * 3600.0
_FILES = "files"
_RUNS = "runs"
_BATCHES = "batches"
# A MemoryFileSystem lives in one process: a lock makes its check-then-create one step.
_MEMORY_LOCK = threading.Lock()


@dataclass(frozen=True)
class FileStat:
    """A listed file: its URL, size and modification stamp (whatever the storage reports)."""

    url: str
    size: int | None
    mtime: str


def default_state_path(path: str) -> str:
    """Return where the claims of files under ``path`` live unless told otherwise.

    >>> default_state_path("s3://bucket/incoming/")
    's3://bucket/incoming/_parallelrun_claims'
    """
    return f"{path.rstrip('/')}/{CLAIMS_FOLDER}"


def check_watch(path: Any, pattern: Any, settle_seconds: Any, max_files: Any) -> None:
    """Raise a ConfigError naming the argument, its value and the fix when one is invalid."""
    if not isinstance(path, str) or not path.strip():
        raise ConfigError(f"path={path!r} must be a folder: a local path or an fsspec URL, e.g. '/data/in'")
    if (
        not isinstance(pattern, str)
        or not pattern
        or pattern.startswith(("/", "\\"))
        or "://" in pattern
        or has_parent_segment(pattern)
    ):
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
    storage_options: dict[str, Any] | None = None,
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
    storage_options: dict[str, Any] | None,
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


def claim_key(url: str) -> str:
    """Return the name of a file's claim: the SHA-256 of its full URL.

    >>> claim_key("/data/in/a.png")[:12]
    '1d04eccb4497'
    """
    return hashlib.sha256(url.encode()).hexdigest()


def _epoch(info: dict[str, Any]) -> float | None:
    for key in ("mtime", "created", "LastModified", "last_modified", "updated"):
        value = info.get(key)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def claim_entries(folder: str, found: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """Return ``{claim key: timestamp}`` of the claim objects directly in ``folder`` among ``found``."""
    prefix = folder.rstrip("/") + "/"
    entries: dict[str, float | None] = {}
    for name, info in found.items():
        rest = name[len(prefix) :] if name.startswith(prefix) else ""
        # Temporary files of a claim being written start with "." and end with ".tmp".
        if rest.endswith(".json") and "/" not in rest and not rest.startswith("."):
            entries[rest.removesuffix(".json")] = _epoch(info)
    return entries


class ClaimLedger:
    """Claims on files, kept in storage at ``state_path``: one object per claimed file.

    Creating a claim is exclusive: on a local or shared POSIX folder (NFS included) by a hard
    link, which fails when the name exists; on ``memory://`` under a lock. Other filesystems are
    refused, as their ``open(path, "xb")`` is not known to be atomic.
    """

    def __init__(self, state_path: str, storage_options: dict[str, Any] | None = None) -> None:
        self.loc = Location(state_path, storage_options)
        self.state_path = state_path
        if not isinstance(self.loc.fs, (LocalFileSystem, MemoryFileSystem)):
            fs = type(self.loc.fs)
            raise ConfigError(
                f"state_path={state_path!r} is on {fs.__module__}.{fs.__name__} (protocol "
                f"{self.loc.fs.protocol!r}), where this package cannot create a claim exclusively, so two "
                "runs could take the same file; give a state_path on a local or shared POSIX folder that "
                "every worker and the triggerer mount (e.g. an NFS path), or memory:// in tests"
            )

    def _file_claim(self, url: str) -> str:
        return self.loc.join(_FILES, f"{claim_key(url)}.json")

    def _run_record(self, owner: str) -> str:
        return self.loc.join(_RUNS, f"{claim_key(owner)}.json")

    def taken(self) -> set[str]:
        """Return the claim keys of every taken file, with one listing call."""
        return set(self.entries())

    @property
    def files_folder(self) -> str:
        """Return the filesystem path of the folder holding one claim per taken file."""
        return self.loc.join(_FILES)

    def entries(self) -> dict[str, float | None]:
        """Return every claim key with its object's timestamp (seconds since the epoch), in one listing."""
        try:
            listed = call_with_retries(self.loc.fs.ls, self.files_folder, detail=True)
        except FileNotFoundError:
            return {}
        return claim_entries(self.files_folder, {str(i["name"]): i for i in listed})

    def prune(
        self, entries: dict[str, float | None], keep: Iterable[str], older_than: float, under: str
    ) -> list[str]:
        """Remove the claims made before ``older_than`` (epoch seconds) of files under ``under``.

        Return the URLs of the files whose claims were removed.

        ``entries`` come from a listing (:meth:`entries`); a claim whose key is in ``keep`` (files
        still in the folder) stays, and so does a claim of a file outside ``under``: another watch
        sharing this ledger decides about its own files. A candidate's record is read to check its
        own ``claimed_at`` before it is removed.
        """
        kept, folder, pruned = set(keep), under.rstrip("/") + "/", []
        for key, stamp in sorted(entries.items()):
            if key in kept or stamp is None or stamp >= older_than:
                continue
            path = self.loc.join(_FILES, f"{key}.json")
            try:
                record = dict(self.loc.read_json(path))
            except FileNotFoundError:
                continue
            url = str(record.get("file", ""))
            try:
                claimed = datetime.fromisoformat(str(record.get("claimed_at"))).timestamp()
            except ValueError:
                continue
            if claimed < older_than and url.startswith(folder):
                self.loc.remove(path)
                pruned.append(url)
        return pruned

    def record(self, url: str) -> dict[str, Any] | None:
        """Return the claim record of a file, or None when it is not taken."""
        path = self._file_claim(url)
        try:
            return dict(self.loc.read_json(path))
        except FileNotFoundError:
            return None

    def _create(self, path: str, data: bytes) -> bool:
        """Create ``path`` holding ``data`` unless it exists; tell whether this call created it."""
        fs = self.loc.fs
        if isinstance(fs, MemoryFileSystem):
            with _MEMORY_LOCK:
                if fs.exists(path):
                    return False
                fs.pipe_file(path, data)
                return True
        # A hard link is created whole or not at all, and fails when the name exists: an exclusive
        # create that never shows a half-written record.
        return write_local_file(path, data, exclusive=True)

    def claim(self, stat: FileStat, owner: str, batch: str | None = None) -> bool:
        """Claim one file for ``owner``; tell whether this call took it (False: someone had it)."""
        token = uuid.uuid4().hex
        record = {
            "batch": batch,
            "file": stat.url,
            "owner": owner,
            "claimed_at": datetime.now(timezone.utc).isoformat(),
            "size": stat.size,
            "mtime": stat.mtime,
            "host": socket.gethostname(),
            "token": token,
        }
        path = self._file_claim(stat.url)
        data = json.dumps(record, indent=1, sort_keys=True).encode()
        if call_with_retries(self._create, path, data):
            return True
        # A retried create may have succeeded the first time: the token tells our own claim apart.
        mine = self.record(stat.url)
        return mine is not None and mine.get("token") == token

    def claim_all(
        self,
        stats: Sequence[FileStat],
        owner: str,
        max_files: int | None = None,
        batch: str | None = None,
    ) -> list[str]:
        """Claim files in order, at most ``max_files``; return the URLs this call took.

        The exclusive create decides: a file someone took since it was listed is passed over.
        """
        won: list[str] = []
        for stat in stats:
            if max_files is not None and len(won) >= max_files:
                break
            if self.claim(stat, owner, batch):
                won.append(stat.url)
        return won

    def prune_runs(self, older_than: float) -> int:
        """Remove the records of what a task noted it would claim, written before ``older_than``.

        Such a record lets a retried or cleared sensor find its files again; past the retention it
        is dropped, and a sensor cleared later takes new files instead. Return how many went.
        """
        folder = self.loc.join(_RUNS)
        try:
            listed = call_with_retries(self.loc.fs.ls, folder, detail=True)
        except FileNotFoundError:
            return 0
        old = [str(i["name"]) for i in listed if (_epoch(i) or older_than) < older_than]
        for name in old:
            self.loc.remove(name)
        return len(old)

    def write_batch(self, batch: str, watch: dict[str, str], owner: str, urls: Sequence[str]) -> None:
        """Record (or rewrite) the batch ``batch``: the files it is claiming or claimed, not yet fired."""
        record = {"id": batch, "watch": watch, "owner": owner, "files": list(urls)}
        self.loc.write_json(self.loc.join(_BATCHES, f"{batch}.json"), record)

    def close_batch(self, batch: str) -> None:
        """Forget the batch ``batch``: its files were fired (or none was claimed)."""
        self.loc.remove(self.loc.join(_BATCHES, f"{batch}.json"))

    def unfired_batches(self, watch: dict[str, str]) -> list[tuple[str, list[str]]]:
        """Return ``(batch, files)`` of every batch of ``watch`` never fired, oldest first.

        ``files`` are the batch's files whose claims name that batch: the ones it took.
        """
        found = []
        for name in self.loc.listdir(self.loc.join(_BATCHES)):
            if not name.endswith(".json"):
                continue
            try:
                record = dict(self.loc.read_json(name))
            except FileNotFoundError:
                continue  # fired and closed by its own trigger meanwhile
            if record.get("watch") != watch:
                continue
            batch = str(record.get("id"))
            files = [u for u in record.get("files", []) if (self.record(u) or {}).get("batch") == batch]
            found.append((batch, files))
        return sorted(found)

    def note_intent(self, owner: str, urls: Sequence[str]) -> None:
        """Record the files ``owner`` is about to claim, so a retried task can find what it took."""
        self.loc.write_json(self._run_record(owner), {"owner": owner, "files": list(urls)})

    def claimed_by(self, owner: str) -> list[str] | None:
        """Return the files ``owner`` claimed before, in order, or None when it never tried."""
        try:
            intent = self.loc.read_json(self._run_record(owner))
        except FileNotFoundError:
            return None
        kept = []
        for url in intent.get("files", []):
            record = self.record(url)
            if record is not None and record.get("owner") == owner:
                kept.append(url)
        return kept

    def release(self, urls: Iterable[str]) -> list[str]:
        """Return files to the pool: remove their claims; return the URLs that were taken."""
        released = []
        for url in urls:
            path = self._file_claim(url)
            if self.loc.exists(path):
                self.loc.remove(path)
                released.append(url)
        return released


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
        storage_options: dict[str, Any] | None = None,
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
