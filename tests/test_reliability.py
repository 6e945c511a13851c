"""Reliability: bad datasets and checkpoints are refused early and clearly, numerical faults are contained, killed runs
resume from an intact checkpoint."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import DATASET, DATASET_ID, ENOUGH_SAMPLES, GENERATOR_ARGS, Demo, read_stats, run, train_env

from nnunet_freetumor.config import FreeTumorConfig, FreeTumorConfigError, OrganTumorPair, WindowConfig
from nnunet_freetumor.generator import checkpoint
from nnunet_freetumor.generator.checkpoint import check_generator_compatible
from nnunet_freetumor.segmenter import (
    FrozenSegmenter,
    check_gate_of_another_dataset,
    load_nnunet_checkpoint,
    load_segmenter,
)
from nnunet_freetumor.synthesis.intensity import CTNormalization
from nnunet_freetumor.training.preflight import check_organs_present

CFG = FreeTumorConfig(pairs=(OrganTumorPair(1, 2, "liver"),))
META = {"config": CFG.to_dict(), "dataset": DATASET, "plans": "nnUNetPlans", "configuration": "3d_fullres", "fold": "0"}
WHERE = {"dataset_name": DATASET, "plans": "nnUNetPlans", "configuration": "3d_fullres", "fold": 0, "path": "g"}


# --- checkpoints ---------------------------------------------------------------------------------------------------


def test_a_compatible_generator_is_accepted():
    check_generator_compatible(json.loads(json.dumps(META)), CFG, **WHERE, environ={})


@pytest.mark.parametrize(
    "change, message",
    [
        ({"config": CFG.replace(pairs=(OrganTumorPair(3, 4),)).to_dict()}, "organ->tumor labels"),
        ({"config": CFG.replace(window=WindowConfig(-1000, 500, 1)).to_dict()}, "HU window"),
        ({"dataset": "Dataset002_Other"}, "dataset 'Dataset002_Other'"),
        ({"plans": "nnUNetResEncUNetLPlans"}, "plans"),
        ({"configuration": "3d_lowres"}, "configuration"),
        ({"fold": "3"}, "fold '3'"),
    ],
)
def test_a_generator_for_another_label_map_window_dataset_plans_configuration_or_fold_is_refused(change, message):
    meta = json.loads(json.dumps({**META, **change}))
    with pytest.raises(FreeTumorConfigError, match=message):
        check_generator_compatible(meta, CFG, **WHERE, environ={})


def test_a_foreign_generator_can_be_allowed_explicitly_but_never_with_another_label_map():
    allow = {"nnUNet_freetumor_allow_foreign_generator": "1"}
    check_generator_compatible(
        {**json.loads(json.dumps(META)), "dataset": "Dataset002_Other"}, CFG, **WHERE, environ=allow
    )
    with pytest.raises(FreeTumorConfigError):
        check_generator_compatible(
            {**META, "config": CFG.replace(pairs=(OrganTumorPair(3, 4),)).to_dict()}, CFG, **WHERE, environ=allow
        )


# --- a gate model S of another dataset (config gate_dataset) --------------------------------------------------------

LABELS = {"background": 0, "liver": 1, "liver tumor": 2}
NORM = {"mean": 80.0, "std": 40.0, "percentile_00_5": -100.0, "percentile_99_5": 250.0}


def _gate_datasets(pre: Path, merged_val: list[str], labels: dict = LABELS) -> None:
    """Labeled dataset A (cases a0..a4, fold 0 validation a0) and B = A + unlabeled u0, u1 with the given validation."""
    for name, cases, val in (
        ("DatasetA", ["a0", "a1", "a2", "a3", "a4"], ["a0"]),
        ("DatasetB", ["a0", "a1", "a2", "a3", "a4", "u0", "u1"], merged_val),
    ):
        (pre / name).mkdir(parents=True)
        (pre / name / "dataset.json").write_text(json.dumps({"labels": LABELS if name == "DatasetA" else labels}))
        split = [{"train": [c for c in cases if c not in val], "val": val}]
        (pre / name / "splits_final.json").write_text(json.dumps(split))
    plans = {
        "configurations": {"3d_fullres": {"normalization_schemes": ["CTNormalization"]}},
        "foreground_intensity_properties_per_channel": {"0": NORM},
    }
    (pre / "DatasetB" / "nnUNetPlans.json").write_text(json.dumps(plans))


def _check(pre: Path) -> tuple[CTNormalization, ...]:
    return check_gate_of_another_dataset(
        {"labels": LABELS}, "DatasetA", "DatasetB", "nnUNetPlans", "3d_fullres", 0, pre
    )


def test_a_gate_of_another_dataset_is_accepted_with_the_same_labels_and_no_leakage_and_gets_this_datasets_norm(
    tmp_path,
):
    _gate_datasets(tmp_path, merged_val=["a0"])
    assert _check(tmp_path) == (CTNormalization(80.0, 40.0, -100.0, 250.0),)


@pytest.mark.parametrize(
    "setup, message",
    [
        ({"merged_val": ["a1"]}, r"trained on 1 case\(s\) that are in the validation split .* \(a1\).*--make_split"),
        ({"merged_val": ["a0"], "labels": {"background": 0, "kidney": 1, "kidney tumor": 2}}, "same labels"),
    ],
)
def test_a_gate_of_another_dataset_that_saw_validation_cases_or_has_other_labels_is_refused(tmp_path, setup, message):
    _gate_datasets(tmp_path, **setup)
    with pytest.raises(FreeTumorConfigError, match=message):
        _check(tmp_path)


def test_a_gate_of_another_dataset_without_this_datasets_split_is_refused_naming_the_fix(tmp_path):
    _gate_datasets(tmp_path, merged_val=["a0"])
    (tmp_path / "DatasetB" / "splits_final.json").unlink()
    with pytest.raises(FreeTumorConfigError, match="DatasetB/splits_final.json does not exist.*--make_split"):
        _check(tmp_path)


def test_s_sees_another_datasets_input_in_its_own_normalization_and_gradients_pass():
    data, own = CTNormalization(80.0, 40.0, -100.0, 250.0), CTNormalization(50.0, 100.0, -200.0, 300.0)
    segmenter = FrozenSegmenter(torch.nn.Identity(), (own,), 2, (8, 8, 8), (1, 1, 1), Path("s"), "t", (data,))
    hu = torch.tensor([-150.0, 0.0, 120.0, 250.0]).reshape(1, 1, 4, 1, 1)
    x = data.from_hu(hu).requires_grad_()
    out = segmenter(x)
    # what S's own preprocessing makes of these HU (after this dataset's clip to [-100, 250])
    assert torch.allclose(out, own.from_hu(hu.clamp(-100, 250)), atol=1e-5)
    out.sum().backward()
    assert torch.allclose(x.grad, torch.full_like(x, 40.0 / 100.0))  # d x_S / d x = std_data / std_S
    same = FrozenSegmenter(torch.nn.Identity(), (own,), 2, (8, 8, 8), (1, 1, 1), Path("s"), "t", None)
    assert torch.equal(same(x), x)  # S of this dataset: inputs untouched


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['EXPLOIT_MARKER']}",))


def test_an_nnunet_checkpoint_with_foreign_code_is_refused_without_running_it(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("EXPLOIT_MARKER", str(marker))
    monkeypatch.delenv("nnUNet_freetumor_trust_checkpoints", raising=False)
    bad = tmp_path / "checkpoint_final.pth"
    torch.save({"network_weights": {}, "init_args": _Exploit()}, bad, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    with pytest.raises(FreeTumorConfigError, match="nnUNet_freetumor_trust_checkpoints"):
        load_nnunet_checkpoint(bad)
    assert not marker.exists()


@pytest.mark.e2e
def test_a_baseline_of_another_fold_plans_or_configuration_is_refused(demo: Demo, baseline: Path):
    for wrong, message in [
        ({"fold": 1}, "fold 0 .expected 1."),
        ({"plans_name": "nnUNetResEncUNetMPlans"}, "plans"),
        ({"configuration": "3d_lowres"}, "configuration"),
    ]:
        kw = {
            "dataset_name": DATASET,
            "plans_name": "nnUNetPlans",
            "configuration": "3d_fullres",
            "fold": 0,
            **wrong,
        }
        with pytest.raises(FreeTumorConfigError, match=message):
            load_segmenter(CFG, checkpoint=baseline, **kw)


# --- datasets ------------------------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_a_dataset_where_no_case_has_the_configured_organ_is_refused(demo: Demo):
    folder = demo.preprocessed / "nnUNetPlans_3d_fullres"
    check_organs_present(folder, CFG)  # the liver is there
    with pytest.raises(FreeTumorConfigError, match="none of the 8 cases"):
        check_organs_present(folder, FreeTumorConfig(pairs=(OrganTumorPair(3, 4, "kidney"),)))


@pytest.mark.e2e
def test_a_dataset_without_tumor_free_organ_crops_gives_a_clear_generator_error(demo: Demo, baseline, tmp_path):
    """Crops as large as the image always contain the real tumor of a labeled case; with no healthy case left there
    is nothing to paint into."""
    from nnunet_freetumor.generator.data import CaseStore, GeneratorData

    folder = demo.preprocessed / "nnUNetPlans_3d_fullres"
    cases = json.loads((demo.raw / "phantom_cases.json").read_text())
    labeled = [k for k, c in cases.items() if c["split"] == "train" and not c["healthy"]]
    data = GeneratorData(CaseStore(folder, labeled), CFG, (24, 48, 48), (4.0, 2.5, 2.5), rule=None)
    with pytest.raises(FreeTumorConfigError, match="found no healthy organ crop"):
        data[0]


# --- numerical faults ----------------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_a_generator_that_outputs_nan_is_rejected_by_the_gate_and_training_stays_finite(
    demo: Demo, generator, tmp_path
):
    state, meta = checkpoint.load(generator)
    broken = {
        k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state["generator"].items()
    }
    nan_gen = tmp_path / "generator_final.safetensors"
    checkpoint.save(nan_gen, {"generator": broken}, meta)
    run(
        ["nnUNetv2_train", DATASET_ID, "3d_fullres", 0, "-tr", "nnUNetTrainerFreeTumor_T05", "-device", "cpu"],
        train_env(demo, nnUNet_freetumor_generator=str(nan_gen), **ENOUGH_SAMPLES),
    )
    fold = demo.results("nnUNetTrainerFreeTumor_T05") / "fold_0"
    (s0,) = read_stats(fold)
    assert s0["synthesized"] > 0
    assert s0["nonfinite"] == s0["synthesized"] == s0["rejected"] and s0["accepted"] == 0
    weights = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)["network_weights"]
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())


# --- interruption --------------------------------------------------------------------------------------------------


def _kill_when(cmd: list, env: dict, log: Path, text: str, timeout: float = 300) -> None:
    """Start ``cmd``, SIGKILL its whole process group as soon as ``text`` appears in ``log``."""
    proc = subprocess.Popen(
        [str(c) for c in cmd], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    t0 = time.time()
    try:
        while time.time() - t0 < timeout:
            if proc.poll() is not None:
                raise AssertionError(f"{cmd[0]} ended (code {proc.returncode}) before '{text}' appeared in {log}")
            logs = list(log.parent.glob(log.name)) if "*" in log.name else ([log] if log.exists() else [])
            if any(text in p.read_text(errors="ignore") for p in logs):
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
                return
            time.sleep(0.2)
        raise AssertionError(f"'{text}' did not appear in {log} within {timeout} s")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.e2e
def test_kill_9_during_generator_training_then_c_resumes_and_finishes(demo: Demo, baseline, tmp_path):
    env = dict(demo.env, nnUNet_results=str(tmp_path))
    args = ["freetumor_train_generator", DATASET_ID, *GENERATOR_ARGS, "--gate_checkpoint", baseline]
    args[args.index("--steps") + 1] = 6
    out = tmp_path / DATASET / "FreeTumorGenerator__nnUNetPlans__3d_fullres" / "fold_0"
    _kill_when(args, env, out / "training_log.txt", "step 4:")  # step 2's checkpoint is complete by then
    assert not (out / "generator_final.safetensors").exists()
    state, meta = checkpoint.load(out / "checkpoint_latest.safetensors")  # intact after the kill
    assert meta["steps_done"] >= 2
    run([*args, "--c"], env)
    _, meta = checkpoint.load(out / "generator_final.safetensors")
    assert meta["steps_done"] == 6
    log = (out / "training_log.txt").read_text()
    assert "resumed from" in log and "step 6:" in log


@pytest.mark.e2e
def test_kill_9_during_freetumor_training_then_c_resumes_from_an_intact_checkpoint(demo: Demo, generator):
    trainer = "nnUNetTrainerHandcraftedTumor_gate"
    env = train_env(demo, nnUNet_freetumor_epochs="3")
    fold = demo.results(trainer) / "fold_0"
    cmd = ["nnUNetv2_train", DATASET_ID, "3d_fullres", 0, "-tr", trainer, "-device", "cpu"]
    _kill_when(cmd, env, fold / "training_log_*.txt", "Epoch 1 ")
    assert not (fold / "checkpoint_final.pth").exists()
    ckpt = torch.load(fold / "checkpoint_best.pth", map_location="cpu", weights_only=False)  # written atomically
    assert ckpt["current_epoch"] == 1
    run([*cmd, "--c"], env)
    assert torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)["current_epoch"] == 3
    assert [s["epoch"] for s in read_stats(fold)] == [0, 1, 2]
