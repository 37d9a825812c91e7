"""Print where the newest parallel run under a folder put its merged output, summary and report."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(root: str) -> int:
    summaries = sorted(Path(root).glob("**/_parallelrun/summary.json"), key=lambda p: p.stat().st_mtime)
    if not summaries:
        print(f"no parallel run summary under {root}", file=sys.stderr)
        return 1
    path = summaries[-1]
    summary = json.loads(path.read_text())
    print()
    print(f"status:        {summary['status']}")
    print(
        f"mini-batches:  {summary['succeeded_mini_batches']} succeeded, "
        f"{summary['failed_mini_batches']} failed of {summary['total_mini_batches']}"
    )
    print(
        f"items:         {summary['succeeded_items']} succeeded, {summary['failed_items']} failed "
        f"of {summary['total_items']}"
    )
    print(f"merged output: {summary['output'] or 'none (output_action summary_only)'}")
    sql = summary.get("sql_output")
    if sql:
        where = f"{sql['table']} of {sql['database']} ({sql['if_exists']})"
        print(f"SQL output:    {sql['rows_written']} rows into {where}")
    print(f"summary:       {path}")
    print(f"report:        {summary['report']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "."))
