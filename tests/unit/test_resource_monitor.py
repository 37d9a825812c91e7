"""Tests for the resource sampler (core/execution/resource_monitor.py), the publication of its files
(core/outputs/perf_files.py) and the bounds of the report's figures (core/outputs/report_data.py).
"""

from __future__ import annotations

import csv
import itertools
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_parallelrun.core.execution.resource_monitor import PERF_COLUMNS, ResourceMonitor, start_monitor
from airflow_parallelrun.core.outputs import report_data
from airflow_parallelrun.core.outputs.perf_files import PerfPublisher
from airflow_parallelrun.core.outputs.report_html import render_html
from airflow_parallelrun.core.storage.location import Location
from airflow_parallelrun.core.storage.manifest import RunLayout
from benchmarks.report_page_cost import synthetic_statuses

# Holds 64 MiB (written, so resident), says so, and keeps one core busy until killed.
BUSY = "x = bytearray(b'1') * (64 * 2**20)\nprint('ready', flush=True)\nwhile True: x[0] = (x[0] + 1) % 256\n"


@pytest.fixture
def busy_child() -> Iterator[subprocess.Popen[bytes]]:
    child = subprocess.Popen([sys.executable, "-c", BUSY], stdout=subprocess.PIPE)
    assert child.stdout is not None and child.stdout.readline() == b"ready\n"
    yield child
    child.kill()
    child.wait()


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_the_monitor_samples_its_child_processes_and_the_node(tmp_path, busy_child, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi: the GPU column is empty, not an error
    path = tmp_path / "perf.csv"
    monitor = start_monitor(str(path), 0.2)
    assert monitor is not None
    time.sleep(1.5)
    monitor.stop()
    with open(path) as f:
        assert next(csv.reader(f)) == list(PERF_COLUMNS)
    found = rows(path)
    child = [r for r in found if r["role"] == "worker" and int(r["pid"]) == busy_child.pid]
    assert len(child) >= 4 and child[0]["cpu_percent"] == ""  # the first reading is a baseline
    assert all(int(r["rss_bytes"]) > 64 * 2**20 for r in child[1:])
    cpu = [float(r["cpu_percent"]) for r in child[1:]]
    assert max(cpu) > 0 and all(0 <= c <= 100 * (os.cpu_count() or 1) for c in cpu)  # it spins
    node = [r for r in found if r["role"] == "node"]
    assert len(node) >= 5 and all(r["pid"] == "" and 0 <= float(r["cpu_percent"]) <= 100 for r in node)
    assert all(r["gpu_memory_bytes"] == "" for r in found)


def test_gpu_memory_comes_from_nvidia_smi_when_it_is_there(tmp_path, busy_child, monkeypatch):
    # No GPU on this machine: a stand-in nvidia-smi answers as the real one does for its query.
    smi = tmp_path / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\necho '{busy_child.pid}, 1536'\necho '99999999, 10'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    sample = ResourceMonitor(str(tmp_path / "perf.csv"), 1, pids=lambda: [busy_child.pid]).sample()
    worker, node = sample
    assert worker[2] == busy_child.pid and worker[6] == 1536 * 2**20
    assert node[3] == "node" and node[6] == 1546 * 2**20


def test_a_process_gone_between_samples_is_left_out(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    sample = ResourceMonitor(str(tmp_path / "perf.csv"), 1, pids=lambda: [gone.pid]).sample()
    assert [row[3] for row in sample] == ["node"]


def test_interval_0_starts_no_monitor(tmp_path):
    assert start_monitor(str(tmp_path / "perf.csv"), 0) is None
    assert not (tmp_path / "perf.csv").exists()


def test_the_publisher_puts_whole_lines_only_and_only_when_the_file_grew(tmp_path):
    layout = RunLayout(Location(str(tmp_path / "out")))
    local = tmp_path / "pool.perf.csv"
    local.write_text("time,node\n1,a\n2,b")  # a sampler is in the middle of its row
    first = PerfPublisher(layout, str(local), "k1")
    first.publish()
    published = Path(first.target)
    assert published.read_text() == "time,node\n1,a\n"
    published.write_text("marker: not replaced while the file has not grown")
    # Another task's publisher of the same pool's file: the size it was published at is shared.
    local.write_text("time,node\n1,a\n")
    PerfPublisher(layout, str(local), "k1").publish()
    assert published.read_text().startswith("marker")
    local.write_text("time,node\n1,a\n2,b\n")
    PerfPublisher(layout, str(local), "k1").maybe()  # grown, but published less than 30 s ago
    assert published.read_text().startswith("marker")
    PerfPublisher(layout, str(local), "k1", every=0).maybe()
    assert published.read_text() == "time,node\n1,a\n2,b\n"
    local.write_text("time,node\n1,a\n2,b\n3,c\n")
    PerfPublisher(layout, str(local), "k1").publish()  # a task that ends publishes what grew
    assert published.read_text().endswith("3,c\n")


@pytest.mark.slow
def test_the_report_of_100_000_mini_batches_is_bounded_and_names_the_slowest():
    statuses = synthetic_statuses(100_000)
    timeline = report_data.timeline(statuses)
    assert timeline.binned and len(timeline.bars) <= report_data.TIMELINE_BINS * 8 * 2
    slowest = max(statuses, key=lambda s: (s.ended or 0) - (s.started or 0))
    page = render_html(statuses, {"status": "failed", "total_mini_batches": 100_000}, [], 0)
    assert len(page) < 1_000_000 and page.count("<svg") == 3
    assert f"<td>{slowest.id}</td>" in page and "run() raised ValueError: bad 42" in page
    assert "each lane shows its busy time, binned" in page


def test_many_short_lived_workers_share_a_bounded_number_of_lanes():
    statuses = synthetic_statuses(300)
    for i, s in enumerate(statuses):
        s.worker_pid = 5000 + i  # a worker of its own per mini-batch (warm_workers=False)
    timeline = report_data.timeline(statuses)
    assert len(timeline.lanes) == 8 and timeline.lanes[0] == "node-a slot 1"
    by_lane: dict[int, list[report_data.Bar]] = {}
    for bar in timeline.bars:
        by_lane.setdefault(bar.lane, []).append(bar)
    for bars in by_lane.values():  # no two mini-batches overlap in a lane
        bars.sort(key=lambda b: b.start)
        assert all(a.start + a.seconds <= b.start + 1e-6 for a, b in itertools.pairwise(bars))
