"""Turn the raw measurements into the figures, and the figures into a markdown table for the README."""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks import fixed_cost

WORKLOAD_TITLES = {
    "a": "(a) tabular",
    "b": "(b) files",
    "c": "(c) slow init()",
    "d": "(d) SQL",
    "f": "(f) fixed cost",
}
BASELINE = "process-pool"


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def _max(values: list[Any]) -> Any:
    values = [v for v in values if v is not None]
    return max(values) if values else None


def _probe(result: dict[str, Any], key: str) -> Any:
    probe = result.get("merge_probe") or {}
    return probe.get(key)


def _figures(rows: list[dict[str, Any]], baseline: dict[str, Any] | None) -> dict[str, Any]:
    first = rows[0]
    walls = [r["wall_s"] for r in rows if r.get("ok") and r.get("wall_s") is not None]
    median = _median(walls)
    figures: dict[str, Any] = {
        "workload": first["workload"],
        "job": first["job"],
        "contender": first["contender"],
        "mini_batches": first["mini_batches"],
        "items": first["items"],
        "ok": all(r.get("ok") for r in rows),
        "errors": [r["error"] for r in rows if r.get("error")],
        "walls_s": [r.get("wall_s") for r in rows],
        "wall_median_s": median,
        "items_per_s": round(first["items"] / median, 1) if median else None,
        "worker_peak_rss_mb": _max([r.get("worker_peak_rss_mb") for r in rows]),
        "workers_seen": _max([r.get("workers_seen") for r in rows]),
        "merge_peak_rss_mb": _max([_probe(r, "peak_rss_mb") for r in rows]),
        "merge_step_mb": _max([_probe(r, "step_mb") for r in rows]),
        "merge_seconds": _median([_probe(r, "seconds") for r in rows if _probe(r, "seconds") is not None]),
        "aggregate_task_peak_rss_mb": _max([r.get("aggregate_task_peak_rss_mb") for r in rows]),
        "partition_task_peak_rss_mb": _max([r.get("partition_task_peak_rss_mb") for r in rows]),
        "run_task_peak_rss_mb": _max([r.get("run_task_peak_rss_mb") for r in rows]),
        "tree_peak_rss_mb": _max([r.get("tree_peak_rss_mb") for r in rows]),
        "tree_first_rss_mb": _max([r.get("tree_first_rss_mb") for r in rows]),
        "distinct_ids": _max([(r.get("digest") or {}).get("distinct_ids") for r in rows]),
        "init_calls": [r.get("init_calls") for r in rows],
        "engine_overhead_ms_per_mini_batch": _median(
            [
                r["report"]["engine_overhead_ms_per_mini_batch"]
                for r in rows
                if r.get("ok") and r.get("report")
            ]
        ),
        "ti_overhead_ms_per_mini_batch": _median(
            [
                r["task_instances"]["ti_overhead_ms_per_mini_batch"]
                for r in rows
                if r.get("ok")
                and (r.get("task_instances") or {}).get("ti_overhead_ms_per_mini_batch") is not None
            ]
        ),
        "task_instances": _max([(r.get("task_instances") or {}).get("run") for r in rows]),
        # A contender that computes nothing (airflow-floor) has no digest to compare.
        "digests": sorted({d.get("sha256") or "" for r in rows if (d := r.get("digest")) is not None}),
        "rows": _max([(r.get("digest") or {}).get("rows") for r in rows]),
    }
    base_wall = baseline.get("wall_median_s") if baseline else None
    figures["ratio_to_baseline"] = figures["overhead_ms_per_mini_batch"] = None
    if median and base_wall:
        figures["ratio_to_baseline"] = round(median / base_wall, 3)
    # The floor is one call with no mini-batches: an overhead per mini-batch means nothing there.
    if median and base_wall and first["contender"] != "floor":
        figures["overhead_ms_per_mini_batch"] = round(1000 * (median - base_wall) / first["mini_batches"], 1)
    if baseline and baseline["digests"] and figures["digests"] and figures["ok"]:
        figures["same_output_as_baseline"] = figures["digests"] == baseline["digests"] and all(
            figures["digests"]
        )
    else:
        figures["same_output_as_baseline"] = None
    return figures


def _group(results: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["job"], r["contender"]), []).append(r)
    return groups


