"""freetumor_add_unlabeled: unlabeled CT + organ masks (supplied or predicted) added to a FreeTumor dataset
(nnunet_freetumor.unlabeled.workflow and the command line); each step's own tests are in test_unlabeled_*.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import DATASET_ID, GENERATOR_ARGS, Demo, run
from unlabeled_data import SRC, add, ct_case, read, snapshot, unlabeled, write

from nnunet_freetumor.config import FreeTumorConfigError
from nnunet_freetumor.unlabeled.report import REPORT_JSON, REPORT_MD
from nnunet_freetumor.unlabeled.request import QualityFilters
from nnunet_freetumor.unlabeled.splits import SPLITS


def test_merging_in_place_keeps_existing_cases_and_the_test_set_and_passes_nnunets_integrity_check(roots, tmp_path):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    raw = roots["raw"] / SRC
    before = snapshot(raw)
    old_dj = json.loads((raw / "dataset.json").read_text())
    cases = {"scan_a": ct_case(10), "scan_b": ct_case(11)}
    folder = unlabeled(tmp_path / "in", cases, masks=tmp_path / "masks")
    result = add(roots, input_folder=str(folder), organ_masks=str(tmp_path / "masks"))

    assert [a.decision for a in result.cases] == ["added", "added"]
    after = snapshot(raw)
    assert {k: v for k, v in after.items() if k in before and k != "dataset.json"} == {
        k: v for k, v in before.items() if k != "dataset.json"
    }
    new = sorted(set(after) - set(before))
    assert new == sorted(
        [
            "imagesTr/unlabeled_scan_a_0000.nii.gz",
            "imagesTr/unlabeled_scan_b_0000.nii.gz",
            "labelsTr/unlabeled_scan_a.nii.gz",
            "labelsTr/unlabeled_scan_b.nii.gz",
            REPORT_JSON,
            REPORT_MD,
        ]
    )
    for case in cases:  # images byte for byte, labels equal to the masks, on the image's grid
        src = folder / f"{case}_0000.nii.gz"
        assert (raw / "imagesTr" / f"unlabeled_{case}_0000.nii.gz").read_bytes() == src.read_bytes()
        label = sitk.ReadImage(str(raw / "labelsTr" / f"unlabeled_{case}.nii.gz"))
        assert np.array_equal(sitk.GetArrayFromImage(label), cases[case][1])
        assert label.GetOrigin() == sitk.ReadImage(str(src)).GetOrigin()
    dj = json.loads((raw / "dataset.json").read_text())
    assert dj["numTraining"] == 7
    assert {k: v for k, v in dj.items() if k != "freetumor_unlabeled"} == {**old_dj, "numTraining": 7}
    assert dj["freetumor_unlabeled"][0]["cases_added"] == 2
    assert not [p for p in raw.iterdir() if p.name.startswith(".")]  # staging removed
    report = json.loads((raw / REPORT_JSON).read_text())
    assert (
        report["counts"]["added"] == 2 and "| scan_a | unlabeled_scan_a | liver 13.8 |" in (raw / REPORT_MD).read_text()
    )
    assert "no splits_final.json" in result.split_note
    verify_dataset_integrity(str(raw), 1)  # raises on any inconsistency


def test_dry_run_writes_nothing_and_nothing_passing_is_an_error_with_nothing_written(roots, tmp_path):
    raw = roots["raw"] / SRC
    before = snapshot(raw)
    folder = unlabeled(tmp_path / "in", {"a": ct_case(10), "b": ct_case(11, tumor=True)}, masks=tmp_path / "masks")
    dry = add(roots, input_folder=str(folder), organ_masks=str(tmp_path / "masks"), dry_run=True)
    assert [a.decision for a in dry.cases] == ["added", "skipped_tumor"] and dry.report_files == []
    with pytest.raises(FreeTumorConfigError, match=r"none of the 2 unlabeled case\(s\) passed"):
        add(
            roots,
            input_folder=str(folder),
            organ_masks=str(tmp_path / "masks"),
            filters=QualityFilters(min_organ_ml=100),
        )
    assert snapshot(raw) == before
    assert sorted(p.name for p in roots["raw"].iterdir()) == [SRC]


def test_the_command_line_prints_one_error_line_and_exits_2(roots, tmp_path, capsys):
    from nnunet_freetumor.entrypoints.add_unlabeled import main

    folder = unlabeled(tmp_path / "in", {"a": ct_case(10)})
    with pytest.raises(SystemExit) as e:  # no baseline trained: predicting the masks needs one
        main(["-d", "980", "-i", str(folder), "--no_progress"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no nnU-Net model at ") and "nnUNetv2_train" in err[0]
    with pytest.raises(SystemExit) as e:
        main(["-d", "980", "-i", str(folder), "--label_map", "5-1"])
    assert e.value.code == 2 and "SRC:DST" in capsys.readouterr().err


# --- end to end: masks predicted by the tiny baseline through nnU-Net's predictor -----------------------------------


@pytest.mark.e2e
def test_unlabeled_scans_with_masks_predicted_by_the_baseline_become_a_new_dataset_nnunet_accepts_and_gated_by_it(
    demo: Demo, baseline: Path, tmp_path
):
    """... and the labeled dataset's baseline is the merged dataset's S (config gate_dataset), as in the paper."""
    from nnunet_freetumor.dataset_conversion.phantom import make_case

    new_id, name = 960, "Dataset960_FreeTumorDemo_unlabeled"
    demo_raw_before = snapshot(demo.raw)
    folder = tmp_path / "unlabeled"
    for i in range(2):
        image, _, _ = make_case((24, 48, 48), (4.0, 2.5, 2.5), np.random.default_rng([7, i]))
        write(folder / f"scan_{i}_0000.nii.gz", image, spacing=(4.0, 2.5, 2.5))
    cmd = ["freetumor_add_unlabeled", "-d", DATASET_ID, "-i", folder, "-o", new_id, "--no_progress"]
    permissive = ["--min_organ_ml", 0, "--min_largest_component", 0, "--organ_hu", -1000, 1000, "--tumors", "keep"]
    fast = ["-npp", 0, "-nps", 0, "--disable_tta"]
    try:
        proc = run([*cmd, *permissive, *fast], demo.env)
        out = demo.dirs["nnUNet_raw"] / name
        report = json.loads((out / REPORT_JSON).read_text())
        assert report["organ_masks"]["predicted"].endswith("nnUNetTrainerBaseline__nnUNetPlans__3d_fullres")
        assert report["counts"]["cases"] == 2
        added = [c for c in report["cases"] if c["decision"] in ("added", "added_with_tumor")]
        assert f"added {len(added)} of 2" in proc.stdout and f"nnUNetv2_plan_and_preprocess -d {new_id}" in proc.stdout
        dj = json.loads((out / "dataset.json").read_text())
        assert dj["numTraining"] == json.loads((demo.raw / "dataset.json").read_text())["numTraining"] + len(added)
        for c in added:  # the label is nnU-Net's prediction, on the image's grid, with the dataset's ids only
            label = read(out / "labelsTr" / f"{c['new_id']}.nii.gz")
            assert label.shape == (24, 48, 48) and set(np.unique(label)) <= {0, 1, 2}
            assert c["organ_ml"]["liver"] == pytest.approx(float((label == 1).sum()) * 0.025, abs=1e-3)
        splits = json.loads((demo.dirs["nnUNet_preprocessed"] / name / SPLITS).read_text())
        assert all(c["new_id"] in s["train"] and c["new_id"] not in s["val"] for s in splits for c in added)
        assert snapshot(demo.raw) == demo_raw_before  # the shared demo dataset is unchanged
        run(
            ["nnUNetv2_plan_and_preprocess", "-d", new_id, "-c", "3d_fullres", "--verify_dataset_integrity"]
            + ["-np", 1, "-npfp", 1],
            demo.env,
        )
        # S of the labeled dataset gates the merged one (same validation cases, new scans only in training) ...
        run(["freetumor_config", "-d", new_id, "--gate_dataset", DATASET_ID, "--write"], demo.env)
        split_file = demo.dirs["nnUNet_preprocessed"] / name / SPLITS
        seen = json.loads((demo.preprocessed / SPLITS).read_text())[0]["train"][0]  # a case S was trained on
        leaky = [{"train": [c for c in splits[0]["train"] if c != seen], "val": [*splits[0]["val"], seen]}, *splits[1:]]
        split_file.write_text(json.dumps(leaky))
        proc = run(["freetumor_train_generator", new_id, "-f", 0, *GENERATOR_ARGS], demo.env, expect_ok=False)
        assert proc.returncode == 2 and f"({seen})" in proc.stderr and "leak" in proc.stderr, proc.stderr
        assert not (demo.dirs["nnUNet_results"] / name).exists()  # refused before anything was written
        split_file.write_text(json.dumps(splits))  # ... and is used when no validation case leaks
        run(["freetumor_train_generator", new_id, "-f", 0, *GENERATOR_ARGS], demo.env)
        log = next((demo.dirs["nnUNet_results"] / name).rglob("training_log.txt")).read_text()
        assert f"frozen segmenter {baseline}" in log
    finally:  # leave the shared nnU-Net folders as they were for the other tests
        for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
            shutil.rmtree(demo.dirs[key] / name, ignore_errors=True)
