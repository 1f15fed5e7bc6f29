"""How many workers of which kind a run asks for, and the driver's cache that keeps them between
runs (an evaluation grid, a benchmark or a test session pays for process start and imports
once): GPU workers beyond the cluster's GPUs stay pending as the autoscaler's demand."""
from __future__ import annotations

import logging
import os
import sys
import time
import uuid
from dataclasses import dataclass

from pipeline.config.sections import DEFAULT_MAX_GPU_WORKERS
from pipeline.errors import UserError
from pipeline.execution.actors import PoolState
from pipeline.execution.cluster_capacity import why_no_gpu_can_come


log = logging.getLogger(__name__)


@dataclass
class WorkerPlan:
    """How many workers of which kind a run asks for. GPU workers beyond the GPUs the cluster
    has now stay pending: they are the autoscaler's demand, and join the run as nodes come up."""
    device: str                      # "GPU" or "CPU"
    n: int
    threads: int | None
    why: str                         # one line for the log: where the number comes from

    def actor_options(self) -> dict:
        return {"num_gpus": 1, "num_cpus": 1} if self.device == "GPU" else {"num_cpus": 1}


def plan_workers(*, n_tasks: int, gpus_now: int, cpus_now: int, joined: bool, num_gpus: int | None,
                 num_cpu_workers: int, cpu_threads: int | None) -> WorkerPlan:
    """The workers for ``n_tasks`` tasks. ``joined``: the driver joined an existing cluster (by
    address, as ``ray job submit`` does) rather than starting one, so GPUs may still come from
    its autoscaler. CPU workers only when asked (``num_gpus=0``) or on a cluster this driver
    started that has no GPU (a laptop, CI); never as a fallback on a joined cluster."""
    def cpu(why: str) -> WorkerPlan:
        n = max(1, min(num_cpu_workers, n_tasks))
        return WorkerPlan("CPU", n, cpu_threads or max(1, cpus_now // n), why)

    if num_gpus == 0:
        return cpu("--num-gpus 0")
    if num_gpus is not None:
        if not joined and num_gpus > gpus_now:          # nothing can add a GPU to a cluster this driver started
            if not gpus_now:
                raise UserError(f"--num-gpus {num_gpus}: this local cluster has no GPU (--num-gpus 0 runs CPU "
                                f"workers; --address joins a cluster with GPUs)")
            log.warning("asked for %d GPU workers but this local cluster has %d GPUs", num_gpus, gpus_now)
            num_gpus = gpus_now
        return WorkerPlan("GPU", min(num_gpus, n_tasks), cpu_threads, f"--num-gpus {num_gpus}")
    if joined:
        wanted = max(gpus_now, DEFAULT_MAX_GPU_WORKERS)
        return WorkerPlan("GPU", min(wanted, n_tasks), cpu_threads,
                          f"{gpus_now} GPU(s) in the cluster now, up to {wanted} as the autoscaler adds nodes")
    if gpus_now:
        return WorkerPlan("GPU", min(gpus_now, n_tasks), cpu_threads, f"{gpus_now} GPU(s) in this local cluster")
    return cpu("no GPU in this local cluster")


def cluster_facts(ray) -> tuple[int, int, bool]:
    """(GPUs now, CPUs now, whether this driver joined a cluster it did not start)."""
    resources = ray.cluster_resources()
    # Set by ray.init: ``head`` when this driver started the cluster; None for a Ray Client
    # driver (``ray://``), which always joins. Ray has no public way to ask this.
    node = ray._private.worker._global_node
    joined = node is None or not node.head
    return int(resources.get("GPU", 0)), int(resources.get("CPU", 1)), joined


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
            name = f"ddp-pool-state-{uuid.uuid4().hex}"
            state = ray.remote(PoolState).options(num_cpus=0, name=name).remote(name)
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
                  cpu_threads: int | None, gpu_wait: float = 900.0) -> tuple[tuple, object, list, dict]:
    """Workers of ``worker_cls`` set up with ``args``: idle ones of the same kind first, new
    ones for the rest. Returns as soon as one is ready (waiting up to ``gpu_wait`` seconds for
    GPU nodes to join): (kind, state actor, ready workers, {ready ref: worker} still starting,
    for the dispatcher to add as they come). Raises UserError when none can start."""
    gpus_now, cpus_now, joined = cluster_facts(ray)
    plan = plan_workers(n_tasks=n_tasks, gpus_now=gpus_now, cpus_now=cpus_now, joined=joined, num_gpus=num_gpus,
                        num_cpu_workers=num_cpu_workers, cpu_threads=cpu_threads)
    n, device, resources, threads = plan.n, plan.device, plan.actor_options(), plan.threads
    never = gpu_never_comes(ray, device, joined)
    if never:
        raise UserError(never)
    # Metric weights are looked up under TORCH_HOME: workers use the driver's setting.
    env = {k: os.environ[k] for k in ("TORCH_HOME",) if k in os.environ}
    if env:
        resources["runtime_env"] = {"env_vars": env}
    kind = (worker_cls.__module__, worker_cls.__qualname__, device, threads, tuple(sorted(env.items())))
    state, reused = WORKER_CACHE.take(ray, kind, n)
    ray.get(state.configure.remote(args))
    ray.get(state.reset.remote())
    # Ray restarts a lost worker; its task is retried by the dispatcher (``MAX_ATTEMPTS``), on
    # whichever worker is free, rather than waiting for this one to come back.
    # A shard that kills its worker is tried MAX_ATTEMPTS times: restarts stay ahead of that.
    actor = ray.remote(worker_cls).options(max_restarts=8, max_task_retries=0, **resources)
    print(f"starting {n} {device} worker(s) ({plan.why})" + (f" with {threads} torch threads each" if device == "CPU" else "")
          + (f", {len(reused)} already running" if reused else ""), file=sys.stderr, flush=True)
    starting = {w.ready.remote(): w for w in reused}
    state_name = ray.get(state.name.remote())         # workers find the state by name (see PoolState.name)
    starting.update({w.ready.remote(): w for w in (actor.remote(state_name, threads) for _ in range(n - len(reused)))})
    live, errors = [], []
    wait = gpu_wait if device == "GPU" else max(gpu_wait, 600.0)      # CPU workers: only their start-up
    deadline = time.monotonic() + wait
    last_note = time.monotonic()
    while starting and not live:
        settle_started(ray, starting, live, errors, timeout=5.0)
        if live or not starting:
            break
        never = gpu_never_comes(ray, device, joined)      # the autoscaler's report may come later
        if never:
            for w in starting.values():
                ray.kill(w, no_restart=True)
            raise UserError(never)
        if time.monotonic() > deadline:
            for w in starting.values():
                ray.kill(w, no_restart=True)
            raise UserError(f"no {device} worker started within {wait:.0f} s: {waiting_for(ray, device, n)}"
                            + ("; --gpu-wait S waits longer, --num-gpus 0 runs CPU workers" if device == "GPU" else ""))
        if time.monotonic() - last_note >= 30:
            print(f"waiting for {device} workers: {waiting_for(ray, device, n)}", file=sys.stderr, flush=True)
            last_note = time.monotonic()
    if not live:
        raise UserError(f"no worker could start: {errors[0]}")
    if errors:
        print(f"{len(errors)} worker(s) could not start ({errors[0]}); going on with the others",
              file=sys.stderr, flush=True)
    return kind, state, live, starting


def gpu_never_comes(ray, device: str, joined: bool) -> str | None:
    """The one-line error for GPU workers on a joined cluster that can never have a GPU; None
    when one may come (a GPU node is there, an autoscaler may add one, or nothing is known)."""
    if device != "GPU" or not joined:
        return None
    why = why_no_gpu_can_come(ray)
    return None if why is None else (f"no GPU worker can start: {why}; --num-gpus 0 runs CPU workers, or join a "
                                     f"GPU node (`ray start --address ...` on it) first")


def settle_started(ray, starting: dict, live: list, errors: list, timeout: float) -> None:
    """Move the workers whose ``ready()`` answered from ``starting`` to ``live`` (or end them,
    with the reason in ``errors``)."""
    done, _ = ray.wait(list(starting), num_returns=len(starting), timeout=timeout)
    for ref in done:
        worker = starting.pop(ref)
        try:
            error = ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            error = f"the worker died: {exc}"
        if error is None:
            live.append(worker)
        else:
            errors.append(error)
            ray.kill(worker, no_restart=True)


def waiting_for(ray, device: str, n: int) -> str:
    """What a run waits for, in words (`ray status` on the head tells what the autoscaler does)."""
    return f"{n} asked, the cluster has {int(ray.cluster_resources().get(device, 0))} {device}(s) now"
