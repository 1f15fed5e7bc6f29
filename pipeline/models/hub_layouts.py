"""Full-size models with random weights, saved the way their hub repositories are laid out.

Real checkpoints cannot be downloaded here, but what breaks on them is rarely the weights'
values: it is their size (memory, seconds per forward) and their files (where each config
sits, which legacy keys it holds). Each saver below builds the real repository's architecture
from its published config and writes the repository's own layout in safetensors, so the jobs
load it through ``pipeline.models.loading.load_model`` exactly as they would load the download.

* ``google/ddpm-celebahq-256``   pixel UNet (113.7M parameters). The repository keeps
  ``model_index.json`` *and* the UNet's ``config.json``, its weights and ``scheduler_config.json``
  at the root (no ``unet/`` or ``scheduler/`` folder); diffusers' pipelines fall back to the
  root when a component has no folder.
* ``CompVis/ldm-celebahq-256``   VQ autoencoder (f4, 3 latent channels, 8192 codes) and a
  64x64 latent UNet (224-896 channels) in ``vqvae/``, ``unet/``, ``scheduler/``; its scheduler
  file is the 2022 one (``timesteps`` rather than ``num_train_timesteps``).
* ``runwayml/stable-diffusion-v1-5`` layout at 512: ``vae/``, ``unet/``, ``text_encoder/``,
  ``tokenizer/``, ``scheduler/`` (PNDM) at the released widths. Deviations: the tokenizer is a
  byte-level one written offline (514 tokens; CLIP's 49408-token vocabulary and merges cannot be
  downloaded), while the text encoder keeps CLIP's 49408-row embedding; no ``safety_checker/``
  or ``feature_extractor/`` (named null in ``model_index.json``, as diffusers writes a pipeline
  saved without them); the jobs use neither.

Configs hold the architecture fields of the published ``config.json`` files; fields diffusers
fills with its defaults are left to it.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch


def ddpm_celebahq_256_config() -> dict:
    """The UNet2DModel config of google/ddpm-celebahq-256 (its root ``config.json``)."""
    return {
        "sample_size": 256, "in_channels": 3, "out_channels": 3, "layers_per_block": 2,
        "block_out_channels": [128, 128, 256, 256, 512, 512],
        "down_block_types": ["DownBlock2D"] * 4 + ["AttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "AttnUpBlock2D"] + ["UpBlock2D"] * 4,
        "act_fn": "silu", "attention_head_dim": None, "center_input_sample": False, "downsample_padding": 0,
        "flip_sin_to_cos": False, "freq_shift": 1, "mid_block_scale_factor": 1, "norm_eps": 1e-6,
        "norm_num_groups": 32, "time_embedding_type": "positional",
    }


def ddpm_celebahq_256_scheduler_config() -> dict:
    """Its root ``scheduler_config.json``: the DDPM paper's linear schedule."""
    return {"_class_name": "DDPMScheduler", "_diffusers_version": "0.1.1", "beta_start": 0.0001, "beta_end": 0.02,
            "beta_schedule": "linear", "clip_sample": True, "num_train_timesteps": 1000, "trained_betas": None,
            "variance_type": "fixed_small"}


def save_ddpm_celebahq_256(directory: str | Path, seed: int = 0) -> Path:
    """google/ddpm-celebahq-256's layout: model_index.json, config.json, weights and
    scheduler_config.json side by side at the root."""
    from diffusers import UNet2DModel

    directory = Path(directory)
    torch.manual_seed(seed)
    UNet2DModel(**ddpm_celebahq_256_config()).save_pretrained(directory)
    _write_json(directory / "scheduler_config.json", ddpm_celebahq_256_scheduler_config())
    _write_json(directory / "model_index.json", {
        "_class_name": "DDPMPipeline", "scheduler": ["diffusers", "DDPMScheduler"], "unet": ["diffusers", "UNet2DModel"]})
    return directory


