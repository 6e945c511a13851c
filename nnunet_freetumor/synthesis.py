"""Tumor synthesis: the learned residual of FreeTumor (Eq. 1) and the handcrafted SyntheticTumors recipe.

Eq. 1 (METHOD.md), x in the generator's window [0, 1], M the soft tumor mask, g a Gaussian:
    x_hat = (1 - M) * x + M * [x + polarity * (tanh(G(x)) (*) g)]
with polarity -1 for tumors darker than parenchyma (abdomen: the paper's minus sign) and +1 for brighter (chest).
The residual is applied in HU (one window width per unit), so nothing outside M changes and nothing inside M is clipped
by the window; mapping back to nnU-Net's normalization clips to the plan's window exactly as preprocessing does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from nnunet_freetumor.config import HandcraftedConfig, WindowConfig
from nnunet_freetumor.intensity import CTNormalization

# --- Gaussian smoothing on tensors --------------------------------------------------------------------------------


def gaussian_kernel1d(sigma: float, size: int | None = None, device=None, dtype=torch.float32) -> torch.Tensor:
    """Normalised 1-D Gaussian; ``size`` defaults to 2*ceil(3 sigma)+1 (odd)."""
    if size is None:
        size = 2 * int(np.ceil(3 * sigma)) + 1
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    k = torch.exp(-0.5 * (x / max(sigma, 1e-6)) ** 2)
    return k / k.sum()


def gaussian_blur3d(x: torch.Tensor, sigma: Sequence[float], size: int | None = None) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, X, Y, Z) with per-axis ``sigma`` in voxels, zero padding ('same' size)."""
    b, c = x.shape[:2]
    out = x.reshape(b * c, 1, *x.shape[2:])
    for axis, s in enumerate(sigma):
        if s <= 0:
            continue
        k = gaussian_kernel1d(float(s), size, device=x.device, dtype=x.dtype)
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = k.numel()
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = k.numel() // 2
        out = F.conv3d(F.pad(out, pad), k.view(shape))
    return out.reshape(x.shape)


# --- Eq. 1 -------------------------------------------------------------------------------------------------------


def generator_residual(g_out: torch.Tensor, blur_sigma: float = 1.0, blur_size: int = 7) -> torch.Tensor:
    """tanh(G(x)) smoothed with the authors' 7-tap, sigma-1 Gaussian. (B, 1, X, Y, Z) -> same, in [-1, 1]."""
    return gaussian_blur3d(torch.tanh(g_out), (blur_sigma,) * 3, blur_size)


def apply_residual(
    x_norm: torch.Tensor, soft: torch.Tensor, residual: torch.Tensor, norm: CTNormalization, window: WindowConfig
) -> torch.Tensor:
    """Eq. 1 on nnU-Net-normalized images.

    x_norm: (B, 1, ...) normalized image; soft: (B, 1, ...) soft mask in [0, 1]; residual: (B, 1, ...) window units.
    Returns x_hat (normalized); voxels with soft == 0 are returned unchanged, bit for bit.
    """
    hu = norm.to_hu(x_norm) + window.polarity * residual * (window.hu_max - window.hu_min)
    return torch.lerp(x_norm, norm.from_hu(hu), soft)


# --- handcrafted (SyntheticTumors) -------------------------------------------------------------------------------


def handcrafted_texture(
    shape: Sequence[int], spacing: Sequence[float], cfg: HandcraftedConfig, rng: np.random.Generator
) -> np.ndarray:
    """SyntheticTumors' texture: smooth noise thresholded against uniform noise, blurred, scaled to mean ~0.5.

    Returns float32 in [0, 1] of ``shape``. Sigmas are drawn in mm and converted with ``spacing``.
    """
    sp = np.asarray(spacing, float)
    sigma_a = rng.uniform(*cfg.texture_sigma_a_mm) / sp
    sigma_b = rng.uniform(*cfg.texture_sigma_b_mm) / sp
    a = gaussian_filter(rng.uniform(0, 1, size=shape).astype(np.float32), sigma_a)
    a = rng.uniform(0.19, 0.21) * (a - a.min()) / max(float(a.max() - a.min()), 1e-6) + rng.uniform(0.04, 0.06)
    b = gaussian_filter((a > rng.uniform(0, 1, size=shape)).astype(np.float32), sigma_b)
    above = b > 0.12
    mean_above = float(b[above].mean()) if above.any() else float(b.mean()) + 1e-6
    return np.clip(rng.uniform(0.5, 0.55) / max(mean_above, 1e-6) * b, 0, 1).astype(np.float32)


def handcrafted_hu(
    hu: np.ndarray, soft: np.ndarray, texture: np.ndarray, difference_hu: float, polarity: int
) -> np.ndarray:
    """SyntheticTumors: ``hu + polarity * difference * texture * soft`` (soft already restricted to the organ)."""
    return hu + polarity * difference_hu * texture * soft
