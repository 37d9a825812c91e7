"""Named points where a test can make a real process stop, so it can be killed exactly there.

Off unless ``PARALLELRUN_FAILPOINTS`` names a JSON file mapping point names to marker paths.
A listed name may hold ``*`` wildcards (``replace:mb-000001.*.txt`` matches a part whatever its
run key). A process reaching a listed point whose marker does not exist yet writes its process id into
the marker and sleeps, waiting to be killed; once the marker exists the point is passed, so the
retry after the kill goes through. Each call costs one environment lookup when off.
"""

from __future__ import annotations

import fnmatch
import json
import os
import time

ENV = "PARALLELRUN_FAILPOINTS"


def failpoint(name: str) -> None:
    """Stop here, for a test, if ``name`` is armed; see the module docstring."""
    spec = os.environ.get(ENV)
    if not spec or not os.path.exists(spec):
        return
    with open(spec) as f:
        armed = json.load(f)
    wildcards = (path for pattern, path in armed.items() if fnmatch.fnmatchcase(name, pattern))
    marker = armed.get(name) or next(wildcards, None)
    if not marker:
        return
    try:
        # Exclusive create: of two processes reaching the point at once, one stops, one goes on.
        fd = os.open(marker + ".claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.close(fd)
    # Imported here, where a point is armed: the atomic write itself passes a failpoint.
    from airflow_parallelrun.core.storage.atomic import write_local_file

    write_local_file(marker, str(os.getpid()).encode())
    time.sleep(3600)
