"""Evaluate one case (nnU-Net's Dice of every class, ``match_lesions`` of every tumor class) and a whole
prediction folder, in worker processes: what ``freetumor_evaluate`` runs. The metric definitions are in
``nnunet_freetumor.evaluation.lesions``, the Markdown / JSON reports in ``nnunet_freetumor.evaluation.report``.

Segmentations are read with the dataset's nnU-Net reader: arrays ``(c, *spatial)`` and ``properties['spacing']``
(mm) in the same order as the spatial axes (``(z, y, x)`` for SimpleITKIO)."""

from __future__ import annotations

import math
import multiprocessing
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nnunet_freetumor.evaluation.dataset import (
    ClassSpec,
    dataset_classes,
    list_cases,
    load_dataset_json,
    pair_cases,
    reader_writer_for,
)
from nnunet_freetumor.evaluation.lesions import (
    DEFAULT_SIZE_BINS_MM,
    DIAMETER_CONVENTION,
    EvaluationError,
    aggregate_lesions,
    check_size_bins,
    connectivity_structure,
    match_lesions,
    patient_level,
    stratum_index,
    stratum_names,
)
from nnunet_freetumor.utilities.image_io import check_complete

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


_Seg = tuple[np.ndarray, dict]  # an nnU-Net reader's (segmentation (c, *spatial), properties)


def _read_pair(case_id: str, reader_writer: Any, gt_file: str, pred_file: str) -> tuple[_Seg, _Seg]:
    """Ground truth and prediction of one case, each read once; EvaluationError if their shape or spacing differ
    (spacing within 1e-3 relative)."""
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
    return (seg_gt, props_gt), (seg_pred, props_pred)


def _dice_metrics(
    gt_file: str, pred_file: str, gt: _Seg, pred: _Seg, classes: Sequence[ClassSpec], ignore_label: int | None
) -> dict[str, dict[str, Any]]:
    """nnU-Net's ``compute_metrics`` (Dice, IoU, TP, ...) of every class on the arrays already read, by class key."""
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics

    nn = compute_metrics(
        gt_file,
        pred_file,
        _Preloaded({gt_file: gt, pred_file: pred}),
        [c.label_or_region for c in classes],
        ignore_label,
    )
    metrics: dict[str, dict[str, Any]] = {}
    for c in classes:
        m = nn["metrics"][c.label_or_region]
        metrics[c.key] = {"name": c.name, **{k: _num(v) for k, v in m.items()}}
    return metrics


def _tumor_lesions(
    gt3: np.ndarray,
    pred3: np.ndarray,
    spacing: np.ndarray,
    classes: Sequence[ClassSpec],
    ignore_label: int | None,
    connectivity: int,
    min_overlap: int,
) -> tuple[dict[str, Any], bool, bool]:
    """``match_lesions`` of every tumor class on one case's label arrays (spatial axes only), with ignore-label voxels
    of the GT removed from the prediction; also whether the GT / the prediction has any tumor voxel."""
    from nnunetv2.evaluation.evaluate_predictions import region_or_label_to_mask

    ignore = (gt3 == ignore_label) if ignore_label is not None else None
    lesions: dict[str, Any] = {}
    gt_pos = pred_pos = False
    two_d = _is_2d(gt3.shape, spacing)
    for c in classes:
        if not c.is_tumor:
            continue
        g = region_or_label_to_mask(gt3, c.label_or_region)
        p = region_or_label_to_mask(pred3, c.label_or_region)
        if ignore is not None:
            p &= ~ignore
        gt_pos |= bool(g.any())
        pred_pos |= bool(p.any())
        res = match_lesions(g, p, spacing, connectivity=connectivity, min_overlap=min_overlap)
        if two_d:
            for les in res["gt_lesions"] + res["pred_lesions"]:
                les["volume_ml"] = None
        lesions[c.key] = {"name": c.name, **res}
    return lesions, gt_pos, pred_pos


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
    gt_file, pred_file = str(gt_file), str(pred_file)
    gt, pred = _read_pair(case_id, reader_writer, gt_file, pred_file)
    metrics = _dice_metrics(gt_file, pred_file, gt, pred, classes, ignore_label)
    sp_gt = np.asarray(gt[1]["spacing"], dtype=np.float64)
    lesions, gt_pos, pred_pos = _tumor_lesions(
        gt[0][0], pred[0][0], sp_gt, classes, ignore_label, connectivity, min_overlap
    )
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


