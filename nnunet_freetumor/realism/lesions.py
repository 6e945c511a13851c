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

Also here: where the lesions are (real: connected components of the tumor labels in the raw training cases;
synthetic: ``synthesis_log.json`` of a ``freetumor_synthesize`` export) and tumor-centred crops at the plan spacing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from scipy.linalg import sqrtm

from nnunet_freetumor.config import FreeTumorConfigError
from nnunet_freetumor.offline import read_synthesis_log, resample
from nnunet_freetumor.segmenter import FrozenSegmenter
from nnunet_freetumor.utilities.dataset import RawCase, SourceDataset, raw_training_cases
from nnunet_freetumor.utilities.image_io import read_image

# lesions smaller than this are left out of the Turing test and the FD (both kinds alike)
MIN_LESION_VOXELS = 10
MAX_CROP = 64
RING_MM = 5.0  # "the organ around a lesion": organ voxels within this distance of it


@dataclass(frozen=True)
class Lesion:
    """One tumor: where to find it. Voxel indices in the file's (SimpleITK (z, y, x)) order."""

    kind: str  # "real" | "synthetic"
    case: str
    image: Path
    centre: tuple[int, int, int]  # centre of mass, rounded
    voxels: int


def real_lesions(
    cases: Sequence[RawCase], tumor_labels: Sequence[int], min_voxels: int = MIN_LESION_VOXELS
) -> list[Lesion]:
    """Every connected component (26-connectivity) of the tumor labels in the cases' label files with at least
    ``min_voxels`` voxels, in case order."""
    from nnunet_freetumor.evaluation.lesions import connectivity_structure

    out = []
    for case in cases:
        labels = read_image(case.label)[0]
        comps, n = ndimage.label(np.isin(labels, list(tumor_labels)), structure=connectivity_structure(3, 26))
        for i, box in enumerate(ndimage.find_objects(comps, max_label=n), start=1):
            comp = comps[box] == i
            if int(comp.sum()) < min_voxels:
                continue
            centre = np.argwhere(comp).mean(0) + [s.start for s in box]
            out.append(
                Lesion(
                    "real",
                    case.identifier,
                    case.image,
                    tuple(int(round(c)) for c in centre),
                    int(comp.sum()),
                )
            )
    return out


def synthetic_lesions(export_folder: str | os.PathLike, min_voxels: int = MIN_LESION_VOXELS) -> list[Lesion]:
    """The accepted synthetic tumors of a ``freetumor_synthesize`` export (one per case), as its log describes them."""
    log = read_synthesis_log(export_folder)
    out = []
    for c in log["cases"]:
        if c["mask_voxels"] < min_voxels:
            continue
        out.append(
            Lesion(
                "synthetic",
                c["case"],
                Path(export_folder, c["image"]),
                tuple(int(v) for v in c["centre_voxel"]),
                int(c["mask_voxels"]),
            )
        )
    return out


def resolve_export(arg: str, raw_root: str | os.PathLike | None) -> Path:
    """An export given as a folder, or as a dataset id/name under ``$nnUNet_raw``."""
    if Path(arg).is_dir():
        folder = Path(arg)
    else:
        from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

        if raw_root is None:
            raise FreeTumorConfigError(f"{arg} is not a folder; set nnUNet_raw to look it up as a dataset id")
        try:
            folder = Path(raw_root, maybe_convert_to_dataset_name(arg))
        except RuntimeError as e:
            raise FreeTumorConfigError(f"--synthetic {arg}: {e}") from None
    read_synthesis_log(folder)  # a clear error when it is not an export
    return folder


def crop_size(patch_size: Sequence[int], max_size: int = MAX_CROP) -> tuple[int, ...]:
    """The FD crop: the plan's patch size, at most ``max_size`` voxels per axis."""
    return tuple(min(int(p), max_size) for p in patch_size)


