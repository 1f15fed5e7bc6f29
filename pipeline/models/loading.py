"""Loading diffusion models by hub id or local directory, whatever their kind.

Three kinds are recognised from the directory layout (``model_index.json`` components, or a
bare ``UNet2DModel`` config at the root as in the older ``google/ddpm-*`` repositories):

* ``pixel``       UNet2DModel + scheduler                (e.g. google/ddpm-celebahq-256)
* ``latent``      VQModel or AutoencoderKL + UNet2DModel  (e.g. CompVis/ldm-celebahq-256)
* ``text-latent`` AutoencoderKL + UNet2DConditionModel + CLIP text encoder and tokenizer
                  (Stable Diffusion layout; prompt, negative prompt, guidance scale)
* ``cold``        a Cold Diffusion restorer: ``cold.json`` (its degradation) + ``unet/``
                  predicting x0 (``pipeline.training.restorer``); no noise scheduler

The sampler (``ddpm`` ancestral or ``ddim``) is built from the model's own scheduler config,
so noise schedules always match the training run. Latent scaling follows the pipelines the
models were released with: VQ latents unscaled (LDMPipeline), KL latents times the VAE's
``scaling_factor`` (Stable Diffusion).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import (AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel, UNet2DModel,
                       VQModel)

from pipeline.diffusion.boomerang import EpsModel, as_eps_model
from pipeline.models.source import component_dir, detect_kind, resolve_model_dir

SAMPLERS = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def pick_device_and_dtype(device: str = "auto", dtype: str = "auto") -> tuple[torch.device, torch.dtype]:
    """fp32 on CPU; bf16 (or fp16 where bf16 is unsupported) on GPU unless asked otherwise."""
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
    if dtype == "auto":
        if dev.type == "cuda":
            return dev, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return dev, torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype!r}: choose one of auto, {', '.join(DTYPES)}")
    if dev.type == "cpu" and dtype != "fp32":
        raise ValueError(f"--dtype {dtype} is for GPUs; use fp32 (or auto) on a CPU worker")
    return dev, DTYPES[dtype]


@dataclass
class DiffusionModel:
    """Everything a worker needs to run a method: networks, sampler, and image<->model-space maps."""
    kind: str
    source: str
    unet: torch.nn.Module
    scheduler: object
    device: torch.device
    dtype: torch.dtype
    resolution: int
    autoencoder: torch.nn.Module | None = None
    text_encoder: torch.nn.Module | None = None
    tokenizer: object | None = None
    degradation: object | None = None          # cold restorers: the operator D(x, s) they undo
    _prompt_cache: dict = field(default_factory=dict, repr=False)

    @property
    def num_train_timesteps(self) -> int:
        if self.degradation is not None:
            return int(self.degradation.T)
        return int(self.scheduler.config.num_train_timesteps)

    def passes_per_eval(self, guidance_scale: float) -> int:
        """Network passes per sampler step: two with classifier-free guidance."""
        return 2 if self.kind == "text-latent" and guidance_scale != 1.0 else 1

    @torch.no_grad()
    def encode(self, images: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
        """Images in [-1, 1] to the space the UNet works in (float32, on the model's device)."""
        images = images.to(self.device)
        if self.autoencoder is None:
            return images.float()
        inp = images.to(self.dtype)
        if isinstance(self.autoencoder, VQModel):
            return self.autoencoder.encode(inp).latents.float()
        posterior = self.autoencoder.encode(inp).latent_dist
        return (posterior.sample(generator=generators) * self.autoencoder.config.scaling_factor).float()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Back to images in [-1, 1] (float32)."""
        if self.autoencoder is None:
            return latents.float()
        if isinstance(self.autoencoder, VQModel):
            return self.autoencoder.decode(latents.to(self.dtype)).sample.float()
        scaled = latents / self.autoencoder.config.scaling_factor
        return self.autoencoder.decode(scaled.to(self.dtype)).sample.float()

    def eps_model(self, batch_size: int, prompt: str = "", negative_prompt: str = "",
                  guidance_scale: float = 1.0) -> EpsModel:
        """The network as ``eps(x, t)``, with classifier-free guidance for text models."""
        if self.kind != "text-latent":
            return as_eps_model(self.unet, self.dtype)
        cond = self._embed(prompt).expand(batch_size, -1, -1)
        if guidance_scale == 1.0:
            return as_eps_model(self.unet, self.dtype, encoder_hidden_states=cond)
        uncond = self._embed(negative_prompt).expand(batch_size, -1, -1)
        both = torch.cat([uncond, cond])
        guided = as_eps_model(self.unet, self.dtype, encoder_hidden_states=both)

        def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            e_uncond, e_cond = guided(torch.cat([x, x]), torch.cat([t, t])).chunk(2)
            return e_uncond + guidance_scale * (e_cond - e_uncond)
        return eps

    @torch.no_grad()
    def _embed(self, text: str) -> torch.Tensor:
        if text not in self._prompt_cache:
            tokens = self.tokenizer([text], padding="max_length", max_length=self.tokenizer.model_max_length,
                                    truncation=True, return_tensors="pt")
            self._prompt_cache[text] = self.text_encoder(tokens.input_ids.to(self.device))[0].to(self.dtype)
        return self._prompt_cache[text]


def load_model(spec: str, *, sampler: str = "ddim", device: str = "auto", dtype: str = "auto",
               resolution: int | None = None) -> DiffusionModel:
    """Load ``spec`` (hub id or directory) with the requested sampler on the chosen device."""
    if sampler not in SAMPLERS:
        raise ValueError(f"--sampler {sampler!r}: choose one of {', '.join(SAMPLERS)}")
    dev, dt = pick_device_and_dtype(device, dtype)
    model_dir = resolve_model_dir(spec)
    kind = detect_kind(model_dir)
    if kind == "cold":
        return _load_restorer(spec, model_dir, dev, dt, resolution)
    unet_cls = UNet2DConditionModel if kind == "text-latent" else UNet2DModel
    unet = unet_cls.from_pretrained(component_dir(model_dir, "unet"), torch_dtype=dt)
    sched_dir = component_dir(model_dir, "scheduler")
    scheduler = SAMPLERS[sampler].from_config(SAMPLERS[sampler].load_config(sched_dir))
    autoencoder = text_encoder = tokenizer = None
    if kind in ("latent", "text-latent"):
        index = json.loads((model_dir / "model_index.json").read_text())
        name = "vqvae" if "vqvae" in index else "vae"
        ae_cls = VQModel if index[name][1] == "VQModel" else AutoencoderKL
        autoencoder = ae_cls.from_pretrained(model_dir, subfolder=name, torch_dtype=dt).to(dev).eval()
    if kind == "text-latent":
        from transformers import CLIPTextModel, CLIPTokenizer

        text_encoder = CLIPTextModel.from_pretrained(model_dir, subfolder="text_encoder", torch_dtype=dt).to(dev).eval()
        tokenizer = CLIPTokenizer.from_pretrained(model_dir, subfolder="tokenizer")
    sample_size = unet.config.sample_size
    sample_size = sample_size[0] if isinstance(sample_size, (list, tuple)) else sample_size
    scale = 1 if autoencoder is None else 2 ** (len(autoencoder.config.block_out_channels) - 1)
    return DiffusionModel(kind=kind, source=spec, unet=unet.to(dev).eval(), scheduler=scheduler, device=dev, dtype=dt,
                          resolution=resolution or sample_size * scale, autoencoder=autoencoder,
                          text_encoder=text_encoder, tokenizer=tokenizer)


def _load_restorer(spec: str, model_dir: Path, dev: torch.device, dt: torch.dtype, resolution: int | None) -> DiffusionModel:
    from pipeline.diffusion.degradations import build_degradation

    cold = json.loads((model_dir / "cold.json").read_text())
    unet = UNet2DModel.from_pretrained(model_dir / "unet", torch_dtype=dt).to(dev).eval()
    return DiffusionModel(kind="cold", source=spec, unet=unet, scheduler=None, device=dev, dtype=dt,
                          resolution=resolution or int(cold["resolution"]),
                          degradation=build_degradation(cold["degradation"]))
