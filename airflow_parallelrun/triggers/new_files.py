"""NewFilesTrigger: fire when new files settle under a folder; schedules DAGs through an AssetWatcher."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from airflow_parallelrun.core.errors import ConfigError

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
    see :mod:`airflow_parallelrun.core.claims`).

    With ``claim=True`` (the default, for an ``AssetWatcher``) the trigger claims the files itself
    and fires one event per poll that took any, with payload ``{"status": "success", "files":
    [<url>, ...], "path", "pattern", "state_path"}``; it runs until Airflow stops it. A claimed
    file never fires again, from this trigger or one rebuilt from the same arguments after the
    triggerer restarts. With ``claim=False`` (how ``NewFilesSensor`` defers) it fires once with
    the files it found, their sizes and modification times, and the sensor claims them.

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
        max_files: int | None = None,
        poke_interval: float = 30.0,
        claim: bool = True,
        owner: str | None = None,
    ) -> None:
        super().__init__()
        from airflow_parallelrun.core.claims import check_watch

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
            },
        )

    async def _storage_options(self) -> dict[str, Any] | None:
        if not self.conn_id:
            return None
        from airflow.sdk import BaseHook

        from airflow_parallelrun.operators.parallel_run import connection_storage_options

        return connection_storage_options(await BaseHook.aget_connection(self.conn_id))

    def _payload(self, files: list[str]) -> dict[str, Any]:
        return {
            "status": "success",
            "files": files,
            "path": self.path,
            "pattern": self.pattern,
            "state_path": self.state_path,
        }

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_parallelrun.core.claims import NewFiles

        try:
            options = await self._storage_options()
            watch = await asyncio.to_thread(
                NewFiles,
                self.path,
                self.pattern,
                state_path=self.state_path,
                settle_seconds=self.settle_seconds,
                max_files=self.max_files,
                storage_options=options,
            )
        except Exception as exc:
            if self.claim:
                raise
            yield TriggerEvent({"status": "error", "message": f"{type(exc).__name__}: {exc}"})
            return
        owner = self.owner or f"NewFilesTrigger {self.path} {self.pattern} (trigger {self.trigger_id})"
        while True:
            try:
                if self.claim:
                    files = await asyncio.to_thread(watch.take, owner)
                    if files:
                        self.log.info("claimed %d new file(s) under %s", len(files), self.path)
                        yield TriggerEvent(self._payload(files))
                else:
                    ready = await asyncio.to_thread(watch.settled)
                    if ready:
                        payload = self._payload([s.url for s in ready])
                        payload["stats"] = {s.url: [s.size, s.mtime] for s in ready}
                        yield TriggerEvent(payload)
                        return
            except Exception as exc:
                if not self.claim:
                    yield TriggerEvent({"status": "error", "message": f"{type(exc).__name__}: {exc}"})
                    return
                if isinstance(exc, ConfigError):
                    raise
                # A storage hiccup must not end a watcher: the next poll tries again.
                self.log.warning(
                    "listing %s failed, trying again in %ss: %s", self.path, self.poke_interval, exc
                )
            pause = watch.watch.seconds_to_settle()
            await asyncio.sleep(
                self.poke_interval if pause is None else min(self.poke_interval, pause + 0.01)
            )
