"""Orchestration over a Ray cluster: the only module that imports Ray.

Why Ray actors rather than Ray Data: the unit of work here is a shard (one output shard per
input shard, named after it, with a completion marker), which Ray Data's webdataset sink
cannot express (it names files ``{uuid}_{block}``) and its reader would decode unsafe
fields. So each worker is an actor that loads the model once and takes whole shards from a
driver-side queue, one at a time; memory per worker is bounded by its batch, and the
driver holds only manifest rows.

Workers: one per GPU (``num_gpus=1``) when the cluster has GPUs, else ``num_cpu_workers``
CPU actors. A crashed actor is restarted and its shard retried; a shard that still fails is
recorded as ``failed`` and redone by the next run.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import posixpath
import sys
from dataclasses import dataclass

import fsspec

from pipeline.config import JobConfig, model_fingerprint
from pipeline.progress import Progress
from pipeline.records import MANIFEST_SCHEMA, read_manifest_dir, read_parquet_dir, rows_table, write_parquet_atomic
from pipeline.tasks import ShardTask, input_size
from pipeline.shards import expand_shard_urls, shard_name

log = logging.getLogger(__name__)


@dataclass
class RunPlan:
    run_dir: str
    pending: list[ShardTask]
    skipped: list[str]


def resolve_config(cfg: JobConfig) -> JobConfig:
    """Expand the inputs and pin the model's identity into the (hashed) configuration."""
    from pipeline.model_source import resolve_model_dir

    model_dir = resolve_model_dir(cfg.model)
    check_method_matches_model(cfg, model_dir)
    check_steps(cfg, model_dir)
    return dataclasses.replace(cfg, inputs=expand_inputs(cfg.inputs), model_fingerprint=model_fingerprint(model_dir))


def expand_inputs(inputs) -> tuple[str, ...]:
    """The input shard URLs; outputs are named after them, so base names must be unique."""
    shards = tuple(expand_shard_urls(list(inputs)))
    if not shards:
        raise ValueError(f"--input {list(inputs)} matches no shards")
    names = [shard_name(u) for u in shards]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise ValueError(f"input shards share base names {clashes[:5]}: outputs are named after inputs, so "
                         f"process each directory as its own run (or rename the shards)")
    return shards


def check_method_matches_model(cfg: JobConfig, model_dir) -> None:
    """Cold methods need a restorer trained for their degradation, with s within its T;
    Boomerang needs a diffusion model. Checked before any work, from cold.json alone."""
    from pathlib import Path

    cold_file = Path(model_dir) / "cold.json"
    if not cfg.is_cold:
        if cold_file.exists():
            raise ValueError(f"{cfg.model} is a Cold Diffusion restorer: use --method cold-<degradation> --s N")
        return
    if not cold_file.exists():
        raise ValueError(f"--method {cfg.method} needs a restorer trained by jobs/train_restoration.py "
                         f"(a directory with cold.json); {cfg.model} is not one")
    spec = json.loads(cold_file.read_text())["degradation"]
    if f"cold-{spec['name']}" != cfg.method:
        raise ValueError(f"{cfg.model} restores '{spec['name']}' degradations: use --method cold-{spec['name']}")
    if max(cfg.s) > int(spec["T"]):
        raise ValueError(f"--s {max(cfg.s)} exceeds the restorer's T = {spec['T']}")


def check_steps(cfg: JobConfig, model_dir) -> None:
    """Fail before any work when --steps exceeds the model's training timesteps."""
    from pathlib import Path

    for candidate in (Path(model_dir) / "scheduler" / "scheduler_config.json", Path(model_dir) / "scheduler_config.json"):
        if candidate.exists():
            train_steps = json.loads(candidate.read_text()).get("num_train_timesteps", 1000)
            if cfg.steps > train_steps:
                raise ValueError(f"--steps {cfg.steps} exceeds the model's {train_steps} training timesteps")
            return


