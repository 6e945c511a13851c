"""FreeTumor's losses (METHOD.md Eq. 2-3). Every loss is a per-sample mean (shape (B,)), so that a batch split over
DDP ranks gives the same gradients as one process: the caller averages over the batch."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from nnunet_freetumor.gate import tumor_probability
from nnunet_freetumor.generator.networks import C_BACKGROUND, C_REAL


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sample mean of ``values`` over ``mask`` voxels. (B, 1, ...) -> (B,); 0 where a mask is empty."""
    m = mask.float().flatten(1)
    return (values.flatten(1) * m).sum(1) / m.sum(1).clamp_min(1.0)


def seg_guided_loss(seg_logits: torch.Tensor, tumor_labels: Sequence[int], mask: torch.Tensor) -> torch.Tensor:
    """Eq. 2: ``1 - mean_{v in M} S(x_hat)_tumor(v)`` per sample.

    seg_logits: (B, K, ...) logits of the frozen segmenter; tumor_labels: its tumor classes (their probabilities are
    summed, as in the authors' code); mask: (B, 1, ...) bool synthetic-tumor mask. 0 when S calls every mask voxel
    tumor with certainty, 1 when never.
    """
    return 1.0 - masked_mean(tumor_probability(seg_logits, tumor_labels), mask)


def generator_adversarial_loss(c_logits_fake: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L_cls for G (non-saturating GAN loss): ``-log C_real(x_hat)`` averaged over the synthetic-tumor voxels."""
    logp_real = F.log_softmax(c_logits_fake.float(), 1)[:, C_REAL : C_REAL + 1]
    return masked_mean(-logp_real, mask)


def discriminator_loss(c_logits: torch.Tensor, tumor_mask: torch.Tensor, tumor_class: int) -> torch.Tensor:
    """C's voxel-wise 3-class loss on one side (real crops: ``tumor_class=C_REAL``; synthetic: ``C_FAKE``).

    Cross-entropy averaged per class: tumor voxels towards ``tumor_class``, every other voxel towards background,
    each half weighted equally so that small tumors are not drowned by background. Returns (B,).
    """
    logp = F.log_softmax(c_logits.float(), 1)
    tumor = masked_mean(-logp[:, tumor_class : tumor_class + 1], tumor_mask)
    background = masked_mean(-logp[:, C_BACKGROUND : C_BACKGROUND + 1], ~tumor_mask)
    return 0.5 * (tumor + background)
