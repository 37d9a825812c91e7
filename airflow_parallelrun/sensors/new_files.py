"""NewFilesSensor: wait for new, settled files under a folder, claim them, and return their URLs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator
from airflow.sdk.bases.sensor import PokeReturnValue

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_parallelrun.core.storage.new_files import NewFiles


class NewFilesSensor(BaseSensorOperator):
    """Wait until files matching ``pattern`` appear under ``path`` that no run has taken; take them.

    A file is taken once it has kept its size and modification time for ``settle_seconds`` (a
    file still being written is left for later), and only if this task claims it in the ledger
    at ``state_path`` (default ``<path>/_parallelrun_claims``, left out of the listing): of two
    overlapping runs, exactly one gets each file. The task returns the claimed files' URLs (at
    most ``max_files``, default 1000; the rest wait for the next run) through XCom, so
    ``FileDataset(files=sensor.output)`` scores them.

    Deferrable by default: the triggerer watches the folder (``NewFilesTrigger`` with
    ``claim=False``) and the resumed task claims what it reported, deferring again if an
    overlapping run took it all first. ``deferrable=False`` pokes, in ``mode="poke"`` or
    ``"reschedule"``; a rescheduled poke remembers nothing, so it may wait up to
    ``settle_seconds`` inside the poke for a file to settle.

    Claimed files stay taken when the run fails. Clearing the run's tasks scores the same files:
    a cleared (or retried) sensor returns the files its own task claimed before.
    ``ClaimLedger(state_path).release(files)`` returns files to the pool. ``conn_id`` names the
    Airflow Connection with the storage's credentials, used for ``path`` and ``state_path``.
    ``path``, ``pattern`` and ``state_path`` are templated; once rendered, each must stay inside
    the folder its template pins (``"/data/in/{{ params.folder }}"`` may only name a folder under
    ``/data/in``) and hold no ``..`` segment. Claims older than ``claim_retention`` (default 7 days)
    of files no longer in the folder are pruned.
    """

    template_fields: Sequence[str] = ("path", "pattern", "state_path")
    ui_color = "#fce8e6"

    def __init__(
        self,
        *,
        path: str,
        pattern: str = "**/*",
        conn_id: str | None = None,
        state_path: str | None = None,
        settle_seconds: float = 10.0,
        max_files: int | None = 1000,
        deferrable: bool = True,
        poke_interval: timedelta | float = 30,
        claim_retention: timedelta | float | None = timedelta(days=7),
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, **kwargs)
        from airflow_parallelrun.core.storage.new_files import check_watch, retention_seconds

        # The pattern may be a template: it is checked in execute(), once rendered, with the rest.
        check_watch(path, "*", settle_seconds, max_files)
        self.claim_retention = retention_seconds(claim_retention)
        # Kept unrendered: a rendered path must stay inside the folder its template pins.
        self._templates = {"path": path, "state_path": state_path}
        self.path = path
        self.pattern = pattern
        self.conn_id = conn_id
        self.state_path = state_path
        self.settle_seconds = settle_seconds
        self.max_files = max_files
        self.deferrable = deferrable
        self._watch: NewFiles | None = None

    @staticmethod
    def claim_owner(context: Context) -> str:
        """Name this task instance in the claims: the same for its retries and after a clear."""
        ti = context["ti"]
        return f"{ti.dag_id}/{ti.run_id}/{ti.task_id}/{ti.map_index}"

    def watch(self) -> NewFiles:
        """Return the watch of this task's folder, built once (a poking sensor keeps what it saw)."""
        if self._watch is None:
            from airflow_parallelrun.core.inputs.paths import check_path
            from airflow_parallelrun.core.storage.new_files import NewFiles
            from airflow_parallelrun.hooks.storage import ParallelRunStorageHook

            check_path("path", str(self.path), self._templates["path"])
            if self.state_path is not None:
                check_path("state_path", str(self.state_path), self._templates["state_path"])
            # The Connection's filesystem (the provider's for s3://, abfs://) serves path and state_path.
            fs = ParallelRunStorageHook(self.conn_id).filesystem(str(self.path)) if self.conn_id else None
            self._watch = NewFiles(
                self.path,
                self.pattern,
                state_path=self.state_path,
                settle_seconds=self.settle_seconds,
                max_files=self.max_files,
                claim_retention=self.claim_retention,
                storage_options=fs,
            )
        return self._watch

    def execute(self, context: Context) -> Any:
        watch = self.watch()
        owner = self.claim_owner(context)
        before = watch.ledger.claimed_by(owner)
        if before:
            self.log.info("this task claimed %d file(s) before; returning them again", len(before))
            return before
        if not self.deferrable:
            return super().execute(context)
        files = watch.take(owner, remember=True)
        if files:
            return self._done(files)
        self._defer(owner)

    def poke(self, context: Context) -> PokeReturnValue:
        files = self.watch().take(self.claim_owner(context), wait=self.reschedule, remember=True)
        if files:
            self._done(files)
        return PokeReturnValue(is_done=bool(files), xcom_value=files or None)

    def _defer(self, owner: str) -> None:
        from airflow_parallelrun.triggers.new_files import NewFilesTrigger

        self.defer(
            trigger=NewFilesTrigger(
                path=self.path,
                pattern=self.pattern,
                conn_id=self.conn_id,
                state_path=self.state_path,
                settle_seconds=self.settle_seconds,
                max_files=self.max_files,
                poke_interval=self.poke_interval,
                claim=False,
                owner=owner,
                claim_retention=self.claim_retention,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> list[str]:
        """Claim the files the trigger reported that are still unchanged; defer again if none is left."""
        from airflow.sdk.exceptions import AirflowException

        from airflow_parallelrun.core.storage.new_files import list_files

        if not isinstance(event, dict) or event.get("status") != "success":
            message = event.get("message") if isinstance(event, dict) else event
            raise AirflowException(
                f"watching {self.path!r} for {self.pattern!r} failed: {message}; check the path, the "
                f"Connection {self.conn_id!r} and the storage, then clear this task"
            )
        watch = self.watch()
        now = list_files(
            watch.path, watch.pattern, exclude=watch.state_path, storage_options=watch.storage_options
        )
        stats = event.get("stats") or {}
        # Only files unchanged since the trigger saw them settle: one rewritten meanwhile waits again.
        unchanged = [
            now[url]
            for url in event.get("files", [])
            if url in now and [now[url].size, now[url].mtime] == stats.get(url)
        ]
        owner = self.claim_owner(context)
        files = watch.claim(unchanged, owner, remember=True)
        if files:
            return self._done(files)
        self.log.info("an overlapping run took the files first; waiting for more")
        self._defer(owner)
        return []

    def _done(self, files: list[str]) -> list[str]:
        shown = ", ".join(files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")
        self.log.info("claimed %d new file(s) under %s: %s", len(files), self.path, shown)
        return files