def plan_run(cfg: JobConfig) -> RunPlan:
    """Which shards still need work: those with no manifest row, a ``failed`` one, or a
    different input size since they were processed (the input was replaced or its upload
    completed). ``ok`` and ``truncated`` shards of unchanged inputs are final."""
    run_dir = cfg.run_dir
    pending, skipped = pending_inputs(cfg.inputs, posixpath.join(run_dir, "manifest"))
    return RunPlan(run_dir, [ShardTask.for_shard(run_dir, url, size) for url, size in pending], skipped)


def pending_inputs(inputs, manifest_dir: str) -> tuple[list[tuple[str, int | None]], list[str]]:
    """Input shards still to process, with their sizes, and those already done."""
    done = {row["input_shard"]: row for row in read_manifest_dir(manifest_dir)}
    pending, skipped = [], []
    for url in inputs:
        size = input_size(url)
        prev = done.get(url)
        if prev and prev["status"] in ("ok", "truncated") and prev["input_bytes"] == size:
            skipped.append(url)
        else:
            pending.append((url, size))
    return pending, skipped


def write_run_files(cfg: JobConfig, plan: RunPlan) -> None:
    fs, path = fsspec.core.url_to_fs(plan.run_dir)
    fs.makedirs(path, exist_ok=True)
    with fs.open(posixpath.join(path, "config.json"), "w") as f:
        f.write(cfg.to_json())
    entry = {"started_at": dt.datetime.now(dt.timezone.utc).isoformat(), "pending": len(plan.pending),
             "skipped": len(plan.skipped), "argv": sys.argv}
    log_path = posixpath.join(path, "runs.jsonl")
    previous = fs.cat_file(log_path).decode() if fs.exists(log_path) else ""
    with fs.open(log_path, "w") as f:
        f.write(previous + json.dumps(entry) + "\n")


def merge_manifest(run_dir: str, schema=MANIFEST_SCHEMA) -> list[dict]:
    """Rewrite ``manifest.parquet`` from the per-shard files (one row per shard)."""
    rows = read_parquet_dir(posixpath.join(run_dir, "manifest"), schema)
    write_parquet_atomic(rows_table(rows, schema), posixpath.join(run_dir, "manifest.parquet"))
    return rows


def print_summary(rows: list[dict], run_dir: str, unit: str = "samples") -> None:
    by_status: dict[str, int] = {}
    for row in rows:
        by_status[row["status"]] = by_status.get(row["status"], 0) + 1
    totals = {k: sum(r[k] or 0 for r in rows) for k in ("samples_in", "samples_ok", "samples_error")}
    print(f"done: shards {by_status}; {unit} in {totals['samples_in']}, ok {totals['samples_ok']}, "
          f"error {totals['samples_error']}; outputs under {run_dir}", file=sys.stderr, flush=True)


class ProgressCounter:
    """A tiny actor the workers report finished samples to (so workers stay single-threaded:
    a threaded actor ran the model about 1.6x slower here)."""

    def __init__(self):
        self.samples = 0

    def add(self, n: int) -> None:
        self.samples += n

    def reset(self) -> None:
        self.samples = 0

    def total(self) -> int:
        return self.samples


def _load_suite(settings):
    """The metric networks, loaded once per worker (None when nothing is measured)."""
    if settings is None or not settings.enabled():
        return None
    from metrics.suite import MetricSuite

    return MetricSuite(settings)


def _init_torch(cpu_threads: int | None) -> None:
    import torch

    logging.basicConfig(level=logging.INFO)
    if cpu_threads:
        torch.set_num_threads(cpu_threads)


class ShardWorker:
    """Ray actor body: loads the model (and any metric networks) once, then processes shards one at a time."""

    def __init__(self, cfg: JobConfig, cpu_threads: int | None, counter=None):
        from pipeline.models import load_model
        from pipeline.shard_processor import ShardProcessor

        _init_torch(cpu_threads)
        model = load_model(cfg.model, sampler=cfg.sampler, device=cfg.device, dtype=cfg.dtype, resolution=cfg.resolution)
        self.processor = ShardProcessor(cfg, model, _load_suite(cfg.metrics))
        self.counter = counter

    def process(self, task: ShardTask) -> dict:
        report = (lambda n: self.counter.add.remote(n)) if self.counter is not None else (lambda n: None)
        return self.processor.process(task, progress=report)


