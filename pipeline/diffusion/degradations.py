"""Cold Diffusion's deterministic degradations ``D(x, s)``, s = 0..T (methods.md section 3), as
pure batched torch functions: ``x`` is (N, C, H, W), ``s`` an int or an (N,) integer tensor of
severities; ``D(x, 0) = x`` and information lost grows with s. No Ray, no I/O.

Blur is cumulative (``D(x, s) = G_{s-1} * ... * G_0 * x``) but costs one FFT convolution per
call whatever s: each step kernel is separable and symmetric, so the composition is the
product of the steps' transfer functions on the padded signal's period (the image itself for
circular padding; its mirror extension, period 2H - 2, for reflect padding, which is what
repeated reflect-padded convolutions compute). The cumulative transfer functions for every s
are precomputed once, so a sampler's step is O(1) convolutions, not O(s).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.nn.functional as F

from pipeline.diffusion.operator_basics import luma, per_sample, severity_tensor
from pipeline.diffusion.snow import Snow

def blur_sigmas(T: int, schedule: str, c: float, base: float = 0.0) -> list[float]:
    """Per-step sigma: constant ``c``, incremental ``base + c (i + 1)`` (the paper's CIFAR-10
    schedule 0.35 + i/100 is base 0.34, c 0.01), or exponential ``exp(c i)``."""
    if schedule == "constant":
        return [c] * T
    if schedule == "incremental":
        return [base + c * (i + 1) for i in range(T)]
    if schedule == "exponential":
        return [math.exp(c * i) for i in range(T)]
    raise ValueError(f"blur schedule {schedule!r}: choose constant, incremental or exponential")


def gaussian_taps(sigma: float, size: int) -> torch.Tensor:
    """A normalised 1-D Gaussian of odd length ``size`` (float64)."""
    if size % 2 != 1:
        raise ValueError(f"kernel size must be odd, got {size}")
    r = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-0.5 * (r / sigma) ** 2)
    return g / g.sum()


@dataclass
class GaussianBlur:
    """Cumulative Gaussian blur with a k x k separable step kernel per step."""
    T: int
    kernel_size: int = 11
    schedule: str = "incremental"
    c: float = 0.01
    base: float = 0.34
    padding: str = "reflect"                  # or "circular"
    _tables: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.padding not in ("reflect", "circular"):
            raise ValueError(f"blur padding {self.padding!r}: choose reflect or circular")
        self.sigmas = blur_sigmas(self.T, self.schedule, self.c, self.base)
        self.taps = [gaussian_taps(s, self.kernel_size) for s in self.sigmas]

    def _period(self, n: int) -> int:
        return n if self.padding == "circular" else 2 * n - 2

    def _transfer(self, n: int, device) -> torch.Tensor:
        """(T + 1, period) real transfer functions of the cumulative 1-D kernels along an axis of
        length n, kept on ``device`` (built once per size and device)."""
        if (n, str(device)) not in self._tables:
            self._tables[(n, str(device))] = self._build_transfer(n).to(device)
        return self._tables[(n, str(device))]

    def _build_transfer(self, n: int) -> torch.Tensor:
        period = self._period(n)
        half = self.kernel_size // 2
        if self.padding == "reflect" and half > n - 1:
            raise ValueError(f"reflect padding needs images of at least {half + 1} pixels for kernel {self.kernel_size}")
        out = torch.ones(self.T + 1, period, dtype=torch.float64)
        for i, taps in enumerate(self.taps):
            folded = torch.zeros(period, dtype=torch.float64)
            folded.index_add_(0, (torch.arange(self.kernel_size) - half) % period, taps)
            # A symmetric kernel has a real transfer function.
            out[i + 1] = out[i] * torch.fft.fft(folded).real
        return out

    def _extend(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        if self.padding == "circular":
            return x
        n = x.shape[dim]
        return torch.cat([x, x.flip(dim).narrow(dim, 1, n - 2)], dim=dim)

    def __call__(self, x: torch.Tensor, s) -> torch.Tensor:
        s = severity_tensor(s, x.shape[0], self.T, x.device)
        h, w = x.shape[-2:]
        # float64 inputs stay float64 (the tests' 1e-9 match); others run in float32 (errors ~1e-6).
        work = torch.float64 if x.dtype == torch.float64 else torch.float32
        th, tw = self._transfer(h, x.device)[s].to(work), self._transfer(w, x.device)[s].to(work)
        ext = self._extend(self._extend(x.to(work), -2), -1)
        # Real input, real even transfer functions: the half spectrum along the last axis is enough.
        spec = torch.fft.rfft2(ext) * th[:, None, :, None] * tw[:, None, None, :tw.shape[1] // 2 + 1]
        out = torch.fft.irfft2(spec, s=ext.shape[-2:])[..., :h, :w]
        return out.to(x.dtype)

    def step_by_step(self, x: torch.Tensor, s: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """The reference: s separate padded k x k convolutions, as the released code does (O(s))."""
        half = self.kernel_size // 2
        out = x.to(dtype)
        c = x.shape[1]
        mode = "reflect" if self.padding == "reflect" else "circular"
        for taps in self.taps[:s]:
            k2 = torch.outer(taps, taps).to(dtype=dtype, device=x.device).expand(c, 1, -1, -1)
            out = F.conv2d(F.pad(out, (half, half, half, half), mode=mode), k2, groups=c)
        return out.to(x.dtype)


def uniform_draws(generators, n: int, k: int) -> torch.Tensor:
    """(n, k) float64 uniforms in [0, 1): from one generator for the batch, or one row per
    generator of a list (per-sample generators keep a sample's draw independent of its batch)."""
    if isinstance(generators, torch.Generator):
        return torch.rand(n, k, generator=generators, dtype=torch.float64)
    if len(generators) != n:
        raise ValueError(f"got {len(generators)} generators for {n} samples")
    return torch.stack([torch.rand(k, generator=g, dtype=torch.float64) for g in generators])


def bind(degrade, x: torch.Tensor, generators):
    """``D`` with its per-sample random parameters (hole centres, fade colours) drawn once for
    the batch ``x``, so that every use of it in training or in a sampler's steps sees the same
    operator; deterministic operators come back unchanged."""
    draw = getattr(degrade, "draw", None)
    params = draw(x, generators) if draw is not None else {}
    return functools.partial(degrade, **params) if params else degrade


def gaussian_hole(h: int, w: int, sigma: float, centre: tuple[float, float]) -> torch.Tensor:
    """``1 - g / max(g)`` for a 2-D Gaussian g centred at ``centre`` (row, col): 0 at the centre."""
    rows = torch.arange(h, dtype=torch.float64)[:, None] - centre[0]
    cols = torch.arange(w, dtype=torch.float64)[None, :] - centre[1]
    g = torch.exp(-(rows ** 2 + cols ** 2) / (2 * sigma ** 2))
    return 1 - g / g.max()


@dataclass
class GaussianMasks:
    """Cumulative multiplicative masks ``prod_{i < s} z_i`` with ``z_i`` a Gaussian hole of
    sigma ``c (i + i0)``, centred, or at one centre per sample (``centres`` (N, 2) in pixels).
    With ``random_centre`` the operator draws a uniform centre per sample (``draw``)."""
    T: int
    c: float = 0.2
    i0: float = 1.0
    random_centre: bool = False

    _centred: dict = field(default_factory=dict, repr=False)

    def draw(self, x: torch.Tensor, generators) -> dict:
        """Per-sample parameters of the operator for the batch ``x`` (see ``bind``)."""
        if not self.random_centre:
            return {}
        h, w = x.shape[-2:]
        return {"centres": uniform_draws(generators, len(x), 2) * torch.tensor([h - 1, w - 1], dtype=torch.float64)}

    def masks(self, s: torch.Tensor, h: int, w: int, centres: torch.Tensor | None) -> torch.Tensor:
        if centres is None:
            # Every cumulative mask of the centred holes, built once per image size: a sampler's
            # step then costs a lookup, not s Gaussian evaluations.
            if (h, w) not in self._centred:
                self._centred[(h, w)] = torch.stack(list(self._products(h, w, ((h - 1) / 2, (w - 1) / 2), self.T)))
            return self._centred[(h, w)][s][:, None]
        out = torch.ones(len(s), 1, h, w, dtype=torch.float64)
        for n in range(len(s)):
            for mask in self._products(h, w, tuple(float(v) for v in centres[n]), int(s[n])):
                out[n, 0] = mask                                # only the last, the product of s holes, stays
        return out

    def _products(self, h: int, w: int, centre: tuple[float, float], s: int) -> Iterator[torch.Tensor]:
        """The products of the first 0, 1, ..., s holes around ``centre``, one (h, w) mask each."""
        mask = torch.ones(h, w, dtype=torch.float64)
        yield mask
        for i in range(s):
            mask = mask * gaussian_hole(h, w, self.c * (i + self.i0), centre)
            yield mask


@dataclass
class Inpainting(GaussianMasks):
    """The image times the cumulative mask: a growing hole (centred, or ``centres`` per sample)."""

    def __call__(self, x: torch.Tensor, s, centres: torch.Tensor | None = None) -> torch.Tensor:
        s = severity_tensor(s, x.shape[0], self.T, x.device)
        return (x.double() * self.masks(s.cpu(), *x.shape[-2:], centres).to(x.device)).to(x.dtype)


@dataclass
class Fade(GaussianMasks):
    """Fade to a constant colour through the cumulative masks: ``m x + (1 - m) colour``
    (``colour`` (N, C) in the images' range; default 0). With ``random_colour`` the operator
    draws one uniform colour in [-1, 1] per sample (``draw``)."""
    random_colour: bool = False

    def draw(self, x: torch.Tensor, generators) -> dict:
        params = super().draw(x, generators)
        if self.random_colour:
            params["colour"] = uniform_draws(generators, len(x), x.shape[1]) * 2 - 1
        return params

    def __call__(self, x: torch.Tensor, s, colour: torch.Tensor | None = None,
                 centres: torch.Tensor | None = None) -> torch.Tensor:
        s = severity_tensor(s, x.shape[0], self.T, x.device)
        m = self.masks(s.cpu(), *x.shape[-2:], centres).to(x.device)
        fill = torch.zeros(x.shape[:2], dtype=torch.float64, device=x.device) if colour is None else colour.to(x.device).double()
        return (m * x.double() + (1 - m) * fill[..., None, None]).to(x.dtype)


@dataclass
class SuperResolution:
    """Step s: average-pool to H / 2^s, nearest-upsample back to H (information lost is
    everything finer than the 2^s grid)."""
    T: int = 3

    def __call__(self, x: torch.Tensor, s) -> torch.Tensor:
        s = severity_tensor(s, x.shape[0], self.T, x.device)
        h, w = x.shape[-2:]
        if h % 2 ** self.T or w % 2 ** self.T:
            raise ValueError(f"super-resolution with T={self.T} needs sides divisible by {2 ** self.T}, got {h}x{w}")
        out = x.clone()
        for level in s.unique().tolist():
            if level == 0:
                continue
            idx = (s == level).nonzero().flatten()
            f = 2 ** level
            low = F.avg_pool2d(x[idx], f)
            out[idx] = F.interpolate(low, scale_factor=f, mode="nearest")
        return out


@dataclass
class Decolorization:
    """``f_s x + (1 - f_s) gray(x)`` with f_s = 1 - s / T (luma weights 0.299, 0.587, 0.114)."""
    T: int = 20

    def __call__(self, x: torch.Tensor, s) -> torch.Tensor:
        s = severity_tensor(s, x.shape[0], self.T, x.device)
        if x.shape[1] != 3:
            raise ValueError(f"decolorization needs 3-channel images, got {x.shape[1]}")
        f = per_sample(1 - s.double() / self.T, x)
        return f * x + (1 - f) * luma(x).expand_as(x)


DEGRADATIONS = {"blur": GaussianBlur, "inpaint": Inpainting, "superres": SuperResolution, "decolor": Decolorization,
                "fade": Fade, "snow": Snow}


def build_degradation(spec: dict):
    """The operator a spec names: ``{"name": "blur", "T": 50, "kernel_size": 11, ...}``."""
    params = {k: v for k, v in spec.items() if k != "name"}
    if spec.get("name") not in DEGRADATIONS:
        raise ValueError(f"degradation {spec.get('name')!r}: choose one of {', '.join(DEGRADATIONS)}")
    return DEGRADATIONS[spec["name"]](**params)
