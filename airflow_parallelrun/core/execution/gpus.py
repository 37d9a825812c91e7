"""Give each worker process of a node its own GPU, as Azure ML does: worker ``i`` gets GPU ``i % n``.

``n`` comes from the node: the devices ``CUDA_VISIBLE_DEVICES`` already lists where the task
runs (the node's Airflow worker was given those), else the GPUs the NVIDIA driver reports
(``/proc/driver/nvidia/gpus``, else ``nvidia-smi -L``); ``gpus_per_node`` overrides the count
(0 switches the assignment off). A node without GPUs gets nothing set: CPU runs are unchanged.
A warm pool numbers its workers by slot (a replaced worker takes the slot it frees); a task's
own worker (``warm_workers=False``) claims the lowest slot free on the node with a lock file
held for the life of the task process.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import shutil
import subprocess
from dataclasses import replace

from airflow_parallelrun.core.execution.runner import WorkerProcess, WorkerSettings

GPU_ENV = "CUDA_VISIBLE_DEVICES"

# The slot this process holds (slot, lock file descriptor), for its own workers.
_HELD: tuple[int, int] | None = None


@functools.cache
def count_gpus() -> int:
    """Return how many NVIDIA GPUs this node has (0 if none or no driver), cheaply, once per process."""
    folder = "/proc/driver/nvidia/gpus"
    with contextlib.suppress(OSError):
        return len(os.listdir(folder))
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(line.startswith("GPU ") for line in listing.stdout.splitlines())


def node_gpus(gpus_per_node: int | None) -> list[str]:
    """Return the device ids this node's workers share, in order ([] for none).

    >>> node_gpus(0)
    []
    """
    if gpus_per_node == 0:
        return []
    visible = os.environ.get(GPU_ENV)
    if visible is not None:
        devices = [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    else:
        devices = [str(i) for i in range(count_gpus() if gpus_per_node is None else gpus_per_node)]
    if gpus_per_node is not None and visible is not None:
        devices = devices[:gpus_per_node]
    return devices


def gpu_environment(slot: int, devices: list[str]) -> dict[str, str]:
    """Return the variable that gives worker ``slot`` its GPU, or {} where there is none.

    >>> [gpu_environment(i, ["0", "1"]) for i in range(3)], gpu_environment(0, [])
    ([{'CUDA_VISIBLE_DEVICES': '0'}, {'CUDA_VISIBLE_DEVICES': '1'}, {'CUDA_VISIBLE_DEVICES': '0'}], {})
    """
    return {GPU_ENV: devices[slot % len(devices)]} if devices else {}


def claim_slot(folder: str, slots: int) -> int:
    """Return the lowest worker slot of this node no other task process holds, and hold it.

    The lock file is held until this process exits, so a killed task frees its slot. With every
    slot taken (more tasks than ``slots``), return this process id's remainder.
    """
    global _HELD
    if _HELD is not None:
        return _HELD[0]
    for slot in range(max(slots, 1)):
        fd = os.open(
            os.path.join(folder, f"gpu-slot-{slot}.lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600
        )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        _HELD = (slot, fd)
        return slot
    return os.getpid() % max(slots, 1)


def with_own_gpu(
    settings: WorkerSettings, gpus_per_node: int | None, slots: int, folder: str
) -> WorkerSettings:
    """Return a task's own worker's settings with the GPU of the node slot it claims (in ``folder``).

    The run's ``environment_variables`` win over the assignment.
    """
    devices = node_gpus(gpus_per_node)
    if not devices:
        return settings
    os.makedirs(folder, mode=0o700, exist_ok=True)
    assigned = gpu_environment(claim_slot(folder, slots), devices)
    return replace(settings, environment_variables={**assigned, **settings.environment_variables})


class WorkerSlots:
    """The slot of each worker of a pool: the lowest free one, freed when the worker goes.

    Worker slot ``i`` gets GPU ``i % n``, so a replaced worker takes the GPU its predecessor had.
    """

    def __init__(self, gpus_per_node: int | None) -> None:
        self.devices = node_gpus(gpus_per_node)
        self._slots: dict[WorkerProcess, int] = {}

    def place(self, worker: WorkerProcess) -> int:
        """Give ``worker`` (not started yet) the lowest free slot and its GPU; return the slot."""
        taken = set(self._slots.values())
        slot = min(i for i in range(len(taken) + 1) if i not in taken)
        self._slots[worker] = slot
        env = worker.settings.environment_variables
        worker.settings = replace(
            worker.settings, environment_variables={**gpu_environment(slot, self.devices), **env}
        )
        return slot

    def free(self, worker: WorkerProcess) -> None:
        self._slots.pop(worker, None)
