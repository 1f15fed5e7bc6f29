"""The execution layer on Ray: connecting (or starting a private loopback-only cluster),
starting workers that load their model once (and keep it for the driver's next run), and
feeding them tasks. With the drivers beside it (``jobs``, ``interpolation_job``) and the Ray
Train trainer, the only modules that import Ray.

Failure handling lives here once for every job kind:

* a worker whose setup fails (a broken model, a missing weights file) reports the reason
  through ``ready()`` instead of raising, so the driver stops with one line rather than Ray
  printing the same traceback from every restart of every worker;
* a task whose worker died (after its restarts) or raised becomes a ``failed`` manifest row,
  written by the driver if it can and kept in memory if even that write fails, so a storage
  outage never crashes the driver and every other task still runs;
* when no worker is left, the tasks still queued become ``failed`` rows too.
"""
from __future__ import annotations

import logging
import os
import sys

from pipeline.errors import WORKER_FAILED, WRITE_FAILED
from pipeline.execution.progress import Progress
from pipeline.execution.workers import WORKER_CACHE, start_workers
from pipeline.steps.completion import SHARD_COUNTS, failed_task_row, write_failed_row

log = logging.getLogger(__name__)


def connect(ray, address: str | None) -> None:
    """Join the cluster named by ``address`` (or RAY_ADDRESS, as ``ray job submit`` sets),
    else start a private local one bound to loopback and shut down with this process."""
    if ray.is_initialized():
        return
    if address is None and not os.environ.get("RAY_ADDRESS"):
        # Never silently join another cluster that happens to run here (--address auto for that).
        from pipeline.execution.private_cluster import start_private_cluster

        start_private_cluster(ray)
    else:
        ray.init(address=address)


def dispatch(ray, workers: list, state, tasks: list, schema, *, counts: tuple[str, ...] = SHARD_COUNTS,
             failed_extra: dict | None = None, count_key: str = "samples_in",
             units: tuple[str, str] = ("shards", "samples")) -> list[dict]:
    """Feed tasks to idle workers until all are done; returns every task's manifest row. A task
    that raised or whose worker died gets a failed row (``failed_task_row`` with ``counts`` at
    zero and ``failed_extra``), written to its manifest file here when storage allows."""
    queue = list(reversed(tasks))
    in_flight: dict = {}            # object ref -> (worker, task)
    progress = Progress(len(tasks), units=units)
    rows: list[dict] = []
    counted_done = 0
    idle = list(workers)

    def fail(task, error: str, kind: str) -> dict:
        return write_failed_row(task, failed_task_row(task, error, kind, counts, **(failed_extra or {})), schema)

    def submit() -> None:
        while idle and queue:
            worker, task = idle.pop(), queue.pop()
            in_flight[worker.process.remote(task)] = (worker, task)

    submit()
    while in_flight:
        ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
        for ref in ready:
            worker, task = in_flight.pop(ref)
            try:
                row = ray.get(ref)
            except ray.exceptions.RayError as exc:
                # RayActorError: the actor died even after its restarts; anything else was raised by
                # the task (e.g. writing the manifest failed) and the worker is still usable.
                if not isinstance(exc, ray.exceptions.RayActorError):
                    idle.append(worker)
                cause = getattr(exc, "cause", None)
                kind = WRITE_FAILED if isinstance(cause, OSError) else WORKER_FAILED
                row = fail(task, f"{type(cause or exc).__name__}: {str(cause or exc)[:500]}", kind)
                log.debug("task %s: %s", task.input_url, exc)      # the row's error says it in one line
            else:
                idle.append(worker)
            rows.append(row)
            counted_done += row.get(count_key) or 0
            if row["status"] != "ok":
                print(f"\n{task.input_url}: {row['status']}: {row['error']}", file=sys.stderr, flush=True)
        if not idle and not in_flight and queue:
            # Every worker died: the rest is recorded as failed (redone next run), not dropped.
            while queue:
                rows.append(fail(queue.pop(), "no live worker left (all died); see the worker logs", WORKER_FAILED))
        submit()
        try:
            live = ray.get(state.total.remote(), timeout=30)
        except ray.exceptions.GetTimeoutError:
            live = 0
        progress.update(len(rows), max(live, counted_done), counted_done, force=not in_flight)
    return rows


class WorkerPool:
    """Workers of one kind for one run: started on first use (nothing starts when nothing is
    pending), reused across stages, and handed to the driver's ``WORKER_CACHE`` by ``close``
    (or leaving the ``with`` block) for the driver's next run; ``run`` dispatches a list of
    tasks to them."""

    def __init__(self, worker_cls, args: tuple, *, address: str | None, num_gpus: int | None, num_cpu_workers: int,
                 cpu_threads: int | None, n_tasks: int | None = None):
        self.worker_cls, self.args = worker_cls, args
        self.address, self.num_gpus, self.num_cpu_workers, self.cpu_threads = address, num_gpus, num_cpu_workers, cpu_threads
        self.n_tasks = n_tasks            # None: as many workers as the first stage has tasks (at most)
        self.workers: list | None = None
        self.state = self.kind = None

    def run(self, tasks: list, schema, *, counts: tuple[str, ...] = SHARD_COUNTS, failed_extra: dict | None = None,
            count_key: str = "samples_in", units: tuple[str, str] = ("shards", "samples")) -> list[dict]:
        import ray

        if not tasks:
            return []
        if self.workers is None:
            connect(ray, self.address)
            self.kind, self.state, self.workers = start_workers(
                ray, self.worker_cls, self.args, n_tasks=self.n_tasks or len(tasks), num_gpus=self.num_gpus,
                num_cpu_workers=self.num_cpu_workers, cpu_threads=self.cpu_threads)
        ray.get(self.state.reset.remote())
        return dispatch(ray, self.workers, self.state, tasks, schema, counts=counts, failed_extra=failed_extra,
                        count_key=count_key, units=units)

    def close(self) -> None:
        """Keep the workers for this driver's next run (they end with the driver)."""
        if self.workers:
            WORKER_CACHE.give_back(self.kind, self.state, self.workers)
        self.workers = None

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