class EvalWorker:
    """Ray actor body: loads the metric networks once, then scores existing output shards."""

    def __init__(self, settings, image_field: str | None, cpu_threads: int | None, counter=None):
        _init_torch(cpu_threads)
        self.suite = _load_suite(settings)
        self.image_field = image_field
        self.counter = counter

    def process(self, task) -> dict:
        from pipeline.evaluation import evaluate_shard

        row = evaluate_shard(self.suite, task, self.image_field)
        if self.counter is not None:
            self.counter.add.remote((row["outputs_scored"] or 0) + (row["outputs_error"] or 0))
        return row


def _start_workers(ray, actor_cls, args: tuple, *, n_tasks: int, num_gpus: int | None, num_cpu_workers: int,
                   cpu_threads: int | None, counter):
    """One actor per GPU when the cluster has GPUs, else ``num_cpu_workers`` CPU actors;
    ``args`` go to the actor's constructor before (cpu_threads, counter)."""
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
    actor = ray.remote(actor_cls).options(max_restarts=2, max_task_retries=2, **resources)
    kind = "GPU" if n_gpu > 0 else "CPU"
    print(f"starting {n} {kind} worker(s)" + (f" with {threads} torch threads each" if kind == "CPU" else ""),
          file=sys.stderr, flush=True)
    return [actor.remote(*args, threads, counter) for _ in range(n)]


def _connect(ray, address: str | None) -> None:
    if ray.is_initialized():
        return
    if address is None and not os.environ.get("RAY_ADDRESS"):
        # No cluster named: start a private local one (never silently join another
        # cluster that happens to run here; pass --address auto for that).
        ray.init(address="local", include_dashboard=False)
    else:
        ray.init(address=address)


def run_job(cfg: JobConfig) -> list[dict]:
    """Process every pending shard of ``cfg``; returns the run's merged manifest rows."""
    import ray

    cfg = resolve_config(cfg)
    plan = plan_run(cfg)
    write_run_files(cfg, plan)
    print(f"run directory {plan.run_dir}: {len(plan.pending)} shard(s) to process, {len(plan.skipped)} already done",
          file=sys.stderr, flush=True)
    if cfg.metrics is not None and cfg.metrics.enabled():
        from metrics.suite import check_available
        from pipeline.evaluation import write_eval_settings

        check_available(cfg.metrics)          # missing weights fail here, before any work
        write_eval_settings(posixpath.join(plan.run_dir, cfg.metrics.eval_dir_name()), cfg.metrics)
    if plan.pending:
        _connect(ray, cfg.address)
        counter = ray.remote(ProgressCounter).options(num_cpus=0).remote()
        workers = _start_workers(ray, ShardWorker, (cfg,), n_tasks=len(plan.pending), num_gpus=cfg.num_gpus,
                                 num_cpu_workers=cfg.num_cpu_workers, cpu_threads=cfg.cpu_threads, counter=counter)
        _dispatch(ray, workers, counter, plan.pending, lambda task, error: _failed_shard_row(cfg, task, error))
    rows = merge_manifest(plan.run_dir)
    print_summary(rows, plan.run_dir)
    return rows


def _failed_shard_row(cfg: JobConfig, task: ShardTask, error: str) -> dict:
    row = {"input_shard": task.input_url, "output_shard": task.output_url, "status": "failed", "error": error,
           "config_hash": cfg.config_hash(), "samples_in": 0, "samples_ok": 0, "samples_error": 0, "outputs_ok": 0,
           "outputs_error": 0}
    write_parquet_atomic(rows_table([row], MANIFEST_SCHEMA), task.manifest_url)
    return row


