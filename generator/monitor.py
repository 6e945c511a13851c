"""Realism monitor for generator training: is G learning to paint tumors like the real ones, and does S see them?

Built once per run on a fixed set, so that numbers of different steps (and of different seeds: the set does not
depend on the run's seed) compare:
- synthetic: ``n`` healthy-organ regions with fixed masks, edge sigmas and organs, drawn from the fold's *validation*
  cases (held out from G's and S's training) when they have healthy organ regions, else from the training cases
  (``held_out`` says which);
- real: the lesions (connected tumor components of >= ``realism.lesions.MIN_LESION_VOXELS`` voxels) of the training
  split, at most ``n_real``: S was trained on them, so S's acceptance there is an upper reference;
- held-out real (when the validation cases have lesions): the validation split's lesions, which neither S nor G saw:
  the fair reference for S's acceptance of G's tumors (``held_out_real_*``).
Every K steps (``evaluate``), with G as it is:
- contrast: mean HU inside the tumor minus the organ within 5 mm around it (``realism.measures.contrast_to_ring``),
  median over the synthetic set next to the real lesions' median (real tumors measured once: S and the data are frozen);
- S's view: the share of synthetic tumors the frozen S labels tumor at the gate's threshold (P >= T, Eq. 4-5, on the
  same box as the gate), next to the real lesions' own rate;
- Fréchet distance between real and synthetic tumors in S's bottleneck features (``realism.frechet.frechet_distance`` on
  context-sized, tumor-centred crops), with a same-distribution reference band, both at the same set sizes: over
  random splits of the synthetic set into N_real tumors and the rest, the FD between the real lesions and the rest
  (median reported) and between the N_real synthetic ones and the rest (5th-95th percentile: the band). An FD inside
  (or below) the band means real and synthetic are as far apart as two samples of one distribution of that size.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from nnunet_freetumor.config import FreeTumorConfig, FreeTumorConfigError
from nnunet_freetumor.generator.data import FULL_26, GeneratorData
from nnunet_freetumor.generator.plots import save_fixed_set_montage
from nnunet_freetumor.realism.frechet import frechet_distance
from nnunet_freetumor.realism.lesions import MIN_LESION_VOXELS
from nnunet_freetumor.realism.measures import contrast_to_ring
from nnunet_freetumor.segmenter import FrozenSegmenter
from nnunet_freetumor.synthesis.boxes import tumor_box
from nnunet_freetumor.synthesis.intensity import CTNormalization
from nnunet_freetumor.synthesis.pipeline import Synthesize, judge, synthesize_and_gate

MONITOR_SEED = 20250218  # fixed: every run (any --seed) is judged on the same synthetic set
REFERENCE_DRAWS = 30


@dataclass
class Item:
    """One tumor of the fixed set: its context crop (normalized image, labels), mask, organ label and box."""

    case: str
    image: torch.Tensor  # (1, *context) float32
    labels: np.ndarray  # (*context) int
    mask: np.ndarray  # (*context) bool: the tumor (synthetic mask or the real lesion)
    organ: int
    box: tuple[slice, ...]
    edge_sigma_mm: float = 0.0


def _quantiles(values: Sequence[float]) -> tuple[float, float, float]:
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if not len(v):
        return (float("nan"),) * 3
    q = np.percentile(v, [25, 50, 75])
    return float(q[0]), float(q[1]), float(q[2])


class RealismMonitor:
    """The monitor of one run: ``build`` draws the fixed set from the run's data; the constructor takes ready items."""

    def __init__(
        self,
        synthetic: Sequence[Item],
        real: Sequence[Item],
        segmenter: FrozenSegmenter,
        norm: CTNormalization,
        cfg: FreeTumorConfig,
        spacing: Sequence[float],
        held_out: bool = False,
        held_out_real: Sequence[Item] = (),
    ):
        self.synthetic, self.real, self.held_out_real = list(synthetic), list(real), list(held_out_real)
        self.segmenter, self.norm, self.cfg, self.held_out = segmenter, norm, cfg, held_out
        self.spacing = tuple(float(s) for s in spacing)
        self.threshold = float(cfg.gate_threshold)
        self.device = segmenter.device
        self.real_stats = self.measure_items(self.real)  # S and the data are frozen
        self.held_out_real_stats = self.measure_items(self.held_out_real) if self.held_out_real else None

    def describe(self, every: int) -> str:
        """A log line: what the monitor watches."""
        where = "held-out validation" if self.held_out else "training (no healthy validation region)"
        unseen = f", {len(self.held_out_real)} of the validation split" if self.held_out_real else ""
        return (
            f"monitor: {len(self.synthetic)} fixed synthetic tumors in {where} cases, {len(self.real)} real lesions "
            f"of the training split{unseen}; every {every} steps"
        )

    @classmethod
    def build(
        cls,
        train_data: GeneratorData,
        held_out_data: GeneratorData | None,
        segmenter: FrozenSegmenter,
        norm: CTNormalization,
        n: int = 32,
        n_real: int = 48,
    ) -> RealismMonitor:
        """The fixed set of a run: ``n`` synthetic masks in the held-out cases (else the training cases), up to
        ``n_real`` real lesions of the training cases and of the held-out cases (see the module docstring)."""
        synthetic, held_out, held_out_real = [], False, []
        if held_out_data is not None and held_out_data.fake_cases:
            synthetic = _fixed_regions(held_out_data, n)
            held_out = bool(synthetic)
        if held_out_data is not None and held_out_data.real_cases:
            held_out_real = real_lesions(held_out_data, n_real)
        if not synthetic:
            synthetic = _fixed_regions(train_data, n)
        real = real_lesions(train_data, n_real)
        cfg, spacing = train_data.cfg, train_data.spacing
        return cls(synthetic, real, segmenter, norm, cfg, spacing, held_out, held_out_real)

    # --- measures ---------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _measure(
        self, items: Sequence[Item], images: Sequence[torch.Tensor], ps: Sequence[float] | None = None
    ) -> dict[str, Any]:
        """Contrast (HU), S's P on the box (unless given: the synthetic set's come from its gate step), and S's
        bottleneck features on the context, per item."""
        contrasts = []
        for it, img in zip(items, images):
            hu = self.norm.to_hu(img[0].float()).numpy()
            contrasts.append(contrast_to_ring(hu, it.mask, it.labels == it.organ, self.spacing))
        if ps is None:
            ps = []
            for it, img in zip(items, images):
                x = img[(slice(None), *it.box)][None].to(self.device)
                m = torch.from_numpy(np.ascontiguousarray(it.mask[it.box]))[None, None].to(self.device)
                ps.append(float(judge(self.segmenter(x), m, self.cfg.tumor_labels, self.threshold)[0][0]))
        feats = self.segmenter.features(self.norm.to_hu(torch.stack(list(images)).float())).numpy()
        return {"contrast": contrasts, "p": list(ps), "features": feats}

    def summarise(self, stats: dict[str, Any]) -> dict[str, float]:
        """One set's numbers from its per-item ones (``measure_items``): the median contrast and its quartiles
        (tumors without an organ ring left out), the share with P >= T (an undefined P counts as rejected) and the
        mean P."""
        q1, med, q3 = _quantiles(stats["contrast"])
        p = np.asarray(stats["p"], dtype=float)
        return {
            "contrast_hu": med,
            "contrast_q1": q1,
            "contrast_q3": q3,
            "accept": float(np.mean(np.nan_to_num(p, nan=-1.0) >= self.threshold)) if len(p) else 0.0,
            "p": float(np.nanmean(p)) if len(p) else float("nan"),
        }

    def measure_items(self, items: Sequence[Item]) -> dict[str, Any]:
        """The per-item numbers (contrast, P, S's features) of other real lesions, measured as the training split's
        (e.g. lesions of cases S never saw)."""
        return self._measure(items, [it.image for it in items])

    @torch.no_grad()
    def synthesize(
        self, synth: Synthesize, autocast: Callable[[], AbstractContextManager] = nullcontext
    ) -> tuple[list[torch.Tensor], list[float]]:
        """The fixed synthetic set painted by ``synth`` and judged by S on its box (the gate's step): context crops
        (1, *context) with the synthesized box pasted, and each tumor's P."""
        out, ps = [], []
        for it in self.synthetic:
            box = (slice(None), *it.box)
            gated = synthesize_and_gate(
                synth,
                it.image[box][None].to(self.device),
                torch.from_numpy(np.ascontiguousarray(it.mask[it.box]))[None, None].to(self.device),
                torch.from_numpy(np.ascontiguousarray(it.labels[it.box] == it.organ))[None, None].to(self.device),
                torch.tensor([self.cfg.organ_labels.index(it.organ)], device=self.device),
                [it.edge_sigma_mm],
                self.spacing,
                self.segmenter,
                tumor_labels=self.cfg.tumor_labels,
                threshold=self.threshold,
                autocast=autocast,
            )
            img = it.image.clone()
            img[box] = gated.x_hat[0].cpu()
            out.append(img)
            ps.append(float(gated.p[0]))
        return out, ps

    def measure(
        self, generator: torch.nn.Module, synth: Synthesize, autocast, montage: Path, title: str
    ) -> dict[str, float]:
        """``evaluate`` with G in eval mode, the fixed set's montage written to ``montage``; ``monitor_s``: the
        seconds the measurement took (without the montage)."""
        t = time.time()
        generator.eval()
        try:
            numbers, images = self.evaluate(synth, autocast)
        finally:
            generator.train()
        seconds = time.time() - t  # the measurement only (as before the montage moved here)
        save_fixed_set_montage(self, images, montage, title, self.norm)
        return {**numbers, "monitor_s": seconds}

    def evaluate(
        self, synth: Synthesize, autocast: Callable[[], AbstractContextManager] = nullcontext
    ) -> tuple[dict[str, float], list[torch.Tensor]]:
        """The monitor's numbers for G as it is now (see the module docstring), and the synthesized fixed set."""
        images, ps = self.synthesize(synth, autocast)
        syn = self._measure(self.synthetic, images, ps)
        real = self.real_stats
        out = {
            "n_synthetic": len(self.synthetic),
            "n_real": len(self.real),
            "held_out": int(self.held_out),
        }
        sets = [("synthetic", syn), ("real", real)]
        if self.held_out_real_stats is not None:
            out["n_held_out_real"] = len(self.held_out_real)
            sets.append(("held_out_real", self.held_out_real_stats))
        for name, stats in sets:
            out.update({f"{name}_{k}": v for k, v in self.summarise(stats).items()})
        out.update(self._fd(real["features"], syn["features"]))
        return out, images

    def _fd(self, real: np.ndarray, syn: np.ndarray) -> dict[str, float]:
        """FD real vs synthetic and its same-distribution band, both at the same set sizes: over random splits of the
        synthetic set into N_real and the rest, FD(real, rest) (its median is reported) and FD(N_real, rest)."""
        nan = float("nan")
        if len(real) < 2 or len(syn) < len(real) + 2:
            return {"fd": nan, "fd_ref_lo": nan, "fd_ref_median": nan, "fd_ref_hi": nan}
        rng = np.random.default_rng(MONITOR_SEED)
        fd, ref = [], []
        for _ in range(REFERENCE_DRAWS):
            perm = rng.permutation(len(syn))
            rest = syn[perm[len(real) :]]
            fd.append(frechet_distance(real, rest))
            ref.append(frechet_distance(syn[perm[: len(real)]], rest))
        lo, med, hi = np.percentile(ref, [5, 50, 95])
        return {"fd": float(np.median(fd)), "fd_ref_lo": float(lo), "fd_ref_median": float(med), "fd_ref_hi": float(hi)}


