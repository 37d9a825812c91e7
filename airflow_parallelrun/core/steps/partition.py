"""The partition step: list and split the input, store the manifest, pack descriptors for the run tasks."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow_parallelrun.core.errors import OutputPathInUse
from airflow_parallelrun.core.inputs.datasets import Dataset, check_partition_keys_fit
from airflow_parallelrun.core.inputs.minibatch import LABEL_LIMIT, MiniBatch, describe_inputs
from airflow_parallelrun.core.storage.concurrent import map_ahead
from airflow_parallelrun.core.storage.manifest import RunLayout, describe_owner, new_run_key, write_manifest

if TYPE_CHECKING:
    from airflow_parallelrun.core.spec import RunSpec

log = logging.getLogger(__name__)


def partition(
    dataset: Dataset,
    spec: RunSpec,
    *,
    resume: bool = False,
    max_tasks: int | None = None,
    run_key: str | None = None,
    owner: dict[str, Any] | None = None,
    is_active: Callable[[dict[str, Any]], bool] | None = None,
) -> list[dict[str, Any]]:
    """List and split the input, store the manifest, and return the descriptors to map over.

    Consecutive mini-batches are packed as ``config.mini_batches_per_task`` says, and so that at
    most ``max_tasks`` descriptors come back; a descriptor's ``count`` says how many it holds.
    With ``resume``, an earlier run's results at the same ``output_path`` are kept when its
    input is unchanged (same files, sizes and modification times, same mini-batch size).

    Every partition starts a new run with its own ``run_key`` (minted when not given), stored in
    the manifest with ``owner``; only records carrying an accepted key count in this run. When
    an earlier run at the path has not finished and ``is_active(its owner)`` says it still runs,
    this raises ``OutputPathInUse`` and changes nothing: two runs never share one path's state.
    """
    layout = spec.layout()
    run_key = run_key or new_run_key()
    check_partition_keys_fit(dataset, spec.config.partition_keys)
    size = spec.config.batch_size(tabular=dataset.tabular)
    started, started_at = time.perf_counter(), time.time()
    with _split_ahead(dataset, spec, size, run_key=run_key, owner=owner, resume=resume) as split:
        earlier, batches, header = _take_over(layout, split, run_key, owner, is_active)
    header["partition_keys"] = list(spec.config.partition_keys or []) or None
    header["resumed"], header["resume_note"] = (
        _resumable(layout, header, len(batches), earlier) if resume else (False, "")
    )
    _clear_stale_state(layout, resumed=header["resumed"])
    adopted = list((earlier or {}).get("accepted_keys") or []) if header["resumed"] else []
    header.update(
        run_key=run_key, owner=owner, accepted_keys=[run_key, *adopted], config=spec.config.to_header()
    )
    # What the progress view and the summary's step times read (outputs/progress.py, steps.py).
    header.update(partition_started=started_at, items_total=_items_total(batches))
    write_manifest(layout, batches, header)
    descriptors = pack(batches, spec.config.run_task_count(len(batches), max_tasks))
    _log_partition(header, len(batches), size, len(descriptors), time.perf_counter() - started)
    return descriptors


def _items_total(batches: list[MiniBatch]) -> int | None:
    """Return the items of the whole input, or None when some mini-batch's are known only once read."""
    counts = [mb.items for mb in batches]
    return None if None in counts else sum(c for c in counts if c is not None)


def _split(
    dataset: Dataset, spec: RunSpec, size: Any, *, run_key: str, owner: Any, resume: bool
) -> tuple[list[MiniBatch], dict[str, Any]]:
    """List and split the input; a SQL input is read into its snapshot first (or reuses it)."""
    from airflow_parallelrun.core.inputs.splitting import partition_dataset
    from airflow_parallelrun.core.sql.source import SqlDataset

    keys = spec.config.partition_keys
    if isinstance(dataset, SqlDataset):
        from airflow_parallelrun.core.sql.splitting import partition_sql

        return partition_sql(
            dataset, size, spec.layout(), run_key=run_key, owner=owner, resume=resume, partition_keys=keys
        )
    return partition_dataset(dataset, size, keys)


