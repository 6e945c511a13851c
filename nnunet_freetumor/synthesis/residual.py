"""FreeTumor's learned residual (METHOD.md Eq. 1) on tensors.

x in the generator's window [0, 1], M the soft tumor mask, g a Gaussian:
    x_hat = (1 - M) * x + M * [x + polarity * (tanh(G(x)) (*) g)]
with polarity -1 for tumors darker than parenchyma (abdomen: the paper's minus sign) and +1 for brighter (chest).
The residual is applied in HU (one window width per unit), so nothing outside M changes and nothing inside M is clipped
by the window; mapping back to nnU-Net's normalization clips to the plan's window exactly as preprocessing does.

Everything here runs on CPU tensors (DA workers, tests) and on the training GPU alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nnunet_freetumor.config import WindowConfig
from nnunet_freetumor.synthesis.intensity import CTNormalization, normalized_to_window
from nnunet_freetumor.synthesis.masks import gaussian_blur3d, relative_depth
from nnunet_freetumor.synthesis.padding import forward_padded

# the authors' smoothing of tanh(G(x)): a 7-tap Gaussian of sigma 1 voxel (generators saved before it was an option)
BLUR_SIGMA = 1.0


def generator_residual(g_out: torch.Tensor, blur_sigma: float = BLUR_SIGMA, blur_size: int = 7) -> torch.Tensor:
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
    blur_sigma: float = BLUR_SIGMA,
    depth_input: bool = False,
) -> torch.Tensor:
    """Eq. 1 with a generator: window the crops, run G (padded to its stride), take each sample's organ channel.

    x_norm: (B, 1, ...) normalized crops; soft: (B, 1, ...) soft masks; organ_index: (B,) index of the sample's organ
    in the config's pairs (= G's output channel). ``mask_input``: G also sees the soft mask as a second input channel
    (a mask-conditioned generator can place structure relative to the tumor's outline, e.g. a darker core inside a
    rim; the paper's G sees the image only). ``depth_input``: G also sees each voxel's depth inside the tumor relative
    to the tumor's deepest voxel (``masks.relative_depth``) as its last channel. ``blur_sigma``: the residual's
    smoothing (voxels; the authors' 1, 0 = none). Differentiable in G's parameters.
    """
    inputs = normalized_to_window(x_norm, norm, window)
    if mask_input:
        inputs = torch.cat([inputs, soft.to(inputs.dtype)], 1)
    if depth_input:
        inputs = torch.cat([inputs, relative_depth(soft).to(inputs.dtype)], 1)
    g = forward_padded(generator, inputs, tuple(divisor))
    residual = generator_residual(select_channel(g, organ_index).float(), blur_sigma)
    return apply_residual(x_norm, soft, residual, norm, window)
