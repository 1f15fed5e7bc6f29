"""The Ray actors of every job kind: the body each extends (``Worker``: its setup, rebuilt from the
``PoolState`` after a restart, and kept between runs of one driver) and what each kind loads
once and how it runs one task through the engine (``pipeline.engine.local``)."""
from __future__ import annotations

import logging
import socket
import traceback

import ray

from pipeline.config.interpolation import InterpConfig
from pipeline.config.job import JobConfig
from pipeline.engine.tasks import CompositeTask, EvalTask, GroupTask, InversionTask, PairTask, ShardTask


log = logging.getLogger(__name__)


class PoolState:
    """A tiny actor per kind of worker: what the workers are set up with now (so a worker Ray
    restarts after a crash rebuilds the current run's setup, not the one it was created for)
    and the progress count they report to. Workers stay single-threaded: a threaded actor ran
    the model about 1.6x slower here."""

    def __init__(self, name: str = ""):
        self.samples = 0
        self.generation = 0
        self.args: tuple = ()
        self._name = name

    def name(self) -> str:
        """The name workers find this actor by: a handle among an actor's constructor arguments
        lives in the object store, where a restart after a crash may no longer find it (Ray
        warns of exactly that for every worker); a name is looked up again at each restart."""
        return self._name

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
    ``Worker(state, cpu_threads)`` (``state``: the ``PoolState`` actor or its name): the setup
    arguments come from the ``PoolState`` actor, and
    ``ready()`` picks up a new configuration, so one worker process serves run after run of a
    driver (an evaluation grid, a benchmark, a test session) without restarting."""

    def __init__(self, state, cpu_threads: int | None):
        self.state = ray.get_actor(state) if isinstance(state, str) else state
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

    # Asked again while Ray restarts the worker (a crash, a lost node), until it is back or dead.
    @ray.method(max_task_retries=-1)
    def ready(self) -> str | None:
        """None when the worker can take tasks of the current configuration, else why not."""
        self.refresh()
        return self.setup_error

    def report(self, n: int) -> None:
        self.state.add.remote(n)


def load_suite(settings):
    """The metric networks (``pipeline.engine.local.load_suite``; kept here for callers of this module)."""
    from pipeline.engine.local import load_suite as load

    return load(settings)


def load_judge(cfg: JobConfig, device: str):
    """The loop recognizers of --privacy-target (``pipeline.engine.local.load_judge``)."""
    from pipeline.engine.local import load_judge as load

    return load(cfg, device)


class ShardWorker(Worker):
    """Loads the model (and any metric networks) once, then processes shards one at a time."""

    def setup(self, cfg: JobConfig, method, secret: bytes | None) -> None:
        from pipeline.engine.local import load_job, load_job_model, model_identity
        from pipeline.methods import register

        register(method)      # the driver's method: one registered outside the package works here too
        model = self.kept(model_identity(cfg), lambda: load_job_model(cfg))
        self.cfg = cfg
        self.model, self.transform, self.suite = load_job(cfg, secret, model)

    def process(self, task: ShardTask) -> dict:
        from pipeline.engine.local import process_shard

        return process_shard(self.cfg, self.model, task, transform=self.transform, suite=self.suite,
                             progress=self.report)


class EvalWorker(Worker):
    """Loads the metric networks once, then scores existing output shards."""

    def setup(self, settings, image_field: str | None) -> None:
        self.suite = load_suite(settings)
        self.image_field = image_field

    def process(self, task) -> dict:
        from pipeline.engine.local import score_shard

        return score_shard(self.suite, task, self.image_field, progress=self.report)


class InterpWorker(Worker):
    """The model and the metric networks, loaded once, for both stages."""

    def setup(self, cfg: InterpConfig) -> None:
        from pipeline.models.loading import load_model
        from pipeline.transforms.frames import Frames
        from pipeline.transforms.inversion import Inversion

        model = load_model(cfg.run.model, sampler="ddim", device=cfg.execution.device, dtype=cfg.images.dtype,
                           resolution=cfg.images.resolution)
        inception = lpips = None
        if cfg.frame_metrics.fid:
            from metrics.inception import load_fid_inception

            inception = load_fid_inception(cfg.frame_metrics.inception_weights, device=model.device)
        if cfg.frame_metrics.lpips:
            from metrics.fidelity import load_lpips

            lpips = load_lpips(device=model.device)
        self.stages = {InversionTask: Inversion(cfg, model, inception), PairTask: Frames(cfg, model, inception, lpips)}
        self.context = {"config_hash": cfg.config_hash(), "worker": f"{socket.gethostname()}:{model.device}"}
        self.max_member_bytes = cfg.images.max_member_bytes

    def process(self, task) -> dict:
        from pipeline.engine.loop import run

        return run(task, self.stages[type(task)], progress=self.report, max_member_bytes=self.max_member_bytes,
                   **self.context)


class KSameWorker(Worker):
    """--identity k-same: the model, loaded once, for every stage (embedding, group surrogates,
    and with --region faces the composites), and with --metrics the metric networks, which score
    the outputs once they are made."""

    def setup(self, cfg: JobConfig, secret: bytes | None) -> None:
        from pipeline.engine.local import k_same_stages, load_job_model, model_identity

        model = self.kept(model_identity(cfg), lambda: load_job_model(cfg))
        self.stages = k_same_stages(cfg, model, secret)
        self.suite = load_suite(cfg.metrics)
        self.context = {"config_hash": cfg.config_hash(), "worker": f"{socket.gethostname()}:{model.device}"}
        self.max_member_bytes, self.key_ordered = cfg.images.max_member_bytes, cfg.pseudonymized

    def process(self, task) -> dict:
        from pipeline.engine.loop import run

        if isinstance(task, EvalTask):
            from pipeline.engine.local import score_shard

            return score_shard(self.suite, task, progress=self.report)
        return run(task, self.stages[type(task)], progress=self.report, max_member_bytes=self.max_member_bytes,
                   key_ordered=self.key_ordered and isinstance(task, (GroupTask, CompositeTask)), **self.context)
