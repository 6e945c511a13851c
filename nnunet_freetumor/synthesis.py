"""Tumor synthesis on tensors: the learned residual of FreeTumor (Eq. 1) and the handcrafted SyntheticTumors recipe.

Eq. 1 (METHOD.md), x in the generator's window [0, 1], M the soft tumor mask, g a Gaussian:
    x_hat = (1 - M) * x + M * [x + polarity * (tanh(G(x)) (*) g)]
with polarity -1 for tumors darker than parenchyma (abdomen: the paper's minus sign) and +1 for brighter (chest).
The residual is applied in HU (one window width per unit), so nothing outside M changes and nothing inside M is clipped
by the window; mapping back to nnU-Net's normalization clips to the plan's window exactly as preprocessing does.

Everything here runs on CPU tensors (DA workers, tests) and on the training GPU alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nnunet_freetumor.config import HandcraftedConfig, WindowConfig
from nnunet_freetumor.frozen import forward_padded
from nnunet_freetumor.intensity import CTNormalization, normalized_to_window

# --- Gaussian smoothing ---------------------------------------------------------------------------------------------


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


def soft_masks(
    mask: torch.Tensor, organ: torch.Tensor, sigma_mm: Sequence[float], spacing: Sequence[float]
) -> torch.Tensor:
    """Soft tumor masks for Eq. 1: each (hard) mask blurred with its own sigma (mm), multiplied by its organ so that
    nothing outside the organ changes. mask, organ: (B, 1, X, Y, Z) bool; sigma_mm: B values -> (B, 1, ...) float."""
    sp = torch.as_tensor(spacing, dtype=torch.float64)
    out = torch.stack([gaussian_blur3d(m[None].float(), (float(s) / sp).tolist())[0] for m, s in zip(mask, sigma_mm)])
    return out * organ.to(out.dtype)


# --- Eq. 1 ---------------------------------------------------------------------------------------------------------


def generator_residual(g_out: torch.Tensor, blur_sigma: float = 1.0, blur_size: int = 7) -> torch.Tensor:
    """tanh(G(x)) smoothed with the authors' 7-tap, sigma-1 Gaussian. (B, 1, X, Y, Z) -> same, in [-1, 1]."""
    return gaussian_blur3d(torch.tanh(g_out), (blur_sigma,) * 3, blur_size)


def apply_residual(
    x_norm: torch.Tensor, soft: torch.Tensor, residual: torch.Tensor, norm: CTNormalization, window: WindowConfig
) -> torch.Tensor:
    """Eq. 1 on nnU-Net-normalized images.

    x_norm: (B, 1, ...) normalized image; soft: (B, 1, ...) soft mask in [0, 1]; residual: (B, 1, ...) window units.
    Returns x_hat (normalized); voxels with soft == 0 are returned unchanged, bit for bit. The plan-window clip is
    straight-through for gradients (values are exactly nnU-Net's; see ``CTNormalization.from_hu``).
    """
    hu = norm.to_hu(x_norm) + window.polarity * residual * (window.hu_max - window.hu_min)
    return torch.lerp(x_norm, norm.from_hu(hu, straight_through=True).to(x_norm.dtype), soft.to(x_norm.dtype))


def select_channel(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(B, K, ...) and (B,) channel indices -> (B, 1, ...): each sample's own output channel (one per organ)."""
    idx = index.view(-1, 1, *([1] * (t.ndim - 2))).expand(-1, 1, *t.shape[2:])
    return t.gather(1, idx.to(t.device))


def generator_synthesis(
    generator: nn.Module,
    x_norm: torch.Tensor,
    soft: torch.Tensor,
    organ_index: torch.Tensor,
    norm: CTNormalization,
    window: WindowConfig,
    divisor: Sequence[int],
    mask_input: bool = False,
) -> torch.Tensor:
    """Eq. 1 with a generator: window the crops, run G (padded to its stride), take each sample's organ channel.

    x_norm: (B, 1, ...) normalized crops; soft: (B, 1, ...) soft masks; organ_index: (B,) index of the sample's organ
    in the config's pairs (= G's output channel). ``mask_input``: G also sees the soft mask as a second input channel
    (a mask-conditioned generator can place structure relative to the tumor's outline, e.g. a darker core inside a
    rim; the paper's G sees the image only). Differentiable in G's parameters.
    """
    inputs = normalized_to_window(x_norm, norm, window)
    if mask_input:
        inputs = torch.cat([inputs, soft.to(inputs.dtype)], 1)
    g = forward_padded(generator, inputs, tuple(divisor))
    return apply_residual(x_norm, soft, generator_residual(select_channel(g, organ_index).float()), norm, window)


# --- handcrafted (SyntheticTumors) ---------------------------------------------------------------------------------


def handcrafted_texture(
    shape: Sequence[int], spacing: Sequence[float], cfg: HandcraftedConfig, generator: torch.Generator, device=None
) -> torch.Tensor:
    """SyntheticTumors' texture: smooth noise thresholded against uniform noise, blurred, scaled to mean ~0.5.

    Returns float32 (X, Y, Z) in [0, 1]. Sigmas are drawn in mm and converted with ``spacing``. ``generator`` (a
    torch.Generator on ``device``) holds all the randomness.
    """

    def uniform(lo: float, hi: float, size=()) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(size, generator=generator, device=device)

    sp = torch.as_tensor(spacing, dtype=torch.float64)
    sigma_a = (float(uniform(*cfg.texture_sigma_a_mm)) / sp).tolist()
    sigma_b = (float(uniform(*cfg.texture_sigma_b_mm)) / sp).tolist()
    a = gaussian_blur3d(uniform(0, 1, tuple(shape))[None, None], sigma_a)[0, 0]
    a = float(uniform(0.19, 0.21)) * (a - a.min()) / (a.max() - a.min()).clamp_min(1e-6) + float(uniform(0.04, 0.06))
    b = gaussian_blur3d((a > uniform(0, 1, tuple(shape))).float()[None, None], sigma_b)[0, 0]
    above = b > 0.12
    mean_above = b[above].mean() if bool(above.any()) else b.mean() + 1e-6
    return (float(uniform(0.5, 0.55)) / mean_above.clamp_min(1e-6) * b).clamp(0, 1)


def handcrafted_synthesis(
    x_norm: torch.Tensor,
    soft: torch.Tensor,
    texture: torch.Tensor,
    difference_hu: float,
    norm: CTNormalization,
    polarity: int,
) -> torch.Tensor:
    """SyntheticTumors on nnU-Net-normalized images: ``hu + polarity * difference * texture * soft``.

    x_norm, soft, texture: broadcastable tensors; voxels with soft == 0 are returned unchanged, bit for bit.
    """
    hu = norm.to_hu(x_norm) + polarity * difference_hu * texture * soft
    return torch.where(soft > 0, norm.from_hu(hu).to(x_norm.dtype), x_norm)
