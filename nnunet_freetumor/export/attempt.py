"""One synthetic tumor for a case: draw a mask in a candidate organ, synthesize it in its box, let the gate judge it;
up to ``MAX_TRIES`` draws until one is accepted."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from nnunet_freetumor.config import FreeTumorConfig
from nnunet_freetumor.export.box import BoxGenerator, generator_box, handcrafted_box
from nnunet_freetumor.labels import healthy_organs
from nnunet_freetumor.segmenter import FrozenSegmenter
from nnunet_freetumor.synthesis.boxes import CropRule
from nnunet_freetumor.synthesis.masks import choose_size_class, sample_tumor_mask, soft_masks
from nnunet_freetumor.synthesis.pipeline import judge
from nnunet_freetumor.synthesis.resample import resample, resample_mask, size_at_spacing

MAX_TRIES = 5  # masks drawn per output case when the gate rejects


@dataclass
class Attempt:
    """One drawn and synthesized tumor (plan axis order)."""

    organ: int
    size_class: str
    edge_sigma_mm: float
    mask: np.ndarray  # (X, Y, Z) bool, whole case
    box: tuple[slice, ...]
    hu_box: torch.Tensor  # synthesized native box (HU, float32, CPU)
    p: float | None = None
    accepted: bool = True


@dataclass
class CaseSynthesizer:
    """Draws, synthesizes and (with ``segmenter``, S) gates tumors in one case at a time. ``generator`` None:
    handcrafted."""

    cfg: FreeTumorConfig
    crop_rule: CropRule
    plan_spacing: tuple[float, ...]
    device: torch.device
    generator: BoxGenerator | None = None
    segmenter: FrozenSegmenter | None = None
    healthy_only: bool = True

    def candidate_organs(self, labels: np.ndarray) -> list[int]:
        """Organs that may get a tumor: the healthy ones, or (``healthy_only`` False) every one present."""
        if self.healthy_only:
            return healthy_organs(labels, self.cfg)
        return [o for o in self.cfg.organ_labels if int((labels == o).sum()) >= self.cfg.mask.min_organ_voxels]

    def first_accepted(
        self, image: np.ndarray, labels: np.ndarray, spacing: Sequence[float], organs: list[int], rng
    ) -> tuple[Attempt | None, list[float | None]]:
        """Up to ``MAX_TRIES`` attempts until one is accepted (without the gate: the first tumor that fits and is
        finite). Returns it (None if none was) and the gate's P of every attempt made."""
        tries: list[float | None] = []
        for _ in range(MAX_TRIES):
            a = self.attempt(image, labels, spacing, organs, rng)
            if a is None:
                continue
            tries.append(a.p)
            if a.accepted:
                return a, tries
        return None, tries

    def attempt(
        self, image: np.ndarray, labels: np.ndarray, spacing: Sequence[float], organs: list[int], rng
    ) -> Attempt | None:
        """Draw one tumor and synthesize it (plan axis order; ``spacing`` is the native spacing in that order).
        None when the organ has no room for a tumor centre."""
        cfg = self.cfg
        organ = int(organs[int(rng.integers(len(organs)))])
        size_class = choose_size_class(cfg.mask, rng)
        organ_mask = labels == organ
        mask = sample_tumor_mask(organ_mask, spacing, cfg.mask, rng, size_class)
        if mask is None:
            return None
        sigma = float(rng.uniform(*cfg.mask.edge_sigma_mm))
        box = self.crop_rule.box(mask, spacing)
        hu = torch.from_numpy(image[box].astype(np.float32)).to(self.device)
        m = torch.from_numpy(mask[box]).to(self.device)
        organ_box = torch.from_numpy(organ_mask[box]).to(self.device)
        soft = soft_masks(m[None, None], organ_box[None, None], [sigma], spacing)[0, 0]
        out, plan_hu = self._synthesize(hu, soft, organ, spacing, rng)
        finite = bool(torch.isfinite(out).all())
        result = Attempt(organ, size_class.name, sigma, mask, box, out.cpu(), accepted=finite)
        if self.segmenter is not None:
            if plan_hu is None:
                plan_hu = resample(out[None, None], size_at_spacing(out.shape, spacing, self.plan_spacing))[0, 0]
            result.p, result.accepted = self._judge(plan_hu, resample_mask(m, plan_hu.shape), finite)
        return result

    @torch.no_grad()
    def _synthesize(
        self, hu: torch.Tensor, soft: torch.Tensor, organ: int, spacing: Sequence[float], rng
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The synthesized native box, and the box at the plan's spacing when synthesis made it there already."""
        g = self.generator
        if g is None:
            return handcrafted_box(hu, soft, spacing, self.cfg, rng), None
        out, gen_hu = generator_box(g, hu, soft, self.cfg.organ_labels.index(organ), spacing, self.cfg)
        return out, (gen_hu if np.allclose(g.spacing, self.plan_spacing) else None)

    @torch.no_grad()
    def _judge(self, plan_hu: torch.Tensor, plan_mask: torch.Tensor, finite: bool) -> tuple[float, bool]:
        """Eq. 4-5 on the plan-spacing box: (P, accepted)."""
        logits = self.segmenter.segment_hu(plan_hu[None, None])
        p, accept = judge(
            logits,
            plan_mask[None, None].to(logits.device),
            self.cfg.tumor_labels,
            self.cfg.gate_threshold,
            torch.tensor([finite], device=logits.device),
        )
        return float(p[0]), bool(accept[0])
