"""End-to-end: the real nnUNetv2_train / nnUNetv2_predict with the plugin's trainers, on the phantom, on CPU."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import DATASET_ID, ENOUGH_SAMPLES, GENERATOR_ARGS, Demo, read_stats, run, train_env

pytestmark = pytest.mark.e2e


def predict(demo: Demo, trainer: str, out, plans: str = "nnUNetPlans") -> list:
    run(
        [
            "nnUNetv2_predict",
            "-i",
            demo.raw / "imagesTs",
            "-o",
            out,
            "-d",
            DATASET_ID,
            "-c",
            "3d_fullres",
            "-f",
            0,
            "-tr",
            trainer,
            "-p",
            plans,
            "-device",
            "cpu",
            "-npp",
            0,
            "-nps",
            0,
            "--disable_tta",
        ],
        demo.env,
    )
    files = sorted(out.glob("*.nii.gz"))
    refs = sorted((demo.raw / "labelsTs").glob("*.nii.gz"))
    assert [f.name for f in files] == [r.name for r in refs]
    for f, r in zip(files, refs):
        a, b = sitk.ReadImage(str(f)), sitk.ReadImage(str(r))
        assert a.GetSize() == b.GetSize() and np.allclose(a.GetSpacing(), b.GetSpacing())
    return files


def training_log(fold) -> str:
    return "\n".join(p.read_text() for p in sorted(fold.glob("training_log_*.txt")))


def test_handcrafted_trainer_synthesizes_logs_counts_writes_png_and_predicts(demo: Demo, tmp_path):
    run(
        ["nnUNetv2_train", DATASET_ID, "3d_fullres", 0, "-tr", "nnUNetTrainerHandcraftedTumor", "-device", "cpu"],
        train_env(demo, nnUNet_freetumor_epochs="2", **ENOUGH_SAMPLES),
    )
    fold = demo.results("nnUNetTrainerHandcraftedTumor") / "fold_0"
    stats = read_stats(fold)
    assert [s["epoch"] for s in stats] == [0, 1]
    # p_synthesis = 1 in the test config: every candidate crop with room for a tumor gets one
    assert sum(s["synthesized"] for s in stats) > 0
    assert all(0 <= s["synthesized"] <= s["candidates"] <= 24 for s in stats)  # 12 iterations x batch 2
    assert "FreeTumor: candidates" in training_log(fold)
    assert json.loads((fold / "freetumor_config.json").read_text())["p_synthesis"] == 1.0
    assert list(fold.glob("synthesis_epoch_*.png"))
    assert (fold / "checkpoint_final.pth").is_file()
    predict(demo, "nnUNetTrainerHandcraftedTumor", tmp_path / "pred")


def test_freetumor_trainer_gates_resumes_with_c_and_predicts_without_its_frozen_models(demo: Demo, generator, tmp_path):
    run(
        ["nnUNetv2_train", DATASET_ID, "3d_fullres", 0, "-tr", "nnUNetTrainerFreeTumor", "-device", "cpu"],
        train_env(demo, **ENOUGH_SAMPLES),
    )
    fold = demo.results("nnUNetTrainerFreeTumor") / "fold_0"
    (s0,) = read_stats(fold)
    assert s0["synthesized"] > 0
    assert s0["accepted"] + s0["rejected"] == s0["synthesized"]
    assert s0["nonfinite"] == 0
    assert 0.0 <= s0["mean_P"] <= 1.0
    log = training_log(fold)
    assert "quality gate S" in log and "generator" in log

    # resume: one more epoch from checkpoint_final with --c
    run(
        ["nnUNetv2_train", DATASET_ID, "3d_fullres", 0, "-tr", "nnUNetTrainerFreeTumor", "-device", "cpu", "--c"],
        train_env(demo, nnUNet_freetumor_epochs="2"),
    )
    assert [s["epoch"] for s in read_stats(fold)] == [0, 1]

    # prediction needs neither the generator nor S
    env_without_models = dict(
        demo.env, nnUNet_freetumor_generator="/nonexistent", nnUNet_freetumor_gate_checkpoint="/nonexistent"
    )
    demo_no_models = Demo(demo.dirs, env_without_models)
    predict(demo_no_models, "nnUNetTrainerFreeTumor", tmp_path / "pred")


def test_freetumor_without_gate_accepts_every_synthetic_tumor(demo: Demo, generator):
    run(
        ["nnUNetv2_train", DATASET_ID, "3d_fullres", 0, "-tr", "nnUNetTrainerFreeTumor_noGate", "-device", "cpu"],
        train_env(demo, **ENOUGH_SAMPLES),
    )
    (s0,) = read_stats(demo.results("nnUNetTrainerFreeTumor_noGate") / "fold_0")
    assert s0["synthesized"] > 0 and s0["accepted"] == s0["synthesized"] and s0["mean_P"] is None


def test_missing_models_give_one_clear_error_and_no_output_folder(demo: Demo, baseline):
    proc = run(
        ["nnUNetv2_train", DATASET_ID, "3d_fullres", 0, "-tr", "nnUNetTrainerFreeTumor_T09", "-device", "cpu"],
        train_env(demo, nnUNet_freetumor_generator="/nonexistent/generator_final.safetensors"),
        expect_ok=False,
    )
    assert proc.returncode != 0
    assert "error: no trained generator" in proc.stderr and "freetumor_train_generator" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not demo.results("nnUNetTrainerFreeTumor_T09").exists()

    proc = run(
        ["nnUNetv2_train", DATASET_ID, "3d_fullres", 1, "-tr", "nnUNetTrainerFreeTumor_T09", "-device", "cpu"],
        train_env(demo),
        expect_ok=False,
    )
    assert proc.returncode != 0
    assert "nnUNetv2_train Dataset901_FreeTumorDemo 3d_fullres 1 -tr nnUNetTrainerBaseline" in proc.stderr
    assert not demo.results("nnUNetTrainerFreeTumor_T09").exists()


def test_freetumor_runs_on_a_residual_encoder_plan(demo: Demo, tmp_path):
    plans = "nnUNetResEncUNetMPlans"
    run(["nnUNetv2_plan_experiment", "-d", DATASET_ID, "-pl", "nnUNetPlannerResEncM"], demo.env)
    run(["nnUNetv2_preprocess", "-d", DATASET_ID, "-plans_name", plans, "-c", "3d_fullres", "-np", 2], demo.env)
    run(
        ["nnUNetv2_train", DATASET_ID, "3d_fullres", 0, "-tr", "nnUNetTrainerBaseline", "-p", plans, "-device", "cpu"],
        train_env(demo),
    )
    run(["freetumor_train_generator", DATASET_ID, "-p", plans, "-f", 0, *GENERATOR_ARGS], demo.env)
    run(
        ["nnUNetv2_train", DATASET_ID, "3d_fullres", 0, "-tr", "nnUNetTrainerFreeTumor", "-p", plans, "-device", "cpu"],
        train_env(demo, **ENOUGH_SAMPLES),
    )
    fold = demo.results("nnUNetTrainerFreeTumor", plans) / "fold_0"
    (s0,) = read_stats(fold)
    assert s0["synthesized"] > 0 and s0["accepted"] + s0["rejected"] == s0["synthesized"]
    assert json.loads((demo.results("nnUNetTrainerFreeTumor", plans) / "plans.json").read_text())["plans_name"] == plans
    predict(demo, "nnUNetTrainerFreeTumor", tmp_path / "pred", plans=plans)
