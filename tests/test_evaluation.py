"""freetumor_evaluate: lesion matching, diameters, strata, patient level, and the console script end to end."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.distance import pdist

from nnunet_freetumor.evaluation.dataset import dataset_classes
from nnunet_freetumor.evaluation.evaluate import evaluate_folder
from nnunet_freetumor.evaluation.lesions import (
    EvaluationError,
    lesion_diameters_mm,
    longest_diameter_mm,
    match_lesions,
    patient_level,
    stratify_sensitivity,
)

BIN = Path(sys.executable).parent
ISO = (1.0, 1.0, 1.0)
LABELS = {"background": 0, "liver": 1, "liver tumor": 2}


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


def test_tumor_classes_come_from_label_names_or_the_override():
    labels = {"background": 0, "liver": 1, "liver tumor": 2, "kidney": 3, "kidney_lesion": 4}
    assert [c.key for c in dataset_classes({"labels": labels}) if c.is_tumor] == ["2", "4"]
    assert [c.key for c in dataset_classes({"labels": labels}, ["4"]) if c.is_tumor] == ["4"]
    assert [c.key for c in dataset_classes({"labels": labels}, ["liver tumor"]) if c.is_tumor] == ["2"]
    with pytest.raises(EvaluationError, match="no tumor class"):
        dataset_classes({"labels": {"background": 0, "liver": 1}})
    with pytest.raises(EvaluationError, match="7"):
        dataset_classes({"labels": labels}, ["7"])


# --- files: a tiny dataset written with SimpleITK ------------------------------------------------------------------

SHAPE = (8, 32, 32)  # (z, y, x)
SITK_SPACING = (1.0, 1.0, 2.5)  # (x, y, z) as SimpleITK has it: z is 2.5 mm


def write_seg(path: Path, arr: np.ndarray, spacing=SITK_SPACING) -> None:
    img = sitk.GetImageFromArray(arr.astype(np.uint8))
    img.SetSpacing(spacing)
    sitk.WriteImage(img, str(path), True)


def liver() -> np.ndarray:
    seg = np.zeros(SHAPE, dtype=np.uint8)
    seg[:, 2:30, 2:30] = 1
    return seg


def make_dataset(root: Path) -> tuple[Path, Path, Path]:
    """4 cases with known answers (axes z, y, x; spacing z 2.5 mm, y/x 1 mm):

    a: GT lesions L1 (5 voxels along z: 10 mm), L2 (2x2x2: 5.385 mm), L3 (25 voxels along x: 24 mm);
       prediction hits L1 and L3 and adds one false-positive blob  -> patient TP
    b: GT lesion 2x2x2, prediction has no tumor                      -> patient FN
    c: GT healthy, prediction has one false-positive blob            -> patient FP
    d: GT healthy, prediction healthy                                -> patient TN
    """
    gt_dir, pred_dir = root / "gt", root / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    g, p = {k: liver() for k in "abcd"}, {k: liver() for k in "abcd"}
    g["a"][1:6, 5, 5] = 2
    g["a"][1:3, 15:17, 15:17] = 2
    g["a"][7, 25, 3:28] = 2
    p["a"][3, 5, 5] = 2
    p["a"][7, 25, 10:12] = 2
    p["a"][4:6, 10:12, 22:24] = 2
    g["b"][3:5, 8:10, 8:10] = 2
    p["c"][2:4, 20:23, 20:23] = 2
    for k in "abcd":
        write_seg(gt_dir / f"case_{k}.nii.gz", g[k])
        write_seg(pred_dir / f"case_{k}.nii.gz", p[k])
    dj = root / "dataset.json"
    dj.write_text(
        json.dumps({"labels": LABELS, "file_ending": ".nii.gz", "numTraining": 4, "channel_names": {"0": "CT"}})
    )
    return pred_dir, gt_dir, dj


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, Path, Path]:
    return make_dataset(tmp_path_factory.mktemp("eval"))


def cli(*args, **env_extra) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet")}
    env.update({"OMP_NUM_THREADS": "1", **env_extra})
    return subprocess.run(
        [str(BIN / "freetumor_evaluate"), *map(str, args)], env=env, capture_output=True, text=True, timeout=120
    )


def test_console_script_writes_json_and_markdown_with_known_numbers(dataset, tmp_path):
    pred_dir, gt_dir, dj = dataset
    out = tmp_path / "out" / "summary.json"
    proc = cli(pred_dir, gt_dir, "-djfile", dj, "-o", out, "-np", 2)
    assert proc.returncode == 0, proc.stderr
    s = json.loads(out.read_text())
    assert set(s) == {"tool", "version", "settings", "cases", "classes", "dice", "lesion", "patient", "per_case"}
    assert s["cases"]["n_evaluated"] == 4
    t = s["lesion"]["2"]
    assert (t["n_gt_lesions"], t["n_detected"], t["n_pred_lesions"], t["n_tp_pred"]) == (4, 2, 4, 2)
    assert (t["sensitivity"], t["precision"], t["f1"], t["fp_lesions_per_case"]) == (0.5, 0.5, 0.5, 0.5)
    st = {x["name"]: (x["n_gt_lesions"], x["n_detected"], x["sensitivity"]) for x in t["strata"]}
    assert st == {"<20 mm": (3, 1, pytest.approx(1 / 3)), "20-50 mm": (1, 1, 1.0), ">=50 mm": (0, 0, None)}
    p = s["patient"]
    assert (p["tp"], p["fn"], p["fp"], p["tn"], p["sensitivity"], p["specificity"]) == (1, 1, 1, 1, 0.5, 0.5)

    case = {c["case_id"]: c for c in s["per_case"]}
    a = case["case_a"]["lesions"]["2"]
    # spacing read from the files in array order (z, y, x): z lines are 2.5 mm/voxel, x lines 1 mm/voxel
    assert case["case_a"]["spacing_mm"] == [2.5, 1.0, 1.0]
    assert [les["diameter_mm"] for les in a["gt_lesions"]] == pytest.approx([10.0, math.sqrt(2.5**2 + 2), 24.0])
    assert [les["detected"] for les in a["gt_lesions"]] == [True, False, True]
    assert [les["stratum"] for les in a["gt_lesions"]] == ["<20 mm", "<20 mm", "20-50 mm"]
    assert a["gt_lesions"][0]["volume_ml"] == pytest.approx(5 * 2.5 / 1000)
    # Dice: nnU-Net's numbers; tumor absent in GT and prediction -> null, missed tumor -> 0
    assert case["case_d"]["metrics"]["2"]["Dice"] is None
    assert case["case_b"]["metrics"]["2"]["Dice"] == 0.0
    tp, fp, fn = 1 + 2, 8, (5 + 8 + 25) - 3
    assert case["case_a"]["metrics"]["2"]["Dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert s["dice"]["mean"]["2"]["Dice"] == pytest.approx(np.mean([2 * tp / (2 * tp + fp + fn), 0.0, 0.0]))

    md = out.with_suffix(".md").read_text()
    assert "## Lesion-wise detection" in md and "| liver tumor | 4 | 2 | 0.500 |" in md
    assert "| liver tumor | >=50 mm | 0 | 0 | n/a |" in md
    assert "lesion sensitivity 0.500 (2/4)" in proc.stdout
    assert not list(out.parent.glob("*.tmp"))


def test_dice_equals_nnunet_compute_metrics_on_folder(dataset):
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    pred_dir, gt_dir, dj = dataset
    ours = evaluate_folder(pred_dir, gt_dir, dj, num_processes=0, progress=False)
    ref = compute_metrics_on_folder(str(gt_dir), str(pred_dir), None, SimpleITKIO(), ".nii.gz", [1, 2], None, 1)
    for label in (1, 2):
        for metric in ("Dice", "IoU", "TP", "FP", "FN"):
            assert ours["dice"]["mean"][str(label)][metric] == pytest.approx(ref["mean"][label][metric])
    assert ours["dice"]["foreground_mean"]["Dice"] == pytest.approx(ref["foreground_mean"]["Dice"])


def test_mismatched_case_lists_fail_with_the_missing_ids_and_write_nothing(tmp_path):
    pred_dir, gt_dir, dj = make_dataset(tmp_path)
    (pred_dir / "case_b.nii.gz").unlink()
    proc = cli(pred_dir, gt_dir, "-djfile", dj, "-np", 0)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert "case_b" in proc.stderr and "--allow_missing" in proc.stderr
    assert not list(pred_dir.glob("summary_freetumor*")) and not list(pred_dir.glob(".*tmp"))


def test_allow_missing_evaluates_the_intersection_and_says_so(tmp_path):
    pred_dir, gt_dir, dj = make_dataset(tmp_path)
    (pred_dir / "case_b.nii.gz").unlink()
    (gt_dir / "case_c.nii.gz").unlink()
    s = evaluate_folder(pred_dir, gt_dir, dj, allow_missing=True, num_processes=0, progress=False)
    assert [c["case_id"] for c in s["per_case"]] == ["case_a", "case_d"]
    assert s["cases"]["gt_without_prediction"] == ["case_b"]
    assert s["cases"]["prediction_without_gt"] == ["case_c"]


@pytest.mark.parametrize(
    "arr, spacing",
    [(np.zeros(SHAPE, np.uint8), (1.0, 1.0, 2.0)), (np.zeros((8, 32, 30), np.uint8), SITK_SPACING)],
    ids=["spacing", "shape"],
)
def test_geometry_mismatch_is_a_clear_error_naming_the_case(tmp_path, arr, spacing):
    pred_dir, gt_dir, dj = make_dataset(tmp_path)
    write_seg(pred_dir / "case_c.nii.gz", arr, spacing)
    with pytest.raises(EvaluationError, match="case_c: prediction and ground truth differ in geometry"):
        evaluate_folder(pred_dir, gt_dir, dj, num_processes=2, progress=False)


def test_a_truncated_prediction_is_a_clear_error_naming_the_file_and_nothing_is_written(tmp_path):
    pred_dir, gt_dir, dj = make_dataset(tmp_path)
    data = (pred_dir / "case_b.nii.gz").read_bytes()
    (pred_dir / "case_b.nii.gz").write_bytes(data[: len(data) // 2])  # SimpleITK alone would read it without error
    proc = cli(pred_dir, gt_dir, "-djfile", dj, "-np", 0)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "case_b.nii.gz is truncated" in proc.stderr
    assert not list(pred_dir.glob("summary_freetumor*")) and not list(pred_dir.glob(".*tmp"))
