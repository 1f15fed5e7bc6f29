"""Model architectures built from a few numbers, in diffusers' classes: the pixel UNet of the
demo model and of trained restorers (its width per level from the caller), its DDPM schedule,
and the DDPMPipeline layout it is saved in (what ``pipeline.models.loading`` reads back)."""
from __future__ import annotations

from pathlib import Path

import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel


def pixel_unet(sample_size: int = 32, widths: tuple[int, ...] = (32, 64, 64), seed: int = 0) -> UNet2DModel:
    """A pixel-space UNet with ``widths`` channels per level (attention only at the coarsest);
    the defaults make the ~1M-parameter demo model."""
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
