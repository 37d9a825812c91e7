"""Whole runs (partition, run, aggregate; real worker processes, a real pool) write resource samples
(``_parallelrun/perf/<node>/<key>.csv``) and ``_parallelrun/report.html``, on local disk and on the
object stores; and a report that cannot be drawn never fails the run.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import textwrap
from pathlib import Path
from typing import Any

import psutil
import pytest

from airflow_parallelrun.core import steps
from airflow_parallelrun.core.config import ParallelRunConfig
from airflow_parallelrun.core.execution.pool import POOL_DIR_ENV
from airflow_parallelrun.core.inputs.datasets import FileDataset
from airflow_parallelrun.core.outputs import report_figures, report_html
from airflow_parallelrun.core.outputs.status import BatchStatus
from airflow_parallelrun.core.spec import RunSpec
from tests.object_stores import ObjectStore

# mb-000001 (files 02, 03) is the slowest; mb-000002 (04, 05) fails; the others are quick.
SCRIPT = """
    import os, time

    def run(mini_batch):
        names = [os.path.basename(p) for p in mini_batch]
        if "f05.txt" in names:
            raise ValueError("the first failure: f05 is unreadable")
        end = time.monotonic() + (1.5 if "f03.txt" in names else 0.3)
        while time.monotonic() < end:  # busy: the samples must see the worker use CPU
            pass
        return names
"""
FIRST_MESSAGE = "the first failure: f05 is unreadable"
COUNTS = (
    "total_mini_batches",
    "succeeded_mini_batches",
    "failed_mini_batches",
    "total_items",
    "failed_items",
)


@pytest.fixture(autouse=True)
def own_pool_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(POOL_DIR_ENV, str(tmp_path / "pools"))


def make_spec(tmp_path: Path, output: str | None = None, storage: Any = None, **config: Any) -> RunSpec:
    (tmp_path / "in").mkdir(exist_ok=True)
    for i in range(8):
        (tmp_path / "in" / f"f{i:02d}.txt").write_text(f"{i}\n")
    script = tmp_path / "score.py"
    script.write_text(textwrap.dedent(SCRIPT))
    settings: dict[str, Any] = {"mini_batch_size": "2", "error_threshold": -1, "run_max_try": 1}
    settings |= {"process_count_per_node": 2, "resource_monitor_interval": 0.2}
    return RunSpec(
        output_path=output or str(tmp_path / "out"),
        config=ParallelRunConfig(entry_script=str(script), **settings | config),
        entry_script=str(script),
        storage_options=storage,
    )


def run_all(tmp_path: Path, spec: RunSpec) -> tuple[dict[str, Any], list[BatchStatus]]:
    descriptors = steps.partition(FileDataset(path=str(tmp_path / "in")), spec)
    statuses = steps.run_mini_batches([d["index"] for d in descriptors], spec)
    return steps.aggregate(spec), statuses


def perf_rows(spec: RunSpec) -> dict[str, list[dict[str, str]]]:
    """Return the rows of every samples file of the run, by its path under ``perf/``."""
    out = spec.layout().output
    found = {}
    for node in out.listdir(spec.layout().state("perf")):
        for path in out.listdir(node):
            text = out.read_bytes(path).decode()
            found[path.split("/perf/", 1)[1]] = list(csv.DictReader(io.StringIO(text)))
    return found


def check_samples(spec: RunSpec, statuses: list[BatchStatus], key_pattern: str) -> None:
    """The samples name the real worker processes that ran the mini-batches, with plausible numbers."""
    files = perf_rows(spec)
    assert files and all(re.fullmatch(rf"[\w.-]+/{key_pattern}\.csv", name) for name in files), files
    rows = [row for found in files.values() for row in found]
    workers = [r for r in rows if r["role"] == "worker"]
    nodes = [r for r in rows if r["role"] == "node"]
    ran = {s.worker_pid for s in statuses if s.tries}
    assert ran and ran <= {int(r["pid"]) for r in workers}
    assert {r["node"] for r in rows} == {s.node for s in statuses if s.tries}
    total_memory = psutil.virtual_memory().total
    for row in workers:
        assert 1_000_000 < int(row["rss_bytes"]) < total_memory
        if row["cpu_percent"]:
            assert 0 <= float(row["cpu_percent"]) <= 100 * (os.cpu_count() or 1)
    assert any(float(r["cpu_percent"] or 0) > 0 for r in workers)  # run() spins
    for row in nodes:
        assert 0 <= float(row["cpu_percent"]) <= 100 and 0 < int(row["rss_bytes"]) <= total_memory
    assert all(r["gpu_memory_bytes"] == "" for r in rows)  # no nvidia-smi here: absent, not an error


def slowest_of(spec: RunSpec) -> str:
    """Return the id of the mini-batch whose status says it took longest.

    Most often mb-000001, whose run() spins longest; but mb-000000's time also holds starting the
    pool and its worker, which on a busy machine can take longer.
    """
    out, layout = spec.layout().output, spec.layout()
    statuses = [out.read_json(p) for p in out.listdir(layout.state("status"))]
    return str(max(statuses, key=lambda s: s["ended"] - s["started"])["id"])


def check_report(spec: RunSpec, summary: dict[str, Any]) -> str:
    """The report is one self-contained page with the summary's counts, the slowest and the first error."""
    layout = spec.layout()
    page = layout.output.read_bytes(layout.report_html).decode()
    assert summary["report_html"] == layout.output.url_of(layout.report_html)
    on_disk = layout.output.read_json(layout.summary)
    assert not re.search(r"""<(script|link|img|iframe)\b""", page, re.I)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page, re.I)
    assert "url(http" not in page and "@import" not in page
    for key in COUNTS:
        assert re.search(rf"<td>{key}</td><td class=n>{on_disk[key]}</td>", page), key
    slowest = re.search(r"<h3>Slowest mini-batches</h3><table><tr>.*?</tr><tr><td>(mb-\d+)</td>", page)
    assert slowest and slowest.group(1) == slowest_of(spec)
    assert FIRST_MESSAGE in page and "entry_script" in page
    assert page.count("<svg") == 4  # timeline, throughput, durations, resources
    return page


