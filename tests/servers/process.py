"""Start a server as a child process that prints its address, and stop it by process id."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Sequence


class ServerProcess:
    """A child process serving on 127.0.0.1: started by ``start``, stopped (with its group) by ``stop``.

    The port is read from the first line of its output that ``ready`` (a regex with a ``port``
    group) matches; the output is kept (``output``) to say why a server did not start.
    """

    def __init__(self, name: str, argv: Sequence[str], ready: str, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.ready = re.compile(ready)
        self.env = env
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.output: list[str] = []

    def start(self, timeout: float = 60.0) -> ServerProcess:
        self.proc = subprocess.Popen(
            self.argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(self.env or {})},
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        found = threading.Event()

        def read() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.output.append(line.rstrip())
                match = self.ready.search(line)
                if match and not found.is_set():
                    self.port = int(match.group("port"))
                    found.set()

        threading.Thread(target=read, name=f"{self.name}-output", daemon=True).start()
        deadline = time.monotonic() + timeout
        while not found.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = "\n".join(self.output[-20:])
                command = " ".join(self.argv)
                raise RuntimeError(
                    f"{self.name} did not start ({command}; exit code {self.proc.returncode}):\n{tail}"
                )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        """Stop the server and every process it started, by process id: SIGTERM, then SIGKILL."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with _suppress_lookup():
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            with _suppress_lookup():
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def _die_with_parent() -> None:
    """Ask Linux to stop the server when the process that started it dies (a test run killed)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class _suppress_lookup:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, value: object, tb: object) -> bool:
        return isinstance(value, ProcessLookupError)