def ldm_celebahq_256_configs() -> dict[str, dict]:
    """The vqvae/, unet/ and scheduler/ configs of CompVis/ldm-celebahq-256. The scheduler is
    the latent-diffusion paper's (linear_start 0.0015, linear_end 0.0195 over 1000 steps, i.e.
    diffusers' scaled_linear)."""
    return {
        "vqvae": {"in_channels": 3, "out_channels": 3, "latent_channels": 3, "num_vq_embeddings": 8192,
                  "block_out_channels": [128, 256, 512], "layers_per_block": 2, "act_fn": "silu", "sample_size": 256,
                  "down_block_types": ["DownEncoderBlock2D"] * 3, "up_block_types": ["UpDecoderBlock2D"] * 3},
        "unet": {"sample_size": 64, "in_channels": 3, "out_channels": 3, "layers_per_block": 2,
                 "block_out_channels": [224, 448, 672, 896],
                 "down_block_types": ["DownBlock2D"] + ["AttnDownBlock2D"] * 3,
                 "up_block_types": ["AttnUpBlock2D"] * 3 + ["UpBlock2D"],
                 "attention_head_dim": 32, "act_fn": "silu", "center_input_sample": False, "downsample_padding": 1,
                 "flip_sin_to_cos": True, "freq_shift": 0, "mid_block_scale_factor": 1, "norm_eps": 1e-5,
                 "norm_num_groups": 32, "time_embedding_type": "positional"},
        "scheduler": {"_class_name": "DDIMScheduler", "_diffusers_version": "0.0.4", "beta_start": 0.0015,
                      "beta_end": 0.0195, "beta_schedule": "scaled_linear", "clip_sample": False,
                      "timestep_values": None, "timesteps": 1000, "trained_betas": None},
    }


def save_ldm_celebahq_256(directory: str | Path, seed: int = 0) -> Path:
    """CompVis/ldm-celebahq-256's LDMPipeline layout: vqvae/, unet/, scheduler/, model_index.json."""
    from diffusers import UNet2DModel, VQModel

    directory = Path(directory)
    configs = ldm_celebahq_256_configs()
    torch.manual_seed(seed)
    VQModel(**configs["vqvae"]).save_pretrained(directory / "vqvae")
    UNet2DModel(**configs["unet"]).save_pretrained(directory / "unet")
    _write_json(directory / "scheduler" / "scheduler_config.json", configs["scheduler"])
    _write_json(directory / "model_index.json", {
        "_class_name": "LDMPipeline", "scheduler": ["diffusers", "DDIMScheduler"], "unet": ["diffusers", "UNet2DModel"],
        "vqvae": ["diffusers", "VQModel"]})
    return directory


def stable_diffusion_v1_5_configs() -> dict[str, dict]:
    """The vae/, unet/, text_encoder/ and scheduler/ configs of Stable Diffusion v1.5."""
    return {
        "vae": {"in_channels": 3, "out_channels": 3, "latent_channels": 4, "block_out_channels": [128, 256, 512, 512],
                "layers_per_block": 2, "act_fn": "silu", "norm_num_groups": 32, "sample_size": 512,
                "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4},
        "unet": {"sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
                 "block_out_channels": [320, 640, 1280, 1280], "cross_attention_dim": 768, "attention_head_dim": 8,
                 "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
                 "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
                 "act_fn": "silu", "center_input_sample": False, "downsample_padding": 1, "flip_sin_to_cos": True,
                 "freq_shift": 0, "mid_block_scale_factor": 1, "norm_eps": 1e-5, "norm_num_groups": 32},
        "text_encoder": {"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                         "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
                         "projection_dim": 768, "layer_norm_eps": 1e-5, "bos_token_id": 0, "eos_token_id": 2,
                         "pad_token_id": 1},
        "scheduler": {"_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
                      "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "set_alpha_to_one": False,
                      "skip_prk_steps": True, "steps_offset": 1, "clip_sample": False, "trained_betas": None},
    }


def save_stable_diffusion_v1_5(directory: str | Path, seed: int = 0) -> Path:
    """Stable Diffusion v1.5's layout at 512 (about 4.3 GB of fp32 weights; each network is
    built, saved and freed in turn, so building peaks near the UNet's 3.4 GB)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from pipeline.models.tiny import save_byte_level_tokenizer

    directory = Path(directory)
    configs = stable_diffusion_v1_5_configs()
    torch.manual_seed(seed)
    AutoencoderKL(**configs["vae"]).save_pretrained(directory / "vae")
    UNet2DConditionModel(**configs["unet"]).save_pretrained(directory / "unet")
    CLIPTextModel(CLIPTextConfig(**configs["text_encoder"])).save_pretrained(directory / "text_encoder")
    save_byte_level_tokenizer(directory / "tokenizer", model_max_length=configs["text_encoder"]["max_position_embeddings"])
    _write_json(directory / "scheduler" / "scheduler_config.json", configs["scheduler"])
    _write_json(directory / "model_index.json", {
        "_class_name": "StableDiffusionPipeline", "feature_extractor": [None, None], "safety_checker": [None, None],
        "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]})
    return directory


# hub id -> (saver, the kind load_model must detect, the image resolution it must report)
HUB_LAYOUTS = {
    "google/ddpm-celebahq-256": (save_ddpm_celebahq_256, "pixel", 256),
    "CompVis/ldm-celebahq-256": (save_ldm_celebahq_256, "latent", 256),
    "runwayml/stable-diffusion-v1-5": (save_stable_diffusion_v1_5, "text-latent", 512),
}


def _write_json(path: Path, value: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")
