"""Per-class Dice (nnU-Net's own metric code) plus lesion-wise detection metrics for tumor classes.

FreeTumor's claims are about small-tumor detection, so voxel Dice alone says too little. For every tumor class this
module splits ground truth (GT) and prediction into connected components ("lesions") and reports:

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

import contextlib
import io
import json
import math
import multiprocessing
import os
import sys
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from scipy.spatial.distance import cdist, pdist

from nnunet_freetumor.io import check_complete

SUMMARY_JSON = "summary_freetumor.json"
SUMMARY_MD = "summary_freetumor.md"
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


def aggregate_dice(per_case_metrics: Sequence[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Class means exactly as nnU-Net's ``compute_metrics_on_folder``: nan-mean over cases per class and metric;
    ``foreground_mean`` = plain mean of the class means (undefined if any class mean is). None stands for NaN."""
    if not per_case_metrics:
        return {"mean": {}, "foreground_mean": {}}
    keys = list(per_case_metrics[0])
    metric_names = list(per_case_metrics[0][keys[0]]) if keys else []
    metric_names = [m for m in metric_names if m != "name"]

    def val(x: Any) -> float:
        return np.nan if x is None else float(x)

    means: dict[str, dict[str, Any]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN class (no case has it in GT or prediction)
        for k in keys:
            means[k] = {m: float(np.nanmean([val(c[k][m]) for c in per_case_metrics])) for m in metric_names}
            if "name" in per_case_metrics[0][k]:
                means[k] = {"name": per_case_metrics[0][k]["name"], **means[k]}
        fg = {m: float(np.mean([means[k][m] for k in keys])) for m in metric_names} if keys else {}
    return {"mean": means, "foreground_mean": fg}


# --- dataset / files -----------------------------------------------------------------------------------------------


def is_tumor_name(name: str) -> bool:
    """True for label names with a tumor word: 'liver tumor', 'Tumour', 'lung_nodule', 'cancer', 'metastasis', ..."""
    from nnunet_freetumor.labels import strip_tumor_word

    return strip_tumor_word(name) is not None


@dataclass(frozen=True)
class ClassSpec:
    """One evaluated class: nnU-Net's label id or region (tuple of ids), its key in the outputs and its name."""

    label_or_region: int | tuple[int, ...]
    key: str
    name: str
    is_tumor: bool


def dataset_classes(dataset_json: dict[str, Any], tumor_labels: Sequence[int | str] | None = None) -> list[ClassSpec]:
    """Foreground labels (or regions) that nnU-Net evaluates for this dataset.json, with the tumor classes marked.

    tumor_labels: None = every label whose name has a tumor word (see ``is_tumor_name``); else label ids (int) or
    exact label names (str). Raises EvaluationError for unknown labels or when no tumor class remains.
    """
    from nnunetv2.evaluation.evaluate_predictions import label_or_region_to_key
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    labels = dataset_json.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise EvaluationError("dataset.json has no 'labels' dictionary")
    try:
        lm = LabelManager(labels, dataset_json.get("regions_class_order"))
    except (AssertionError, RuntimeError, ValueError, TypeError) as e:
        raise EvaluationError(f"nnU-Net cannot use the labels of dataset.json: {e}") from None
    classes = lm.foreground_regions if lm.has_regions else lm.foreground_labels

    def norm(v: Any) -> int | tuple[int, ...]:
        return tuple(int(i) for i in v) if isinstance(v, (list, tuple)) else int(v)

    names = {norm(v): k for k, v in labels.items() if k != "ignore"}
    specs = [(norm(c), names.get(norm(c), str(c))) for c in classes]
    if tumor_labels is None:
        tumor = {c for c, n in specs if is_tumor_name(n)}
        if not tumor:
            raise EvaluationError(
                f"no tumor class in dataset.json labels {labels} (no name contains tumor/tumour/lesion/cancer/nodule/"
                "mass/metastasis); name them with --tumor_labels"
            )
    else:
        tumor = set()
        by_name = {n: c for c, n in specs}
        for t in tumor_labels:
            if isinstance(t, str) and not t.lstrip("-").isdigit():
                if t not in by_name:
                    raise EvaluationError(f"tumor label {t!r} is not a foreground label name of {sorted(by_name)}")
                tumor.add(by_name[t])
            elif int(t) in {c for c, _ in specs}:
                tumor.add(int(t))
            else:
                raise EvaluationError(f"tumor label {t} is not a foreground label id of dataset.json labels {labels}")
    return [ClassSpec(c, label_or_region_to_key(c), n, c in tumor) for c, n in specs]


def load_dataset_json(dataset_json: str | os.PathLike | dict[str, Any]) -> dict[str, Any]:
    """dataset.json content (a dict is returned as is); checks that 'labels' and 'file_ending' are there."""
    if isinstance(dataset_json, dict):
        dj = dataset_json
    else:
        path = Path(dataset_json)
        if not path.is_file():
            raise EvaluationError(f"dataset.json not found: {path}")
        try:
            dj = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise EvaluationError(f"cannot read {path}: {e}") from None
    if not isinstance(dj, dict) or "labels" not in dj or "file_ending" not in dj:
        raise EvaluationError("dataset.json must have 'labels' and 'file_ending'")
    return dj


def list_cases(folder: str | os.PathLike, file_ending: str) -> dict[str, Path]:
    """case id -> file for every ``<case><file_ending>`` file in ``folder`` (nnU-Net's naming of segmentations)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EvaluationError(f"folder not found: {folder}")
    return {
        p.name[: -len(file_ending)]: p
        for p in sorted(folder.iterdir())
        if p.name.endswith(file_ending) and len(p.name) > len(file_ending) and p.is_file()
    }


def _first(ids: Iterable[str], n: int = 5) -> str:
    ids = sorted(ids)
    return ", ".join(ids[:n]) + (f", ... ({len(ids) - n} more)" if len(ids) > n else "")


def pair_cases(
    pred: dict[str, Path], gt: dict[str, Path], allow_missing: bool = False
) -> tuple[list[str], list[str], list[str]]:
    """(case ids in both, GT ids without prediction, prediction ids without GT), each sorted.

    Raises EvaluationError if the lists differ and ``allow_missing`` is False, or if no case is in both.
    """
    both = sorted(set(pred) & set(gt))
    no_pred, no_gt = sorted(set(gt) - set(pred)), sorted(set(pred) - set(gt))
    if (no_pred or no_gt) and not allow_missing:
        parts = []
        if no_pred:
            parts.append(f"{len(no_pred)} ground-truth case(s) have no prediction ({_first(no_pred)})")
        if no_gt:
            parts.append(f"{len(no_gt)} prediction(s) have no ground truth ({_first(no_gt)})")
        raise EvaluationError(
            "case lists differ: " + "; ".join(parts) + f". Pass --allow_missing to evaluate the {len(both)} case(s) "
            "present in both."
        )
    if not both:
        raise EvaluationError("no case has both a prediction and a ground truth")
    return both, no_pred, no_gt


def reader_writer_for(dataset_json: dict[str, Any], example_file: str | os.PathLike):
    """nnU-Net's reader/writer instance for this dataset, chosen as nnU-Net's evaluator does (quietly)."""
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json

    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            return determine_reader_writer_from_dataset_json(dataset_json, str(example_file), verbose=False)()
    except RuntimeError:
        raise EvaluationError(f"no nnU-Net reader can open {example_file}") from None


# --- one case ------------------------------------------------------------------------------------------------------


class _Preloaded:
    """Reader/writer stand-in for nnU-Net's ``compute_metrics``: serves the arrays already read for this case."""

    def __init__(self, cache: dict[str, tuple[np.ndarray, dict]]):
        self.cache = cache

    def read_seg(self, fname: str) -> tuple[np.ndarray, dict]:
        return self.cache[fname]


def _read(rw: Any, fname: str) -> tuple[np.ndarray, dict]:
    try:
        check_complete(fname)  # SimpleITK reads a truncated .nii.gz without an error
        return rw.read_seg(fname)
    except Exception as e:  # any reader failure means a bad input file
        raise EvaluationError(
            f"cannot read {fname}: {str(e).strip().splitlines()[0] if str(e).strip() else e!r}"
        ) from None


def _is_2d(shape: tuple[int, ...], spacing: Sequence[float]) -> bool:
    """nnU-Net stores 2-D images as one slice with a dummy spacing of 999 * max(spacing) (or 999) on axis 0."""
    return len(shape) == 3 and shape[0] == 1 and float(spacing[0]) >= 999


def evaluate_case(
    case_id: str,
    pred_file: str,
    gt_file: str,
    reader_writer: Any,
    classes: Sequence[ClassSpec],
    ignore_label: int | None = None,
    connectivity: int = 26,
    min_overlap: int = 1,
) -> dict[str, Any]:
    """Dice of every class (nnU-Net's ``compute_metrics``) and ``match_lesions`` of every tumor class for one case.

    Both files are read once with ``reader_writer`` (an nnU-Net BaseReaderWriter); their shape and spacing must agree
    (spacing within 1e-3 relative). Voxels with the ignore label in the GT are excluded from Dice (as in nnU-Net) and
    removed from the predicted tumor masks. For 2-D images ``volume_ml`` is None (nnU-Net's dummy slice spacing).
    """
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics, region_or_label_to_mask

    gt_file, pred_file = str(gt_file), str(pred_file)
    seg_gt, props_gt = _read(reader_writer, gt_file)
    seg_pred, props_pred = _read(reader_writer, pred_file)
    sp_gt = np.asarray(props_gt["spacing"], dtype=np.float64)
    sp_pred = np.asarray(props_pred["spacing"], dtype=np.float64)
    if (
        seg_gt.shape != seg_pred.shape
        or sp_gt.shape != sp_pred.shape
        or not np.allclose(sp_gt, sp_pred, rtol=1e-3, atol=0)
    ):
        raise EvaluationError(
            f"case {case_id}: prediction and ground truth differ in geometry: shape {tuple(seg_pred.shape[1:])} vs "
            f"{tuple(seg_gt.shape[1:])}, spacing {[round(float(s), 6) for s in sp_pred]} vs "
            f"{[round(float(s), 6) for s in sp_gt]} (prediction vs ground truth)"
        )
    nn = compute_metrics(
        gt_file,
        pred_file,
        _Preloaded({gt_file: (seg_gt, props_gt), pred_file: (seg_pred, props_pred)}),
        [c.label_or_region for c in classes],
        ignore_label,
    )
    metrics: dict[str, dict[str, Any]] = {}
    for c in classes:
        m = nn["metrics"][c.label_or_region]
        metrics[c.key] = {"name": c.name, **{k: _num(v) for k, v in m.items()}}

    gt3, pred3 = seg_gt[0], seg_pred[0]
    ignore = (gt3 == ignore_label) if ignore_label is not None else None
    lesions: dict[str, Any] = {}
    gt_pos = pred_pos = False
    two_d = _is_2d(gt3.shape, sp_gt)
    for c in classes:
        if not c.is_tumor:
            continue
        g = region_or_label_to_mask(gt3, c.label_or_region)
        p = region_or_label_to_mask(pred3, c.label_or_region)
        if ignore is not None:
            p &= ~ignore
        gt_pos |= bool(g.any())
        pred_pos |= bool(p.any())
        res = match_lesions(g, p, sp_gt, connectivity=connectivity, min_overlap=min_overlap)
        if two_d:
            for les in res["gt_lesions"] + res["pred_lesions"]:
                les["volume_ml"] = None
        lesions[c.key] = {"name": c.name, **res}
    return {
        "case_id": case_id,
        "prediction_file": pred_file,
        "reference_file": gt_file,
        "spacing_mm": [float(s) for s in sp_gt],
        "gt_tumor": gt_pos,
        "pred_tumor": pred_pos,
        "metrics": metrics,
        "lesions": lesions,
    }


def _num(v: Any) -> Any:
    """numpy scalar -> Python; NaN/inf -> None."""
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(float(v)) else None
    return v


@dataclass(frozen=True)
class _Job:
    case_id: str
    pred_file: str
    gt_file: str
    reader_writer: Any
    classes: tuple[ClassSpec, ...]
    ignore_label: int | None
    connectivity: int
    min_overlap: int


def _run_job(job: _Job) -> dict[str, Any]:
    return evaluate_case(
        job.case_id,
        job.pred_file,
        job.gt_file,
        job.reader_writer,
        job.classes,
        job.ignore_label,
        job.connectivity,
        job.min_overlap,
    )


def _map_cases(jobs: list[_Job], num_processes: int, progress: bool) -> list[dict[str, Any]]:
    from tqdm import tqdm

    bar = {"total": len(jobs), "desc": "freetumor_evaluate", "unit": "case", "disable": not progress}
    if num_processes <= 1 or len(jobs) <= 1:
        return [_run_job(j) for j in tqdm(jobs, **bar)]
    # fork is cheap (no re-import of torch/nnU-Net per worker); elsewhere use spawn as nnU-Net does
    ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    with ctx.Pool(min(num_processes, len(jobs))) as pool:
        return list(tqdm(pool.imap(_run_job, jobs), **bar))


# --- whole folder --------------------------------------------------------------------------------------------------


def evaluate_folder(
    pred_folder: str | os.PathLike,
    gt_folder: str | os.PathLike,
    dataset_json: str | os.PathLike | dict[str, Any],
    tumor_labels: Sequence[int | str] | None = None,
    size_bins_mm: Sequence[float] = DEFAULT_SIZE_BINS_MM,
    connectivity: int = 26,
    min_overlap_voxels: int = 1,
    allow_missing: bool = False,
    num_processes: int = 2,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate every ``<case><file_ending>`` segmentation of ``pred_folder`` against ``gt_folder``.

    dataset_json: path or content (labels, file_ending, optional overwrite_image_reader_writer / regions). Files are
    read with the dataset's nnU-Net reader; spacing comes from the reader (mm, array axis order).
    Returns the JSON-ready summary (see ``write_summary``) with keys ``tool, version, settings, cases, classes, dice,
    lesion, patient, per_case``. Raises EvaluationError on bad input, before anything is written.
    """
    from nnunet_freetumor import __version__

    dj = load_dataset_json(dataset_json)
    edges = check_size_bins(size_bins_mm)
    connectivity_structure(3, connectivity)  # validates
    if int(min_overlap_voxels) < 1:
        raise EvaluationError(f"--min_overlap_voxels must be >= 1, got {min_overlap_voxels}")
    file_ending = dj["file_ending"]
    pred_cases, gt_cases = list_cases(pred_folder, file_ending), list_cases(gt_folder, file_ending)
    if not gt_cases:
        raise EvaluationError(f"no *{file_ending} files in the ground-truth folder {gt_folder}")
    if not pred_cases:
        raise EvaluationError(f"no *{file_ending} files in the prediction folder {pred_folder}")
    ids, no_pred, no_gt = pair_cases(pred_cases, gt_cases, allow_missing)
    classes = tuple(dataset_classes(dj, tumor_labels))
    ignore_label = dj["labels"].get("ignore")
    rw = reader_writer_for(dj, gt_cases[ids[0]])
    jobs = [
        _Job(i, str(pred_cases[i]), str(gt_cases[i]), rw, classes, ignore_label, connectivity, int(min_overlap_voxels))
        for i in ids
    ]
    per_case = _map_cases(jobs, int(num_processes), progress)

    names = stratum_names(edges)
    for case in per_case:  # stratum of every GT lesion, for readers of the per-case lists
        for res in case["lesions"].values():
            for les in res["gt_lesions"]:
                les["stratum"] = names[stratum_index(les["diameter_mm"], edges)]
    tumor = [c for c in classes if c.is_tumor]
    lesion = {
        c.key: {"name": c.name, **aggregate_lesions([case["lesions"][c.key] for case in per_case], edges)}
        for c in tumor
    }
    summary = {
        "tool": "freetumor_evaluate",
        "version": __version__,
        "settings": {
            "pred_folder": str(Path(pred_folder).resolve()),
            "gt_folder": str(Path(gt_folder).resolve()),
            "file_ending": file_ending,
            "reader_writer": type(rw).__name__,
            "tumor_labels": {c.key: c.name for c in tumor},
            "ignore_label": ignore_label,
            "connectivity": int(connectivity),
            "min_overlap_voxels": int(min_overlap_voxels),
            "size_bins_mm": list(edges),
            "strata": stratum_names(edges),
            "diameter": DIAMETER_CONVENTION,
            "allow_missing": bool(allow_missing),
        },
        "cases": {
            "n_evaluated": len(per_case),
            "gt_without_prediction": no_pred,
            "prediction_without_gt": no_gt,
        },
        "classes": {c.key: {"name": c.name, "tumor": c.is_tumor} for c in classes},
        "dice": aggregate_dice([case["metrics"] for case in per_case]),
        "lesion": lesion,
        "patient": patient_level([c["gt_tumor"] for c in per_case], [c["pred_tumor"] for c in per_case]),
        "per_case": per_case,
    }
    return json_ready(summary)


def json_ready(obj: Any) -> Any:
    """Recursively: numpy scalars -> Python, NaN/inf -> None, tuples -> lists, keys -> str."""
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return json_ready(obj.tolist())
    return _num(obj)


# --- reports -------------------------------------------------------------------------------------------------------


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    return f"{v:.{digits}f}"


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(x) for x in r) + " |" for r in rows]
    return out


def format_markdown(summary: dict[str, Any]) -> str:
    """The summary as Markdown tables (Dice, lesion detection, size strata, patient level, per case)."""
    s, cases = summary["settings"], summary["cases"]
    lines = [
        "# FreeTumor evaluation",
        "",
        f"- predictions: `{s['pred_folder']}`",
        f"- ground truth: `{s['gt_folder']}`",
        f"- cases evaluated: {cases['n_evaluated']}",
    ]
    if cases["gt_without_prediction"] or cases["prediction_without_gt"]:
        lines.append(
            f"- **--allow_missing: skipped** {len(cases['gt_without_prediction'])} GT case(s) without prediction, "
            f"{len(cases['prediction_without_gt'])} prediction(s) without GT"
        )
    lines += [
        f"- tumor classes: {', '.join(f'{v} ({k})' for k, v in s['tumor_labels'].items())}",
        f"- lesions: {s['connectivity']}-connected components; detected / true positive with >= "
        f"{s['min_overlap_voxels']} overlapping voxel(s)",
        f"- {s['diameter']}",
        "",
        "## Dice (nnU-Net, mean over cases)",
        "",
    ]
    mean = summary["dice"]["mean"]
    lines += _table(
        ["class", "label", "Dice", "IoU"],
        [(v["name"], k, _fmt(v.get("Dice"), 4), _fmt(v.get("IoU"), 4)) for k, v in mean.items()],
    )
    lines += ["", f"Foreground mean Dice: {_fmt(summary['dice']['foreground_mean'].get('Dice'), 4)}", ""]
    lines += ["## Lesion-wise detection (pooled over cases)", ""]
    lines += _table(
        ["class", "GT lesions", "detected", "sensitivity", "pred. lesions", "TP", "FP", "precision", "F1", "FP/case"],
        [
            (
                v["name"],
                v["n_gt_lesions"],
                v["n_detected"],
                _fmt(v["sensitivity"]),
                v["n_pred_lesions"],
                v["n_tp_pred"],
                v["n_fp_pred"],
                _fmt(v["precision"]),
                _fmt(v["f1"]),
                _fmt(v["fp_lesions_per_case"], 2),
            )
            for v in summary["lesion"].values()
        ],
    )
    lines += ["", "## Sensitivity by GT lesion size (longest diameter)", ""]
    lines += _table(
        ["class", "size", "GT lesions", "detected", "sensitivity"],
        [
            (v["name"], st["name"], st["n_gt_lesions"], st["n_detected"], _fmt(st["sensitivity"]))
            for v in summary["lesion"].values()
            for st in v["strata"]
        ],
    )
    pl = summary["patient"]
    lines += ["", "## Patient level (any tumor voxel)", ""]
    lines += _table(
        ["cases", "GT positive", "GT negative", "TP", "FN", "FP", "TN", "sensitivity", "specificity"],
        [
            (
                pl["n_cases"],
                pl["n_gt_positive"],
                pl["n_gt_negative"],
                pl["tp"],
                pl["fn"],
                pl["fp"],
                pl["tn"],
                _fmt(pl["sensitivity"]),
                _fmt(pl["specificity"]),
            )
        ],
    )
    lines += ["", "## Per case", ""]
    dice_keys = list(mean)
    tumor_keys = list(summary["lesion"])
    header = ["case"] + [f"Dice {mean[k]['name']}" for k in dice_keys] + ["GT tumor", "pred. tumor"]
    header += [f"{summary['lesion'][k]['name']}: detected/GT, FP" for k in tumor_keys]
    rows = []
    for c in summary["per_case"]:
        row = [c["case_id"]] + [_fmt(c["metrics"][k]["Dice"], 4) for k in dice_keys]
        row += [_fmt(c["gt_tumor"]), _fmt(c["pred_tumor"])]
        for k in tumor_keys:
            r = c["lesions"][k]
            row.append(f"{r['n_detected']}/{r['n_gt_lesions']}, {r['n_fp_pred']}")
        rows.append(row)
    lines += _table(header, rows)
    return "\n".join(lines) + "\n"


def format_text(summary: dict[str, Any]) -> str:
    """A short plain-text summary for the terminal."""
    c = summary["cases"]
    out = [f"Evaluated {c['n_evaluated']} case(s)."]
    if c["gt_without_prediction"] or c["prediction_without_gt"]:
        out.append(
            f"--allow_missing: skipped {len(c['gt_without_prediction'])} GT case(s) without prediction and "
            f"{len(c['prediction_without_gt'])} prediction(s) without GT."
        )
    dice = ", ".join(f"{v['name']} {_fmt(v.get('Dice'), 4)}" for v in summary["dice"]["mean"].values())
    out.append(f"Dice (nnU-Net, mean over cases): {dice}")
    for v in summary["lesion"].values():
        out.append(
            f"{v['name']}: lesion sensitivity {_fmt(v['sensitivity'])} ({v['n_detected']}/{v['n_gt_lesions']}), "
            f"precision {_fmt(v['precision'])} ({v['n_tp_pred']}/{v['n_pred_lesions']}), F1 {_fmt(v['f1'])}, "
            f"FP lesions/case {_fmt(v['fp_lesions_per_case'], 2)}"
        )
        strata = "; ".join(
            f"{st['name']} {_fmt(st['sensitivity'])} ({st['n_detected']}/{st['n_gt_lesions']})" for st in v["strata"]
        )
        out.append(f"  sensitivity by size: {strata}")
    p = summary["patient"]
    out.append(
        f"Patient level: sensitivity {_fmt(p['sensitivity'])} ({p['tp']}/{p['n_gt_positive']}), specificity "
        f"{_fmt(p['specificity'])} ({p['tn']}/{p['n_gt_negative']})"
    )
    return "\n".join(out)


def write_summary(summary: dict[str, Any], output_json: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``summary`` as JSON to ``output_json`` and as Markdown next to it (same name, ``.md``), each atomically
    (temporary file in the same folder, then ``os.replace``). Both texts are rendered before either file is written.
    Returns (json path, markdown path)."""
    from nnunet_freetumor.io import atomic_write_text

    out_json = Path(output_json)
    out_md = out_json.with_suffix(".md")
    text_json = json.dumps(summary, indent=2, allow_nan=False) + "\n"
    text_md = format_markdown(summary)
    atomic_write_text(out_json, text_json)
    atomic_write_text(out_md, text_md)
    return out_json, out_md


def headline(summary: dict[str, Any]) -> dict[str, float | None]:
    """The numbers FreeTumor's claims are about, from one ``evaluate_folder`` summary: Dice of the tumor classes
    (mean over classes), pooled lesion sensitivity / precision, sensitivity of the smallest size stratum (< 2 cm by
    default), patient-level specificity."""
    lesion = list(summary["lesion"].values())
    tumor_names = {v["name"] for v in lesion}
    dice = [v.get("Dice") for v in summary["dice"]["mean"].values() if v.get("name") in tumor_names]
    dice = [d for d in dice if d is not None]

    def pooled(key_num: str, key_den: str) -> float | None:
        return safe_div(sum(v[key_num] for v in lesion), sum(v[key_den] for v in lesion))

    small_det = sum(v["strata"][0]["n_detected"] for v in lesion if v["strata"])
    small_n = sum(v["strata"][0]["n_gt_lesions"] for v in lesion if v["strata"])
    return {
        "dice_tumor": float(np.mean(dice)) if dice else None,
        "lesion_sensitivity": pooled("n_detected", "n_gt_lesions"),
        "lesion_precision": pooled("n_tp_pred", "n_pred_lesions"),
        "small_lesion_sensitivity": safe_div(small_det, small_n),
        "patient_specificity": summary["patient"]["specificity"],
    }


def comparison_table(summaries: dict[str, dict[str, Any]]) -> str:
    """Markdown table of ``headline`` numbers, one row per named summary (e.g. per trainer)."""
    rows = []
    for name, s in summaries.items():
        h = headline(s)
        rows.append(
            [
                name,
                *(
                    _fmt(h[k])
                    for k in (
                        "dice_tumor",
                        "lesion_sensitivity",
                        "small_lesion_sensitivity",
                        "lesion_precision",
                        "patient_specificity",
                    )
                ),
            ]
        )
    small = next(
        (v["strata"][0]["name"] for s in summaries.values() for v in s["lesion"].values() if v["strata"]), "small"
    )
    header = [
        "",
        "Dice (tumor)",
        "lesion sensitivity",
        f"sensitivity {small}",
        "lesion precision",
        "patient specificity",
    ]
    return "\n".join(_table(header, rows))
