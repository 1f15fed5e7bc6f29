"""The text conditioning of text-to-image latent models (Stable Diffusion layout): a settings
section shared by every method and job that runs such a model; other models ignore it."""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.settings import Settings, setting


@dataclass(frozen=True)
class PromptSettings(Settings):
    title = "text-conditioned models"
    prompt: str = setting("", "the prompt (e.g. 'person')")
    negative_prompt: str = setting("", "the negative prompt of classifier-free guidance")
    guidance_scale: float = setting(1.0, "classifier-free guidance scale (1: none)")