@pytest.mark.slow
def test_a_run_with_warm_workers_writes_its_pools_samples_and_the_report(tmp_path: Path) -> None:
    spec = make_spec(tmp_path)
    summary, statuses = run_all(tmp_path, spec)
    assert summary["failed_mini_batches"] == 1
    check_samples(spec, statuses, r"[0-9a-f]{12}-[0-9a-f]{12}")
    check_report(spec, summary)
    timed = [s for s in statuses if s.tries]
    assert all(s.started and s.ended and s.started <= s.ended and s.node and s.worker_pid for s in timed)


@pytest.mark.slow
def test_a_run_without_warm_workers_samples_each_tasks_own_worker(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, warm_workers=False)
    summary, statuses = run_all(tmp_path, spec)
    check_samples(spec, statuses, r"task-mb-000000-try1")
    check_report(spec, summary)
    assert not (tmp_path / "pools").exists() or not list((tmp_path / "pools").glob("*.perf.csv"))


@pytest.mark.slow
def test_resource_monitor_interval_0_takes_no_samples_and_the_report_says_so(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, resource_monitor_interval=0)
    summary, _ = run_all(tmp_path, spec)
    assert perf_rows(spec) == {}
    page = spec.layout().output.read_bytes(spec.layout().report_html).decode()
    assert "no resource samples" in page and summary["report_html"]


@pytest.mark.slow
def test_a_run_on_an_object_store_writes_the_samples_and_the_report_there(
    tmp_path: Path, object_store: ObjectStore
) -> None:
    spec = make_spec(tmp_path, output=object_store.url("out"), storage=object_store.fs())
    summary, statuses = run_all(tmp_path, spec)
    check_samples(spec, statuses, r"[0-9a-f]{12}-[0-9a-f]{12}")
    check_report(spec, summary)
    assert summary["report_html"].startswith(object_store.url("out"))


def run_with_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: tuple[Any, str], error: Exception
) -> tuple[RunSpec, dict[str, Any]]:
    """Run the whole run, without samples, with ``where`` (module, function) raising ``error``."""

    def broken(*args: Any) -> str:
        raise error

    monkeypatch.setattr(*where, broken)
    spec = make_spec(tmp_path, resource_monitor_interval=0)
    return spec, run_all(tmp_path, spec)[0]


@pytest.mark.slow
def test_a_figure_that_cannot_be_drawn_leaves_a_note_and_the_rest_of_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    failure = RuntimeError("no fonts today")
    spec, _ = run_with_a_failure(tmp_path, monkeypatch, (report_figures, "timeline_svg"), failure)
    page = spec.layout().output.read_bytes(spec.layout().report_html).decode()
    assert "this figure could not be drawn: RuntimeError: no fonts today" in page
    assert FIRST_MESSAGE in page and page.count("<svg") == 2  # throughput and durations still drawn
    assert "could not draw a figure of the report (broken)" in caplog.text


@pytest.mark.slow
def test_a_report_that_cannot_be_written_never_fails_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    failure = MemoryError("drawing took everything")
    with caplog.at_level(logging.ERROR):
        spec, summary = run_with_a_failure(tmp_path, monkeypatch, (report_html, "render_html"), failure)
    layout = spec.layout()
    on_disk = json.loads(Path(layout.summary).read_text())
    assert on_disk["status"] == summary["status"] == "succeeded" and on_disk["failed_mini_batches"] == 1
    assert "report_html" not in on_disk and not Path(layout.report_html).exists()
    assert "could not write the report" in caplog.text
    assert "MemoryError: drawing took everything" in caplog.text


def test_drawing_the_report_imports_no_plotting_library() -> None:
    """Every run's aggregate draws the page: it must not pay a plotting library's import (issue 17)."""
    import subprocess
    import sys

    code = textwrap.dedent(
        """
        import sys
        from tests.unit.test_resource_monitor import synthetic_statuses
        from airflow_parallelrun.core.outputs.report_html import render_html
        page = render_html(synthetic_statuses(50), {"status": "failed", "total_mini_batches": 50}, [], 0)
        assert page.count("<svg") == 3, page
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("matplotlib", "plotly", "bokeh")))
        """
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
