"""A failpoint stops a real process and publishes its pid atomically (core/failpoints.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from airflow_parallelrun.core.failpoints import ENV, failpoint


def test_an_armed_point_stops_the_process_once_and_writes_its_pid_whole(tmp_path: Path) -> None:
    marker = tmp_path / "stopped"
    spec = tmp_path / "points.json"
    spec.write_text(json.dumps({"here": str(marker)}))
    env = {**os.environ, ENV: str(spec)}
    code = "from airflow_parallelrun.core.failpoints import failpoint; failpoint('here')"
    process = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        # The marker appears whole, under its name, once the process has stopped at the point.
        while not marker.exists():
            assert process.poll() is None, "the process went past an armed point"
            time.sleep(0.05)
        assert marker.read_text() == str(process.pid)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert not [p.name for p in marker.parent.iterdir() if p.name.endswith(".tmp")]
    # Once the marker exists the point is passed: the retry after the kill goes through.
    again = subprocess.run([sys.executable, "-c", code], env=env, timeout=120)
    assert again.returncode == 0


def test_a_point_not_armed_is_passed(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(ENV, str(tmp_path / "missing.json"))
    failpoint("anything")
