"""Real object-store servers for the tests and the benchmark, on 127.0.0.1, started and stopped by process id.

- ``moto_s3``: an S3 server (moto in server mode), run as a child process.
- ``azurite``: Azure Blob Storage (Microsoft's emulator Azurite, the npm package), run as a child process.
- ``proxy``: an HTTP proxy put in front of either, which adds latency and injects throttling and
  dropped connections.

``tests/object_stores.py`` turns them into pytest fixtures with Airflow Connections.
"""
