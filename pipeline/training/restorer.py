"""Training a Cold Diffusion restorer ``R(x_s, s) ≈ x0`` (methods.md section 3) and the files it
leaves: pure torch, no Ray (``pipeline.execution.drivers.restorer_training`` runs it under Ray Train).

* the degradation is described by a JSON-able spec (``{"name": "blur", "T": 50, ...}``) stored
  beside the weights, so a restorer always samples with the operator it was trained for;
* a restorer directory (``cold.json`` + ``unet/`` in diffusers' format, EMA weights) is a model
  like any other for ``pipeline.models.loading.load_model`` (kind ``cold``);
* training state (weights, EMA, optimizer, step) is checkpointed under ``checkpoints/`` with
  safetensors and a weights-only optimizer file, and training resumes from the latest one.
"""
from __future__ import annotations

import copy
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import safetensors.torch
import torch
import torch.nn.functional as F

from pipeline.diffusion.degradations import bind

COLD_CONFIG = "cold.json"


def restoration_loss(unet: torch.nn.Module, degrade, x0: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """L1 between ``R(D(x0, s), s)`` and ``x0`` (the paper's objective)."""
    with torch.no_grad():
        x_s = degrade(x0, s)
    return F.l1_loss(unet(x_s, s).sample, x0)


@dataclass
class RestorerTrainer:
    """One optimizer step at a time, with EMA weights; its state round-trips through files."""
    unet: torch.nn.Module
    degrade: object
    lr: float = 2e-4
    ema_decay: float = 0.995
    warmup: int = 50
    step: int = 0
    ema: torch.nn.Module = field(init=False)
    optimizer: torch.optim.Optimizer = field(init=False)

    def __post_init__(self) -> None:
        self.ema = copy.deepcopy(_unwrap(self.unet)).eval().requires_grad_(False)
        self.optimizer = torch.optim.AdamW(self.unet.parameters(), lr=self.lr, weight_decay=0.0)

    def train_step(self, x0: torch.Tensor, generator: torch.Generator) -> float:
        """Random severities in 1..T, horizontal flips; returns the batch loss."""
        n = x0.shape[0]
        s = torch.randint(1, self.degrade.T + 1, (n,), generator=generator).to(x0.device)
        flip = (torch.rand(n, generator=generator) < 0.5).to(x0.device)
        x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        degrade = bind(self.degrade, x0, generator)            # random centres / colours, if the operator has them
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr * min(1.0, (self.step + 1) / self.warmup)
        self.unet.train()
        return self._apply(restoration_loss(self.unet, degrade, x0, s))

    def train_pair_step(self, x_s: torch.Tensor, x0: torch.Tensor, generator: torch.Generator, severity: int = 1) -> float:
        """Paired mode: the degradation is not an operator but given examples ``x_s`` of it (e.g.
        an anonymizer's outputs) with their originals ``x0``; one L1 step of ``R(x_s, severity)``
        towards ``x0``, with the same horizontal flip on both. Returns the batch loss."""
        n = x0.shape[0]
        flip = (torch.rand(n, generator=generator) < 0.5).to(x0.device)[:, None, None, None]
        x_s, x0 = torch.where(flip, x_s.flip(-1), x_s), torch.where(flip, x0.flip(-1), x0)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr * min(1.0, (self.step + 1) / self.warmup)
        self.unet.train()
        s = torch.full((n,), severity, dtype=torch.long, device=x0.device)
        return self._apply(F.l1_loss(self.unet(x_s, s).sample, x0))

    def _apply(self, loss: torch.Tensor) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.unet.parameters(), 1.0)
        self.optimizer.step()
        with torch.no_grad():
            for p_ema, p in zip(self.ema.parameters(), _unwrap(self.unet).parameters()):
                p_ema.lerp_(p.detach(), 1 - self.ema_decay)
        self.step += 1
        return float(loss.detach())

    def save_checkpoint(self, directory: str | Path, losses: list[float]) -> Path:
        """``checkpoints/step-<n>/`` with weights, EMA, optimizer and the loss history so far."""
        path = Path(directory) / f"step-{self.step:08d}"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        safetensors.torch.save_file(_state(_unwrap(self.unet)), tmp / "unet.safetensors")
        safetensors.torch.save_file(_state(self.ema), tmp / "ema.safetensors")
        torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps({"step": self.step, "losses": losses}))
        tmp.rename(path)
        return path

    def load_checkpoint(self, path: str | Path) -> list[float]:
        """Restore weights, EMA, optimizer and step; returns the loss history."""
        path = Path(path)
        _unwrap(self.unet).load_state_dict(safetensors.torch.load_file(path / "unet.safetensors"))
        self.ema.load_state_dict(safetensors.torch.load_file(path / "ema.safetensors"))
        # Our own file (never data from shards); weights_only refuses anything but tensors and plain values.
        self.optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
        state = json.loads((path / "state.json").read_text())
        self.step = int(state["step"])
        return list(state["losses"])