@contextmanager
def _split_ahead(
    dataset: Dataset, spec: RunSpec, size: Any, **split: Any
) -> Iterator[Callable[[], tuple[list[MiniBatch], dict[str, Any]]]]:
    """Start listing and splitting a file or table input now; yield what returns the result, or raises.

    Listing and splitting such an input only reads it (the listing, the parquet footers), so it
    runs in a thread while the earlier run at the path is looked up and this run's summary is
    written: on an object store those round trips overlap, not add up. A SQL input is read into
    the run's storage: it is split when asked, after the path is taken over, as before.
    """
    from airflow_parallelrun.core.sql.source import SqlDataset

    if isinstance(dataset, SqlDataset):
        yield lambda: _split(dataset, spec, size, **split)
        return
    pool = ThreadPoolExecutor(1, thread_name_prefix="parallelrun-split")
    try:
        yield pool.submit(_split, dataset, spec, size, **split).result
    finally:
        # Raised before the result was asked for (the path is in use): the listing is left to end.
        pool.shutdown(wait=False, cancel_futures=True)


def _log_partition(header: dict[str, Any], batches: int, size: Any, tasks: int, seconds: float) -> None:
    keys = header.get("partition_keys")
    log.info(
        "partitioned %d input files into %d mini-batches (%s) for %d tasks in %.2fs (run key %s)%s",
        header["input_files"],
        batches,
        f"one per key group of {', '.join(keys)}" if keys else f"{size.value} {size.unit} each",
        tasks,
        seconds,
        header["run_key"],
        f"; {header['resume_note']}" if header["resume_note"] else "",
    )


def _take_over(
    layout: RunLayout,
    split: Callable[[], tuple[list[MiniBatch], dict[str, Any]]],
    run_key: str,
    owner: dict[str, Any] | None,
    is_active: Callable[[dict[str, Any]], bool] | None,
) -> tuple[dict[str, Any] | None, list[MiniBatch], dict[str, Any]]:
    """Take the path over from the earlier run (see ``_earlier_run``), then return the split input.

    Return the earlier run's manifest header, the mini-batches and the manifest facts of the
    input. A split that failed is told in the summary, then raised.
    """
    earlier, finished = _earlier_run(layout, owner, is_active)
    running = _mark_running(layout, run_key, owner, earlier, finished)
    try:
        batches, header = split()
    except Exception as exc:
        failed = {**running, "status": "failed", "step": "partition", "error": f"{type(exc).__name__}: {exc}"}
        layout.output.write_json(layout.summary, failed)
        raise
    return earlier, batches, header


def _mark_running(
    layout: RunLayout,
    run_key: str,
    owner: dict[str, Any] | None,
    earlier: dict[str, Any] | None,
    finished: bool,
) -> dict[str, Any]:
    """Write and return the summary of a run that has started: it says "running" until the aggregate ends.

    No summary of an earlier run survives a new one; what the next partition needs to know of
    the run whose state is still at the path is kept in it.
    """
    running = {
        "status": "running",
        "run_key": run_key,
        "owner": owner,
        "started_at": datetime.now(UTC).isoformat(),
        "previous_run_key": (earlier or {}).get("run_key"),
        "previous_run_finished": finished,
    }
    layout.output.write_json(layout.summary, running)
    return running


def _clear_stale_state(layout: RunLayout, *, resumed: bool) -> None:
    """Remove what a new run must not count of an earlier one's state at the path.

    A fresh run starts from nothing; a resumed one keeps the statuses and parts of its mini-batches.
    """
    stale: tuple[str, ...] = ("errors", "abort.json", "progress")
    stale += () if resumed else ("status", "parts", "manifest")
    out = layout.output
    # A remote store: each removal is a lookup and a delete; all at once, not one after another.
    for _ in map_ahead(lambda name: out.remove(layout.state(name)), stale, 0 if out.is_local else len(stale)):
        pass


