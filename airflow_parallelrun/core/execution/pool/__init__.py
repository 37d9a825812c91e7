"""Warm workers: entry-script processes kept alive on a node across the task instances of a run.

Airflow starts a new process for every task instance. Were each to start its own entry-script
worker, imports and ``init()`` would be paid once per mini-batch; Azure pays them once per worker
process. A *pool* keeps the workers of one run's entry script warm on one node, and each mapped
task instance borrows one for its mini-batch (a *lease*), so every task instance still stands
for its mini-batch, with its own tries, timeout, part and status.

- **Found** by a key: a hash of the run's output location (first part) and of the entry script
  (its path, size and modification time), arguments, environment variables, logging level, the
  pool size, the pool's Python interpreter and the workers' (``python=``, ``requirements=``:
  runs in different environments never share a worker) (second part). The pool listens on the Unix socket
  ``<pool dir>/<key>.sock``; the pool dir is ``$PARALLELRUN_POOL_DIR`` or
  ``<tmp>/parallelrun-pools-<uid>``, readable by its owner only. It is a cache, not state:
  nothing another node needs lives there, and a run works the same without it.
- **Trusted** only as far as it is this user's: a pool folder that is a symbolic link, belongs
  to another user or can be written by others is refused, and both ends of a pool socket check
  that the other runs as this user (``SO_PEERCRED``). Every message is JSON, never pickle. The
  pool spec, with its environment variables, reaches the pool on its stdin, never on disk.
- **Started** by the partition task (``warm_pool``), which also has it start its workers at once,
  so imports and ``init()`` run while Airflow schedules the run tasks (what they print is kept
  and shown in the log of the first task that leases each one); on other nodes by the first
  task instance that finds no pool. Under a file lock so two tasks never start two, as a
  process of its own session (``python -m airflow_parallelrun.core.execution.pool``) that outlives the
  task. It starts further workers on demand.
- **Limited** to ``process_count_per_node`` workers; a lease waits for a free one.
- **Leased**: the task sends its stdout and stderr and receives the worker's socket (SCM_RIGHTS)
  and process id. It talks to the worker directly, as to a worker of its own, and the worker
  prints into the task's log. It gives the worker back healthy, or kills it.
- **Timed out** as before: a ``run()`` past ``run_invocation_timeout`` is killed by the task
  (the worker's process group); the pool starts a fresh worker, with ``init()``, on the next lease.
- **Recovered**: a lease that ends without a healthy release (the task died, was killed, or its
  worker did) kills the worker, which may be in the middle of a ``run()``. A worker exits when
  its pool dies (it watches its parent). A dead pool leaves a stale socket, which the next task
  removes before starting a new pool. If a pool cannot start at all, the task runs its own worker.
- **Sampled**: every ``resource_monitor_interval`` seconds the pool appends its workers' and the
  node's CPU and memory to ``<key>.perf.csv``, which the run's tasks publish to the run's
  storage (:mod:`airflow_parallelrun.core.outputs.perf_files`; docs/report.md).
- **Cleaned up**: a pool idle for ``worker_idle_timeout`` seconds (no lease, no lease waiting,
  no worker starting) calls ``shutdown()`` in each worker, removes its socket and exits; the
  aggregate task stops the run's pools on its node at once. The pool's own log (and what
  ``shutdown()`` prints) is ``<key>.log``, its process id ``<key>.pid``; a pool that stops
  removes them, its lock and its workers' folders, but keeps its log if it logged a warning.
  A starting pool sweeps what killed tasks and pools left more than a day ago
  (:func:`sweep_leftovers`).

The modules: :mod:`.protocol` (the pool folder, the key, the messages), :mod:`.client` (the
task's side), :mod:`.server` (the pool process) and :mod:`.leftovers` (the sweep).
"""

from __future__ import annotations

from airflow_parallelrun.core.execution.pool.client import (
    START_TIMEOUT,
    LeasedWorker,
    lease_worker,
    stop_pools,
    warm_pool,
)
from airflow_parallelrun.core.execution.pool.leftovers import LEFTOVER_AGE, sweep_leftovers
from airflow_parallelrun.core.execution.pool.protocol import (
    POOL_DIR_ENV,
    PoolSpec,
    PoolUnavailable,
    pool_dir,
)

__all__ = [
    "LEFTOVER_AGE",
    "POOL_DIR_ENV",
    "START_TIMEOUT",
    "LeasedWorker",
    "PoolSpec",
    "PoolUnavailable",
    "lease_worker",
    "pool_dir",
    "stop_pools",
    "sweep_leftovers",
    "warm_pool",
]
