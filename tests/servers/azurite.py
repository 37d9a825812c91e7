"""Azure Blob Storage: Azurite, Microsoft's storage emulator (the npm package), on 127.0.0.1.

``make install`` puts Azurite under ``.venv/azurite`` (``npm ci`` from ``tests/servers/azurite-package``);
``PARALLELRUN_AZURITE`` may name another ``azurite-blob`` executable.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from tests.servers.process import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
READY = r"listens on http://127\.0\.0\.1:(?P<port>\d+)"
# Azurite's well-known development account (public, the same in every Azurite).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def executable() -> str | None:
    """Return the ``azurite-blob`` to run: ``PARALLELRUN_AZURITE``, the venv's, or one on PATH."""
    named = os.environ.get("PARALLELRUN_AZURITE")
    if named:
        return named
    venv = Path(os.environ.get("VIRTUAL_ENV") or ROOT / ".venv")
    for candidate in (
        venv / "azurite/node_modules/.bin/azurite-blob",
        ROOT / ".venv/azurite/node_modules/.bin/azurite-blob",
    ):
        if candidate.exists():
            return str(candidate)
    return shutil.which("azurite-blob")


class Azurite(ServerProcess):
    def __init__(self, program: str) -> None:
        self.location = tempfile.mkdtemp(prefix="parallelrun-azurite-")
        super().__init__(
            "Azurite",
            [
                program,
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                "0",
                "--location",
                self.location,
                "--skipApiVersionCheck",
                "--loose",
                "--disableTelemetry",
            ],
            READY,
        )

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.location, ignore_errors=True)

    def connection_string(self, port: int | None = None) -> str:
        """Return the account's connection string (through ``port`` when a proxy stands in front)."""
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{port or self.port}/{ACCOUNT};"
        )


def start() -> Azurite:
    """Start Azurite's blob service on a free port of 127.0.0.1; ``stop()`` it when done."""
    program = executable()
    if program is None:
        raise RuntimeError(
            "Azurite is not installed: run `make install` (it runs `npm ci` into .venv/azurite; Node.js "
            "and npm are needed), or set PARALLELRUN_AZURITE to an azurite-blob executable"
        )
    server = Azurite(program)
    server.start()
    return server
