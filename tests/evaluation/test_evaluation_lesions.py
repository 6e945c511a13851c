"""evaluation/lesions.py: lesion matching, diameters (centre-to-centre, exact), size strata and the patient level."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import pdist

from nnunet_freetumor.evaluation.lesions import (
    EvaluationError,
    lesion_diameters_mm,
    longest_diameter_mm,
    match_lesions,
    patient_level,
    stratify_sensitivity,
)

ISO = (1.0, 1.0, 1.0)


def box(shape, *slices) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[tuple(slices)] = True
    return m


# --- lesion matching -----------------------------------------------------------------------------------------------


def test_two_gt_lesions_one_detected_gives_sensitivity_half():
    gt = box((10, 20, 20), slice(2, 4), slice(2, 4), slice(2, 4)) | box((10, 20, 20), slice(6, 8), slice(12, 15), 12)
    pred = box((10, 20, 20), 3, 3, 3)  # one voxel inside the first lesion only
    r = match_lesions(gt, pred, ISO)
    assert (r["n_gt_lesions"], r["n_detected"], r["sensitivity"]) == (2, 1, 0.5)
    assert [les["detected"] for les in r["gt_lesions"]] == [True, False]
    assert [les["overlap_voxels"] for les in r["gt_lesions"]] == [1, 0]
    assert (r["n_pred_lesions"], r["n_tp_pred"], r["precision"]) == (1, 1, 1.0)
    assert r["f1"] == pytest.approx(2 * 0.5 / 1.5)


def test_false_positive_blob_gives_precision_half():
    gt = box((10, 20, 20), slice(2, 5), slice(2, 5), slice(2, 5))
    pred = box((10, 20, 20), slice(2, 5), slice(2, 5), slice(2, 5)) | box((10, 20, 20), 8, slice(15, 18), slice(15, 18))
    r = match_lesions(gt, pred, ISO)
    assert (r["n_pred_lesions"], r["n_tp_pred"], r["n_fp_pred"], r["precision"]) == (2, 1, 1, 0.5)
    assert [les["true_positive"] for les in r["pred_lesions"]] == [True, False]
    assert r["sensitivity"] == 1.0
    assert r["f1"] == pytest.approx(2 / 3)


def test_corner_touching_lesions_are_one_with_26_and_two_with_6_connectivity():
    gt = box((6, 6, 6), slice(0, 2), slice(0, 2), slice(0, 2)) | box((6, 6, 6), slice(2, 4), slice(2, 4), slice(2, 4))
    assert match_lesions(gt, gt, ISO)["n_gt_lesions"] == 1
    assert match_lesions(gt, gt, ISO, connectivity=6)["n_gt_lesions"] == 2
    assert len(lesion_diameters_mm(gt, ISO, connectivity=6)) == 2


def test_lesions_separated_by_one_voxel_count_as_two():
    gt = box((5, 5, 9), 2, 2, slice(0, 4)) | box((5, 5, 9), 2, 2, slice(5, 9))  # gap at x = 4
    r = match_lesions(gt, np.zeros_like(gt), ISO)
    assert r["n_gt_lesions"] == 2
    assert [les["n_voxels"] for les in r["gt_lesions"]] == [4, 4]


def test_empty_gt_and_empty_prediction_give_null_metrics():
    empty = np.zeros((4, 5, 6), dtype=bool)
    r = match_lesions(empty, empty, ISO)
    assert r["sensitivity"] is None and r["precision"] is None and r["f1"] is None
    assert (r["n_gt_lesions"], r["n_pred_lesions"], r["gt_lesions"], r["pred_lesions"]) == (0, 0, [], [])


def test_empty_prediction_gives_zero_sensitivity_and_null_precision():
    gt = box((4, 5, 6), 1, 1, 1)
    r = match_lesions(gt, np.zeros_like(gt), ISO)
    assert (r["sensitivity"], r["precision"], r["f1"]) == (0.0, None, None)


def test_min_overlap_voxels_applies_to_detection_and_true_positives():
    gt = box((6, 6, 6), slice(1, 4), slice(1, 4), slice(1, 4))
    pred = box((6, 6, 6), slice(3, 6), slice(3, 6), 3)  # 4 voxels, 1 of them inside the GT lesion
    assert match_lesions(gt, pred, ISO, min_overlap=1)["n_detected"] == 1
    r = match_lesions(gt, pred, ISO, min_overlap=2)
    assert (r["n_detected"], r["n_tp_pred"], r["n_fp_pred"]) == (0, 0, 1)


def test_volume_ml_uses_spacing():
    gt = box((10, 10, 10), slice(0, 2), slice(0, 5), slice(0, 10))  # 100 voxels of 2 x 1 x 0.5 mm
    r = match_lesions(gt, gt, (2.0, 1.0, 0.5))
    assert r["gt_lesions"][0]["volume_ml"] == pytest.approx(100 * 1.0 / 1000)


# --- diameters: centre-to-centre convention, exact -----------------------------------------------------------------


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_line_of_five_voxels_at_2p5_mm_measures_10_mm(axis):
    spacing = [0.7, 0.7, 0.7]
    spacing[axis] = 2.5
    sl = [3, 3, 3]
    sl[axis] = slice(1, 6)
    assert lesion_diameters_mm(box((7, 7, 7), *sl), spacing) == [10.0]


def test_single_voxel_measures_zero_mm():
    assert lesion_diameters_mm(box((3, 3, 3), 1, 1, 1), (2.0, 0.8, 0.8)) == [0.0]


def test_box_diameter_is_the_centre_to_centre_diagonal_on_anisotropic_spacing():
    m = box((10, 20, 20), slice(1, 4), slice(2, 9), slice(5, 16))  # 3 x 7 x 11 voxels
    expected = math.sqrt((2 * 5.0) ** 2 + (6 * 0.8) ** 2 + (10 * 0.6) ** 2)
    assert lesion_diameters_mm(m, (5.0, 0.8, 0.6)) == [pytest.approx(expected, rel=1e-12)]


def test_sphere_diameter_is_within_one_voxel_of_twice_the_radius():
    spacing = np.array([2.0, 0.75, 0.75])
    radius_mm = 9.0
    grid = np.indices((12, 32, 32)).astype(float)
    centre = np.array([5.5, 15.5, 15.5])
    dist = np.sqrt(sum(((grid[a] - centre[a]) * spacing[a]) ** 2 for a in range(3)))
    sphere = dist <= radius_mm
    (d,) = lesion_diameters_mm(sphere, spacing)
    assert 2 * radius_mm - 2 * spacing.max() <= d <= 2 * radius_mm
    # the hull shortcut must equal the brute-force maximum over every voxel centre
    assert d == pytest.approx(pdist(np.argwhere(sphere) * spacing).max(), rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_diameter_equals_brute_force_on_random_blobs_flat_and_thin_ones_included(seed):
    rng = np.random.default_rng(seed)
    spacing = rng.uniform(0.5, 3.0, size=3)
    blob = rng.random((10, 20, 20)) < 0.7  # many boundary voxels -> convex-hull path
    flat = np.zeros((5, 60, 60), dtype=bool)
    flat[2] = rng.random((60, 60)) < 0.5  # coplanar voxels -> 2-D hull path
    diag = np.zeros((5, 700, 5), dtype=bool)
    diag[2, :, 2] = True  # collinear voxels -> 1-D path
    for mask in (blob, flat, diag):
        brute = pdist(np.argwhere(mask) * spacing).max()
        assert longest_diameter_mm(mask, spacing) == pytest.approx(brute, rel=1e-12)


# --- strata and patient level --------------------------------------------------------------------------------------


def test_stratification_puts_lesions_in_the_right_bins():
    diam = [0.0, 19.99, 20.0, 35.0, 49.99, 50.0, 80.0]
    det = [True, False, True, True, False, False, True]
    st = stratify_sensitivity(diam, det, (20, 50))
    assert [s["name"] for s in st] == ["<20 mm", "20-50 mm", ">=50 mm"]
    assert [(s["n_gt_lesions"], s["n_detected"]) for s in st] == [(2, 1), (3, 2), (2, 1)]
    assert [s["sensitivity"] for s in st] == [0.5, pytest.approx(2 / 3), 0.5]
    assert stratify_sensitivity([5.0], [True], (10, 20))[2]["sensitivity"] is None  # empty stratum
    with pytest.raises(EvaluationError):
        stratify_sensitivity([], [], (50, 20))


def test_patient_sensitivity_and_specificity_on_four_cases():
    r = patient_level([True, True, False, False], [True, False, True, False])
    assert (r["tp"], r["fn"], r["fp"], r["tn"]) == (1, 1, 1, 1)
    assert (r["sensitivity"], r["specificity"]) == (0.5, 0.5)
    r = patient_level([True, True, True, False], [True, True, False, False])
    assert (r["sensitivity"], r["specificity"]) == (pytest.approx(2 / 3), 1.0)
    assert patient_level([False, False], [False, True])["sensitivity"] is None
