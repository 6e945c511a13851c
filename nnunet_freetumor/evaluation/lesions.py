"""Lesion-wise detection metrics for tumor classes: connected components, matching, diameters, size strata and
the patient level.

FreeTumor's claims are about small-tumor detection, so voxel Dice alone says too little. For every tumor class the
evaluation splits ground truth (GT) and prediction into connected components ("lesions") and reports:

* **GT lesion detected**: the prediction of the same class covers at least ``min_overlap`` voxels of it.
* **Predicted lesion true positive**: it covers at least ``min_overlap`` GT voxels of that class, else false positive.
* **lesion sensitivity** = detected GT lesions / GT lesions; **lesion precision** = TP predicted lesions / predicted
  lesions; **F1** = 2PR / (P + R). Dataset values pool the lesions of all cases (not a mean of per-case values).
* **patient level**: a case is GT-positive if its GT has any voxel of any tumor class, predicted-positive if the
  prediction has one; sensitivity = TP / (TP + FN), specificity = TN / (TN + FP).
* **sensitivity by size**: GT lesions binned by their longest diameter (see below), default ``<20``, ``20-50``,
  ``>=50`` mm (a lesion of exactly 20 mm is in ``20-50``).

Longest diameter (WHO-style), the convention used throughout: the largest Euclidean distance, in mm, between the
*centres* of two voxels of the lesion, with the image spacing. A single voxel measures 0 mm; 5 voxels in a row along an
axis of spacing 2.5 mm measure 4 * 2.5 = 10 mm (no voxel extent is added). It is exact: the farthest pair is always
among the convex-hull vertices of the voxel centres, which are found with Qhull (plain pairwise search for small or
flat lesions).

A metric whose denominator is 0 (no GT lesions, no predicted lesions, no negative cases, ...) is ``None`` (JSON
``null``, "n/a" in the tables), never a division by zero.

Arrays are in nnU-Net's axis order: readers return ``(c, *spatial)`` segmentations and ``properties['spacing']`` in
the same order as the spatial axes (``(z, y, x)`` for SimpleITKIO); every ``spacing`` argument here is in mm, one entry
per axis of the array it accompanies.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from scipy.spatial.distance import cdist, pdist

DEFAULT_SIZE_BINS_MM = (20.0, 50.0)
DIAMETER_CONVENTION = (
    "longest diameter = max Euclidean distance in mm between the centres of two voxels of the lesion "
    "(single voxel: 0 mm; no voxel extent added)"
)
# below this many boundary voxels the exact pairwise search is cheaper than a convex hull
_HULL_MIN_POINTS = 512
_PAIRWISE_CHUNK = 1024


class EvaluationError(ValueError):
    """Bad input the user must fix (missing cases, geometry mismatch, unknown labels, ...); the message says which."""


# --- small helpers -------------------------------------------------------------------------------------------------


def safe_div(num: float, den: float) -> float | None:
    """``num / den`` or ``None`` when ``den`` is 0 (an undefined metric)."""
    return None if den == 0 else float(num) / float(den)


def f1_score(precision: float | None, sensitivity: float | None) -> float | None:
    """Harmonic mean of precision and sensitivity; ``None`` if either is undefined, 0 if both are 0."""
    if precision is None or sensitivity is None:
        return None
    if precision + sensitivity == 0:
        return 0.0
    return 2.0 * precision * sensitivity / (precision + sensitivity)


def connectivity_structure(ndim: int, connectivity: int = 26) -> np.ndarray:
    """Neighbourhood for ``ndimage.label``: 26 = faces, edges and corners (8 in 2-D); 6 = faces only (4 in 2-D)."""
    if connectivity not in (6, 26):
        raise EvaluationError(f"connectivity must be 6 or 26, got {connectivity}")
    return ndimage.generate_binary_structure(ndim, ndim if connectivity == 26 else 1)


def _bbox(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Tight bounding box of the True voxels, or None if there are none."""
    if not mask.any():
        return None
    out = []
    for ax in range(mask.ndim):
        proj = mask.any(axis=tuple(a for a in range(mask.ndim) if a != ax))
        idx = np.flatnonzero(proj)
        out.append(slice(int(idx[0]), int(idx[-1]) + 1))
    return tuple(out)