def plan_crop(
    image: np.ndarray,
    spacing: Sequence[float],
    centre: Sequence[int],
    transpose_forward: Sequence[int],
    target_spacing: Sequence[float],
    size: Sequence[int],
) -> torch.Tensor:
    """A tumor-centred crop of ``size`` voxels at ``target_spacing`` (the plan's, plan axis order), HU float32.

    image, spacing, centre: the file's (z, y, x) order. The native box covering the same millimetres is cut (padded
    with the image minimum outside the image) and resampled trilinearly (``offline.resample``)."""
    from acvl_utils.cropping_and_padding.bounding_boxes import crop_and_pad_nd

    tf = list(transpose_forward)
    img = image.transpose(tf)
    sp = [spacing[i] for i in tf]
    c = [int(centre[i]) for i in tf]
    native = [max(1, int(np.ceil(n * t / s - 1e-6))) for n, t, s in zip(size, target_spacing, sp)]
    bbox = [[ci - n // 2, ci - n // 2 + n] for ci, n in zip(c, native)]
    crop = crop_and_pad_nd(img, bbox, pad_value=float(img.min())).astype(np.float32)
    return resample(torch.from_numpy(crop)[None, None], size)[0, 0]


def lesion_crops(
    lesions: Sequence[Lesion],
    transpose_forward: Sequence[int],
    target_spacing: Sequence[float],
    size: Sequence[int],
) -> torch.Tensor:
    """(N, 1, *size) HU crops of every lesion (each image file read once)."""
    out: list[torch.Tensor] = []
    cache: dict[Path, tuple[np.ndarray, Any]] = {}
    for les in lesions:
        if les.image not in cache:
            cache.clear()
            arr, sp, _ = read_image(les.image)
            cache[les.image] = (arr, sp)
        arr, sp = cache[les.image]
        out.append(plan_crop(arr, sp, les.centre, transpose_forward, target_spacing, size))
    return torch.stack(out)[:, None]


# --- contrast to the surrounding organ -----------------------------------------------------------------------------


def ring_mask(lesion: np.ndarray, organ: np.ndarray, spacing: Sequence[float], ring_mm: float = RING_MM) -> np.ndarray:
    """The organ around a lesion: voxels of ``organ`` (not of the lesion) within ``ring_mm`` of ``lesion`` (bool arrays
    of one shape, ``spacing`` in mm per axis)."""
    lesion = np.asarray(lesion, dtype=bool)
    dist = ndimage.distance_transform_edt(~lesion, sampling=spacing)
    return np.asarray(organ, dtype=bool) & ~lesion & (dist > 0) & (dist <= ring_mm)


def contrast_to_ring(
    hu: np.ndarray, lesion: np.ndarray, organ: np.ndarray, spacing: Sequence[float], ring_mm: float = RING_MM
) -> float:
    """Mean HU inside ``lesion`` minus the mean HU of the organ ring around it (``ring_mask``): negative for a lesion
    darker than its organ. NaN when the lesion or the ring is empty."""
    lesion = np.asarray(lesion, dtype=bool)
    ring = ring_mask(lesion, organ, spacing, ring_mm)
    if not lesion.any() or not ring.any():
        return float("nan")
    return float(hu[lesion].mean() - hu[ring].mean())


# --- features and distance -----------------------------------------------------------------------------------------


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


def realism_report(
    seg: FrozenSegmenter,
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
    feats = [seg.features(lesion_crops(les, transpose_forward, spacing, size)) for les in (real, synthetic)]
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
        "segmenter": str(seg.source),
    }


def realism_report_for(
    src: SourceDataset,
    export_folder: str | os.PathLike,
    seg: FrozenSegmenter,
    max_n: int | None = None,
    seed: int = 0,
    shrinkage: float = 0.0,
) -> dict[str, Any]:
    """``realism_report`` of the real tumors of ``src``'s raw training cases vs the synthetic tumors of an export, on
    crops of the plan's patch size (at most ``MAX_CROP`` per axis) at the plan's spacing."""
    real = real_lesions(raw_training_cases(src.raw, src.dataset_json), src.cfg.tumor_labels)
    synthetic = synthetic_lesions(export_folder)
    size = crop_size(src.patch_size)
    report = realism_report(seg, real, synthetic, src.transpose_forward, src.spacing, size, max_n, seed, shrinkage)
    return {"dataset": src.name, "synthetic": str(export_folder), **report}
