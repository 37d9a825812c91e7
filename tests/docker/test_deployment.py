"""The docker/ deployment for real: Airflow's Celery stack with this provider, on two worker containers.

One stack serves the module (tests/docker/conftest.py), driven through the REST API; Docker
itself kills and restarts containers. The tests run in file order: the digits example first
(it makes the images the event-driven test drops), the teardown last.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.docker.conftest import LONG_DAG_ID
from tests.docker.stack import DockerStack, run

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(3600)]

WORKERS = ("airflow-worker-1", "airflow-worker-2")
#: Prints the digits example's expected lines, computed in a worker container with the run's model.
EXPECTED_DIGITS = """
import sys
from pathlib import Path
import joblib, numpy as np
sys.path.insert(0, "/opt/airflow/dags")
from parallelrun_examples.data import digits_features
data = Path("/opt/airflow/parallelrun-data/digits")
images = sorted((data / "images").glob("**/*.png"), key=str)
digits = joblib.load(data / "model.joblib").predict(np.stack([digits_features(p) for p in images]))
print("\\n".join(f"{p.name}: {int(d)}" for p, d in zip(images, digits, strict=True)))
"""


def run_tasks(stack: DockerStack, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    return [t for t in stack.task_instances(dag_id, run_id) if t["task_id"] == "score.run"]


def run_folder(stack: DockerStack, kind: str, run_id: str) -> Path:
    return stack.data / "out" / kind / run_id


def make_long_inputs(stack: DockerStack, name: str, count: int = 24) -> list[str]:
    """Write ``count`` text files for the long DAG; return the merged lines a run must write."""
    folder = stack.data / "long" / name
    folder.mkdir(parents=True)
    for i in range(count):
        (folder / f"row_{i:03d}.txt").write_text(f"row {i}\n")
    return [f"row_{i:03d}.txt: row {i}" for i in range(count)]


def wait_for_running(stack: DockerStack, run_id: str, host: str | None = None, timeout: float = 600) -> dict:
    """Wait until a mapped run task of the long DAG runs (on ``host``); return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for ti in run_tasks(stack, LONG_DAG_ID, run_id):
            if ti["state"] == "running" and (host is None or ti["hostname"] == host):
                return ti
        time.sleep(0.5)
    raise AssertionError(f"no run task of {run_id} running on {host or 'any worker'} within {timeout:g}s")


def test_digits_example_merges_every_image_once_and_both_worker_containers_ran_mini_batches(
    stack: DockerStack,
) -> None:
    started = time.monotonic()
    run_id = stack.trigger("parallelrun_digits")
    state = stack.wait_for_run("parallelrun_digits", run_id)
    seconds = time.monotonic() - started
    tasks = run_tasks(stack, "parallelrun_digits", run_id)
    assert state == "success", [(t["map_index"], t["state"], t["hostname"]) for t in tasks]

    merged = (run_folder(stack, "digits", run_id) / "parallel_run_step.txt").read_text().splitlines()
    expected = stack.stack("compose", "exec", "-T", WORKERS[0], "python", "-c", EXPECTED_DIGITS).splitlines()
    assert len(expected) == 1797  # scikit-learn's digits, each image once
    assert merged == expected
    # 18 mini-batches of 100 images (packed into fewer run tasks), scored on both worker containers.
    assert tasks and all(t["state"] == "success" for t in tasks)
    assert {t["hostname"] for t in tasks} == set(WORKERS), [(t["map_index"], t["hostname"]) for t in tasks]
    print(f"\ndigits example in the stack: {seconds:.1f}s from trigger to success")


