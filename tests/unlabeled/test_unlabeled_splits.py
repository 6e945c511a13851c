"""The merged dataset's fold split (nnunet_freetumor.unlabeled.splits)."""

from __future__ import annotations

import json
import shutil

import pytest
from unlabeled_data import SRC, add, ct_case, unlabeled

from nnunet_freetumor.config import FreeTumorConfigError
from nnunet_freetumor.unlabeled.splits import SPLITS, add_to_splits, nnunet_default_split


def test_splits_get_new_cases_in_every_training_list_and_nnunets_default_split_is_reproduced():
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    splits = [{"train": ["a", "b"], "val": ["c"]}, {"train": ["a", "c"], "val": ["b"]}]
    out = add_to_splits(splits, ["u_x", "u_y"])
    assert out == [{"train": ["a", "b", "u_x", "u_y"], "val": ["c"]}, {"train": ["a", "c", "u_x", "u_y"], "val": ["b"]}]
    assert splits[0]["train"] == ["a", "b"]  # input untouched
    with pytest.raises(FreeTumorConfigError, match="fold 0 already lists"):
        add_to_splits(splits, ["c"])
    with pytest.raises(FreeTumorConfigError, match="not an nnU-Net split"):
        add_to_splits({"train": []}, ["x"])
    ids = [f"case_{i}" for i in range(7)]
    expected = generate_crossval_split(sorted(ids), seed=12345, n_splits=5)
    assert nnunet_default_split(ids[::-1]) == [{"train": list(s["train"]), "val": list(s["val"])} for s in expected]


def test_new_cases_join_every_folds_training_list_and_never_a_validation_list(roots, tmp_path):
    raw, pre = roots["raw"] / SRC, roots["pre"] / SRC
    splits = nnunet_default_split([f"case_{i}" for i in range(5)])
    (pre / SPLITS).write_text(json.dumps(splits))
    (raw / SPLITS).write_text(json.dumps(splits))  # nnU-Net's planner checks a raw split against the preprocessed one
    folder = unlabeled(tmp_path / "in", {"a": ct_case(10), "b": ct_case(11)}, masks=tmp_path / "masks")
    result = add(roots, input_folder=str(folder), organ_masks=str(tmp_path / "masks"))
    for path in (pre / SPLITS, raw / SPLITS):
        new = json.loads(path.read_text())
        assert [s["val"] for s in new] == [s["val"] for s in splits]
        assert [s["train"] for s in new] == [s["train"] + ["unlabeled_a", "unlabeled_b"] for s in splits]
    assert sorted(result.split_files) == sorted([pre / SPLITS, raw / SPLITS])
    assert "training list of every fold and in no validation list" in result.split_note


def test_make_split_writes_nnunets_split_of_the_existing_cases_plus_the_new_ones_in_training(roots, tmp_path):
    folder = unlabeled(tmp_path / "in", {"a": ct_case(10)}, masks=tmp_path / "masks")
    shutil.rmtree(roots["pre"] / SRC)  # not planned yet
    add(roots, input_folder=str(folder), organ_masks=str(tmp_path / "masks"), make_split=True)
    written = json.loads((roots["pre"] / SRC / SPLITS).read_text())
    expected = nnunet_default_split([f"case_{i}" for i in range(5)])
    assert [s["val"] for s in written] == [s["val"] for s in expected]
    assert [s["train"] for s in written] == [s["train"] + ["unlabeled_a"] for s in expected]
