"""One synthesize -> gate step (METHOD.md Eq. 1 and 4-5), the same wherever a synthetic tumor is made and judged:
the nnU-Net trainers (no gradients, per batch), generator training (gradients into G through S's logits) and its
realism monitor (no gradients, the fixed set); the offline export synthesizes at the native spacing and judges at the
plan's with :func:`judge`, the second half of the step.

Inputs are tumor-centred boxes (``synthesis.boxes``): ``x`` (N, 1, *box) in the normalization of the data,
``mask`` (N, 1, *box) bool the hard tumor masks, ``organ`` (N, 1, *box) bool the organ each tumor lies in. The soft
masks (Eq. 1's M) are made here, so every caller softens and clips to the organ the same way. ``synthesize`` is the
method: the generator (``residual.generator_synthesis`` with G) or the handcrafted recipe. ``segmenter`` is the frozen
S (anything that maps (N, 1, *spatial) inputs to logits), or None for synthesis without a gate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

from nnunet_freetumor.synthesis.gate import gate_accept, gate_proportion
from nnunet_freetumor.synthesis.masks import soft_masks

# (x (N, 1, *box) normalized, soft (N, 1, *box), organ_index (N,)) -> x_hat (N, 1, *box) normalized
Synthesize = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
# x_hat (N, 1, *box) -> (what S sees, the tumor masks on it): e.g. the boxes pasted back into their whole patches
Context = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class Gated:
    """What one step made and what the gate said. ``logits`` carry gradients when the caller's do (generator
    training); ``p`` and ``accept`` never do."""

    x_hat: torch.Tensor  # (N, 1, *box) synthetic boxes, normalized as x
    soft: torch.Tensor  # (N, 1, *box) the soft masks Eq. 1 used
    logits: torch.Tensor | None  # S's logits on what it judged (None without S)
    p: torch.Tensor  # (N,) P of Eq. 4; NaN without S (or where S's output is not finite)
    accept: torch.Tensor  # (N,) bool: P >= T and a finite x_hat (without S: a finite x_hat)
    finite: torch.Tensor  # (N,) bool: x_hat has no NaN or infinity


def judge(
    logits: torch.Tensor,
    mask: torch.Tensor,
    tumor_labels: Sequence[int],
    threshold: float,
    finite: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 4-5 on S's logits (N, K, ...) and the tumor masks (N, 1, ...): (P, accept), both (N,), no gradients.
    ``finite`` (N,) bool: whether each synthetic image is finite (a non-finite one is rejected whatever P is)."""
    with torch.no_grad():
        p = gate_proportion(logits.detach().float(), mask, tumor_labels)
        return p, gate_accept(p, threshold, finite)


def synthesize_and_gate(
    synthesize: Synthesize,
    x: torch.Tensor,
    mask: torch.Tensor,
    organ: torch.Tensor,
    organ_index: torch.Tensor,
    edge_sigma_mm: Sequence[float],
    spacing: Sequence[float],
    segmenter: Callable[[torch.Tensor], torch.Tensor] | None = None,
    *,
    tumor_labels: Sequence[int] = (),
    threshold: float = 0.0,
    context: Context | None = None,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
) -> Gated:
    """Soft masks, Eq. 1 with ``synthesize``, then S and Eq. 4-5 (see the module docstring).

    ``organ_index`` (N,) is each sample's organ in the config's pairs (a generator's output channel);
    ``edge_sigma_mm`` the N edge sigmas of the soft masks; ``spacing`` the boxes' voxel size (mm). S judges the boxes
    themselves, or what ``context`` makes of them (e.g. whole patches, for a gate that looks beyond the box).
    ``autocast`` wraps the networks' forward passes (AMP on CUDA)."""
    soft = soft_masks(mask, organ, edge_sigma_mm, spacing)
    with autocast():
        x_hat = synthesize(x, soft, organ_index).float()
    finite = torch.isfinite(x_hat).flatten(1).all(1)
    if segmenter is None:
        return Gated(x_hat, soft, None, torch.full_like(finite, float("nan"), dtype=torch.float32), finite, finite)
    inputs, gate_mask = (x_hat, mask) if context is None else context(x_hat)
    with autocast():
        logits = segmenter(inputs)
    p, accept = judge(logits, gate_mask, tumor_labels, threshold, finite)
    return Gated(x_hat, soft, logits, p, accept, finite)
