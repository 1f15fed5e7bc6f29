"""The workers of a run: the actor body every job kind's worker extends, how many start and
with what resources, and the driver's cache that keeps them between runs (an evaluation grid,
a benchmark or a test session pays for process start and imports once)."""
from __future__ import annotations

import logging
import os
import sys
import traceback

from pipeline.errors import UserError

log = logging.getLogger(__name__)


class PoolState:
    """A tiny actor per kind of worker: what the workers are set up with now (so a worker Ray
    restarts after a crash rebuilds the current run's setup, not the one it was created for)
    and the progress count they report to. Workers stay single-threaded: a threaded actor ran
    the model about 1.6x slower here."""

    def __init__(self):
        self.samples = 0
        self.generation = 0
        self.args: tuple = ()

    def configure(self, args: tuple) -> int:
        self.generation += 1
        self.args = args
        return self.generation

    def setup_args(self) -> tuple[int, tuple]:
        return self.generation, self.args

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
    once per configuration; ``process(task)`` handles one task. Constructed as
    ``Worker(state, cpu_threads)``: the setup arguments come from the ``PoolState`` actor, and
    ``ready()`` picks up a new configuration, so one worker process serves run after run of a
    driver (an evaluation grid, a benchmark, a test session) without restarting."""

    def __init__(self, state, cpu_threads: int | None):
        self.state = state
        self.generation: int | None = None
        self.setup_error: str | None = None
        init_worker_torch(cpu_threads)
        self.refresh()

    def refresh(self) -> None:
        import ray

        generation, args = ray.get(self.state.setup_args.remote())
        if generation == self.generation:
            return
        self.generation, self.setup_error = generation, None
        try:
            self.setup(*args)
        except Exception as exc:
            log.debug("worker setup failed:\n%s", traceback.format_exc())
            self.setup_error = f"{type(exc).__name__}: {exc}"

    def setup(self, *args) -> None:
        raise NotImplementedError

    def kept(self, key: tuple, build):
        """``build()``, unless the previous configuration built the same ``key`` (the same model
        for the next t of a grid): the last one is kept, nothing more."""
        if getattr(self, "_kept", (None, None))[0] != key:
            self._kept = (None, None)          # free the old one before building the new
            self._kept = (key, build())
        return self._kept[1]

    def ready(self) -> str | None:
        """None when the worker can take tasks of the current configuration, else why not."""
        self.refresh()
        return self.setup_error

    def report(self, n: int) -> None:
        self.state.add.remote(n)


def worker_resources(ray, n_tasks: int, num_gpus: int | None, num_cpu_workers: int,
                     cpu_threads: int | None) -> tuple[int, str, dict, int | None]:
    """(how many workers, GPU or CPU, their actor options, torch threads each): one per GPU
    when the cluster has GPUs, else ``num_cpu_workers`` CPU actors."""
    gpus = int(ray.cluster_resources().get("GPU", 0))
    n_gpu = gpus if num_gpus is None else min(num_gpus, gpus)
    if num_gpus and num_gpus > gpus:
        log.warning("asked for %d GPU workers but the cluster has %d GPUs", num_gpus, gpus)
    if n_gpu > 0:
        return min(n_gpu, n_tasks), "GPU", {"num_gpus": 1, "num_cpus": 1}, cpu_threads
    cpus = int(ray.cluster_resources().get("CPU", 1))
    n = min(num_cpu_workers, n_tasks)
    return n, "CPU", {"num_cpus": 1}, cpu_threads or max(1, cpus // n)


class WorkerCache:
    """This driver's idle workers, by kind (class, GPU/CPU, threads, environment), kept between
    runs. Taking workers of one kind ends every other idle worker first, so idle workers never
    hold the GPUs or CPUs a new kind needs. Bound to one Ray cluster: after a reconnect it
    starts empty."""

    def __init__(self):
        self.cluster = None
        self.idle: dict[tuple, tuple[object, list]] = {}      # kind -> (PoolState, workers)

    def take(self, ray, kind: tuple, n: int):
        """(state actor, up to ``n`` idle workers of ``kind``); ends every other idle worker."""
        cluster = (ray.get_runtime_context().get_node_id(), ray.get_runtime_context().get_job_id())
        if cluster != self.cluster:
            self.cluster, self.idle = cluster, {}
        state, workers = self.idle.pop(kind, (None, []))
        for other_state, others in self.idle.values():
            for w in others:
                ray.kill(w, no_restart=True)
        self.idle = {}
        for w in workers[n:]:
            ray.kill(w, no_restart=True)
        if state is None:
            state = ray.remote(PoolState).options(num_cpus=0).remote()
        return state, workers[:n]

    def give_back(self, kind: tuple, state, workers: list) -> None:
        self.idle[kind] = (state, list(workers))

    def release(self, ray) -> None:
        """End every idle worker (before this driver uses the cluster's resources otherwise)."""
        if ray.is_initialized() and self.cluster == (ray.get_runtime_context().get_node_id(),
                                                     ray.get_runtime_context().get_job_id()):
            for _, workers in self.idle.values():
                for w in workers:
                    ray.kill(w, no_restart=True)
        self.idle = {}


WORKER_CACHE = WorkerCache()


def start_workers(ray, worker_cls, args: tuple, *, n_tasks: int, num_gpus: int | None, num_cpu_workers: int,
                  cpu_threads: int | None) -> tuple[tuple, object, list]:
    """Workers of ``worker_cls`` set up with ``args``, each checked ready: idle ones of the
    same kind first, new ones for the rest. Returns (kind, state actor, workers); raises
    UserError when none can start."""
    n, device, resources, threads = worker_resources(ray, n_tasks, num_gpus, num_cpu_workers, cpu_threads)
    # Metric weights are looked up under TORCH_HOME: workers use the driver's setting.
    env = {k: os.environ[k] for k in ("TORCH_HOME",) if k in os.environ}
    if env:
        resources["runtime_env"] = {"env_vars": env}
    kind = (worker_cls.__module__, worker_cls.__qualname__, device, threads, tuple(sorted(env.items())))
    state, reused = WORKER_CACHE.take(ray, kind, n)
    ray.get(state.configure.remote(args))
    ray.get(state.reset.remote())
    actor = ray.remote(worker_cls).options(max_restarts=2, max_task_retries=2, **resources)
    print(f"starting {n} {device} worker(s)" + (f" with {threads} torch threads each" if device == "CPU" else "")
          + (f" ({len(reused)} already running)" if reused else ""), file=sys.stderr, flush=True)
    live, errors = [], []
    for batch in (reused, None):          # idle workers first (one may have died meanwhile), then new ones
        if batch is None:
            batch = [actor.remote(state, threads) for _ in range(n - len(live))]
        for w in batch:
            try:
                error = ray.get(w.ready.remote())
            except ray.exceptions.RayActorError as exc:
                error = f"the worker died: {exc}"
            if error is None:
                live.append(w)
            else:
                errors.append(error)
                ray.kill(w, no_restart=True)
    if not live:
        raise UserError(f"no worker could start: {errors[0]}")
    if len(live) < n:
        print(f"{n - len(live)} worker(s) could not start ({errors[0]}); going on with {len(live)}",
              file=sys.stderr, flush=True)
    return kind, state, live
