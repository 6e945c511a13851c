import json

import numpy as np
import pytest
import torch
from conftest import clean_env, run

from nnunet_freetumor import env
from nnunet_freetumor.config import FreeTumorConfig, FreeTumorConfigError, OrganTumorPair
from nnunet_freetumor.labels import (
    apply_tumor_labels,
    config_for_dataset,
    has_healthy_organ,
    healthy_organs,
    infer_pairs,
    tumor_label_lut,
)


@pytest.mark.parametrize(
    "labels, expected",
    [
        ({"background": 0, "liver": 1, "liver tumor": 2}, [(1, 2)]),
        ({"background": 0, "Liver": 1, "Liver_Tumour": 2}, [(1, 2)]),
        ({"background": 0, "liver": 1, "cancer": 2}, [(1, 2)]),  # MSD Task03
        ({"background": 0, "kidney": 1, "tumor": 2}, [(1, 2)]),  # KiTS19
        ({"background": 0, "liver": 1, "liver tumor": 2, "kidney": 3, "kidney-lesion": 4}, [(1, 2), (3, 4)]),
        ({"background": 0, "pancreas_tumor": 5, "pancreas": 3, "spleen": 9}, [(3, 5)]),
    ],
)
def test_pairs_are_inferred_from_dataset_json_names(labels, expected):
    assert [(p.organ, p.tumor) for p in infer_pairs({"labels": labels})] == expected


@pytest.mark.parametrize(
    "labels",
    [
        {"background": 0, "liver": 1, "spleen": 2},  # no tumor label
        {"background": 0, "liver": 1, "kidney": 2, "tumor": 3},  # bare tumor, two organs: ambiguous
        {"background": 0, "lung tumor": 1},  # tumor without its organ
        {"background": 0, "whole": [1, 2], "core": 2},  # regions
    ],
)
def test_unmatched_labels_give_one_clear_error_naming_the_fix(labels):
    with pytest.raises(FreeTumorConfigError, match="freetumor_config"):
        infer_pairs({"labels": labels})


def test_config_json_round_trip_is_verbatim(tmp_path):
    cfg = FreeTumorConfig(pairs=(OrganTumorPair(1, 2, "liver"), OrganTumorPair(3, 4, "kidney")), p_synthesis=0.3)
    cfg.save(tmp_path / "c.json")
    back = FreeTumorConfig.load(tmp_path / "c.json")
    assert back == cfg
    assert json.loads((tmp_path / "c.json").read_text()) == json.loads(json.dumps(cfg.to_dict()))


@pytest.mark.parametrize(
    "change, msg",
    [
        ({"p_synthesis": 1.5}, "p_synthesis"),
        ({"gate_threshold": -0.1}, "gate_threshold"),
        ({"pairs": (OrganTumorPair(1, 1),)}, "differ"),
        ({"pairs": ()}, "no organ"),
    ],
)
def test_invalid_config_values_are_refused(change, msg):
    base = FreeTumorConfig(pairs=(OrganTumorPair(1, 2),))
    with pytest.raises(FreeTumorConfigError, match=msg):
        base.replace(**change)


def test_unknown_config_keys_are_refused(tmp_path):
    d = FreeTumorConfig(pairs=(OrganTumorPair(1, 2),)).to_dict()
    d["p_synthesys"] = 0.1
    (tmp_path / "c.json").write_text(json.dumps(d))
    with pytest.raises(FreeTumorConfigError, match="p_synthesys"):
        FreeTumorConfig.load(tmp_path / "c.json")


def test_config_resolution_order_env_then_preprocessed_folder_then_inference(tmp_path):
    ds = {"labels": {"background": 0, "liver": 1, "liver tumor": 2, "kidney": 3, "kidney tumor": 4}}
    cfg, source = config_for_dataset(ds, tmp_path, environ={})
    assert source == "inferred from dataset.json" and len(cfg.pairs) == 2
    FreeTumorConfig(pairs=(OrganTumorPair(3, 4),), p_synthesis=0.2).save(tmp_path / "freetumor_config.json")
    cfg, source = config_for_dataset(ds, tmp_path, environ={})
    assert cfg.pairs == (OrganTumorPair(3, 4),) and source.endswith("freetumor_config.json")
    FreeTumorConfig(pairs=(OrganTumorPair(1, 2),), p_synthesis=0.9).save(tmp_path / "env.json")
    cfg, _ = config_for_dataset(ds, tmp_path, environ={env.CONFIG: str(tmp_path / "env.json")})
    assert cfg.p_synthesis == 0.9
    with pytest.raises(FreeTumorConfigError, match="does not exist"):
        config_for_dataset(ds, tmp_path, environ={env.CONFIG: str(tmp_path / "missing.json")})


