"""The handcrafted SyntheticTumors recipe (the baseline that cannot adapt): a textured HU offset inside the soft mask.

Runs on CPU tensors (nnU-Net's DA workers, the offline export) and on the GPU alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from nnunet_freetumor.config import HandcraftedConfig
from nnunet_freetumor.synthesis.intensity import CTNormalization
from nnunet_freetumor.synthesis.masks import gaussian_blur3d


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
