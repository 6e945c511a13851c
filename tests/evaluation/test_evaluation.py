"""freetumor_evaluate on files: the tumor classes of a dataset.json, evaluate_folder and the console script end to
end (JSON, Markdown, printed summary, errors)."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import BIN, clean_env

from nnunet_freetumor.evaluation.dataset import dataset_classes
from nnunet_freetumor.evaluation.evaluate import evaluate_folder
from nnunet_freetumor.evaluation.lesions import EvaluationError

LABELS = {"background": 0, "liver": 1, "liver tumor": 2}


# --- dataset.json classes ------------------------------------------------------------------------------------------


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


def cli(*args) -> subprocess.CompletedProcess:
    env = clean_env(OMP_NUM_THREADS="1")
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
