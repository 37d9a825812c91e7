"""An S3 server: moto in server mode (``ThreadedMotoServer``) on 127.0.0.1, in a child process.

Run as ``python -m tests.servers.moto_s3``: it prints ``moto listening on 127.0.0.1:<port>`` and
serves until it is stopped.
"""

from __future__ import annotations

import sys
import threading

from tests.servers.process import ServerProcess

READY = r"moto listening on 127\.0\.0\.1:(?P<port>\d+)"
# moto accepts any key; these are what the tests' Connections carry, and what must never leak.
ACCESS_KEY = "parallelrun-test-key"
SECRET_KEY = "parallelrun-test-secret-d41d8cd98f00"
REGION = "us-east-1"


def start() -> ServerProcess:
    """Start an S3 server on a free port of 127.0.0.1; ``stop()`` it when done."""
    return ServerProcess("moto S3 server", [sys.executable, "-m", "tests.servers.moto_s3"], READY).start()


def main() -> None:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    print(f"moto listening on {host}:{port}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
