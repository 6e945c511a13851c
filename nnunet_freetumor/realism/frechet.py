"""Automated realism: a Fréchet distance between real and synthetic tumors in the frozen segmenter's feature space.

FID (the paper reports it against real tumors) uses Inception features of 2-D natural images. Here the feature
extractor is the frozen baseline nnU-Net S of the fold (the same network as the quality gate): tumor-centred 3-D crops
at the plan's spacing, normalized with the plan's CT normalization, go through S's encoder; the deepest skip
(the bottleneck) is global-average-pooled to one F-dimensional vector per crop (F = the last stage's features,
e.g. 320). Two sets of vectors are compared with the Fréchet distance between Gaussians fitted to them:

    FD = |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))

Small-sample caveat: with N samples the covariance has rank <= N - 1, so with N <= F it is singular and FD is biased
(upwards, and strongly dependent on N). Compare FDs only at equal N and F, report both (the CLI does), and consider
``shrinkage`` (covariance shrunk towards a scaled identity) for small N. It is a relative measure (method A vs B on
the same real set), not an absolute one, and features of S on S's own training tumors may be more confident than on
unseen ones.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy.linalg import sqrtm

from nnunet_freetumor.config import FreeTumorConfigError
from nnunet_freetumor.realism.lesions import (
    MIN_LESION_VOXELS,
    Lesion,
    crop_size,
    lesion_crops,
    real_lesions,
    synthetic_lesions,
)
from nnunet_freetumor.segmenter import FrozenSegmenter
from nnunet_freetumor.utilities.dataset import PlannedDataset, raw_training_cases


def covariance(feats: np.ndarray, shrinkage: float = 0.0) -> np.ndarray:
    """Sample covariance of (N, F) features, optionally shrunk towards ``tr(S)/F * I`` by ``shrinkage`` in [0, 1]."""
    if not 0.0 <= shrinkage <= 1.0:
        raise ValueError(f"shrinkage must be in [0, 1], got {shrinkage}")
    cov = np.atleast_2d(np.cov(feats, rowvar=False))
    if shrinkage:
        f = cov.shape[0]
        cov = (1 - shrinkage) * cov + shrinkage * np.trace(cov) / f * np.eye(f)
    return cov


def frechet_distance(
    feats_a: np.ndarray | torch.Tensor, feats_b: np.ndarray | torch.Tensor, eps: float = 1e-6, shrinkage: float = 0.0
) -> float:
    """Fréchet distance between Gaussians fitted to two (N_a, F) and (N_b, F) feature sets (N >= 2 each).

    The standard formula with ``scipy.linalg.sqrtm``. When a covariance is singular (N <= F, see the module
    docstring) or the square root is not finite, ``eps`` is added to both diagonals; a small imaginary part of the
    square root (numerical noise) is dropped. Symmetric in its arguments; 0 for identical sets (up to rounding).
    """
    a = np.asarray(feats_a, dtype=np.float64)
    b = np.asarray(feats_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected two (N, F) feature arrays with the same F, got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"the Fréchet distance needs at least 2 samples per set, got {len(a)} and {len(b)}")
    diff = a.mean(0) - b.mean(0)
    cov_a, cov_b = covariance(a, shrinkage), covariance(b, shrinkage)
    f = a.shape[1]
    singular = min(len(a), len(b)) <= f and shrinkage == 0.0
    offset = eps * np.eye(f) if singular else 0.0
    covmean = sqrtm((cov_a + offset) @ (cov_b + offset))
    if not np.all(np.isfinite(covmean)):
        offset = eps * np.eye(f)
        covmean = sqrtm((cov_a + offset) @ (cov_b + offset))
    covmean = np.real(covmean)
    tr_a = np.trace(cov_a + offset)
    tr_b = np.trace(cov_b + offset)
    return float(max(diff @ diff + tr_a + tr_b - 2.0 * np.trace(covmean), 0.0))


def same_distribution_fds(feats: np.ndarray, n: int, draws: int, rng: np.random.Generator) -> list[float]:
    """What an FD looks like when both sets come from one distribution, at the sizes a real-vs-synthetic FD is
    computed at: over ``draws`` random splits of ``feats`` (N, F) into ``n`` and the rest, the FD between the two
    parts. Empty when ``feats`` has fewer than ``n + 2`` rows."""
    feats = np.asarray(feats)
    out = []
    if len(feats) >= n + 2:
        for _ in range(draws):
            perm = rng.permutation(len(feats))
            out.append(frechet_distance(feats[perm[:n]], feats[perm[n:]]))
    return out


def realism_report(
    segmenter: FrozenSegmenter,
    real: Sequence[Lesion],
    synthetic: Sequence[Lesion],
    transpose_forward: Sequence[int],
    spacing: Sequence[float],
    size: Sequence[int],
    max_n: int | None = None,
    seed: int = 0,
    shrinkage: float = 0.0,
) -> dict[str, Any]:
    """FD between S's bottleneck features of real and synthetic tumor crops (plan spacing, S's CT normalization,
    tumor-centred, ``size`` voxels), with N per set, F and the crop geometry. ``max_n`` subsamples each set (seeded)."""
    rng = np.random.default_rng(seed)

    def pick(lesions: Sequence[Lesion]) -> list[Lesion]:
        if max_n is None or len(lesions) <= max_n:
            return list(lesions)
        return [lesions[int(i)] for i in sorted(rng.choice(len(lesions), size=max_n, replace=False))]

    real, synthetic = pick(real), pick(synthetic)
    if len(real) < 2 or len(synthetic) < 2:
        raise FreeTumorConfigError(
            f"the Fréchet distance needs at least 2 tumors per set, found {len(real)} real and {len(synthetic)} "
            f"synthetic (lesions >= {MIN_LESION_VOXELS} voxels)"
        )
    feats = [segmenter.features(lesion_crops(les, transpose_forward, spacing, size)) for les in (real, synthetic)]
    n_features = int(feats[0].shape[1])
    return {
        "frechet_distance": frechet_distance(feats[0], feats[1], shrinkage=shrinkage),
        "n_real": len(real),
        "n_synthetic": len(synthetic),
        "n_features": n_features,
        "singular_covariance": min(len(real), len(synthetic)) <= n_features and shrinkage == 0.0,
        "shrinkage": shrinkage,
        "crop_size": [int(s) for s in size],
        "spacing_mm": [float(s) for s in spacing],
        "segmenter": str(segmenter.source),
    }


def realism_report_for(
    src: PlannedDataset,
    export_folder: str | os.PathLike,
    segmenter: FrozenSegmenter,
    max_n: int | None = None,
    seed: int = 0,
    shrinkage: float = 0.0,
) -> dict[str, Any]:
    """``realism_report`` of the real tumors of ``src``'s raw training cases vs the synthetic tumors of an export, on
    crops of the plan's patch size (at most ``MAX_CROP`` per axis) at the plan's spacing."""
    real = real_lesions(raw_training_cases(src.raw, src.dataset_json), src.cfg.tumor_labels)
    synthetic = synthetic_lesions(export_folder)
    size = crop_size(src.patch_size)
    report = realism_report(
        segmenter, real, synthetic, src.transpose_forward, src.spacing, size, max_n, seed, shrinkage
    )
    return {"dataset": src.name, "synthetic": str(export_folder), **report}
