"""Run one DAG with ``airflow dags test --use-executor``, its mapped tasks side by side (``make demo``).

Plain ``airflow dags test`` runs every task instance itself, one after another: of a run's warm
workers only one ever scores. With ``--use-executor`` it hands them to the LocalExecutor, which
runs them at once; but the LocalExecutor's task supervisors reach Airflow's Execution API over
HTTP, and ``dags test`` starts no server. So this script serves only that API (``airflow
api-server --apps execution``: no UI, no public API, one process) on a free 127.0.0.1 port for as
long as the run lasts, points the executor at it, and stops it afterwards.

The server's start-up is mostly its first request (Airflow builds the Execution API's versioned
routes then): ``dags test`` starts as soon as the server listens, and the health check this
script sends while ``dags test`` starts up pays that cost. A task's request that arrives earlier
waits for it, which is why the tasks' request timeout is raised.

    python tools/demo.py parallelrun_digits [more arguments of airflow dags test]

A DAG whose tasks defer (``parallelrun_sensor``'s new-files sensor) is not for this script: no
triggerer runs here, so a deferred task would wait for ever. Plain ``airflow dags test`` runs
triggers inline. It exits with ``airflow dags test``'s exit code. The server's output goes to
``$AIRFLOW_HOME/logs/demo-execution-api.log``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

#: Seconds the Execution API server gets to listen, then to answer its health check: on a 2-core
#: machine also running benchmarks (load average 11 to 15) it listened after about 27 s and
#: answered after about 78 s.
READY_TIMEOUT = 300.0
#: Seconds the server gets to exit after SIGTERM before it is killed.
STOP_GRACE = 10.0


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def demo_env(base: dict[str, str], execution_api_url: str) -> dict[str, str]:
    """Return the environment of the server and of ``dags test``: what they must share, and agree on.

    Settings the user made in the environment win, except the URL of the server started here.
    """
    env = dict(base)
    env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = execution_api_url
    # The tokens dags test signs for its tasks must be checked with the same secret by the server.
    env.setdefault("AIRFLOW__API_AUTH__JWT_SECRET", secrets.token_urlsafe(64))
    env.setdefault("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
    # A task's supervisor notices that its task process exited only when its select() times out,
    # every min_heartbeat_interval (5 s by default): the executor's shutdown would wait that long.
    env.setdefault("AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL", "1")
    # A task's calls to the Execution API wait 5 s by default; the first may arrive while the
    # server builds its routes (see the module's docstring), and on a busy machine that takes a
    # minute or more.
    env.setdefault("AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT", str(int(READY_TIMEOUT)))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def start_execution_api(port: int, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``airflow api-server`` serving only the Execution API, in a session of its own."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "airflow", "api-server", "--apps", "execution", "--workers", "1"]
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def listens(port: int) -> bool:
    """Tell whether something accepts connections on 127.0.0.1:``port``."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def answers(url: str) -> bool:
    """Tell whether ``url`` answers 200 within 5 s."""
    with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=5) as response:
        return bool(response.status == 200)
    return False


def wait_for(
    server: subprocess.Popen[bytes], what: str, ready: Callable[[], bool], log_path: Path, timeout: float
) -> None:
    """Wait until ``ready()``; ``what`` says what the server should do ("listen on ...").

    Raises ``RuntimeError`` naming the log when the server exits, or ``timeout`` seconds pass.
    """
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if server.poll() is not None:
            raise RuntimeError(
                f"the Execution API server exited with code {server.returncode} before it would {what}; "
                f"its output is in {log_path}"
            )
        if ready():
            return
        time.sleep(0.25)
    raise RuntimeError(
        f"the Execution API server did not {what} within {timeout:.0f} s; its output is in {log_path}. "
        "Is the machine very busy? Plain `airflow dags test` runs without it."
    )


def stop(server: subprocess.Popen[bytes]) -> None:
    """Stop the server's session: SIGTERM, then SIGKILL after ``STOP_GRACE`` seconds."""
    for sig, wait in ((signal.SIGTERM, STOP_GRACE), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, sig)
        try:
            server.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def main(argv: list[str]) -> int:
    """Serve the Execution API, run ``airflow dags test --use-executor`` against it, stop the server."""
    if not argv or argv[0].startswith("-"):
        print("usage: python tools/demo.py DAG_ID [arguments of airflow dags test]", file=sys.stderr)
        return 2
    port = free_port()
    base_url = f"http://127.0.0.1:{port}/execution/"
    env = demo_env(dict(os.environ), base_url)
    home = Path(env.get("AIRFLOW_HOME", Path.home() / "airflow"))
    log_path = home / "logs" / "demo-execution-api.log"
    started = time.monotonic()
    server = start_execution_api(port, env, log_path)
    dags_test: subprocess.Popen[bytes] | None = None
    try:
        wait_for(server, f"listen on 127.0.0.1:{port}", lambda: listens(port), log_path, READY_TIMEOUT)
        print(
            f"demo: Airflow's Execution API listens on {base_url} after {time.monotonic() - started:.1f} s",
            flush=True,
        )
        command = [sys.executable, "-m", "airflow", "dags", "test", "--use-executor", *argv]
        dags_test = subprocess.Popen(command, env=env)
        health = base_url + "health"
        wait_for(server, f"answer {health}", lambda: answers(health), log_path, READY_TIMEOUT)
        print(f"demo: Airflow's Execution API answers after {time.monotonic() - started:.1f} s", flush=True)
        return dags_test.wait()
    except RuntimeError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        if dags_test is not None:
            dags_test.terminate()
            dags_test.wait()
        return 1
    finally:
        stop(server)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
