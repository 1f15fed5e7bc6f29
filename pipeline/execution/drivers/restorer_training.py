"""Restorer training on a Ray cluster with Ray Train (orchestration: imports Ray).

One Ray Train worker per GPU (or ``num_workers`` CPU workers); the model is wrapped for
data-parallel training by ``ray.train.torch.prepare_model`` and each worker streams its own
share of the shards (``shards[rank::world]``). Rank 0 checkpoints training state every
``checkpoint_every`` steps and at the end into ``<out>/checkpoints/`` and exports the EMA
restorer to ``<out>/restorer/`` (loadable by ``load_model``); a rerun resumes from the latest
checkpoint. Progress lines and ``loss.csv`` / ``loss.png`` go to ``<out>/``.

``out`` must be a directory every worker sees (one machine, or a shared file system on a
multi-node cluster): the driver picks the checkpoint to resume from and every rank loads that
same one, so ranks never start at different steps.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path


@dataclass(frozen=True)
class RestorationConfig:
    shards: tuple[str, ...]
    out: str
    degradation: dict                      # {"name": "blur", "T": 20, ...} (pipeline.training.restorer.build_degradation)
    resolution: int = 32
    widths: tuple[int, ...] = (32, 64, 64)
    steps: int = 1000
    batch_size: int = 32
    lr: float = 2e-4
    ema_decay: float = 0.995
    checkpoint_every: int = 200
    seed: int = 0
    num_workers: int = 1
    use_gpu: bool = False
    log_every: int = 25


def train_loop(config: dict) -> None:
    """Runs on every Ray Train worker."""
    import ray.train
    import ray.train.torch
    import torch

    from pipeline.diffusion.degradations import build_degradation
    from pipeline.training.restorer import RestorerTrainer, loss_curve_png, save_restorer
    from pipeline.models.architectures import pixel_unet
    from pipeline.training.data import shuffled_batches, stream_images

    config = dict(config)
    resume = config.pop("resume_from")
    cfg = RestorationConfig(**{**config, "shards": tuple(config["shards"]), "widths": tuple(config["widths"])})
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.seed)                                  # the same initial weights on every rank
    degrade = build_degradation(cfg.degradation)
    unet = pixel_unet(sample_size=cfg.resolution, widths=cfg.widths, seed=cfg.seed)
    trainer = RestorerTrainer(unet, degrade, lr=cfg.lr, ema_decay=cfg.ema_decay)
    out = Path(cfg.out)
    trainer.unet = ray.train.torch.prepare_model(unet)          # to the worker's device; DDP when world > 1
    device = ray.train.torch.get_device()
    losses: list[float] = []
    if resume is not None:                                      # after the move: optimizer state follows the weights
        if not Path(resume).is_dir():
            raise FileNotFoundError(f"rank {rank} cannot see checkpoint {resume}: --out must be on storage every "
                                    "Ray Train worker shares (e.g. NFS/EFS on a multi-node cluster)")
        losses = trainer.load_checkpoint(resume)
    trainer.ema.to(device)
    mine = list(cfg.shards[rank::world]) or list(cfg.shards)
    batches = shuffled_batches(stream_images(mine, cfg.resolution, seed=cfg.seed + rank + trainer.step),
                               cfg.batch_size, seed=cfg.seed + rank + trainer.step)
    started, first_step = time.time(), trainer.step
    while trainer.step < cfg.steps:
        generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + trainer.step * 97 + rank)
        losses.append(trainer.train_step(next(batches).to(device), generator))
        done = trainer.step
        if rank == 0 and (done % cfg.log_every == 0 or done == cfg.steps):
            rate = (done - first_step) / max(time.time() - started, 1e-9)
            recent = sum(losses[-cfg.log_every:]) / len(losses[-cfg.log_every:])
            print(f"step {done}/{cfg.steps} loss {recent:.4f} {rate:.2f} steps/s ETA {(cfg.steps - done) / max(rate, 1e-9):.0f}s",
                  flush=True)
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            if rank == 0:
                trainer.save_checkpoint(out / "checkpoints", losses)
                save_restorer(out / "restorer", trainer.ema, cfg.degradation, cfg.resolution,
                              {"trained_steps": done, "config": asdict(cfg)})
                (out / "loss.csv").write_text("step,loss\n" + "".join(f"{i + 1},{v}\n" for i, v in enumerate(losses)))
                loss_curve_png(losses, out / "loss.png")
            ray.train.report({"step": done, "loss": losses[-1]})


def train_restorer(cfg: RestorationConfig, address: str | None = None) -> Path:
    """Train (or resume) on the cluster; returns the restorer directory."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from pipeline.training.restorer import checkpoint_step
    from pipeline.execution.pool import connect
    from pipeline.execution.worker_plan import WORKER_CACHE

    # Ray Train runs the loop in its own working directory: local paths must be absolute.
    cfg = replace(cfg, out=str(Path(cfg.out).resolve()),
                  shards=tuple(u if "://" in u else str(Path(u).resolve()) for u in cfg.shards))
    out = Path(cfg.out)
    check_degradation(cfg)
    resume = resume_point(cfg)
    if resume is not None and checkpoint_step(resume) >= cfg.steps:
        print(f"nothing to train: {resume} is at or past --steps {cfg.steps} (raise --steps to train longer)")
        return out / "restorer"
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    connect(ray, address, worker_output=True)      # rank 0 prints the steps, loss and ETA
    WORKER_CACHE.release(ray)          # idle job workers of this driver would hold the CPUs/GPUs training needs
    print(f"training into {out}" + (f", resuming from {resume.name}" if resume else ""), flush=True)
    loop_config = {**asdict(cfg), "resume_from": None if resume is None else str(resume)}
    trainer = TorchTrainer(train_loop, train_loop_config=loop_config,
                           scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu),
                           run_config=RunConfig(storage_path=str((out / "ray_train").resolve()), name="restorer"))
    trainer.fit()
    return out / "restorer"


# What a checkpoint's weights depend on: resuming under other values would silently mix trainings.
RESUME_MUST_MATCH = ("degradation", "resolution", "widths")


def resume_point(cfg: RestorationConfig) -> Path | None:
    """The latest checkpoint under ``<out>/checkpoints`` if it was trained with this setup;
    a checkpoint of another degradation, resolution or network is refused."""
    from pipeline.training.restorer import latest_checkpoint

    out = Path(cfg.out)
    latest = latest_checkpoint(out / "checkpoints")
    if latest is None:
        return None
    previous_file = out / "train_config.json"
    previous = json.loads(previous_file.read_text()) if previous_file.exists() else {}
    now = json.loads(json.dumps(asdict(cfg)))                    # tuples as lists, like the file
    changed = [k for k in RESUME_MUST_MATCH if previous.get(k) != now[k]]
    if changed:
        raise ValueError(f"{out} holds a restorer trained with other {', '.join(changed)} "
                         f"({', '.join(f'{k}={previous.get(k)}' for k in changed)}): use a new --out")
    return latest


def check_degradation(cfg: RestorationConfig) -> None:
    """Build the operator and apply it at s = T to one image of the training size, so a bad
    spec fails here, before the cluster starts."""
    import torch

    from pipeline.diffusion.degradations import build_degradation

    try:
        degrade = build_degradation(cfg.degradation)
        degrade(torch.zeros(1, 3, cfg.resolution, cfg.resolution), degrade.T)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"degradation {cfg.degradation} at resolution {cfg.resolution}: {exc}") from exc
