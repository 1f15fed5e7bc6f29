"""Snow (ImageNet-C style): a fixed, seeded snow field whose flakes, motion streaks and brightening
grow with the severity s; it saturates at white, so D(x, 0) = x even for inputs outside the range.
Not cumulative, and additive and known to the sampler (see the README on what that means for
anonymization). Pure torch."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from pipeline.diffusion.operator_basics import luma, per_sample, severity_tensor


@dataclass
class Snow:
    """An ImageNet-C-style snow layer over a brightened image, not cumulative: at f = s / T

        y = x + brightness f (max(x, min(1.5 gray(x) + 0.5, 1)) - x)     (in [0, 1] units)
        D(x, s) = y + min(snow_s + rot180(snow_s), max(1 - y, 0))          (saturate at white)

    ``snow_s`` is one fixed random field (``seed``; zoomed by ``zoom``), thresholded so that the
    top ``coverage f`` of it shows as flakes, trailed by a motion streak along ``angle`` degrees
    whose length grows to ``streak`` pixels. Every term is non-negative and grows with s, so
    information lost grows with s; the same field serves every image, so D is deterministic."""
    T: int = 200
    seed: int = 0
    coverage: float = 0.08
    zoom: float = 2.0
    streak: int = 8
    angle: float = -60.0
    brightness: float = 0.3
    value_range: tuple[float, float] = (-1.0, 1.0)
    _fields: dict = field(default_factory=dict, repr=False)
    _layers: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.coverage <= 1 or self.streak < 1 or self.zoom <= 0:
            raise ValueError(f"snow needs 0 < coverage <= 1, streak >= 1 and zoom > 0, got {self.coverage}, "
                             f"{self.streak}, {self.zoom}")

    def _field(self, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The random field at this size and its values sorted from the top (the thresholds)."""
        if (h, w) not in self._fields:
            g = torch.Generator().manual_seed(self.seed)
            coarse = torch.randn(1, 1, max(1, math.ceil(h / self.zoom)), max(1, math.ceil(w / self.zoom)),
                                 generator=g, dtype=torch.float64)
            u = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[0, 0]
            self._fields[(h, w)] = (u, u.flatten().sort(descending=True).values)
        return self._fields[(h, w)]

    def layer(self, s: int, h: int, w: int) -> torch.Tensor:
        """(h, w) snow in [0, 1] units at severity s: flakes plus their streaks, and rotated by 180
        degrees; built once per size and level (a TACoS step asks for two levels, each twice per run)."""
        if (h, w, s) not in self._layers:
            self._layers[(h, w, s)] = self._build_layer(s, h, w)
        return self._layers[(h, w, s)]

    def _build_layer(self, s: int, h: int, w: int) -> torch.Tensor:
        u, ranked = self._field(h, w)
        shown = round(self.coverage * s / self.T * u.numel())
        if shown == 0:
            return torch.zeros(h, w, dtype=torch.float64)
        # Flakes: how far the field stands above the threshold, 1 at its peak when s = T.
        top = ranked[0] - ranked[min(max(round(self.coverage * u.numel()), 1), u.numel() - 1)]
        flakes = (u - ranked[shown - 1]).clamp(min=0) / top.clamp(min=1e-12)
        # Unnormalized streak: each extra tap adds a trail, so the layer only grows with s.
        length = 1 + round((self.streak - 1) * s / self.T)
        dy, dx = math.sin(math.radians(self.angle)), math.cos(math.radians(self.angle))
        out = torch.zeros(h, w, dtype=torch.float64)
        for i in range(length):
            out += _shifted(flakes, round(i * dy), round(i * dx)) * (1 - i / self.streak)
        return out + out.flip(-2, -1)

    def __call__(self, x: torch.Tensor, s) -> torch.Tensor:
        s = severity_tensor(s, x.shape[0], self.T, x.device)
        lo, hi = self.value_range
        y = (x.double() - lo) / (hi - lo)
        f = per_sample(s.double() / self.T, y)
        y = y + self.brightness * f * (torch.maximum(y, (1.5 * luma(y) + 0.5).clamp(max=1)) - y)
        h, w = x.shape[-2:]
        snow = torch.stack([self.layer(level, h, w) for level in s.tolist()]).to(x.device)[:, None]
        y = y + torch.minimum(snow, (1 - y).clamp(min=0))
        return (y * (hi - lo) + lo).to(x.dtype)


def _shifted(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``image`` moved by (dy, dx) pixels, zeros where nothing moves in."""
    h, w = image.shape
    out = torch.zeros_like(image)
    if abs(dy) < h and abs(dx) < w:
        out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
            image[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out
