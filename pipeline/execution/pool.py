"""The execution layer on Ray: connecting (or starting a private loopback-only cluster),
starting workers that load their model once (and keep it for the driver's next run), and
feeding them tasks. With the drivers beside it (``pipeline.execution.drivers``) and the Ray
Train trainer, the only modules that import Ray.

Failure handling lives here once for every job kind:

* a worker whose setup fails (a broken model, a missing weights file) reports the reason
  through ``ready()`` instead of raising, so the driver stops with one line rather than Ray
  printing the same traceback from every restart of every worker;
* a task whose worker was lost (a crash, a node gone) goes back to the queue, up to
  ``MAX_ATTEMPTS`` tries, while Ray restarts the worker; it rejoins when ready;
* a task that raised, or whose worker was lost too often, becomes a ``failed`` manifest row,
  written by the driver if it can and kept in memory if even that write fails, so a storage
  outage never crashes the driver and every other task still runs;
* when no worker is left, the tasks still queued become ``failed`` rows too.
"""
from __future__ import annotations

import logging
import os
import sys
import time

from pipeline.errors import WORKER_FAILED, WRITE_FAILED
from pipeline.execution.progress import Progress
from pipeline.execution.ray_logs import quiet_ray_init_options
from pipeline.execution.worker_plan import WORKER_CACHE, settle_started, start_workers
from pipeline.engine.completion import SHARD_COUNTS, failed_task_row, write_failed_row


log = logging.getLogger(__name__)


MAX_ATTEMPTS = 3                   # tries of a task whose worker is lost (a crash, a node gone)


def connect(ray, address: str | None, worker_output: bool = False) -> None:
    """Join the cluster named by ``address`` (or RAY_ADDRESS, as ``ray job submit`` sets),
    else start a private local one bound to loopback and shut down with this process.
    ``worker_output``: what workers print reaches this driver even without --verbose (Ray
    Train's workers print the training's progress)."""
    if ray.is_initialized():
        return
    # Ray's own log lines only with --verbose / DDP_VERBOSE=1 (or where workers' output is needed)
    options = {} if worker_output else quiet_ray_init_options()
    if address is None and not os.environ.get("RAY_ADDRESS"):
        # Never silently join another cluster that happens to run here (--address auto for that).
        from pipeline.execution.private_cluster import start_private_cluster

        start_private_cluster(ray, **options)
    else:
        ray.init(address=address, **options)


