"""The docker/ stack the tests of this folder share: built, started once, torn down at the end.

Docker must work (``docker/ensure-docker.sh`` installs and starts it where it can, as root): when
it cannot, these tests fail under ``CI=true`` and skip with the reason otherwise. The stack runs
on the stand-in base images (``docker/build-standins.sh``; cached between runs), as compose project
``parallelrun-test-<token>``, its api-server on a free port of 127.0.0.1, with a copy of the
repository's ``dags/`` plus this folder's test DAG as its DAGs folder and a temporary folder as its
data volume.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.databases import skip_or_fail
from tests.docker.stack import REPO, DockerStack, StackError

#: A longer run for the kill and restart tests: one line per input file, SLEEP seconds per file.
LONG_DAG_ID = "parallelrun_docker_long"
LONG_DAG = '''\
"""Test DAG of tests/docker: score the text files of <data>/long/<params.name>, slowly."""
from datetime import timedelta

from airflow.sdk import DAG, Param

from airflow_parallelrun import FileDataset, ParallelRunConfig, ParallelRunOperator

DATA = "/opt/airflow/parallelrun-data"

with DAG(
    "parallelrun_docker_long",
    schedule=None,
    catchup=False,
    params={"name": Param("kill", type="string", pattern="^[a-z0-9-]+$")},
):
    ParallelRunOperator(
        task_id="score",
        inputs=FileDataset(path=DATA + "/long/{{ params.name }}", pattern="*.txt"),
        output_path=DATA + "/out/long/{{ run_id }}",
        config=ParallelRunConfig(
            entry_script="scripts/docker_slow_score.py",
            mini_batch_size="2",
            error_threshold=0,
            node_count=2,
            process_count_per_node=2,
            mini_batches_per_task=1,  # map index i runs mini-batch i
        ),
        arguments=["--sleep", "3"],
        retries=2,
        retry_delay=timedelta(seconds=5),
    )
'''
SLOW_SCRIPT = '''\
"""Entry script of the docker tests' long run: "<file name>: <its text>" per file, slowly."""
import argparse
import os
import time


def init():
    global sleep
    parser = argparse.ArgumentParser()
    parser.add_argument("--sleep", type=float, default=1.0)
    sleep = parser.parse_known_args()[0].sleep


def run(mini_batch):
    lines = []
    for path in mini_batch:
        time.sleep(sleep)
        with open(path) as f:
            lines.append(f"{os.path.basename(path)}: {f.read().strip()}")
    return lines
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_docker() -> None:
    """Make Docker work (docker/ensure-docker.sh), or fail (CI) / skip with its reason."""
    done = subprocess.run(
        [str(REPO / "docker" / "ensure-docker.sh")], capture_output=True, text=True, timeout=900
    )
    if done.returncode != 0:
        skip_or_fail(f"Docker does not work here: {done.stderr.strip()[-2000:]}")


def make_dags_folder(folder: Path) -> Path:
    """Copy the repository's dags/ and add the test DAG and its entry script; readable by uid 50000."""
    shutil.copytree(REPO / "dags", folder, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / f"{LONG_DAG_ID}.py").write_text(LONG_DAG)
    (folder / "scripts" / "docker_slow_score.py").write_text(textwrap.dedent(SLOW_SCRIPT))
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return folder


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerStack]:
    """The started stack; ``down`` (volumes too) at the end of the session, whatever happened."""
    ensure_docker()
    root = tmp_path_factory.mktemp("docker-stack")
    data = root / "data"
    data.mkdir()
    data.chmod(0o777)  # the containers' uid 50000 writes here
    deployment = DockerStack(
        f"parallelrun-test-{uuid.uuid4().hex[:8]}",
        free_port(),
        make_dags_folder(root / "dags"),
        data,
        root / "stack.env",
        # A task of a killed worker container is failed, and retried, after 30 s without a heartbeat;
        # tasks it had taken from the broker but not started are sent again after 120 s.
        AIRFLOW_TASK_HEARTBEAT_TIMEOUT="30",
        AIRFLOW_TASK_QUEUED_TIMEOUT="120",
    )
    try:
        deployment.up()
        print(f"\ndocker stack {deployment.project} up in {deployment.up_seconds:.0f}s")
        yield deployment
    except StackError as exc:
        logs = "\n".join(
            deployment.logs(s) for s in ("airflow-init", "airflow-apiserver", "airflow-scheduler")
        )
        raise StackError(f"{exc}\n--- logs ---\n{logs}") from None
    finally:
        try:
            deployment.down()
        finally:
            shutil.rmtree(root, ignore_errors=True)
