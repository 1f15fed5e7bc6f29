"""The interface every image-to-image method of the anonymize and augment jobs implements,
and the registry the jobs look methods up in (``--method`` choices, validation, hashing,
output names and the rows' level columns all come from here).

A method is one small class and one settings section: ``settings`` (a frozen dataclass of
``pipeline.settings`` fields) declares the method's own flags, defaults, validation and what
of them is hashed into its runs' directory (other methods' settings never are); the class says
how its levels are named, what it checks of the model directory before any work (from its JSON
files alone), and ``run``: one batch of clean inputs in the model's space to outputs, with one
seeded generator per sample so results do not depend on batching. No Ray, no files: the job
engine does the rest. Heavy imports (torch, the method's math) belong inside ``run``, so a
driver can validate a configuration without loading torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import UserError
from pipeline.settings import Settings


@dataclass(frozen=True)
class MethodResult:
    samples: object           # torch.Tensor: outputs in the model's space, same shape as the inputs
    level_used: int           # the timestep (or severity) actually used, recorded as the rows' ``timestep``
    model_evals: int          # network evaluations spent per sample


class Method:
    name: str = ""
    settings: type[Settings] = Settings   # the method's own settings section (its flags, hashed for its runs only)
    level_field: str = "t"            # the settings field listing the levels outputs are made at
    level_letter: str = "t"           # augment output keys: <key>_<letter><level code>_v<variant>
    supports_regions: bool = False    # run() honours keep_mask (--region faces)
    stochastic: bool = True           # draws noise: several variants per input differ (deterministic: --variants 1)

    def levels(self, settings) -> tuple:
        return tuple(getattr(settings, self.level_field))

    def check_model(self, job, model_dir: Path) -> None:
        """Raise UserError when the model directory is not one the method can use (from its
        JSON files; weights are not read). ``job``: the whole configuration."""

    def level_code(self, level) -> str:
        """The level as it appears in augment output keys (no dots)."""
        return f"{round(level * 1000):04d}"

    def t_column(self, level, num_train_timesteps: int) -> float:
        """The rows' ``t``: the level as a fraction of the model's training timesteps."""
        return float(level)

    def sampler_name(self, settings) -> str:
        return getattr(settings, "sampler", self.name)

    def run(self, model, settings, x0, level, generators, keep_mask=None) -> MethodResult:
        """Outputs for the batch ``x0``; ``keep_mask`` ((N, 1, R, R) in pixel space, 1 = keep the
        source) is given only to methods with ``supports_regions``."""
        raise NotImplementedError


_REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add a method under its name (a later registration of the same name replaces it)."""
    if not method.name or "." in method.name:
        raise ValueError(f"a method needs a name without dots, got {method.name!r}")
    _REGISTRY[method.name] = method
    return method


def get_method(name: str) -> Method:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UserError(f"--method {name!r}: choose one of {', '.join(_REGISTRY)}") from None


def method_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)
