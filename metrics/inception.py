"""The Inception-v3 network FID is defined with, as pytorch-fid runs it.

FID values are only comparable when computed with the same network, weights and input
convention. The reference is the TensorFlow FID graph (``inception-2015-12-05``), which
pytorch-fid ported to ``pt_inception-2015-12-05-6726825d.pth``. That graph differs from
torchvision's Inception-v3 in three places, reproduced here:

* the average-pool branch of the A, C and first E blocks ignores padded zeros
  (TensorFlow's ``count_include_pad=False``);
* the last E block (``Mixed_7c``) pools its pool branch with a max, not an average;
* the classifier has 1008 classes (kept only so the weights file loads strictly).

Inputs are float RGB in [0, 1]; the network resizes them bilinearly to 299x299 itself
(``align_corners=False``) and scales them to [-1, 1], so features match pytorch-fid's
``InceptionV3([3], resize_input=True, normalize_input=True, use_fid_inception=True)``.
"""
from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.inception import InceptionA, InceptionC, InceptionE

from metrics.weights import find_weights

FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   + FID_WEIGHTS_FILE)
FID_CONVENTION = ("pytorch-fid: pt_inception-2015-12-05 weights, uint8/255 RGB input, bilinear resize "
                  "to 299 in-network, pool3 2048-d")
FEATURE_DIM = 2048
INPUT_SIZE = 299

# Trunk order up to the pool3 features; the names are the weights file's key prefixes.
_TRUNK = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
          "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a",
          "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c")


def _tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """3x3/1 average pool that, like TensorFlow, averages only over real (unpadded) pixels."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(InceptionA):
    """InceptionA with TensorFlow's pool branch (padding excluded from the average)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([b1, b5, b3, bp], 1)


class FIDInceptionC(InceptionC):
    """InceptionC with TensorFlow's pool branch (padding excluded from the average)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for conv in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3,
                     self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = conv(bd)
        bp = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([b1, b7, bd, bp], 1)


class FIDInceptionE(InceptionE):
    """InceptionE as in the TF FID graph: padding-free average pool, or a max pool for the
    last block (``Mixed_7c``), which is how that graph was exported."""

    def __init__(self, in_channels: int, max_pool: bool = False) -> None:
        super().__init__(in_channels)
        self.max_pool = max_pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        pooled = (F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool
                  else _tf_avg_pool(x))
        bp = self.branch_pool(pooled)
        return torch.cat([b1, b3, bd, bp], 1)


class FIDInceptionV3(nn.Module):
    """Inception-v3 trunk returning pool3 features (N, 2048) for float RGB input in [0, 1].

    Its submodules carry the weights file's names (``Conv2d_1a_3x3``, ..., ``Mixed_7c``,
    ``fc``), so ``load_state_dict`` takes the pytorch-fid file as is, strictly. ``fc`` is
    never run; it exists only because the file has it.
    """

    def __init__(self) -> None:
        super().__init__()
        base = torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008,
                                               init_weights=False)
        base.Mixed_5b = FIDInceptionA(192, pool_features=32)
        base.Mixed_5c = FIDInceptionA(256, pool_features=64)
        base.Mixed_5d = FIDInceptionA(288, pool_features=64)
        base.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        base.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        base.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        base.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        base.Mixed_7b = FIDInceptionE(1280)
        base.Mixed_7c = FIDInceptionE(2048, max_pool=True)
        for name in _TRUNK + ("fc",):
            setattr(self, name, getattr(base, name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        for name in _TRUNK:
            x = getattr(self, name)(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


def why_fid_unavailable(weights: str | os.PathLike | None = None) -> str | None:
    """None when the FID Inception weights are here (no download tried), else why not."""
    from metrics.weights import WeightsUnavailableError

    try:
        find_weights(FID_WEIGHTS_FILE, "hub/checkpoints", FID_WEIGHTS_URL, weights, allow_download=False)
    except WeightsUnavailableError as exc:
        return str(exc)
    return None


def load_fid_inception(weights: str | os.PathLike | None = None, device: str | torch.device = "cpu"
                       ) -> FIDInceptionV3:
    """The FID network with pytorch-fid's weights, in eval mode with gradients off.

    ``weights``: an explicit file; otherwise ``$TORCH_HOME/hub/checkpoints/`` (where
    pytorch-fid caches it), else a download where allowed. Raises
    ``metrics.weights.WeightsUnavailableError`` naming the file when none of these works.
    """
    path = find_weights(FID_WEIGHTS_FILE, cache_subdir="hub/checkpoints", url=FID_WEIGHTS_URL,
                        explicit=weights, what="FID Inception")
    model = FIDInceptionV3()
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    model.eval().requires_grad_(False)
    return model.to(device)


def save_random_fid_weights(path: str | os.PathLike, seed: int = 0) -> Path:
    """Write a random state dict with the real weights file's keys and shapes.

    For offline tests and benchmarks (speed does not depend on the values). Convolutions get
    He-normal weights and batch norms their defaults (identity scale, running mean 0, var 1),
    so activations keep an O(1) scale through the 94 layers and features vary with the input,
    unlike torchvision's fixed std 0.1, with which pool3 features reach ~1e10 (here ~0.2).
    """
    gen = torch.Generator().manual_seed(seed)
    model = FIDInceptionV3()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu", generator=gen)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=m.in_features ** -0.5, generator=gen)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 from HxW, HxWx1, HxWx3 or HxWx4 (alpha dropped, as PIL's convert('RGB'))."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"images must be uint8, got {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an HxWx3 image, got shape {image.shape}")
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    return image[:, :, :3]


def _to_input(batch: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 NHWC -> float32 NCHW in [0, 1], the exact values (and contiguous layout) of
    torchvision's ToTensor on a decoded PNG, which is what pytorch-fid feeds."""
    x = torch.from_numpy(np.ascontiguousarray(batch)).to(device)
    return x.permute(0, 3, 1, 2).contiguous().float().div(255)


def _batches(images: np.ndarray | Sequence[np.ndarray], batch_size: int):
    """Yield (indices, uint8 NHWC batch), grouping same-sized images so each batch stacks."""
    if isinstance(images, np.ndarray) and images.ndim == 4:
        if images.dtype != np.uint8:
            raise TypeError(f"images must be uint8, got {images.dtype}")
        if images.shape[-1] != 3:
            raise ValueError(f"expected (N, H, W, 3) images, got shape {images.shape}")
        for start in range(0, len(images), batch_size):
            yield np.arange(start, min(start + batch_size, len(images))), images[start:start + batch_size]
        return
    rgb = [_as_rgb(im) for im in images]
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, im in enumerate(rgb):
        groups[im.shape[:2]].append(i)
    for idx in groups.values():
        for start in range(0, len(idx), batch_size):
            chunk = idx[start:start + batch_size]
            yield np.asarray(chunk), np.stack([rgb[i] for i in chunk])


def inception_features(model: nn.Module, images: np.ndarray | Sequence[np.ndarray],
                       batch_size: int = 32) -> np.ndarray:
    """pool3 features (N, 2048) float64 of uint8 RGB images, in input order.

    ``images``: a uint8 array (N, H, W, 3) or a sequence of uint8 HxWx3 arrays (HxW and
    HxWx4 are converted like PIL's ``convert('RGB')``); mixed sizes are fine, the network
    resizes every image to 299x299, and same-sized images are batched together.
    """
    out = np.empty((len(images), FEATURE_DIM), dtype=np.float64)
    device = next(model.parameters()).device
    with torch.inference_mode():
        for idx, batch in _batches(images, batch_size):
            out[idx] = model(_to_input(batch, device)).double().cpu().numpy()
    return out
