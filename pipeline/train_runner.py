"""Restorer training on a Ray cluster with Ray Train (orchestration: imports Ray).

One Ray Train worker per GPU (or ``num_workers`` CPU workers); the model is wrapped for
data-parallel training by ``ray.train.torch.prepare_model`` and each worker streams its own
share of the shards (``shards[rank::world]``). Rank 0 checkpoints training state every
``checkpoint_every`` steps and at the end into ``<out>/checkpoints/`` and exports the EMA
restorer to ``<out>/restorer/`` (loadable by ``load_model``); a rerun resumes from the latest
checkpoint. Progress lines and ``loss.csv`` / ``loss.png`` go to ``<out>/``.
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
    degradation: dict                      # {"name": "blur", "T": 20, ...} (pipeline.restoration.build_degradation)
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

    from pipeline.restoration import (RestorerTrainer, build_degradation, latest_checkpoint, loss_curve_png,
                                      save_restorer)
    from pipeline.tiny_models import tiny_unet
    from pipeline.train_data import shuffled_batches, stream_images

    cfg = RestorationConfig(**{**config, "shards": tuple(config["shards"]), "widths": tuple(config["widths"])})
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.seed)                                  # the same initial weights on every rank
    degrade = build_degradation(cfg.degradation)
    unet = tiny_unet(sample_size=cfg.resolution, widths=cfg.widths, seed=cfg.seed)
    trainer = RestorerTrainer(unet, degrade, lr=cfg.lr, ema_decay=cfg.ema_decay)
    out = Path(cfg.out)
    trainer.unet = ray.train.torch.prepare_model(unet)          # to the worker's device; DDP when world > 1
    device = ray.train.torch.get_device()
    losses: list[float] = []
    resume = latest_checkpoint(out / "checkpoints")
    if resume is not None:                                      # after the move: optimizer state follows the weights
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

    from pipeline.runner import _connect

    # Ray Train runs the loop in its own working directory: local paths must be absolute.
    cfg = replace(cfg, out=str(Path(cfg.out).resolve()),
                  shards=tuple(u if "://" in u else str(Path(u).resolve()) for u in cfg.shards))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    _connect(ray, address)
    trainer = TorchTrainer(train_loop, train_loop_config=asdict(cfg),
                           scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu),
                           run_config=RunConfig(storage_path=str((out / "ray_train").resolve()), name="restorer"))
    trainer.fit()
    return out / "restorer"