def _summarize_results(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups = _group(results)
    baselines = {
        job: _figures(rows, None) for (job, contender), rows in groups.items() if contender == BASELINE
    }
    out = []
    for (job, contender), rows in groups.items():
        out.append(baselines[job] if contender == BASELINE else _figures(rows, baselines.get(job)))
    # The baseline compares with itself: equal by definition, ratio 1.
    for figures in baselines.values():
        figures["ratio_to_baseline"] = 1.0 if figures["wall_median_s"] else None
        figures["overhead_ms_per_mini_batch"] = 0.0 if figures["wall_median_s"] else None
    return out


def summarize(record: dict[str, Any]) -> dict[str, Any]:
    """Return the figures per workload and contender, the scaling rows, and how each grows with size."""
    main = _summarize_results(record["results"])
    scaling = _summarize_results(record["scaling"])
    probes = {p["job"]: p for p in record.get("partition_probes", [])}
    for figures in scaling:
        # Partitioning is ours alone; the probe measured it once per input.
        probe = probes.get(figures["job"], {}) if figures["contender"].startswith("ours") else {}
        figures["partition_peak_rss_mb"] = probe.get("peak_rss_mb")
        figures["partition_step_mb"] = probe.get("step_mb")
        figures["seconds_per_file"] = (
            round(figures["wall_median_s"] / figures["mini_batches"], 3) if figures["wall_median_s"] else None
        )
    growth: dict[str, Any] = {}
    for contender in sorted({f["contender"] for f in scaling}):
        mine = sorted((f for f in scaling if f["contender"] == contender), key=lambda f: f["mini_batches"])
        if len(mine) < 2:
            continue
        small, large = mine[0], mine[-1]

        def ratio(key: str, small: dict[str, Any] = small, large: dict[str, Any] = large) -> float | None:
            a, b = small.get(key), large.get(key)
            return round(b / a, 2) if a and b else None

        growth[contender] = {
            "input_ratio": round(large["mini_batches"] / small["mini_batches"], 2),
            "time_ratio": ratio("wall_median_s"),
            "worker_memory_ratio": ratio("worker_peak_rss_mb"),
            "merge_memory_ratio": ratio("merge_peak_rss_mb"),
            "partition_memory_ratio": ratio("partition_peak_rss_mb"),
        }
    return {
        "main": main,
        "scaling": scaling,
        "growth": growth,
        "partition_probes": list(probes.values()),
        "remote": _remote(main),
        "fixed_cost": fixed_cost.summarize(record["results"]),
    }


def _remote(main: list[dict[str, Any]]) -> dict[str, Any]:
    """Return, per contender, (a) on S3 against (a) on local disk, and each one's ratio to the pool.

    The issue's goals: ours on S3 within 1.2x of ours on local disk, and ours' ratio to the pool
    on S3 no worse than on local disk.
    """
    walls = {(f["job"], f["contender"]): f for f in main if f["workload"] == "a"}
    out: dict[str, Any] = {}
    for (job, contender), remote in walls.items():
        local = walls.get(("a", contender))
        if (
            not job.endswith("-s3")
            or local is None
            or not (remote["wall_median_s"] and local["wall_median_s"])
        ):
            continue
        out[contender] = {
            "local_s": local["wall_median_s"],
            "remote_s": remote["wall_median_s"],
            "remote_to_local": round(remote["wall_median_s"] / local["wall_median_s"], 2),
            "local_to_pool": local.get("ratio_to_baseline"),
            "remote_to_pool": remote.get("ratio_to_baseline"),
        }
    return out


def _remote_lines(record: dict[str, Any]) -> list[str]:
    remote = record["summary"].get("remote") or {}
    store = record.get("store") or {}
    if not remote:
        return []
    lines = [
        "",
        f"(a) on S3 (moto's server behind a proxy adding {store.get('latency_ms', '?'):g} ms per request) "
        "against (a) on local disk:",
        "",
        "| contender | local s | S3 s | S3 / local | x pool, local | x pool, S3 |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for contender, f in remote.items():
        lines.append(
            f"| {contender} | {_num(f['local_s'])} | {_num(f['remote_s'])} | "
            f"{_num(f['remote_to_local'], 2, 'x')} | {_num(f['local_to_pool'], 2, 'x')} | "
            f"{_num(f['remote_to_pool'], 2, 'x')} |"
        )
    return lines


def _num(value: Any, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{suffix}"
    return f"{value:,}{suffix}"


def _peak(figures: dict[str, Any], step: str) -> str:
    """Return ``"peak (+step)"`` MB: the step's own growth shows beside what its imports cost."""
    peak, grew = figures.get(f"{step}_peak_rss_mb"), figures.get(f"{step}_step_mb")
    if peak is None:
        return "-"
    return f"{peak:,.0f} (+{grew:,.0f})" if grew is not None else f"{peak:,.0f}"


def _init(figures: dict[str, Any]) -> str:
    calls = [c for c in figures["init_calls"] if c is not None]
    if figures["workload"] != "c" or not calls:
        return "-"
    return f"{max(calls)} / {figures['mini_batches']}"


def _same(figures: dict[str, Any]) -> str:
    value = figures.get("same_output_as_baseline")
    return "-" if value is None else ("yes" if value else "**NO**")


def _walls(figures: dict[str, Any]) -> str:
    if not figures["ok"] and not figures["wall_median_s"]:
        return "FAILED: " + "; ".join(figures["errors"])[:200]
    each = ", ".join(_num(w) for w in figures["walls_s"])
    text = _num(figures["wall_median_s"])
    text += f" ({each})" if len(figures["walls_s"]) > 1 else ""
    return text + ("" if figures["ok"] else " (some reps FAILED)")


def _workload_title(figures: dict[str, Any], size: dict[str, Any]) -> str:
    w = figures["workload"]
    if w == "a":
        return f"(a) {figures['mini_batches']} parquet files x {size['rows_per_file']:,} rows{where(figures)}"
    if w == "b":
        return f"(b) {figures['items']:,} PNG files, 10 per mini-batch"
    if w == "d":
        return f"(d) {figures['items']:,} rows, PostgreSQL to PostgreSQL"
    if w == "f":
        return f"(f) fixed cost: 1 parquet file x {figures['items']} rows"
    return f"(c) init() 1 s, {figures['mini_batches']} mini-batches"


def _sql_lines(sql: list[dict[str, Any]]) -> list[str]:
    """Return (d)'s own table: wall time, ratio and the memory of each contender's whole process tree."""
    if not sql:
        return []
    lines = [
        "",
        "(d) SQL, each contender's whole process tree (the sum of its processes' RSS at one sample, "
        "shared pages counted in each; for ours-scheduler every process of the Airflow, its "
        "scheduler, api-server, dag-processor and triggerer included, and in brackets that sum "
        "before the run started):",
        "",
        "| contender | wall s | x baseline | rows/s | process tree peak RSS MB (before) | worker peak RSS MB "
        "| partition / run / aggregate task peak RSS MB | rows written / distinct ids | same scores as "
        "baseline |",
        "|---|--:|--:|--:|--:|--:|--:|--:|:-:|",
    ]
    for f in sql:
        before = f" ({_num(f['tree_first_rss_mb'], 0)})" if f["contender"] == "ours-scheduler" else ""
        tasks = " / ".join(
            _num(f[f"{step}_task_peak_rss_mb"], 0) for step in ("partition", "run", "aggregate")
        )
        lines.append(
            f"| {f['contender']} | {_walls(f)} | {_num(f['ratio_to_baseline'], 2, 'x')} | "
            f"{_num(f['items_per_s'], 0)} | {_num(f['tree_peak_rss_mb'], 0)}{before} | "
            f"{_num(f['worker_peak_rss_mb'], 0)} | {tasks} | {_num(f['rows'])} / {_num(f['distinct_ids'])} | "
            f"{_same(f)} |"
        )
    return lines


def _settings_lines(record: dict[str, Any]) -> list[str]:
    """Return the line naming the Airflow settings of ``--airflow-setting``, if any."""
    settings = record.get("airflow_settings") or {}
    if not settings:
        return []
    return [
        "Airflow settings over the defaults (`--airflow-setting`): "
        + ", ".join(f"`{k}={v}`" for k, v in settings.items())
        + "."
    ]


def where(figures: dict[str, Any]) -> str:
    return " on S3" if figures["job"].endswith("-s3") else ""


def render_markdown(record: dict[str, Any]) -> str:
    """Return the results as markdown: a header naming the machine, then the tables."""
    m = record["machine"]
    summary = record["summary"]
    size = record["size_parameters"]
    order = {name: i for i, name in enumerate(record["contenders"])}
    lines = [
        f"### Benchmark, size `{record['size']}`, {record['reps']} rep(s)",
        "",
        f"Machine: {m['cpu_count']} CPUs ({m['cpu_model']}), {m['ram_gb']} GB RAM, Python {m['python']}, "
        f"Airflow {m['versions'].get('apache-airflow')}, scikit-learn {m['versions'].get('scikit-learn')}, "
        f"Ray {m['versions'].get('ray') or 'not installed'}; commit {m['git_commit'] or '?'}; "
        f"load average at start {m['load_average_at_start']}; {m['time']}.",
        f"Command: `{record['command']}` ({record['seconds']:,.0f} s in all).",
        *_settings_lines(record),
        "",
        "| workload | contender | wall s, median (each rep) | items/s | x baseline | overhead ms per "
        "mini-batch | worker peak RSS MB | merge peak RSS MB (+step) | init() calls / mini-batches | "
        "same output as baseline |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|:-:|",
    ]
    main = sorted(summary["main"], key=lambda f: (f["job"], order.get(f["contender"], 99)))
    for f in main:
        lines.append(
            f"| {_workload_title(f, size)} | {f['contender']} | {_walls(f)} | {_num(f['items_per_s'], 0)} | "
            f"{_num(f['ratio_to_baseline'], 2, 'x')} | {_num(f['overhead_ms_per_mini_batch'], 0)} | "
            f"{_num(f['worker_peak_rss_mb'], 0)} | {_peak(f, 'merge')} | {_init(f)} | {_same(f)} |"
        )
    for name, reason in record.get("unavailable", {}).items():
        lines.append(f"| all | {name} | unavailable: {reason} | | | | | | | |")

    lines += _sql_lines([f for f in main if f["workload"] == "d"])
    lines += _remote_lines(record)
    lines += fixed_cost.markdown_lines(summary.get("fixed_cost", []))
    ours = [f for f in main if f["contender"].startswith("ours")]
    if ours:
        lines += [
            "",
            "Inside our operator (per mini-batch; `engine` = `seconds_total - seconds_run` from "
            "`processed_mini_batches.csv`, `task` = a run task instance's duration minus its `run()` time):",
            "",
            "| workload | contender | mini-batches / run task instances | engine overhead ms | task "
            "overhead ms | worker processes seen | run task peak RSS MB | aggregate task peak RSS MB | "
            "merge step MB (probe) |",
            "|---|---|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for f in ours:
            tis = f["task_instances"] if f["task_instances"] is not None else "-"
            lines.append(
                f"| {WORKLOAD_TITLES[f['workload']]}{where(f)} | {f['contender']} | "
                f"{f['mini_batches']} / {tis} | "
                f"{_num(f['engine_overhead_ms_per_mini_batch'], 0)} | "
                f"{_num(f['ti_overhead_ms_per_mini_batch'], 0)} | {_num(f['workers_seen'])} | "
                f"{_num(f['run_task_peak_rss_mb'], 0)} | {_num(f['aggregate_task_peak_rss_mb'], 0)} | "
                f"{_num(f['merge_step_mb'], 0)} |"
            )
    if summary["scaling"]:
        lines += [
            "",
            "Scaling, workload (a) at 1x, 2x, 4x input (one rep; merge and partition measured by "
            "`benchmarks/probe.py` in a fresh process):",
            "",
            "| input | contender | wall s | s per file | worker peak RSS MB | merge peak RSS MB (+step) | "
            "partition peak RSS MB (+step) | same output as baseline |",
            "|---|---|--:|--:|--:|--:|--:|:-:|",
        ]
        for f in sorted(summary["scaling"], key=lambda f: (f["mini_batches"], f["contender"])):
            lines.append(
                f"| {f['mini_batches']} files | {f['contender']} | {_walls(f)} | "
                f"{_num(f['seconds_per_file'], 2)} | "
                f"{_num(f['worker_peak_rss_mb'], 0)} | {_peak(f, 'merge')} | "
                f"{_peak(f, 'partition')} | {_same(f)} |"
            )
        for contender, g in summary["growth"].items():
            lines.append(
                f"\n{contender}: {g['input_ratio']}x the input took "
                f"{_num(g['time_ratio'], 2, 'x')} the time; "
                f"worker memory {_num(g['worker_memory_ratio'], 2, 'x')}, merge memory "
                f"{_num(g['merge_memory_ratio'], 2, 'x')}, partition memory "
                f"{_num(g['partition_memory_ratio'], 2, 'x')}."
            )
    other = [p for p in summary["partition_probes"] if "@" not in p["job"]]
    if other:
        lines += [
            "",
            "Partition step alone (probe): "
            + "; ".join(
                f"{WORKLOAD_TITLES.get(p['job'], p['job'])}: {_num(p.get('seconds'), 2)} s, "
                f"peak RSS {_num(p.get('peak_rss_mb'), 0)} MB (+{_num(p.get('step_mb'), 0)} over its imports)"
                + (f" (error: {p['error'][:100]})" if p.get("error") else "")
                for p in other
            )
            + ".",
        ]
    startup = record.get("airflow_startup_s")
    if startup:
        lines += [
            "",
            "Airflow start-up (not timed): " + "; ".join(f"{k} {v} s" for k, v in startup.items()) + ".",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    """``python -m benchmarks.report RESULT.json``: print a saved run's table again."""
    import json
    import sys

    with open(sys.argv[1]) as f:
        record = json.load(f)
    record["summary"] = summarize(record)
    print(render_markdown(record))


if __name__ == "__main__":
    main()
