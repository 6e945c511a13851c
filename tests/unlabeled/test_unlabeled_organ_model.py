"""The organ model's checks (nnunet_freetumor.unlabeled.organ_model); its predictions: the e2e test of
test_unlabeled.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from unlabeled_data import ct_case, plan, unlabeled

from nnunet_freetumor.config import FreeTumorConfigError


def fake_model(folder: Path, labels: dict[str, int]) -> Path:
    """An nnU-Net model folder whose checkpoint loads safely but holds no network (enough for the checks)."""
    import torch

    (folder / "fold_0").mkdir(parents=True)
    dj = {"channel_names": {"0": "CT"}, "labels": labels, "numTraining": 1, "file_ending": ".nii.gz"}
    (folder / "dataset.json").write_text(json.dumps(dj))
    (folder / "plans.json").write_text("{}")
    torch.save({"init_args": {}}, folder / "fold_0" / "checkpoint_final.pth")
    return folder


def test_an_organ_model_with_other_label_ids_needs_a_label_map_and_the_error_suggests_one(roots, tmp_path):
    folder = unlabeled(tmp_path / "in", {"a": ct_case(10)})
    model = fake_model(tmp_path / "organ_model", {"background": 0, "spleen": 1, "kidney": 2, "liver": 6})
    with pytest.raises(FreeTumorConfigError, match=r"labels .* differ .*: pass --label_map 6:1 \(model id"):
        plan(roots, input_folder=str(folder), organ_model=str(model))
    with pytest.raises(FreeTumorConfigError, match=r"source id\(s\) \[7\] are not labels of the organ model"):
        plan(roots, input_folder=str(folder), organ_model=str(model), label_map={7: 1})
    # the map is accepted; then nnU-Net's predictor cannot use a checkpoint without a network: one clear error
    with pytest.raises(FreeTumorConfigError, match="cannot load the organ model .*KeyError"):
        plan(roots, input_folder=str(folder), organ_model=str(model), label_map={6: 1})