def _spacing(spacing: Sequence[float], ndim: int) -> np.ndarray:
    sp = np.asarray(spacing, dtype=np.float64).ravel()
    if sp.shape != (ndim,) or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise EvaluationError(f"spacing must be {ndim} positive numbers (mm, one per array axis), got {list(spacing)}")
    return sp


# --- longest diameter ----------------------------------------------------------------------------------------------


def _extreme_points(idx: np.ndarray) -> np.ndarray:
    """Rows of ``idx`` (integer voxel indices, shape (n, d)) that can be ends of the farthest pair.

    Those are the convex-hull vertices. A positive per-axis scaling (the spacing) maps hull vertices to hull vertices,
    so the hull is taken in index space. Flat (coplanar/collinear) sets are handled in their own subspace; on any
    Qhull failure all points are returned (the caller's exact search then just takes longer).
    """
    centred = idx - idx.mean(axis=0)
    rank = int(np.linalg.matrix_rank(centred))
    if rank == 0:
        return idx[:1]
    if rank == 1:
        direction = np.linalg.svd(centred, full_matrices=False)[2][0]
        t = centred @ direction
        return idx[[int(np.argmin(t)), int(np.argmax(t))]]
    coords = centred if rank == idx.shape[1] else centred @ np.linalg.svd(centred, full_matrices=False)[2][:rank].T
    try:
        return idx[ConvexHull(coords).vertices]
    except (QhullError, ValueError):
        return idx


def _max_pairwise_distance(points_mm: np.ndarray) -> float:
    """Exact maximum Euclidean distance between rows of ``points_mm`` (n, d); 0 for fewer than 2 points."""
    n = len(points_mm)
    if n < 2:
        return 0.0
    if n <= 4 * _PAIRWISE_CHUNK:
        return float(pdist(points_mm).max())
    best = 0.0
    for start in range(0, n, _PAIRWISE_CHUNK):
        best = max(best, float(cdist(points_mm[start : start + _PAIRWISE_CHUNK], points_mm, "sqeuclidean").max()))
    return math.sqrt(best)


def longest_diameter_mm(component: np.ndarray, spacing: Sequence[float]) -> float:
    """Longest diameter in mm of ONE lesion (see module docstring for the convention).

    component: boolean array of any dimensionality, True on the lesion's voxels (it need not be connected; all True
    voxels are measured together). spacing: mm per voxel along each array axis. Returns 0.0 for an empty mask.
    Only boundary voxels (a face neighbour outside the lesion) can be hull vertices, so only they are searched.
    """
    component = np.asarray(component, dtype=bool)
    sp = _spacing(spacing, component.ndim)
    box = _bbox(component)
    if box is None:
        return 0.0
    crop = component[box]
    interior = ndimage.binary_erosion(crop, structure=ndimage.generate_binary_structure(crop.ndim, 1), border_value=0)
    idx = np.argwhere(crop & ~interior)
    if len(idx) > _HULL_MIN_POINTS:
        idx = _extreme_points(idx)
    return _max_pairwise_distance(idx * sp)


def _component_stats(labels: np.ndarray, n: int, spacing: np.ndarray) -> list[tuple[int, float]]:
    """(voxel count, longest diameter mm) of components 1..n of a label image from ``ndimage.label``."""
    out = []
    for i, sl in enumerate(ndimage.find_objects(labels, max_label=n), start=1):
        comp = labels[sl] == i
        out.append((int(comp.sum()), longest_diameter_mm(comp, spacing)))
    return out


def lesion_diameters_mm(mask: np.ndarray, spacing: Sequence[float], connectivity: int = 26) -> list[float]:
    """Longest diameter (mm, voxel-centre convention) of every connected component of ``mask``.

    mask: boolean array (d, h, w) or any dimensionality; spacing: mm per axis, same order; connectivity: 26 or 6.
    Returns one float per lesion, in ``scipy.ndimage.label`` order (raster order of each lesion's first voxel).
    """
    mask = np.asarray(mask, dtype=bool)
    sp = _spacing(spacing, mask.ndim)
    labels, n = ndimage.label(mask, structure=connectivity_structure(mask.ndim, connectivity))
    return [d for _, d in _component_stats(labels, n, sp)]


# --- lesion matching -----------------------------------------------------------------------------------------------


