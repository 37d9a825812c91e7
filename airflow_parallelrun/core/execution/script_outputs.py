"""What a ``summary_only`` entry script writes under its output folder: published whole, or forgotten.

With a remote ``output_path`` the script writes into a local folder of the task; a succeeded
mini-batch's files are set aside for it and uploaded under ``output_path``, a failed try's are
removed (but for its logs), so a retry never publishes what an earlier try left.
"""

from __future__ import annotations

import os
import shutil

from airflow_parallelrun.core.storage.location import Location


def upload_tree(local_root: str, output: Location) -> None:
    """Publish what a ``summary_only`` script wrote locally, then forget it."""
    for folder, _, names in os.walk(local_root):
        for name in names:
            local = os.path.join(folder, name)
            output.put_file(local, output.join(os.path.relpath(local, local_root).replace(os.sep, "/")))
            os.unlink(local)


def move_outputs(local_root: str, to: str) -> str:
    """Move what a script wrote under ``local_root`` to the folder ``to`` (same layout); return ``to``.

    A rename per file on one disk: the script's next call finds ``local_root`` empty again.
    """
    for folder, _, names in os.walk(local_root):
        for name in names:
            local = os.path.join(folder, name)
            target = os.path.join(to, os.path.relpath(local, local_root))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.move(local, target)
    return to


def clear_outputs(local_root: str, *, keep_logs: bool) -> None:
    """Forget what a ``summary_only`` script wrote locally, but for its logs when ``keep_logs``."""
    logs = os.path.join(local_root, "_parallelrun", "logs")
    for folder, _, names in os.walk(local_root):
        if keep_logs and (folder == logs or folder.startswith(logs + os.sep)):
            continue
        for name in names:
            os.unlink(os.path.join(folder, name))


__all__ = ["clear_outputs", "move_outputs", "upload_tree"]