def dispatch(ray, workers: list, state, tasks: list, schema, *, counts: tuple[str, ...] = SHARD_COUNTS,
             failed_extra: dict | None = None, count_key: str = "samples_in",
             units: tuple[str, str] = ("shards", "samples"), starting: dict | None = None,
             start_wait: float = 900.0) -> list[dict]:
    """Feed tasks to idle workers until all are done; returns every task's manifest row. A task
    that raised or whose worker died gets a failed row (``failed_task_row`` with ``counts`` at
    zero and ``failed_extra``), written to its manifest file here when storage allows.

    ``starting`` ({ready ref: worker}) holds workers still coming up (GPU nodes the autoscaler
    is adding): each joins ``workers`` and takes tasks when it is ready; when no worker is left
    but those, they get ``start_wait`` seconds. Driver work per task is constant: the progress
    count is asked of the state actor at most once a second."""
    starting = starting if starting is not None else {}
    queue = list(reversed(tasks))
    in_flight: dict = {}            # object ref -> (worker, task)
    parked: dict = {}               # ready ref of a lost worker -> its task, requeued once the old process is gone
    progress = Progress(len(tasks), units=units)
    rows: list[dict] = []
    counted_done = 0
    idle = [w for w in workers if w not in starting.values()]
    live, last_poll = 0, 0.0
    stalled_since = None            # when the queue last had only starting workers to wait for
    attempts: dict[str, int] = {}   # task -> attempts so far, for tasks whose worker was lost

    def fail(task, error: str, kind: str) -> dict:
        return write_failed_row(task, failed_task_row(task, error, kind, counts, **(failed_extra or {})), schema)

    def submit() -> None:
        while idle and queue:
            worker, task = idle.pop(), queue.pop()
            in_flight[worker.process.remote(task)] = (worker, task)

    def retry(task, exc) -> dict | None:
        """Requeue a lost worker's task (None), or its failed row after ``MAX_ATTEMPTS``."""
        attempts[task.input_url] = attempts.get(task.input_url, 1) + 1
        if attempts[task.input_url] <= MAX_ATTEMPTS:
            print(f"\n{task.input_url}: its worker was lost; retrying (attempt {attempts[task.input_url]} of "
                  f"{MAX_ATTEMPTS})", file=sys.stderr, flush=True)
            queue.append(task)
            return None
        return fail(task, f"worker lost {MAX_ATTEMPTS} times: {str(exc)[:400]}", WORKER_FAILED)

    def finish(task, row: dict | None) -> None:
        nonlocal counted_done
        if row is None:
            return
        rows.append(row)
        counted_done += row.get(count_key) or 0
        if row["status"] != "ok":
            print(f"\n{task.input_url}: {row['status']}: {row['error']}", file=sys.stderr, flush=True)

    submit()
    while in_flight or (queue and starting) or parked:
        ready, _ = ray.wait(list(in_flight) + list(starting), num_returns=1, timeout=1.0)
        for ref in ready:
            if ref in starting:
                joined, errors = [], []
                settle_started(ray, {ref: starting.pop(ref)}, joined, errors, timeout=0)
                for worker in joined:          # a restarted worker is back, or a new one has come up
                    idle.append(worker)
                    if worker not in workers:
                        workers.append(worker)
                        print(f"\na worker joined: {len(workers)} ready", file=sys.stderr, flush=True)
                for error in errors:
                    print(f"\na worker could not start: {error}", file=sys.stderr, flush=True)
                if ref in parked:              # its old process is gone now: the task may run elsewhere
                    task = parked.pop(ref)
                    finish(task, retry(task, "the worker was unreachable"))
                continue
            worker, task = in_flight.pop(ref)
            try:
                row = ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                # The worker's process or node is gone: it leaves the pool and rejoins if Ray
                # restarts it. A process known dead frees its task at once (a lost node costs a
                # retry of its task, nothing more); one only unreachable may still be running it,
                # so its task waits until the worker answers again or is ended.
                workers.remove(worker)
                ready_ref = worker.ready.remote()
                starting[ready_ref] = worker
                if isinstance(exc, ray.exceptions.ActorUnavailableError):
                    parked[ready_ref] = task
                    continue
                row = retry(task, exc)
            except ray.exceptions.RayError as exc:
                # Raised by the task (e.g. writing the manifest failed): the worker is still usable.
                idle.append(worker)
                cause = getattr(exc, "cause", None)
                kind = WRITE_FAILED if isinstance(cause, OSError) else WORKER_FAILED
                row = fail(task, f"{type(cause or exc).__name__}: {str(cause or exc)[:500]}", kind)
                log.debug("task %s: %s", task.input_url, exc)      # the row's error says it in one line
            else:
                idle.append(worker)
            finish(task, row)
        stalled_since = (stalled_since or time.monotonic()) if (queue or parked) and not in_flight and not idle else None
        if stalled_since is not None and starting and time.monotonic() - stalled_since > start_wait:
            for ref, worker in starting.items():       # ended: any task they held can run elsewhere
                ray.kill(worker, no_restart=True)
                if ref in parked:
                    queue.append(parked.pop(ref))
            starting.clear()
        if not idle and not in_flight and not starting:
            break
        submit()
        if time.monotonic() - last_poll >= 1.0 or not in_flight:
            try:
                live = ray.get(state.total.remote(), timeout=30)
            except ray.exceptions.GetTimeoutError:
                pass
            last_poll = time.monotonic()
        progress.update(len(rows), max(live, counted_done), counted_done, force=not in_flight and not starting)
    # No worker left (all died, none came up): the rest is recorded as failed (redone next run), not dropped.
    while queue:
        finish(queue[-1], fail(queue.pop(), "no live worker left (all died); see the worker logs", WORKER_FAILED))
    progress.update(len(rows), max(live, counted_done), counted_done, force=True)
    return rows


class WorkerPool:
    """Workers of one kind for one run: started on first use (nothing starts when nothing is
    pending), reused across stages, and handed to the driver's ``WORKER_CACHE`` by ``close``
    (or leaving the ``with`` block) for the driver's next run; ``run`` dispatches a list of
    tasks to them."""

    def __init__(self, worker_cls, args: tuple, *, address: str | None, num_gpus: int | None, num_cpu_workers: int,
                 cpu_threads: int | None, n_tasks: int | None = None, gpu_wait: float = 900.0):
        self.worker_cls, self.args = worker_cls, args
        self.address, self.num_gpus, self.num_cpu_workers, self.cpu_threads = address, num_gpus, num_cpu_workers, cpu_threads
        self.gpu_wait = gpu_wait
        self.starting: dict = {}          # workers still coming up (nodes joining), added as they are ready
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
            self.kind, self.state, self.workers, self.starting = start_workers(
                ray, self.worker_cls, self.args, n_tasks=self.n_tasks or len(tasks), num_gpus=self.num_gpus,
                num_cpu_workers=self.num_cpu_workers, cpu_threads=self.cpu_threads, gpu_wait=self.gpu_wait)
        ray.get(self.state.reset.remote())
        return dispatch(ray, self.workers, self.state, tasks, schema, counts=counts, failed_extra=failed_extra,
                        count_key=count_key, units=units, starting=self.starting, start_wait=self.gpu_wait)

    def close(self) -> None:
        """Keep the workers for this driver's next run (they end with the driver); end those
        still starting, so the autoscaler adds no node for them."""
        import ray

        for worker in self.starting.values():
            ray.kill(worker, no_restart=True)
        self.starting = {}
        if self.workers:
            WORKER_CACHE.give_back(self.kind, self.state, self.workers)
        self.workers = None

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