def train_paired_restorer(degraded: torch.Tensor, clean: torch.Tensor, *, steps: int = 400, batch_size: int = 16,
                          widths: tuple[int, ...] = (32, 64, 64), lr: float = 1e-3, seed: int = 0):
    """A restorer trained from scratch on pairs (``degraded`` -> ``clean``, N x 3 x R x R in
    [-1, 1], R divisible by 4): the reversal attacker of ``metrics.attack_suite`` (an attacker
    who anonymized their own gallery learns to undo the anonymizer). Returns ``restore``:
    tensor -> tensor, with the EMA weights."""
    from pipeline.models.architectures import pixel_unet

    if degraded.shape != clean.shape or len(clean) == 0:
        raise ValueError(f"pairs must line up: {tuple(degraded.shape)} vs {tuple(clean.shape)}")
    unet = pixel_unet(sample_size=clean.shape[-1], widths=tuple(widths), seed=seed)
    trainer = RestorerTrainer(unet, degrade=None, lr=lr, ema_decay=0.99, warmup=20)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(clean), (min(batch_size, len(clean)),), generator=gen)
        trainer.train_pair_step(degraded[idx], clean[idx], gen)

    @torch.no_grad()
    def restore(x: torch.Tensor) -> torch.Tensor:
        s = torch.ones(len(x), dtype=torch.long)
        return torch.cat([trainer.ema(x[i:i + 64], s[i:i + 64]).sample.clamp(-1, 1) for i in range(0, len(x), 64)])

    restore.trainer = trainer
    return restore


def latest_checkpoint(directory: str | Path) -> Path | None:
    found = sorted(p for p in Path(directory).glob("step-*") if p.is_dir())
    return found[-1] if found else None


def checkpoint_step(path: str | Path) -> int:
    """The training step a ``step-<n>`` checkpoint directory holds."""
    return int(Path(path).name.removeprefix("step-"))


def save_restorer(directory: str | Path, unet: torch.nn.Module, degradation_spec: dict, resolution: int,
                  extra: dict | None = None) -> Path:
    """A restorer directory ``load_model`` reads: ``unet/`` (diffusers format) and ``cold.json``."""
    directory = Path(directory)
    # Written aside, then swapped in: a job loading the restorer while training goes on never
    # sees new weights beside an old cold.json, or half a file.
    fresh = directory.with_name(f".{directory.name}.new")
    shutil.rmtree(fresh, ignore_errors=True)
    _unwrap(unet).save_pretrained(fresh / "unet")
    (fresh / COLD_CONFIG).write_text(json.dumps(
        {"degradation": degradation_spec, "resolution": resolution, "prediction": "x0", **(extra or {})}, indent=2))
    if directory.exists():
        stale = directory.with_name(f".{directory.name}.old")
        shutil.rmtree(stale, ignore_errors=True)
        directory.rename(stale)
        fresh.rename(directory)
        shutil.rmtree(stale)
    else:
        fresh.rename(directory)
    return directory


def _unwrap(module: torch.nn.Module) -> torch.nn.Module:
    return getattr(module, "module", module)       # DistributedDataParallel keeps the model in .module


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def loss_curve_png(losses: list[float], path: str | Path, window: int = 25) -> None:
    """The training loss (and its running mean) against the step."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(range(1, len(losses) + 1), losses, alpha=0.35, label="batch L1")
    if len(losses) >= window:
        kernel = torch.ones(window) / window
        smooth = F.conv1d(torch.tensor(losses)[None, None], kernel[None, None]).flatten()
        ax.plot(range(window, len(losses) + 1), smooth.tolist(), label=f"mean of {window}")
    ax.set_xlabel("step")
    ax.set_ylabel("L1 loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