def test_new_files_in_the_watched_folder_start_exactly_one_event_driven_run_that_scores_exactly_them(
    stack: DockerStack,
) -> None:
    dag_id = "parallelrun_event_driven"
    images = sorted((stack.data / "digits" / "images").glob("**/*.png"), key=str)[:7]
    assert len(images) == 7, "the digits example (the test before) makes the images dropped here"
    events = stack.data / "incoming" / "events"
    events.mkdir(parents=True, exist_ok=True)
    for folder in (events.parent, events):
        folder.chmod(0o777)  # the triggerer (uid 50000) keeps its claim ledger in there
    stack.unpause(dag_id)
    before = {r["dag_run_id"] for r in stack.dag_runs(dag_id)}

    batch = events / f"batch-{uuid.uuid4().hex[:6]}"
    batch.mkdir()
    batch.chmod(0o777)
    names = [f"new_{i}_{image.name}" for i, image in enumerate(images)]
    for name, image in zip(names, images, strict=True):
        shutil.copyfile(image, batch / f".{name}.part")
        os.replace(batch / f".{name}.part", batch / name)  # a file appears whole

    deadline = time.monotonic() + 300
    while not (new := [r for r in stack.dag_runs(dag_id) if r["dag_run_id"] not in before]):
        assert time.monotonic() < deadline, "no event-driven run within 300 s of the files landing"
        time.sleep(2)
    run_id = new[0]["dag_run_id"]
    assert stack.wait_for_run(dag_id, run_id) == "success"
    time.sleep(20)  # four more polls of the watcher: the same files must not fire again
    assert [r["dag_run_id"] for r in stack.dag_runs(dag_id) if r["dag_run_id"] not in before] == [run_id]

    merged = (run_folder(stack, "events", run_id) / "parallel_run_step.txt").read_text().splitlines()
    assert sorted(line.split(":")[0] for line in merged) == sorted(names)


def test_a_worker_container_killed_mid_run_fails_its_task_airflow_retries_it_and_every_row_lands_once(
    stack: DockerStack,
) -> None:
    expected = make_long_inputs(stack, "kill")
    run_id = stack.trigger(LONG_DAG_ID, {"name": "kill"})
    victim = wait_for_running(stack, run_id, host=WORKERS[1])
    run(["docker", "kill", stack.container(WORKERS[1])])
    killed_at = time.monotonic()

    state = stack.wait_for_run(LONG_DAG_ID, run_id, timeout=1200)
    tasks = run_tasks(stack, LONG_DAG_ID, run_id)
    assert state == "success", [(t["map_index"], t["state"], t["try_number"], t["hostname"]) for t in tasks]
    out = run_folder(stack, "long", run_id)
    assert (out / "parallel_run_step.txt").read_text().splitlines() == expected  # every row once, in order
    retried_tasks = {t["map_index"] for t in tasks if t["try_number"] > 1}
    assert victim["map_index"] in retried_tasks, [(t["map_index"], t["try_number"]) for t in tasks]
    summary = json.loads((out / "_parallelrun" / "summary.json").read_text())
    assert summary["status"] == "succeeded" and summary["succeeded_items"] == len(expected)
    retried = summary["retried_mini_batches"]
    # The summary names the mini-batches that ran again in a later try of their task ...
    assert retried and all(r["task_try"] > 1 and r["status"] == "succeeded" for r in retried), retried
    # ... and those are mini-batches of the task instances Airflow retried.
    assert {int(r["id"].removeprefix("mb-")) for r in retried} <= retried_tasks, (retried, retried_tasks)
    print(
        f"\nworker killed: run succeeded {time.monotonic() - killed_at:.0f}s after the kill; "
        f"retried task instances {sorted(retried_tasks)}; summary's retried_mini_batches {retried}"
    )
    # Back to two workers for the tests after this one (restart: always may have done it already).
    stack.stack("compose", "up", "-d", "--no-build", "--wait", *WORKERS, timeout=600)


def test_the_scheduler_container_restarted_mid_run_and_the_run_completes(stack: DockerStack) -> None:
    expected = make_long_inputs(stack, "restart")
    run_id = stack.trigger(LONG_DAG_ID, {"name": "restart"})
    wait_for_running(stack, run_id)
    scheduler = stack.container("airflow-scheduler")
    started_before = stack.inspect("airflow-scheduler")["State"]["StartedAt"]
    run(["docker", "restart", "--time", "10", scheduler])
    assert stack.inspect("airflow-scheduler")["State"]["StartedAt"] != started_before

    assert stack.wait_for_run(LONG_DAG_ID, run_id, timeout=1200) == "success"
    out = run_folder(stack, "long", run_id)
    assert (out / "parallel_run_step.txt").read_text().splitlines() == expected


def test_down_leaves_no_container_network_or_volume(stack: DockerStack) -> None:
    left = stack.resources()
    assert len(left["containers"]) == 9 and left["networks"] and left["volumes"], left
    stack.down()
    assert stack.resources() == {"containers": [], "networks": [], "volumes": []}
