"""The quality gate (METHOD.md Eq. 4-5): keep a synthetic tumor only if the frozen segmenter sees it.

    P = |{v in M : argmax S(x_hat)(v) is a tumor label}| / |M|,   accept iff P >= T (T = 0.7 by default)

"A tumor label" is any of the configured tumor labels, as in the authors' code (which merges every tumor class).
A sample with an empty mask, or with a non-finite synthetic image or segmenter output, is rejected (P = 0 / NaN).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def tumor_probability(seg_logits: torch.Tensor, tumor_labels: Sequence[int]) -> torch.Tensor:
    """Softmax probability of 'any tumor' per voxel: (B, K, ...) logits -> (B, 1, ...)."""
    return seg_logits.float().softmax(1)[:, list(tumor_labels)].sum(1, keepdim=True)


def gate_proportion(seg_logits: torch.Tensor, mask: torch.Tensor, tumor_labels: Sequence[int]) -> torch.Tensor:
    """P of Eq. 4 per sample. seg_logits (B, K, ...); mask (B, 1, ...) bool. Returns (B,) float32; 0 for empty masks,
    NaN where the logits inside the mask are not finite."""
    pred = torch.isin(seg_logits.argmax(1, keepdim=True), torch.as_tensor(list(tumor_labels), device=mask.device))
    n = mask.flatten(1).sum(1)
    p = (pred & mask).flatten(1).sum(1).float() / n.clamp_min(1)
    finite = torch.isfinite(seg_logits).flatten(1).all(1)
    return torch.where(finite, p, torch.full_like(p, float("nan")))


def gate_accept(p: torch.Tensor, threshold: float, image_finite: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 5: (B,) bool; NaN P and non-finite synthetic images are rejected."""
    ok = torch.nan_to_num(p, nan=-1.0) >= threshold
    return ok if image_finite is None else ok & image_finite