# --- the fixed set -------------------------------------------------------------------------------------------------


def _fixed_regions(data: GeneratorData, n: int) -> list[Item]:
    out = []
    for k in range(n):
        rng = np.random.default_rng([MONITOR_SEED, k])
        try:
            r = data.fake_region(data.fake_cases[k % len(data.fake_cases)], rng)
        except FreeTumorConfigError:  # no healthy region here (e.g. every validation case has a tumor)
            return out
        mask = torch.from_numpy(r["mask"])
        box = tumor_box(mask, r["box_size"])
        out.append(
            Item(r["case"], torch.from_numpy(r["image"]), r["labels"], r["mask"], r["organ"], box, r["edge_sigma_mm"])
        )
    return out


def real_lesions(data: GeneratorData, n_real: int) -> list[Item]:
    """Every lesion of ``data``'s labeled cases (the training split's, the validation split's or any other cases';
    in a fixed order, at most ``n_real``), each in the context crop centred on its centre of mass (or its voxel
    nearest to it)."""
    out = []
    rng = np.random.default_rng(MONITOR_SEED)
    for case in [data.real_cases[i] for i in rng.permutation(len(data.real_cases))]:
        tumor = np.isin(data.store.labels(case.identifier), data.cfg.tumor_labels)
        comps, count = ndimage.label(tumor, structure=FULL_26)
        for i, box in enumerate(ndimage.find_objects(comps, max_label=count), start=1):
            comp = comps[box] == i
            if int(comp.sum()) < MIN_LESION_VOXELS:
                continue
            pts = np.argwhere(comp)
            centre = pts[np.argmin(((pts - pts.mean(0)) ** 2).sum(1))] + [s.start for s in box]
            r = data.real_region_at(case.identifier, centre)
            organ = _organ_of(r["labels"], r["lesion"], data.cfg.organ_labels)
            box = tumor_box(torch.from_numpy(r["lesion"]), r["box_size"])
            out.append(Item(r["case"], torch.from_numpy(r["image"]), r["labels"], r["lesion"], organ, box))
            if len(out) >= n_real:
                return out
    return out


def _organ_of(labels: np.ndarray, lesion: np.ndarray, organ_labels: Sequence[int]) -> int:
    """The organ around a real lesion: the configured organ with the most voxels next to it."""
    near = ndimage.binary_dilation(lesion, FULL_26, iterations=2) & ~lesion
    counts = [int((labels[near] == o).sum()) for o in organ_labels]
    return organ_labels[int(np.argmax(counts))]
