"""Boomerang local sampling as a registered method (the math: ``pipeline.diffusion.boomerang``)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import UserError
from pipeline.methods.prompts import PromptSettings
from pipeline.methods.registry import Method, MethodResult, register
from pipeline.settings import positive_int, setting

SAMPLERS = ("ddim", "ddpm")


@dataclass(frozen=True)
class BoomerangSettings(PromptSettings):
    title = "boomerang"
    t: tuple[float, ...] = setting((0.4,), "noise level t_B / T in (0, 1]; several t make several outputs (augment)")
    steps: int = setting(50, "sampler steps for a full (t = 1) reverse process; int(steps * t) of them run",
                         type=positive_int)
    sampler: str = setting("ddim", "the reverse process: DDIM (deterministic) or DDPM ancestral steps", choices=SAMPLERS)
    cascade: int = setting(1, "repeat the Boomerang round trip k times", type=positive_int)

    def check(self, job) -> None:
        if not self.t or any(not 0.0 < t <= 1.0 for t in self.t):
            raise UserError(f"--t values must be in (0, 1], got {list(self.t)}")
        for name in ("steps", "cascade"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.sampler not in SAMPLERS:
            raise UserError(f"--sampler {self.sampler!r}: choose one of {', '.join(SAMPLERS)}")
        check_levels(self.t, self.steps)


def check_levels(ts, steps: int) -> None:
    """t values must each run a sampler step and run different numbers of them."""
    runs = [int(steps * t + 1e-9) for t in ts]
    if min(runs) < 1:
        raise UserError(f"--t {min(ts)} with --steps {steps} runs no sampler step; raise --steps or --t")
    if len(set(runs)) != len(runs) or len({round(t * 1000) for t in ts}) != len(ts):
        # int(steps * t) steps run, so two t values with the same count would give the same outputs.
        raise UserError(f"--t values {list(ts)} give the same noise level with --steps {steps} "
                        f"({runs} sampler steps); use values at least 1/steps apart")


class Boomerang(Method):
    name = "boomerang"
    settings = BoomerangSettings
    level_field = "t"
    level_letter = "t"
    supports_regions = True

    def check_model(self, job, model_dir: Path) -> None:
        if (model_dir / "cold.json").exists():
            raise UserError(f"{job.run.model} is a Cold Diffusion restorer: use --method cold-<degradation> --s N")
        check_steps(job.method_settings.steps, model_dir)

    def run(self, model, settings, x0, level, generators, keep_mask=None) -> MethodResult:
        import torch.nn.functional as F

        from pipeline.diffusion.boomerang import boomerang

        if keep_mask is not None and keep_mask.shape[-2:] != x0.shape[-2:]:
            keep_mask = F.interpolate(keep_mask, size=x0.shape[-2:], mode="area")     # latent models: the latent grid
        eps = model.eps_model(len(generators), settings.prompt, settings.negative_prompt, settings.guidance_scale)
        result = boomerang(eps, model.scheduler, x0, t_frac=level, num_steps=settings.steps, generators=generators,
                           cascade=settings.cascade, keep_mask=keep_mask)
        return MethodResult(result.samples, result.t_b,
                            result.model_evals * model.passes_per_eval(settings.guidance_scale))


def check_steps(steps: int, model_dir: Path) -> None:
    """Fail before any work when --steps exceeds the model's training timesteps."""
    for candidate in (model_dir / "scheduler" / "scheduler_config.json", model_dir / "scheduler_config.json"):
        if candidate.exists():
            train_steps = json.loads(candidate.read_text()).get("num_train_timesteps", 1000)
            if steps > train_steps:
                raise UserError(f"--steps {steps} exceeds the model's {train_steps} training timesteps")
            return


register(Boomerang())
