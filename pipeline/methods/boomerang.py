"""Boomerang local sampling as a registered method (the math: ``pipeline.diffusion.boomerang``)."""
from __future__ import annotations

import json
from pathlib import Path

from pipeline.errors import UserError
from pipeline.methods.registry import Method, MethodResult, register


class Boomerang(Method):
    name = "boomerang"
    fields = ("t", "steps", "sampler", "cascade", "variants", "prompt", "negative_prompt", "guidance_scale")
    level_field = "t"
    level_letter = "t"
    supports_regions = True

    def check_config(self, cfg) -> None:
        if not cfg.t or any(not 0.0 < t <= 1.0 for t in cfg.t):
            raise UserError(f"--t values must be in (0, 1], got {list(cfg.t)}")
        runs = [int(cfg.steps * t + 1e-9) for t in cfg.t]
        if min(runs) < 1:
            raise UserError(f"--t {min(cfg.t)} with --steps {cfg.steps} runs no sampler step; raise --steps or --t")
        if len(set(runs)) != len(runs) or len({round(t * 1000) for t in cfg.t}) != len(cfg.t):
            # int(steps * t) steps run, so two t values with the same count would give the same outputs.
            raise UserError(f"--t values {list(cfg.t)} give the same noise level with --steps {cfg.steps} "
                            f"({runs} sampler steps); use values at least 1/steps apart")

    def check_model(self, cfg, model_dir: Path) -> None:
        if (model_dir / "cold.json").exists():
            raise UserError(f"{cfg.model} is a Cold Diffusion restorer: use --method cold-<degradation> --s N")
        check_steps(cfg.steps, model_dir)

    def run(self, model, cfg, x0, level, generators, keep_mask=None) -> MethodResult:
        import torch.nn.functional as F

        from pipeline.diffusion.boomerang import boomerang

        if keep_mask is not None and keep_mask.shape[-2:] != x0.shape[-2:]:
            keep_mask = F.interpolate(keep_mask, size=x0.shape[-2:], mode="area")     # latent models: the latent grid
        eps = model.eps_model(len(generators), cfg.prompt, cfg.negative_prompt, cfg.guidance_scale)
        result = boomerang(eps, model.scheduler, x0, t_frac=level, num_steps=cfg.steps, generators=generators,
                           cascade=cfg.cascade, keep_mask=keep_mask)
        return MethodResult(result.samples, result.t_b, result.model_evals * model.passes_per_eval(cfg.guidance_scale))


def check_steps(steps: int, model_dir: Path) -> None:
    """Fail before any work when --steps exceeds the model's training timesteps."""
    for candidate in (model_dir / "scheduler" / "scheduler_config.json", model_dir / "scheduler_config.json"):
        if candidate.exists():
            train_steps = json.loads(candidate.read_text()).get("num_train_timesteps", 1000)
            if steps > train_steps:
                raise UserError(f"--steps {steps} exceeds the model's {train_steps} training timesteps")
            return


register(Boomerang())
