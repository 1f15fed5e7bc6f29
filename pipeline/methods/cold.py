"""Cold local sampling as registered methods, one per degradation (``cold-blur``, ...): degrade
to severity s deterministically, restore with TACoS or Algorithm 1 (the math:
``pipeline.diffusion.cold`` and ``pipeline.diffusion.degradations``), with a restorer trained by
``jobs/train_restoration.py`` as the model."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import UserError
from pipeline.methods.registry import Method, MethodResult, register
from pipeline.settings import Settings, setting

# One per degradation in pipeline.diffusion.degradations.DEGRADATIONS (a test keeps the two in step;
# listed here so that validating a configuration does not import torch).
DEGRADATION_NAMES = ("blur", "inpaint", "superres", "decolor", "fade", "snow")
ALGORITHMS = ("tacos", "naive", "one-shot", "degraded")      # = pipeline.diffusion.cold.ALGORITHMS


@dataclass(frozen=True)
class ColdSettings(Settings):
    title = "cold local sampling"
    s: tuple[int, ...] = setting((), "severity levels (1..T of the restorer); several make several outputs (augment)",
                                 type=int)
    algorithm: str = setting("tacos", "TACoS (Algorithm 2), the naive Algorithm 1, or the baselines one-shot (the "
                             "restorer's direct estimate R(x_s, s)) and degraded (x_s itself)", choices=ALGORITHMS)

    def check(self, job) -> None:
        if not self.s or any(s < 1 for s in self.s) or len(set(self.s)) != len(self.s):
            raise UserError(f"{job.method} needs distinct severities --s >= 1, got {list(self.s)}")
        if self.algorithm not in ALGORITHMS:
            raise UserError(f"--algorithm {self.algorithm!r}: choose one of {', '.join(ALGORITHMS)}")


class ColdLocalSampling(Method):
    settings = ColdSettings
    level_field = "s"
    level_letter = "s"
    stochastic = False                # deterministic: one output per input and s

    def __init__(self, degradation: str):
        self.degradation = degradation
        self.name = f"cold-{degradation}"

    def check_model(self, job, model_dir: Path) -> None:
        model = job.run.model
        cold_file = model_dir / "cold.json"
        if not cold_file.exists():
            raise UserError(f"--method {self.name} needs a restorer trained by jobs/train_restoration.py "
                            f"(a directory with cold.json); {model} is not one")
        spec = json.loads(cold_file.read_text())["degradation"]
        if spec["name"] != self.degradation:
            raise UserError(f"{model} restores '{spec['name']}' degradations: use --method cold-{spec['name']}")
        if max(job.method_settings.s) > int(spec["T"]):
            raise UserError(f"--s {max(job.method_settings.s)} exceeds the restorer's T = {spec['T']}")

    def level_code(self, level) -> str:
        return f"{int(level):03d}"

    def t_column(self, level, num_train_timesteps: int) -> float:
        return level / num_train_timesteps

    def sampler_name(self, settings) -> str:
        return settings.algorithm

    def run(self, model, settings, x0, level, generators, keep_mask=None) -> MethodResult:
        from pipeline.diffusion.cold import as_restorer, cold_local_sample
        from pipeline.diffusion.degradations import bind

        # Random operator parameters (e.g. hole centres) come from each sample's own seeded generator.
        degrade = bind(model.degradation, x0, generators)
        result = cold_local_sample(as_restorer(model.unet), degrade, x0, int(level), algorithm=settings.algorithm)
        return MethodResult(result.samples, int(level), result.restorer_evals)


for _name in DEGRADATION_NAMES:
    register(ColdLocalSampling(_name))
