"""FreeTumor's losses (METHOD.md Eq. 2-3). Every loss is a per-sample mean (shape (B,)), so that a batch split over
DDP ranks gives the same gradients as one process: the caller averages over the batch."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from nnunet_freetumor.generator.networks import C_BACKGROUND, C_REAL
from nnunet_freetumor.synthesis.gate import tumor_probability


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sample mean of ``values`` over ``mask`` voxels. (B, 1, ...) -> (B,); 0 where a mask is empty."""
    m = mask.float().flatten(1)
    return (values.flatten(1) * m).sum(1) / m.sum(1).clamp_min(1.0)


SEG_LOSSES = ("nonsat", "paper")


def log_tumor_probability(seg_logits: torch.Tensor, tumor_labels: Sequence[int]) -> torch.Tensor:
    """log P(any tumor class) per voxel from logits, without forming the probability: (B, K, ...) -> (B, 1, ...).
    Finite everywhere, also where S is certain there is no tumor."""
    logits = seg_logits.float()
    return torch.logsumexp(logits[:, list(tumor_labels)], 1, keepdim=True) - torch.logsumexp(logits, 1, keepdim=True)


def seg_guided_loss(
    seg_logits: torch.Tensor, tumor_labels: Sequence[int], mask: torch.Tensor, form: str = "paper"
) -> torch.Tensor:
    """The segmentation-guided loss per sample (B,): how far the frozen S is from calling the synthetic region tumor.

    ``form="paper"`` is Eq. 2: ``1 - mean_{v in M} p(v)`` with p = S's tumor probability (summed over the tumor
    classes, as in the authors' code); 0 when S calls every mask voxel tumor with certainty, 1 when never. Its gradient
    per logit is p (1 - p): it vanishes where S is sure a synthetic tumor is no tumor, so a generator that starts
    there gets no signal from it (seen on the phantom: benchmarks/RESULTS.md).
    ``form="nonsat"``: ``mean_{v in M} -log p(v)`` (the cross-entropy towards "tumor", the non-saturating GAN trick
    applied to S): the same minimum, but a gradient of (1 - p) per logit, largest exactly where S sees no tumor.
    Computed from log-softmax, so it needs no clamp: finite for any logits, gradient bounded by 1 per logit.
    seg_logits: (B, K, ...); mask: (B, 1, ...) bool synthetic-tumor mask.
    """
    if form == "paper":
        return 1.0 - masked_mean(tumor_probability(seg_logits, tumor_labels), mask)
    if form == "nonsat":
        return masked_mean(-log_tumor_probability(seg_logits, tumor_labels), mask)
    raise ValueError(f"seg loss form must be one of {SEG_LOSSES}, got {form!r}")


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
