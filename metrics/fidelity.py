"""Per-sample fidelity between a source and an output of the same size: PSNR, SSIM, RMS, LPIPS.

Every function takes two float batches ``(N, 3, H, W)`` in [0, 1] and returns one value per
sample, shape ``(N,)`` (float64 for the pixel metrics). Use :func:`to_unit_batch` on uint8
HxWx3 arrays.

Conventions, stated because implementations differ:

* ``psnr``: ``10 * log10(1 / MSE)`` in dB with MAX = 1; identical images give ``+inf``. It is
  returned as is, not capped: parquet stores inf, and a cap (say 100 dB) would look like a real
  measurement. Callers writing strict JSON must map inf to null themselves.
* ``ssim``: Wang et al. 2004 with an 11x11 Gaussian window (sigma 1.5), K1 = 0.01,
  K2 = 0.03, L = 1; the local statistics are computed on "valid" positions only (no padding:
  the map is (H-10)x(W-10), as in the authors' MATLAB code and skimage), the map is averaged
  per channel and the channels averaged. No automatic downsampling of large images.
  Images need H, W >= 11.
* ``rms_distance``: sqrt(mean((a - b)^2)) over all channels and pixels, in [0, 1] units
  (the L2 distance divided by sqrt of the number of values); PSNR = -20 log10(rms).
* LPIPS (:func:`load_lpips`): the ``lpips`` package's v0.1 linear heads (shipped in its wheel)
  on a torchvision AlexNet/VGG16 backbone whose ImageNet weights must already be in the torch
  cache (or be downloadable); inputs are mapped from [0, 1] to [-1, 1].
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from metrics.weights import find_weights

SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03
LPIPS_BACKBONES = {  # net -> (torchvision weights file in $TORCH_HOME/hub/checkpoints, URL)
    "alex": ("alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"),
    "vgg": ("vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth"),
}


def to_unit_batch(images) -> torch.Tensor:
    """uint8 HxWx3 arrays (a list or an NxHxWx3 array) -> float32 (N, 3, H, W) in [0, 1]."""
    batch = torch.from_numpy(np.ascontiguousarray(np.stack(list(images)) if isinstance(images, list) else images))
    if batch.dtype != torch.uint8 or batch.ndim != 4 or batch.shape[-1] != 3:
        raise ValueError(f"expected uint8 N x H x W x 3 images, got {tuple(batch.shape)} {batch.dtype}")
    return batch.permute(0, 3, 1, 2).float() / 255.0


def _pair(a: torch.Tensor, b: torch.Tensor, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"source and output batches must have the same (N, C, H, W) shape: "
                         f"{tuple(a.shape)} vs {tuple(b.shape)}")
    return a.to(dtype), b.to(dtype)


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared difference per sample."""
    a, b = _pair(a, b)
    return ((a - b) ** 2).flatten(1).mean(1)


def rms_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Root mean squared difference per sample, in [0, 1] units."""
    return mse(a, b).sqrt()


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR in dB with MAX = 1; +inf where the images are identical (see module docstring)."""
    return 10.0 * torch.log10(1.0 / mse(a, b))   # 1/0 = inf -> inf dB


def mean_pairwise_rms(batch: torch.Tensor) -> float:
    """The mean RMS distance over every pair of a (N, C, H, W) batch in [0, 1]: how different
    the images are from each other (NaN below two images)."""
    flat = batch.to(torch.float64).flatten(1)
    n = flat.shape[0]
    if n < 2:
        return float("nan")
    squared = torch.cdist(flat, flat, compute_mode="donot_use_mm_for_euclid_dist").pow(2) / flat.shape[1]
    return float(squared.sqrt().sum() / (n * (n - 1)))


def diversity_kept(sources: torch.Tensor, outputs: torch.Tensor) -> float:
    """The outputs' mean pairwise distance as a share of the sources': what a transform that
    makes images alike (k-same's group surrogates) costs in variety."""
    return mean_pairwise_rms(outputs) / mean_pairwise_rms(sources)