def match_lesions(
    gt: np.ndarray,
    pred: np.ndarray,
    spacing: Sequence[float],
    connectivity: int = 26,
    min_overlap: int = 1,
) -> dict[str, Any]:
    """Connected-component matching of one tumor class in one case.

    gt, pred: boolean arrays of the same shape (e.g. (z, y, x)), True on that class. spacing: mm per axis.
    A GT lesion is detected if ``pred`` has >= ``min_overlap`` voxels inside it; a predicted lesion is a true positive
    if ``gt`` has >= ``min_overlap`` voxels inside it, else a false positive.

    Returns ``n_gt_lesions, n_detected, n_pred_lesions, n_tp_pred, n_fp_pred`` (ints), ``sensitivity, precision, f1``
    (float or None when undefined), and ``gt_lesions`` / ``pred_lesions``: lists of dicts with ``n_voxels``,
    ``volume_ml`` (voxels * prod(spacing) / 1000), ``diameter_mm``, ``overlap_voxels`` and ``detected`` (GT) or
    ``true_positive`` (prediction).
    """
    gt = np.asarray(gt, dtype=bool)
    pred = np.asarray(pred, dtype=bool)
    if gt.shape != pred.shape:
        raise EvaluationError(f"ground truth and prediction differ in shape: {gt.shape} vs {pred.shape}")
    sp = _spacing(spacing, gt.ndim)
    if int(min_overlap) < 1:
        raise EvaluationError(f"min_overlap must be >= 1 voxel, got {min_overlap}")
    structure = connectivity_structure(gt.ndim, connectivity)
    box = _bbox(gt | pred)
    if box is not None:  # label only the region that holds lesions (full CT volumes are large)
        gt, pred = gt[box], pred[box]
    gt_lab, n_gt = ndimage.label(gt, structure=structure)
    pred_lab, n_pred = ndimage.label(pred, structure=structure)
    gt_overlap = np.bincount(gt_lab[pred], minlength=n_gt + 1)[1:]
    pred_overlap = np.bincount(pred_lab[gt], minlength=n_pred + 1)[1:]
    voxel_ml = float(np.prod(sp)) / 1000.0

    def records(lab: np.ndarray, n: int, overlap: np.ndarray, flag: str) -> list[dict[str, Any]]:
        return [
            {
                "n_voxels": nv,
                "volume_ml": nv * voxel_ml,
                "diameter_mm": d,
                "overlap_voxels": int(ov),
                flag: bool(ov >= min_overlap),
            }
            for (nv, d), ov in zip(_component_stats(lab, n, sp), overlap)
        ]

    gt_lesions = records(gt_lab, n_gt, gt_overlap, "detected")
    pred_lesions = records(pred_lab, n_pred, pred_overlap, "true_positive")
    n_detected = sum(r["detected"] for r in gt_lesions)
    n_tp = sum(r["true_positive"] for r in pred_lesions)
    sens, prec = safe_div(n_detected, n_gt), safe_div(n_tp, n_pred)
    return {
        "n_gt_lesions": int(n_gt),
        "n_detected": int(n_detected),
        "n_pred_lesions": int(n_pred),
        "n_tp_pred": int(n_tp),
        "n_fp_pred": int(n_pred - n_tp),
        "sensitivity": sens,
        "precision": prec,
        "f1": f1_score(prec, sens),
        "gt_lesions": gt_lesions,
        "pred_lesions": pred_lesions,
    }


# --- aggregation ---------------------------------------------------------------------------------------------------


def stratum_names(size_bins_mm: Sequence[float]) -> list[str]:
    """Names of the size strata for bin edges (mm): (20, 50) -> ['<20 mm', '20-50 mm', '>=50 mm']."""
    e = [f"{float(x):g}" for x in size_bins_mm]
    if not e:
        return ["all"]
    return [f"<{e[0]} mm"] + [f"{a}-{b} mm" for a, b in zip(e[:-1], e[1:])] + [f">={e[-1]} mm"]


def check_size_bins(size_bins_mm: Iterable[float]) -> tuple[float, ...]:
    """Validated bin edges: finite, > 0 and strictly increasing (may be empty: one stratum 'all')."""
    edges = tuple(float(x) for x in size_bins_mm)
    if any(not math.isfinite(x) or x <= 0 for x in edges) or any(b <= a for a, b in zip(edges[:-1], edges[1:])):
        raise EvaluationError(f"size bins must be positive, strictly increasing mm values, got {list(edges)}")
    return edges