def _earlier_run(
    layout: RunLayout,
    owner: dict[str, Any] | None,
    is_active: Callable[[dict[str, Any]], bool] | None,
) -> tuple[dict[str, Any] | None, bool]:
    """Return the manifest header of the earlier run at this path, if any, and whether it finished.

    Raise ``OutputPathInUse`` when it has not finished and still runs.

    An earlier run has finished when the summary is its own and final. One that has not, of the
    same owner (its partition task cleared and run again), or with no way to ask
    (``is_active`` or its owner missing), is taken over.
    """
    out = layout.output
    # One read each, no lookup first, both at once on a remote store (each a round trip).
    found, summary = map_ahead(
        out.read_json_if_exists, [layout.manifest, layout.summary], 0 if out.is_local else 2
    )
    if found is None:
        return None, True
    earlier, summary = dict(found), summary or {}
    other, other_owner = earlier.get("run_key"), earlier.get("owner")
    finished = bool(other) and (
        (summary.get("run_key") == other and summary.get("status") in ("succeeded", "failed"))
        # A later partition that failed before taking the path over kept what it knew.
        or (summary.get("previous_run_key") == other and bool(summary.get("previous_run_finished")))
    )
    if finished or not other or not other_owner or other_owner == owner or is_active is None:
        return earlier, finished
    try:
        active = is_active(other_owner)
    except Exception as exc:
        log.warning("cannot tell whether the run %s is still active", other_owner, exc_info=True)
        raise OutputPathInUse(
            f"output_path {layout.output.url} holds the state of another run that has not finished "
            f"({describe_owner(other_owner)}, run key {other}), and its state cannot be read "
            f"({type(exc).__name__}: {exc}). To be safe this run starts nothing. Give each run its own "
            "output_path (e.g. '/data/out/{{ run_id }}'); or, if that run is over, delete "
            f"{layout.output.url_of(layout.manifest)} and clear this task"
        ) from exc
    if active:
        raise OutputPathInUse(
            f"output_path {layout.output.url} is in use by another run that is still active "
            f"({describe_owner(other_owner)}, run key {other}); two runs at one path would mix their "
            "results, so this run starts nothing. Give each run its own output_path (e.g. "
            "'/data/out/{{ run_id }}'), or wait until that run has finished (or mark it failed) and "
            "clear this task"
        )
    return earlier, False


def _resumable(
    layout: RunLayout, header: dict[str, Any], total: int, earlier: dict[str, Any] | None
) -> tuple[bool, str]:
    """Tell whether an earlier run at this output path may be resumed, and say why or why not."""
    if earlier is None:
        return False, "resume: no earlier run at this output path; starting clean"
    if not earlier.get("run_key"):
        return False, (
            "resume: the earlier run at this output path was made by an older version without run keys; "
            "starting clean"
        )
    for key in ("fingerprint", "mini_batch_size", "kind", "format", "partition_keys", "partition_format"):
        if earlier.get(key) != header.get(key):
            what = "the input changed" if key == "fingerprint" else f"{key} changed"
            return False, (
                f"resume: {what} since the earlier run at this output path (files added, removed, resized "
                "or modified; for a SQL input, a new snapshot was read); starting clean"
            )
    if earlier.get("total_mini_batches") != total:
        return False, "resume: the mini-batches differ from the earlier run's; starting clean"
    return True, "resume: the input is unchanged; mini-batches that already succeeded are reused"


def pack(batches: list[MiniBatch], tasks: int | None = None) -> list[dict[str, Any]]:
    """Return ``tasks`` descriptors (one per mini-batch by default), each for consecutive ones.

    The packs differ in size by one at most, larger first, so the processes finish together.

    >>> from airflow_parallelrun.core.inputs.minibatch import MiniBatch
    >>> mbs = [MiniBatch(index=i, kind="files", files=(f"f{i}",)) for i in range(5)]
    >>> [(d["index"], d["count"]) for d in pack(mbs, 2)]
    [(0, 3), (3, 2)]
    >>> [(d["index"], d["count"]) for d in pack(mbs, 4)]
    [(0, 2), (2, 1), (3, 1), (4, 1)]
    >>> len(pack(mbs))
    5
    """
    if not batches:
        return []
    tasks = min(max(tasks or len(batches), 1), len(batches))
    size, larger = divmod(len(batches), tasks)
    descriptors = []
    start = 0
    for number in range(tasks):
        per_task = size + (1 if number < larger else 0)
        group = batches[start : start + per_task]
        start += per_task
        first, last = group[0], group[-1]
        if len(group) == 1:
            descriptors.append(first.descriptor())
            continue
        label = f"{first.id}..{last.id} ({len(group)} mini-batches) {describe_inputs(group)}"
        descriptors.append(
            {"id": first.id, "index": first.index, "count": len(group), "label": label[:LABEL_LIMIT]}
        )
    return descriptors


__all__ = ["new_run_key", "pack", "partition"]