def _dispatch(ray, workers: list, counter, tasks: list, record_failure, count_key: str = "samples_in",
              units: tuple[str, str] = ("shards", "samples")) -> None:
    """Feed tasks to idle workers until all are done. A task whose worker died (after its
    restarts) or raised is recorded by ``record_failure(task, error)`` and redone next run."""
    queue = list(reversed(tasks))
    in_flight: dict = {}            # object ref -> (worker, task)
    progress = Progress(len(tasks), units=units)
    shards_done = counted_done = 0
    idle = list(workers)

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
                row = record_failure(task, f"{type(exc).__name__}: {str(exc)[:500]}")
                log.error("shard %s: %s", task.input_url, exc)
            else:
                idle.append(worker)
            shards_done += 1
            counted_done += row.get(count_key) or 0
            if row["status"] != "ok":
                print(f"\nshard {task.input_url}: {row['status']}: {row['error']}", file=sys.stderr, flush=True)
        if not idle and not in_flight and queue:
            raise RuntimeError("all workers died; see the worker logs")
        submit()
        try:
            live = ray.get(counter.total.remote(), timeout=30)
        except ray.exceptions.GetTimeoutError:
            live = 0
        progress.update(shards_done, max(live, counted_done), counted_done, force=not in_flight)


def plan_evaluation(run_dir: str, settings) -> tuple[str, list, list[str]]:
    """Output shards of a run still to score: finished shards (``ok``/``truncated``) with no
    ``ok`` evaluation, or one that scored a different number of outputs (the shard was
    regenerated since). Returns (eval dir, pending EvalTasks, skipped output shards)."""
    from pipeline.evaluation import EvalTask, read_eval_manifest

    eval_dir = posixpath.join(run_dir, settings.eval_dir_name())
    scored = {row["output_shard"]: row for row in read_eval_manifest(eval_dir)}
    pending, skipped = [], []
    for row in read_manifest_dir(posixpath.join(run_dir, "manifest")):
        if row["status"] not in ("ok", "truncated"):
            continue
        prev = scored.get(row["output_shard"])
        if prev and prev["status"] == "ok" and prev["outputs_scored"] + prev["outputs_error"] == row["outputs_ok"]:
            skipped.append(row["output_shard"])
        else:
            pending.append(EvalTask.for_shard(eval_dir, row["input_shard"], row["output_shard"]))
    return eval_dir, pending, skipped


def run_evaluation(run_dir: str, settings, *, address: str | None = None, num_gpus: int | None = None,
                   num_cpu_workers: int = 1, cpu_threads: int | None = None) -> str:
    """Score a finished run's outputs on the cluster (only shards not scored yet); returns the eval dir."""
    import ray

    from metrics.suite import check_available
    from pipeline.config import load_run_config
    from pipeline.evaluation import EVAL_MANIFEST_SCHEMA, write_eval_settings

    cfg = load_run_config(run_dir)
    check_available(settings)
    eval_dir, pending, skipped = plan_evaluation(run_dir, settings)
    write_eval_settings(eval_dir, settings)
    print(f"evaluation {eval_dir}: {len(pending)} shard(s) to score, {len(skipped)} already scored",
          file=sys.stderr, flush=True)
    if pending:
        _connect(ray, address)
        counter = ray.remote(ProgressCounter).options(num_cpus=0).remote()
        workers = _start_workers(ray, EvalWorker, (settings, cfg.image_field), n_tasks=len(pending), num_gpus=num_gpus,
                                 num_cpu_workers=num_cpu_workers, cpu_threads=cpu_threads, counter=counter)

        def record_failure(task, error: str) -> dict:
            row = {"input_shard": task.input_url, "output_shard": task.output_url, "status": "failed", "error": error,
                   "outputs_scored": 0, "outputs_error": 0}
            write_parquet_atomic(rows_table([row], EVAL_MANIFEST_SCHEMA), task.manifest_url)
            return row

        _dispatch(ray, workers, counter, pending, record_failure, count_key="outputs_scored")
    return eval_dir