def test_configured_label_ids_must_exist_in_dataset_json(tmp_path):
    FreeTumorConfig(pairs=(OrganTumorPair(5, 6),)).save(tmp_path / "freetumor_config.json")
    with pytest.raises(FreeTumorConfigError, match=r"\[5, 6\]"):
        config_for_dataset({"labels": {"background": 0, "liver": 1, "liver tumor": 2}}, tmp_path, environ={})


def test_only_organs_without_their_tumor_are_candidates():
    cfg = FreeTumorConfig(pairs=(OrganTumorPair(1, 2), OrganTumorPair(3, 4)))
    seg = np.zeros((10, 10, 10), np.int16)
    seg[:5] = 1
    seg[5:] = 3
    assert healthy_organs(seg, cfg) == [1, 3]
    seg[0, 0, 0] = 2  # one real liver-tumor voxel: the liver is not healthy in this crop
    assert healthy_organs(seg, cfg) == [3]
    seg[5:] = 0
    seg[5, 0, :3] = 3  # too few kidney voxels
    assert healthy_organs(torch.from_numpy(seg), cfg) == []


def test_a_batch_has_candidates_exactly_where_its_crops_have_healthy_organs():
    cfg = FreeTumorConfig(pairs=(OrganTumorPair(1, 2), OrganTumorPair(3, 4)))
    rng = np.random.default_rng(0)
    crops = torch.from_numpy(rng.choice([0, 1, 3], size=(6, 1, 8, 8, 8), p=[0.9, 0.05, 0.05]).astype(np.int16))
    crops[1, 0, 0, 0, 0] = 2  # a liver tumor: the liver is no candidate there
    crops[2] = 0  # no organ at all
    crops[3, 0, :4] = 1  # a large liver
    expected = [bool(healthy_organs(c[0], cfg)) for c in crops]
    assert has_healthy_organ(crops, cfg).tolist() == expected
    assert False in expected and True in expected


def test_label_update_sets_tumor_labels_only_inside_accepted_masks_and_keeps_real_tumors():
    cfg = FreeTumorConfig(pairs=(OrganTumorPair(1, 2), OrganTumorPair(3, 4)))
    seg = torch.zeros((2, 1, 4, 4, 4), dtype=torch.int16)
    seg[:, :, :2] = 1
    seg[:, :, 2:] = 3
    seg[:, :, 0, 0, 0] = 2  # a real tumor voxel
    mask = torch.zeros_like(seg)
    mask[:, :, 1, 1:3, 1:3] = 1
    mask[:, :, 3, 0, 0] = 3
    lut = torch.from_numpy(tumor_label_lut(cfg))
    out = apply_tumor_labels(seg, mask, lut, accept=torch.tensor([True, False]))
    assert out.dtype == seg.dtype
    assert torch.equal(out[1], seg[1])  # rejected sample unchanged
    assert (out[0][mask[0] == 1] == 2).all() and (out[0][mask[0] == 3] == 4).all()
    assert out[0, 0, 0, 0, 0] == 2
    assert torch.equal(out[0][mask[0] == 0], seg[0][mask[0] == 0])


def test_size_classes_from_the_command_line_and_a_clear_error_for_a_bad_one(capsys):
    from nnunet_freetumor.entrypoints.config_cli import parse_size_class

    c = parse_size_class("small:5-10")
    assert (c.name, c.radius_mm, c.weight) == ("small", (5.0, 10.0), 1.0)
    assert parse_size_class("large:20-30:0.5").weight == 0.5
    for bad in ("small", "small:5", "small:a-b", ":5-10", "small:5-10:x:y"):
        with pytest.raises(SystemExit):
            parse_size_class(bad)
        assert "NAME:RMIN-RMAX" in capsys.readouterr().err


def test_freetumor_config_before_preprocessing_names_the_command_and_writes_nothing(tmp_path):
    """The raw dataset exists, the preprocessed one not yet: one line that names nnUNetv2_plan_and_preprocess."""
    dirs = {k: tmp_path / k for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for d in dirs.values():
        d.mkdir()
    raw = dirs["nnUNet_raw"] / "Dataset977_Raw"
    raw.mkdir()
    labels = {"background": 0, "liver": 1, "liver tumor": 2}
    (raw / "dataset.json").write_text(
        json.dumps({"labels": labels, "channel_names": {"0": "CT"}, "numTraining": 0, "file_ending": ".nii.gz"})
    )
    proc = run(["freetumor_config", "-d", "977", "--write"], clean_env(dirs), expect_ok=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "not preprocessed yet" in proc.stderr and "nnUNetv2_plan_and_preprocess -d 977" in proc.stderr
    assert list(dirs["nnUNet_preprocessed"].iterdir()) == []
