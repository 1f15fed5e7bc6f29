"""Small diffusers model configs built in code (the demo model, tests, CPU benchmarks).

Nothing here downloads: the same ``save_pretrained`` layout a hub model has is written to a
directory, and the job loads it through the ordinary loader (``pipeline.models.loading``).
"""
from __future__ import annotations

from pathlib import Path

import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel


def tiny_unet(sample_size: int = 32, widths: tuple[int, ...] = (32, 64, 64), seed: int = 0) -> UNet2DModel:
    """A ~1M-parameter pixel-space UNet (attention only at the coarsest level)."""
    torch.manual_seed(seed)
    n = len(widths)
    return UNet2DModel(
        sample_size=sample_size, in_channels=3, out_channels=3, layers_per_block=1,
        block_out_channels=widths, norm_num_groups=8,
        down_block_types=("DownBlock2D",) * (n - 1) + ("AttnDownBlock2D",),
        up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * (n - 1),
    )


def ddpm_scheduler(num_train_timesteps: int = 1000) -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule="linear",
                         beta_start=1e-4, beta_end=0.02, clip_sample=True)


def save_pixel_model(unet: UNet2DModel, scheduler: DDPMScheduler, directory: str | Path) -> Path:
    """Write a DDPMPipeline-layout directory (model_index.json, unet/, scheduler/)."""
    directory = Path(directory)
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(directory)
    return directory


def save_latent_model(directory: str | Path, autoencoder: str = "vq", seed: int = 0) -> Path:
    """A tiny unconditional latent model in LDMPipeline layout (vqvae/ or vae/, unet/, scheduler/)."""
    import json

    from diffusers import AutoencoderKL, DDIMScheduler, VQModel

    directory = Path(directory)
    torch.manual_seed(seed)
    common = dict(in_channels=3, out_channels=3, block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
                  down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
    if autoencoder == "vq":
        ae, name, cls = VQModel(latent_channels=3, num_vq_embeddings=64, vq_embed_dim=3, **common), "vqvae", "VQModel"
    else:
        ae, name, cls = AutoencoderKL(latent_channels=4, sample_size=32, **common), "vae", "AutoencoderKL"
    unet = UNet2DModel(sample_size=16, in_channels=ae.config.latent_channels, out_channels=ae.config.latent_channels,
                       layers_per_block=1, block_out_channels=(16, 32), norm_num_groups=8,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))
    ae.save_pretrained(directory / name)
    unet.save_pretrained(directory / "unet")
    DDIMScheduler(num_train_timesteps=1000, clip_sample=False).save_pretrained(directory / "scheduler")
    (directory / "model_index.json").write_text(json.dumps({
        "_class_name": "LDMPipeline", name: ["diffusers", cls], "unet": ["diffusers", "UNet2DModel"],
        "scheduler": ["diffusers", "DDIMScheduler"]}))
    return directory


def save_text_latent_model(directory: str | Path, seed: int = 0) -> Path:
    """A tiny Stable-Diffusion-layout model: KL autoencoder, conditional UNet, CLIP text encoder
    and a byte-level tokenizer whose vocabulary is written here (no CLIP files are needed)."""
    import json

    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    directory = Path(directory)
    torch.manual_seed(seed)
    AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32), layers_per_block=1,
                  norm_num_groups=8, down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, sample_size=32).save_pretrained(directory / "vae")
    UNet2DConditionModel(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
                         norm_num_groups=8, cross_attention_dim=32, attention_head_dim=4,
                         down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                         up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")).save_pretrained(directory / "unet")
    vocab = save_byte_level_tokenizer(directory / "tokenizer", model_max_length=16)
    CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, max_position_embeddings=16, bos_token_id=vocab["<|startoftext|>"],
                                 eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["<|endoftext|>"])
                  ).save_pretrained(directory / "text_encoder")
    DDIMScheduler(num_train_timesteps=1000, clip_sample=False).save_pretrained(directory / "scheduler")
    (directory / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "vae": ["diffusers", "AutoencoderKL"],
        "unet": ["diffusers", "UNet2DConditionModel"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "scheduler": ["diffusers", "DDIMScheduler"]}))
    return directory


def save_byte_level_tokenizer(directory: str | Path, model_max_length: int) -> dict[str, int]:
    """A CLIP tokenizer over single bytes (no merges), written offline because CLIP's own
    vocabulary cannot be downloaded here; returns its vocabulary (special tokens last)."""
    import json

    from transformers import CLIPTokenizer

    directory = Path(directory)
    chars = _byte_level_alphabet()
    vocab = {tok: i for i, tok in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"),
                  model_max_length=model_max_length).save_pretrained(directory)
    return vocab


def _byte_level_alphabet() -> list[str]:
    """The 256 printable characters byte-level BPE tokenizers (GPT-2, CLIP) map bytes to:
    printable Latin-1 bytes stand for themselves, the rest are shifted past 255."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1), *range(ord("\xae"), 256)]
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]
