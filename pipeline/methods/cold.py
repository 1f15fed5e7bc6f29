"""Cold local sampling as registered methods, one per degradation (``cold-blur``, ...): degrade
to severity s deterministically, restore with TACoS or Algorithm 1 (the math:
``pipeline.diffusion.cold`` and ``pipeline.diffusion.degradations``), with a restorer trained by
``jobs/train_restoration.py`` as the model."""
from __future__ import annotations

import json
from pathlib import Path

from pipeline.errors import UserError
from pipeline.methods.registry import Method, MethodResult, register

# One per degradation in pipeline.diffusion.degradations.DEGRADATIONS (a test keeps the two in step;
# listed here so that validating a configuration does not import torch).
DEGRADATION_NAMES = ("blur", "inpaint", "superres", "decolor", "fade", "snow")
ALGORITHMS = ("tacos", "naive", "one-shot", "degraded")      # = pipeline.diffusion.cold.ALGORITHMS


class ColdLocalSampling(Method):
    fields = ("s", "algorithm")
    level_field = "s"
    level_letter = "s"

    def __init__(self, degradation: str):
        self.degradation = degradation
        self.name = f"cold-{degradation}"

    def check_config(self, cfg) -> None:
        if not cfg.s or any(s < 1 for s in cfg.s) or len(set(cfg.s)) != len(cfg.s):
            raise UserError(f"{self.name} needs distinct severities --s >= 1, got {list(cfg.s)}")
        if cfg.algorithm not in ALGORITHMS:
            raise UserError(f"--algorithm {cfg.algorithm!r}: choose one of {', '.join(ALGORITHMS)}")
        if cfg.variants != 1 or cfg.cascade != 1:
            raise UserError("cold local sampling is deterministic: --variants and --cascade must be 1 "
                            "(use several --s values for several neighbours)")

    def check_model(self, cfg, model_dir: Path) -> None:
        cold_file = model_dir / "cold.json"
        if not cold_file.exists():
            raise UserError(f"--method {self.name} needs a restorer trained by jobs/train_restoration.py "
                            f"(a directory with cold.json); {cfg.model} is not one")
        spec = json.loads(cold_file.read_text())["degradation"]
        if spec["name"] != self.degradation:
            raise UserError(f"{cfg.model} restores '{spec['name']}' degradations: use --method cold-{spec['name']}")
        if max(cfg.s) > int(spec["T"]):
            raise UserError(f"--s {max(cfg.s)} exceeds the restorer's T = {spec['T']}")

    def level_code(self, level) -> str:
        return f"{int(level):03d}"

    def t_column(self, level, num_train_timesteps: int) -> float:
        return level / num_train_timesteps

    def sampler_name(self, cfg) -> str:
        return cfg.algorithm

    def run(self, model, cfg, x0, level, generators) -> MethodResult:
        from pipeline.diffusion.cold import as_restorer, cold_local_sample
        from pipeline.diffusion.degradations import bind

        # Random operator parameters (e.g. hole centres) come from each sample's own seeded generator.
        degrade = bind(model.degradation, x0, generators)
        result = cold_local_sample(as_restorer(model.unet), degrade, x0, int(level), algorithm=cfg.algorithm)
        return MethodResult(result.samples, int(level), result.restorer_evals)


for _name in DEGRADATION_NAMES:
    register(ColdLocalSampling(_name))
