"""Claim files exclusively in storage: the ledger of claims, of the runs that took them, and of batches.

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

A trigger claims in batches: before it claims, it writes a batch record (``batches/<id>.json``)
naming the files it is about to take, and each claim names its batch. The record is removed once
the trigger has handed the batch's event to the triggerer. A trigger stopped in between (a
triggerer restart, a failover, a cancelled task) leaves the record behind, and the next trigger
of the same watch (same ``state_path``, ``path`` and ``pattern``) fires those files first.
Listing, settling and taking new files: ``new_files.py``.
"""

from __future__ import annotations

import hashlib
import json
import socket
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from airflow_parallelrun.core.storage.exclusive_create import (
    check_conditional_writes,
    check_exclusive_create,
    create_exclusive,
)
from airflow_parallelrun.core.storage.location import Location, Storage, call_with_retries

CLAIMS_FOLDER = "_parallelrun_claims"
_FILES = "files"
_RUNS = "runs"
_BATCHES = "batches"


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

    Creating a claim is exclusive, decided by the store in one step: on a local or shared POSIX
    folder (NFS included) a hard link, on S3 and Azure Blob a put with ``If-None-Match: *``, on
    ``memory://`` a lock (:mod:`~airflow_parallelrun.core.storage.exclusive_create`). Other
    filesystems are refused, as no atomic create-if-absent is documented for them.
    """

    def __init__(self, state_path: str, storage_options: Storage | None = None) -> None:
        self.loc = Location(state_path, storage_options)
        self.state_path = state_path
        check_exclusive_create(self.loc.fs, state_path)

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

    def claim(self, stat: FileStat, owner: str, batch: str | None = None) -> bool:
        """Claim one file for ``owner``; tell whether this call took it (False: someone had it)."""
        token = uuid.uuid4().hex
        record = {
            "batch": batch,
            "file": stat.url,
            "owner": owner,
            "claimed_at": datetime.now(UTC).isoformat(),
            "size": stat.size,
            "mtime": stat.mtime,
            "host": socket.gethostname(),
            "token": token,
        }
        path = self._file_claim(stat.url)
        data = json.dumps(record, indent=1, sort_keys=True).encode()
        call_with_retries(check_conditional_writes, self.loc.fs, self.loc.path)
        if call_with_retries(create_exclusive, self.loc.fs, path, data):
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