# --- Dice over cases -----------------------------------------------------------------------------------------------


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


# --- whole folder --------------------------------------------------------------------------------------------------


def _case_files(
    pred_folder: str | os.PathLike, gt_folder: str | os.PathLike, file_ending: str
) -> tuple[dict[str, Path], dict[str, Path]]:
    """case id -> file of the prediction folder and of the ground-truth folder; EvaluationError if either has none."""
    pred_cases, gt_cases = list_cases(pred_folder, file_ending), list_cases(gt_folder, file_ending)
    if not gt_cases:
        raise EvaluationError(f"no *{file_ending} files in the ground-truth folder {gt_folder}")
    if not pred_cases:
        raise EvaluationError(f"no *{file_ending} files in the prediction folder {pred_folder}")
    return pred_cases, gt_cases


def _summary(
    settings: dict[str, Any],
    classes: Sequence[ClassSpec],
    per_case: list[dict[str, Any]],
    edges: tuple[float, ...],
    no_pred: list[str],
    no_gt: list[str],
) -> dict[str, Any]:
    """The summary of the evaluated cases: Dice means, lesion metrics pooled per tumor class, patient level and the
    per-case results, whose GT lesions get their size stratum here."""
    from nnunet_freetumor import __version__

    names = stratum_names(edges)
    for case in per_case:  # stratum of every GT lesion, for readers of the per-case lists
        for res in case["lesions"].values():
            for les in res["gt_lesions"]:
                les["stratum"] = names[stratum_index(les["diameter_mm"], edges)]
    lesion = {
        c.key: {"name": c.name, **aggregate_lesions([case["lesions"][c.key] for case in per_case], edges)}
        for c in classes
        if c.is_tumor
    }
    return {
        "tool": "freetumor_evaluate",
        "version": __version__,
        "settings": settings,
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
    Returns the JSON-ready summary (``report.write_summary`` writes it) with keys ``tool, version, settings, cases,
    classes, dice, lesion, patient, per_case``. Raises EvaluationError on bad input, before anything is written.
    """
    dj = load_dataset_json(dataset_json)
    edges = check_size_bins(size_bins_mm)
    connectivity_structure(3, connectivity)  # validates
    if int(min_overlap_voxels) < 1:
        raise EvaluationError(f"--min_overlap_voxels must be >= 1, got {min_overlap_voxels}")
    file_ending = dj["file_ending"]
    pred_cases, gt_cases = _case_files(pred_folder, gt_folder, file_ending)
    ids, no_pred, no_gt = pair_cases(pred_cases, gt_cases, allow_missing)
    classes = tuple(dataset_classes(dj, tumor_labels))
    ignore_label = dj["labels"].get("ignore")
    rw = reader_writer_for(dj, gt_cases[ids[0]])
    jobs = [
        _Job(i, str(pred_cases[i]), str(gt_cases[i]), rw, classes, ignore_label, connectivity, int(min_overlap_voxels))
        for i in ids
    ]
    per_case = _map_cases(jobs, int(num_processes), progress)
    settings = {
        "pred_folder": str(Path(pred_folder).resolve()),
        "gt_folder": str(Path(gt_folder).resolve()),
        "file_ending": file_ending,
        "reader_writer": type(rw).__name__,
        "tumor_labels": {c.key: c.name for c in classes if c.is_tumor},
        "ignore_label": ignore_label,
        "connectivity": int(connectivity),
        "min_overlap_voxels": int(min_overlap_voxels),
        "size_bins_mm": list(edges),
        "strata": stratum_names(edges),
        "diameter": DIAMETER_CONVENTION,
        "allow_missing": bool(allow_missing),
    }
    return json_ready(_summary(settings, classes, per_case, edges, no_pred, no_gt))


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
