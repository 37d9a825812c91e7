"""NewFilesTrigger: fire when new files settle under a folder; schedules DAGs through an AssetWatcher."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from airflow_parallelrun.core.errors import ConfigError
from airflow_parallelrun.core.storage.new_files import DEFAULT_CLAIM_RETENTION, DEFAULT_MAX_FILES

#: The Jinja expression that renders the files of a run's triggering NewFilesTrigger events as a
#: JSON list, for ``FileDataset(files=TRIGGERING_FILES)``.
TRIGGERING_FILES = (
    "{{ triggering_asset_events.values() | sum(start=[]) "
    "| map(attribute='extra.payload.files', default=[]) | sum(start=[]) | unique | list | tojson }}"
)


class NewFilesTrigger(BaseEventTrigger):
    """Poll ``path`` every ``poke_interval`` seconds for new files matching ``pattern``.

    A file counts once it has kept its size and modification time for ``settle_seconds`` and no
    one has claimed it in the ledger at ``state_path`` (default ``<path>/_parallelrun_claims``,
    see :mod:`airflow_parallelrun.core.storage.claims`).

    With ``claim=True`` (the default, for an ``AssetWatcher``) the trigger claims the files itself
    and fires one event per poll that took any, with payload ``{"status": "success", "files":
    [<url>, ...], "batch", "path", "pattern", "state_path"}``; it runs until Airflow stops it. One
    event carries at most ``max_files`` files (default 1000); the rest go in the next poll's event.
    A claimed file is fired at least once: the claims of one event form a batch recorded in the
    ledger before the files are claimed and removed once the triggerer has taken the event. A
    trigger stopped in between (a triggerer restart, a failover, a re-parse that replaces the
    watcher) leaves its batch, and the next trigger of the same ``state_path``, ``path`` and
    ``pattern`` fires it first, with the same ``batch`` id. A claimed and fired file never fires
    again. With ``claim=False`` (how ``NewFilesSensor`` defers) it fires once with the files it
    found (at most ``max_files``), their sizes and modification times, and the sensor claims them.

    Claims older than ``claim_retention`` (a timedelta or seconds, default 7 days; None keeps
    them all) are pruned, except those of files still in the folder, which would fire again.

    ``conn_id`` names the Airflow Connection with the storage's credentials; it is resolved when
    the trigger runs, so no secret is in the serialized arguments. File-system calls run in a
    thread: the triggerer's event loop is never blocked.
    """

    def __init__(
        self,
        *,
        path: str,
        pattern: str = "**/*",
        conn_id: str | None = None,
        state_path: str | None = None,
        settle_seconds: float = 10.0,
        max_files: int | None = DEFAULT_MAX_FILES,
        poke_interval: float = 30.0,
        claim: bool = True,
        owner: str | None = None,
        claim_retention: timedelta | float | None = DEFAULT_CLAIM_RETENTION,
    ) -> None:
        super().__init__()
        from airflow_parallelrun.core.storage.new_files import check_watch, retention_seconds

        check_watch(path, pattern, settle_seconds, max_files)
        if (
            isinstance(poke_interval, bool)
            or not isinstance(poke_interval, (int, float))
            or poke_interval <= 0
        ):
            raise ConfigError(f"poke_interval={poke_interval!r} must be a number of seconds > 0, e.g. 30")
        self.path = path
        self.pattern = pattern
        self.conn_id = conn_id
        self.state_path = state_path
        self.settle_seconds = settle_seconds
        self.max_files = max_files
        self.poke_interval = poke_interval
        self.claim = claim
        self.owner = owner
        self.claim_retention = retention_seconds(claim_retention)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "path": self.path,
                "pattern": self.pattern,
                "conn_id": self.conn_id,
                "state_path": self.state_path,
                "settle_seconds": self.settle_seconds,
                "max_files": self.max_files,
                "poke_interval": self.poke_interval,
                "claim": self.claim,
                "owner": self.owner,
                "claim_retention": self.claim_retention,
            },
        )

    async def _filesystem(self) -> Any:
        """Return the Connection's filesystem for ``path`` (None without one), fetched without blocking."""
        if not self.conn_id:
            return None
        from airflow_parallelrun.hooks.storage import ParallelRunStorageHook

        return await ParallelRunStorageHook(self.conn_id).afilesystem(self.path)

    def _payload(self, files: list[str], batch: str | None = None) -> dict[str, Any]:
        payload = {
            "status": "success",
            "files": files,
            "path": self.path,
            "pattern": self.pattern,
            "state_path": self.state_path,
        }
        if batch is not None:
            payload["batch"] = batch
        return payload

    def _what(self) -> str:
        return f"path={self.path!r} pattern={self.pattern!r} state_path={self.state_path!r}"

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            watch = await self._start_watch()
        except Exception as exc:
            self.log.exception("NewFilesTrigger could not start watching %s", self._what())
            if self.claim:
                raise
            yield TriggerEvent({"status": "error", "message": self._start_failure(exc)})
            return
        owner = self.owner or f"NewFilesTrigger {self.path} {self.pattern} (trigger {self.trigger_id})"
        # None: not looked for yet. A sensor's trigger claims nothing, so it has no batches.
        self._unfired: list[tuple[str, list[str]]] | None = None if self.claim else []
        while True:
            self._step = "listing the folder and the claims"
            try:
                async for event in self._poll(watch, owner):
                    yield event
                    if not self.claim:
                        return  # a sensor's trigger fires once
            except Exception as exc:
                message = (
                    f"{self._step} failed for {self._what()}: {type(exc).__name__}: {exc}; check the path, "
                    "the Connection and the storage (the triggerer's log has the traceback)"
                )
                if self.claim and not isinstance(exc, ConfigError):
                    # A storage hiccup must not end a watcher: the next poll tries again.
                    self.log.warning("%s; trying again in %ss", message, self.poke_interval, exc_info=True)
                else:
                    self.log.exception("NewFilesTrigger stops: %s", message)
                    if self.claim:
                        raise
                    yield TriggerEvent({"status": "error", "message": message})
                    return
            pause = watch.watch.seconds_to_settle()
            await asyncio.sleep(
                self.poke_interval if pause is None else min(self.poke_interval, pause + 0.01)
            )

    async def _start_watch(self) -> Any:
        """Build the watch of this trigger's folder, its file-system calls in a thread."""
        from airflow_parallelrun.core.storage.new_files import NewFiles

        fs = await self._filesystem()
        return await asyncio.to_thread(
            NewFiles,
            self.path,
            self.pattern,
            state_path=self.state_path,
            settle_seconds=self.settle_seconds,
            max_files=self.max_files,
            claim_retention=self.claim_retention,
            storage_options=fs,
        )

    def _start_failure(self, exc: Exception) -> str:
        step = f"the Connection {self.conn_id!r} or " if self.conn_id else ""
        return (
            f"could not start watching {self._what()}: {type(exc).__name__}: {exc}; check {step}the "
            "path and the storage (the triggerer's log has the traceback)"
        )

    async def _poll(self, watch: Any, owner: str) -> AsyncIterator[TriggerEvent]:
        """Yield this poll's events: unfired batches first, then newly claimed (or settled) files.

        A batch is closed only once the triggerer has taken its event (the generator is resumed
        after the yield); a trigger stopped at the yield leaves it open for the next one to fire.
        """
        if self._unfired is None:
            self._step = "finding batches an earlier trigger of this watch claimed but never fired"
            self._unfired = await asyncio.to_thread(watch.ledger.unfired_batches, watch.key)
        while self._unfired:
            batch, files = self._unfired[0]
            if files:
                self.log.info("firing %d file(s) of unfired batch %s again", len(files), batch)
                yield TriggerEvent(self._payload(files, batch))
            self._step = f"closing the fired batch {batch}"
            await asyncio.to_thread(watch.ledger.close_batch, batch)
            self._unfired.pop(0)
        if self.claim:
            self._step = "listing the folder and claiming settled files"
            taken = await asyncio.to_thread(watch.take_batch, owner)
            if taken:
                batch, files = taken
                self.log.info("claimed %d new file(s) under %s", len(files), self.path)
                yield TriggerEvent(self._payload(files, batch))
                self._step = f"closing the fired batch {batch}"
                await asyncio.to_thread(watch.ledger.close_batch, batch)
            return
        ready = await asyncio.to_thread(watch.settled)
        if ready:
            ready = ready[: self.max_files] if self.max_files else ready
            payload = self._payload([s.url for s in ready])
            payload["stats"] = {s.url: [s.size, s.mtime] for s in ready}
            yield TriggerEvent(payload)