def summarize_psnr(values) -> tuple[float | None, int]:
    """The one rule for averaging PSNR: the mean over finite values (None if there are none)
    and how many were infinite (identical images), never a cap."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    return (float(finite.mean()) if finite.size else None), int(np.isinf(values).sum())


PIXEL_METRICS = ("psnr", "ssim", "rms_distance")


def pair_fidelity(reference: torch.Tensor, candidate: torch.Tensor, *, pixel: tuple[str, ...] = PIXEL_METRICS,
                  lpips=None) -> dict[str, torch.Tensor]:
    """The one way every job scores an image against its reference (outputs against sources,
    frames against endpoints, enhanced against high-resolution, restored against clean): the
    ``pixel`` metrics named in ``PIXEL_METRICS`` and LPIPS when its network is given, each a
    float64 (N,) tensor on the CPU, under the names the rows' columns use."""
    unknown = set(pixel) - set(PIXEL_METRICS)
    if unknown:
        raise ValueError(f"unknown pixel metric(s) {sorted(unknown)}: choose from {PIXEL_METRICS}")
    functions = {"psnr": psnr, "ssim": ssim, "rms_distance": rms_distance}
    with torch.inference_mode():
        values = {name: functions[name](reference, candidate).double().cpu() for name in pixel}
        if lpips is not None:
            values["lpips"] = lpips(reference, candidate).double().cpu()
    return values


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Normalized 1-D Gaussian taps (float64)."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    w = torch.exp(-(x ** 2) / (2.0 * sigma ** 2))
    return w / w.sum()


def _blur_valid(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter per channel, valid positions only."""
    c = x.shape[1]
    k = taps.to(x)
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Mean SSIM per sample (Wang et al. 2004; conventions in the module docstring)."""
    a, b = _pair(a, b)
    if min(a.shape[-2:]) < window:
        raise ValueError(f"ssim needs images of at least {window}x{window}, got {tuple(a.shape[-2:])}")
    taps = gaussian_window(window, sigma)
    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2
    mu_a, mu_b = _blur_valid(a, taps), _blur_valid(b, taps)
    var_a = _blur_valid(a * a, taps) - mu_a ** 2
    var_b = _blur_valid(b * b, taps) - mu_b ** 2
    cov = _blur_valid(a * b, taps) - mu_a * mu_b
    smap = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return smap.mean(dim=(2, 3)).mean(dim=1)


class Lpips:
    """LPIPS distance per sample; call with two (N, 3, H, W) batches in [0, 1]."""

    def __init__(self, model, net: str, device):
        self.model, self.net, self.device = model, net, torch.device(device)

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, b = _pair(a, b, torch.float32)
        with torch.inference_mode():
            d = self.model(a.to(self.device) * 2 - 1, b.to(self.device) * 2 - 1)
        return d.flatten().double().cpu()


def lpips_backbone_path(net: str = "alex", weights=None, allow_download: bool = True):
    """The torchvision ImageNet weights LPIPS needs, found by :func:`find_weights`."""
    if net not in LPIPS_BACKBONES:
        raise ValueError(f"LPIPS net must be one of {sorted(LPIPS_BACKBONES)}, got {net!r}")
    filename, url = LPIPS_BACKBONES[net]
    return find_weights(filename, "hub/checkpoints", url=url, explicit=weights,
                        what=f"LPIPS {net} backbone (torchvision ImageNet weights)", allow_download=allow_download)


def why_lpips_unavailable(net: str = "alex") -> str | None:
    """None when the LPIPS backbone weights are here (no download tried), else why not."""
    from metrics.weights import WeightsUnavailableError

    try:
        lpips_backbone_path(net, allow_download=False)
    except WeightsUnavailableError as exc:
        return str(exc)
    return None


def load_lpips(net: str = "alex", device="cpu", weights=None, allow_download: bool = True) -> Lpips:
    """LPIPS v0.1 (``lpips`` package heads) with its backbone loaded from the torch cache.

    The backbone is built untrained by lpips (``pnet_rand=True``, so torchvision never reaches
    for the network) and then filled from the file :func:`lpips_backbone_path` found: a missing
    file raises WeightsUnavailableError before any work, instead of a download attempt deep
    inside torchvision.
    """
    path = lpips_backbone_path(net, weights, allow_download)
    try:
        import lpips
    except ImportError as exc:
        raise ImportError("LPIPS needs the lpips package: pip install lpips==0.1.4") from exc
    model = lpips.LPIPS(net=net, version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    _load_backbone(model.net, torch.load(path, map_location="cpu", weights_only=True), path)
    return Lpips(model.eval().to(device), net, device)


def _load_backbone(slices: torch.nn.Module, state: dict, path) -> None:
    """Copy torchvision ``features.<i>.*`` tensors into lpips' slices (which keep index ``i``)."""
    own = {}
    for name in slices.state_dict():      # e.g. "slice2.3.weight"
        _, index, leaf = name.split(".", 2)
        own[f"features.{index}.{leaf}"] = name
    missing = [k for k in own if k not in state]
    if missing:
        raise ValueError(f"{path} lacks backbone tensors {missing[:4]}: not the torchvision weights LPIPS expects")
    slices.load_state_dict({own[k]: state[k] for k in own}, strict=True)
