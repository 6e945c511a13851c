"""Intensity mapping: nnU-Net normalized <-> HU <-> generator window [0, 1].

nnU-Net's CTNormalization is ``x = (clip(HU, p00_5, p99_5) - mean) / max(std, 1e-8)`` with the dataset's foreground
intensity properties (plans['foreground_intensity_properties_per_channel']). Its inverse is exact inside the clip
window [p00_5, p99_5]; HU outside that window are not representable in nnU-Net's input, so mapping back clips to it
(a tumor darker than p00_5 looks exactly like one at p00_5 to the network, synthetic or real).
All functions work elementwise on numpy arrays and torch tensors alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

from nnunet_freetumor.config import FreeTumorConfigError, WindowConfig

Array = TypeVar("Array", np.ndarray, torch.Tensor)


def _clip(x: Array, lo: float, hi: float) -> Array:
    return x.clamp(lo, hi) if isinstance(x, torch.Tensor) else np.clip(x, lo, hi)


@dataclass(frozen=True)
class CTNormalization:
    """One channel's CT normalization parameters (HU)."""

    mean: float
    std: float
    lower: float  # percentile_00_5
    upper: float  # percentile_99_5

    @property
    def scale(self) -> float:
        return max(self.std, 1e-8)

    def to_hu(self, x: Array) -> Array:
        """nnU-Net normalized -> HU (exact inside [lower, upper])."""
        return x * self.scale + self.mean

    def from_hu(self, hu: Array, straight_through: bool = False) -> Array:
        """HU -> nnU-Net normalized, clipped to the plan's window exactly as preprocessing does.

        ``straight_through`` (tensors): same values, but the gradient passes the clip as if it were the identity, so
        a generator whose output is clipped still learns which way to move (a hard clip's gradient is 0 there).
        """
        clipped = _clip(hu, self.lower, self.upper)
        if straight_through and isinstance(hu, torch.Tensor):
            clipped = hu + (clipped - hu).detach()
        return (clipped - self.mean) / self.scale


def ct_normalizations(plans: dict[str, Any], configuration: str) -> tuple[CTNormalization, ...]:
    """Per-channel CT normalization of a plan configuration; a clear error for non-CT normalization schemes."""
    conf = plans["configurations"][configuration]
    schemes = conf.get("normalization_schemes")
    if schemes is None:  # configurations may inherit from another one
        parent = conf.get("inherits_from")
        if parent is None:
            raise FreeTumorConfigError(f"plans configuration {configuration!r} has no normalization_schemes")
        return ct_normalizations(plans, parent)
    props = plans["foreground_intensity_properties_per_channel"]
    out = []
    for c, scheme in enumerate(schemes):
        if scheme != "CTNormalization":
            raise FreeTumorConfigError(
                f"channel {c} of configuration {configuration!r} uses {scheme}, not CTNormalization: tumor synthesis "
                "works in Hounsfield units and needs CT data. For non-CT images, preprocess with a CT-like "
                "normalization (a custom plans file with 'CTNormalization') or do not use the FreeTumor trainers."
            )
        p = props[str(c)]
        out.append(
            CTNormalization(
                mean=float(p["mean"]),
                std=float(p["std"]),
                lower=float(p["percentile_00_5"]),
                upper=float(p["percentile_99_5"]),
            )
        )
    return tuple(out)


def hu_to_window(hu: Array, window: WindowConfig) -> Array:
    """HU -> [0, 1] in the generator's fixed window (clipped)."""
    return (_clip(hu, window.hu_min, window.hu_max) - window.hu_min) / (window.hu_max - window.hu_min)


def window_to_hu(w: Array, window: WindowConfig) -> Array:
    """[0, 1] -> HU (inverse of ``hu_to_window`` inside the window)."""
    return w * (window.hu_max - window.hu_min) + window.hu_min


def normalized_to_window(x: Array, norm: CTNormalization, window: WindowConfig) -> Array:
    return hu_to_window(norm.to_hu(x), window)


def window_to_normalized(w: Array, norm: CTNormalization, window: WindowConfig) -> Array:
    return norm.from_hu(window_to_hu(w, window))
