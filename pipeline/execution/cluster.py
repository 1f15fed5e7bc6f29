"""The execution layer on Ray: connecting (or starting a private loopback-only cluster),
starting workers that load their model once, and feeding them tasks. With the job drivers
(``runner``, ``interp_runner``) and the Ray Train trainer, the only modules that import Ray.

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
import traceback

from pipeline.errors import WORKER_FAILED, WRITE_FAILED, UserError
from pipeline.execution.progress import Progress
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


class ProgressCounter:
    """A tiny actor the workers report finished items to (so workers stay single-threaded:
    a threaded actor ran the model about 1.6x slower here)."""

    def __init__(self):
        self.samples = 0

    def add(self, n: int) -> None:
        self.samples += n

    def reset(self) -> None:
        self.samples = 0

    def total(self) -> int:
        return self.samples


def init_worker_torch(cpu_threads: int | None) -> None:
    import torch

    logging.basicConfig(level=logging.INFO)
    if cpu_threads:
        torch.set_num_threads(cpu_threads)


class Worker:
    """Ray actor body: ``setup(*args)`` builds what the worker keeps (model, metric networks)
    once; ``process(task)`` handles one task. Constructed as ``Worker(*args, cpu_threads, counter)``."""

    def __init__(self, *args):
        *setup_args, cpu_threads, counter = args
        self.counter = counter
        self.setup_error: str | None = None
        try:
            init_worker_torch(cpu_threads)
            self.setup(*setup_args)
        except Exception as exc:
            log.debug("worker setup failed:\n%s", traceback.format_exc())
            self.setup_error = f"{type(exc).__name__}: {exc}"

    def setup(self, *args) -> None:
        raise NotImplementedError

    def ready(self) -> str | None:
        """None when the worker can take tasks, else why not."""
        return self.setup_error

    def report(self, n: int) -> None:
        if self.counter is not None:
            self.counter.add.remote(n)


def start_workers(ray, worker_cls, args: tuple, *, n_tasks: int, num_gpus: int | None, num_cpu_workers: int,
                  cpu_threads: int | None, counter) -> list:
    """One actor per GPU when the cluster has GPUs, else ``num_cpu_workers`` CPU actors, each
    checked ready; ``args`` go to ``worker_cls.setup``. Raises UserError when none can start."""
    gpus = int(ray.cluster_resources().get("GPU", 0))
    n_gpu = gpus if num_gpus is None else min(num_gpus, gpus)
    if num_gpus and num_gpus > gpus:
        log.warning("asked for %d GPU workers but the cluster has %d GPUs", num_gpus, gpus)
    if n_gpu > 0:
        n, resources, threads = min(n_gpu, n_tasks), {"num_gpus": 1, "num_cpus": 1}, cpu_threads
    else:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        n = min(num_cpu_workers, n_tasks)
        resources = {"num_cpus": 1}
        threads = cpu_threads or max(1, cpus // n)
    # Metric weights are looked up under TORCH_HOME: workers use the driver's setting.
    env = {k: os.environ[k] for k in ("TORCH_HOME",) if k in os.environ}
    if env:
        resources["runtime_env"] = {"env_vars": env}
    actor = ray.remote(worker_cls).options(max_restarts=2, max_task_retries=2, **resources)
    kind = "GPU" if n_gpu > 0 else "CPU"
    print(f"starting {n} {kind} worker(s)" + (f" with {threads} torch threads each" if kind == "CPU" else ""),
          file=sys.stderr, flush=True)
    workers = [actor.remote(*args, threads, counter) for _ in range(n)]
    errors = ray.get([w.ready.remote() for w in workers])
    live = [w for w, error in zip(workers, errors) if error is None]
    for w, error in zip(workers, errors):
        if error is not None:
            ray.kill(w, no_restart=True)
    if not live:
        raise UserError(f"no worker could start: {errors[0]}")
    if len(live) < len(workers):
        print(f"{len(workers) - len(live)} worker(s) could not start ({next(e for e in errors if e)}); "
              f"going on with {len(live)}", file=sys.stderr, flush=True)
    return live


def dispatch(ray, workers: list, counter, tasks: list, schema, *, counts: tuple[str, ...] = SHARD_COUNTS,
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
            live = ray.get(counter.total.remote(), timeout=30)
        except ray.exceptions.GetTimeoutError:
            live = 0
        progress.update(len(rows), max(live, counted_done), counted_done, force=not in_flight)
    return rows


class WorkerPool:
    """Workers of one kind for one run: started on first use (nothing starts when nothing is
    pending) and reused across stages; ``run`` dispatches a list of tasks to them."""

    def __init__(self, worker_cls, args: tuple, *, address: str | None, num_gpus: int | None, num_cpu_workers: int,
                 cpu_threads: int | None, n_tasks: int | None = None):
        self.worker_cls, self.args = worker_cls, args
        self.address, self.num_gpus, self.num_cpu_workers, self.cpu_threads = address, num_gpus, num_cpu_workers, cpu_threads
        self.n_tasks = n_tasks            # None: as many workers as the first stage has tasks (at most)
        self.workers: list | None = None
        self.counter = None

    def run(self, tasks: list, schema, *, counts: tuple[str, ...] = SHARD_COUNTS, failed_extra: dict | None = None,
            count_key: str = "samples_in", units: tuple[str, str] = ("shards", "samples")) -> list[dict]:
        import ray

        if not tasks:
            return []
        if self.workers is None:
            connect(ray, self.address)
            self.counter = ray.remote(ProgressCounter).options(num_cpus=0).remote()
            self.workers = start_workers(ray, self.worker_cls, self.args, n_tasks=self.n_tasks or len(tasks),
                                         num_gpus=self.num_gpus, num_cpu_workers=self.num_cpu_workers,
                                         cpu_threads=self.cpu_threads, counter=self.counter)
        ray.get(self.counter.reset.remote())
        return dispatch(ray, self.workers, self.counter, tasks, schema, counts=counts, failed_extra=failed_extra,
                        count_key=count_key, units=units)
