"""Report on every scoring run that updates the ``parallelrun_scores`` asset, from its event's metadata.

Scheduled on the asset: Airflow starts a run once one or more scoring runs have emitted an event
since the last report, and hands their events to the task as ``triggering_asset_events``. For each
event, ``report`` takes the run's counts and merged output URL from the event's extra, counts the
rows of that output and checks they match ``succeeded_items``; it writes
``<data>/reports/<run id>.json`` and ``.md`` (one line per scoring run) and fails if any output
does not hold the rows its run counted.

An output on the deployment's store (the scoring DAG ran with ``data_dir`` there) is read through
the Connection ``$PARALLELRUN_EXAMPLES_CONN_ID``. The reports stay in the local examples folder:
this DAG is started by asset events, not by a form, so it has no ``data_dir`` to choose.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import DAG, task
from parallelrun_examples.scoring_assets import SCORES
from parallelrun_examples.settings import examples_dir

DATA = examples_dir()
log = logging.getLogger(__name__)

with DAG(
    dag_id="parallelrun_report",
    schedule=[SCORES],
    catchup=False,
    tags=["parallelrun", "example"],
    doc_md=__doc__,
) as dag:

    @task(inlets=[SCORES])
    def report(triggering_asset_events: Any = None, dag_run: Any = None) -> dict[str, Any]:
        """Write the report of the scoring runs whose events triggered this run; fail on a row mismatch."""
        from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
        from parallelrun_examples.on_store import store_filesystem
        from parallelrun_examples.report import format_markdown, report_entry, write_report
        from parallelrun_examples.settings import is_on_store

        events = list(triggering_asset_events[SCORES]) if triggering_asset_events else []
        if not events:
            raise AirflowSkipException(
                "no parallelrun_scores event triggered this run (a manual run?): nothing to report"
            )
        entries = []
        for e in sorted(events, key=lambda e: e.timestamp):
            output = str(e.extra.get("output") or "")
            fs = store_filesystem(output) if is_on_store(output) else None
            entries.append(report_entry(e.extra, source=f"{e.source_dag_id}/{e.source_run_id}", fs=fs))
        path = write_report(f"{DATA}/reports", dag_run.run_id, entries)
        log.info("report written to %s\n%s", path, format_markdown(entries))
        mismatched = [e for e in entries if e["rows_match"] is False]
        if mismatched:
            raise AirflowFailException(
                "; ".join(
                    f"{e['output']} holds {e['output_rows']} rows but run {e['run_id']} counted "
                    f"{e['succeeded_items']} succeeded items"
                    for e in mismatched
                )
            )
        return {"report": str(path), "runs": len(entries)}

    report()