def stratum_index(diameter_mm: float, size_bins_mm: Sequence[float]) -> int:
    """Stratum of a diameter: i such that edge[i-1] <= d < edge[i] (first stratum: d < edge[0])."""
    return int(np.searchsorted(np.asarray(size_bins_mm, dtype=np.float64), diameter_mm, side="right"))


def stratify_sensitivity(
    diameters_mm: Sequence[float], detected: Sequence[bool], size_bins_mm: Sequence[float] = DEFAULT_SIZE_BINS_MM
) -> list[dict[str, Any]]:
    """Lesion sensitivity per size stratum of the GT lesions.

    diameters_mm, detected: one entry per GT lesion. Returns one dict per stratum: ``name``, ``min_mm`` (inclusive),
    ``max_mm`` (exclusive, None for the last), ``n_gt_lesions``, ``n_detected``, ``sensitivity`` (None if empty).
    """
    edges = check_size_bins(size_bins_mm)
    if len(diameters_mm) != len(detected):
        raise EvaluationError("diameters_mm and detected must have one entry per GT lesion")
    n = np.zeros(len(edges) + 1, dtype=np.int64)
    hit = np.zeros(len(edges) + 1, dtype=np.int64)
    for d, det in zip(diameters_mm, detected):
        k = stratum_index(d, edges)
        n[k] += 1
        hit[k] += bool(det)
    lows, highs = (0.0, *edges), (*edges, None)
    return [
        {
            "name": name,
            "min_mm": lo,
            "max_mm": hi,
            "n_gt_lesions": int(n[k]),
            "n_detected": int(hit[k]),
            "sensitivity": safe_div(hit[k], n[k]),
        }
        for k, (name, lo, hi) in enumerate(zip(stratum_names(edges), lows, highs))
    ]


def patient_level(gt_positive: Sequence[bool], pred_positive: Sequence[bool]) -> dict[str, Any]:
    """Case-level detection: one bool per case each (any tumor voxel in GT / in the prediction).

    Returns counts ``n_cases, n_gt_positive, n_gt_negative, tp, fn, fp, tn`` and ``sensitivity`` = tp / (tp + fn),
    ``specificity`` = tn / (tn + fp) (None when there are no positive / no negative cases).
    """
    g = np.asarray(gt_positive, dtype=bool)
    p = np.asarray(pred_positive, dtype=bool)
    if g.shape != p.shape or g.ndim != 1:
        raise EvaluationError("gt_positive and pred_positive must be flat sequences of the same length")
    tp, fn = int(np.sum(g & p)), int(np.sum(g & ~p))
    fp, tn = int(np.sum(~g & p)), int(np.sum(~g & ~p))
    return {
        "n_cases": int(g.size),
        "n_gt_positive": tp + fn,
        "n_gt_negative": fp + tn,
        "tp": tp,
        "fn": fn,
        "fp": fp,
        "tn": tn,
        "sensitivity": safe_div(tp, tp + fn),
        "specificity": safe_div(tn, tn + fp),
    }


def aggregate_lesions(per_case: Sequence[dict[str, Any]], size_bins_mm: Sequence[float]) -> dict[str, Any]:
    """Pool ``match_lesions`` results of one tumor class over cases (lesion counts summed, then divided)."""
    n_gt = sum(c["n_gt_lesions"] for c in per_case)
    n_det = sum(c["n_detected"] for c in per_case)
    n_pred = sum(c["n_pred_lesions"] for c in per_case)
    n_tp = sum(c["n_tp_pred"] for c in per_case)
    sens, prec = safe_div(n_det, n_gt), safe_div(n_tp, n_pred)
    lesions = [les for c in per_case for les in c["gt_lesions"]]
    return {
        "n_cases": len(per_case),
        "n_gt_lesions": n_gt,
        "n_detected": n_det,
        "sensitivity": sens,
        "n_pred_lesions": n_pred,
        "n_tp_pred": n_tp,
        "n_fp_pred": n_pred - n_tp,
        "precision": prec,
        "f1": f1_score(prec, sens),
        "fp_lesions_per_case": safe_div(n_pred - n_tp, len(per_case)),
        "strata": stratify_sensitivity(
            [les["diameter_mm"] for les in lesions], [les["detected"] for les in lesions], size_bins_mm
        ),
    }
