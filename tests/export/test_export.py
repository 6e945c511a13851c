"""Offline synthesis export (freetumor_synthesize): resampling, synthesis in a box, the gate, the exported dataset."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import DATASET, DATASET_ID, Demo, run
from torch import nn

from nnunet_freetumor.config import FreeTumorConfig, FreeTumorConfigError, OrganTumorPair
from nnunet_freetumor.export.box import BoxGenerator, generator_box, handcrafted_box
from nnunet_freetumor.export.export import OfflineExport
from nnunet_freetumor.export.log import SYNTHESIS_LOG
from nnunet_freetumor.export.request import ExportRequest
from nnunet_freetumor.generator.networks import build, divisor, unet_spec
from nnunet_freetumor.segmenter import FrozenSegmenter
from nnunet_freetumor.synthesis.boxes import synthesis_box
from nnunet_freetumor.synthesis.intensity import CTNormalization
from nnunet_freetumor.synthesis.masks import soft_masks
from nnunet_freetumor.synthesis.pipeline import judge
from nnunet_freetumor.synthesis.resample import resample, resample_mask, size_at_spacing
from nnunet_freetumor.utilities.dataset import raw_training_cases
from nnunet_freetumor.utilities.files import staged_folder
from nnunet_freetumor.utilities.image_io import write_like

CFG = FreeTumorConfig(pairs=(OrganTumorPair(1, 2, "liver"),))
PLAN_NORM = CTNormalization(mean=100.0, std=25.0, lower=20.0, upper=190.0)


def smooth_field(shape, spacing) -> torch.Tensor:
    """A smooth function of the physical position (mm), sampled at voxel centres."""
    axes = [(torch.arange(n, dtype=torch.float64) + 0.5) * s for n, s in zip(shape, spacing)]
    z, y, x = torch.meshgrid(*axes, indexing="ij")
    return (100 + 20 * torch.sin(z / 25) * torch.cos(y / 30) + 0.1 * x).float()


def liver_box(shape=(12, 40, 40), spacing=(2.5, 1.0, 1.0), seed=0):
    """(HU box, organ, tumor mask, soft mask) of a textured 'liver' with a ball-shaped tumor mask."""
    g = torch.Generator().manual_seed(seed)
    hu = 110 + 8 * torch.randn(shape, generator=g)
    organ = torch.zeros(shape, dtype=torch.bool)
    organ[1:-1, 4:-4, 4:-4] = True
    idx = torch.stack(torch.meshgrid(*[torch.arange(n) for n in shape], indexing="ij")).float()
    centre = torch.tensor([n // 2 for n in shape]).view(3, 1, 1, 1)
    dist_mm = (((idx - centre) * torch.tensor(spacing).view(3, 1, 1, 1)) ** 2).sum(0).sqrt()
    mask = (dist_mm <= 8.0) & organ
    soft = soft_masks(mask[None, None], organ[None, None], [2.0], spacing)[0, 0]
    return hu, organ, mask, soft


class ConstantGenerator(nn.Module):
    """G(x) = c everywhere, one channel per organ: tanh(c) is the residual before the blur."""

    def __init__(self, c: float, channels: int = 1):
        super().__init__()
        self.c, self.channels = c, channels

    def forward(self, x):
        return torch.full((x.shape[0], self.channels, *x.shape[2:]), self.c)


class ThresholdSegmenter(nn.Module):
    """Logits (background, liver, tumor): 'tumor' where the normalized input is below ``threshold``."""

    def __init__(self, threshold: float):
        super().__init__()
        self.threshold = threshold
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        tumor = (x < self.threshold).float()
        return torch.cat([torch.zeros_like(x), 0.5 * torch.ones_like(x), tumor], 1)


def stub_segmenter(threshold: float) -> FrozenSegmenter:
    return FrozenSegmenter(
        ThresholdSegmenter(threshold), (PLAN_NORM,), 3, (16, 32, 32), (1, 1, 1), Path("stub"), "stub"
    )


# --- geometry ------------------------------------------------------------------------------------------------------


def test_size_at_spacing_keeps_the_physical_extent():
    assert size_at_spacing((30, 100, 100), (2.5, 0.7, 0.7), (1.5, 1.5, 1.5)) == (50, 47, 47)
    assert size_at_spacing((3, 2, 2), (1.0, 1.0, 1.0), (10.0, 10.0, 10.0)) == (1, 1, 1)  # never empty


@pytest.mark.parametrize("native, plan", [((2.5, 0.8, 0.8), (1.5, 1.5, 1.5)), ((1.0, 1.0, 1.0), (4.0, 2.5, 2.5))])
def test_resampling_a_smooth_box_to_the_plan_spacing_and_back_recovers_it(native, plan):
    shape = (24, 60, 60)
    x = smooth_field(shape, native)
    size = size_at_spacing(shape, native, plan)
    there = resample(x[None, None], size)
    back = resample(there, shape)[0, 0]
    assert there.shape[2:] == size and back.shape == x.shape
    # the plan-spacing samples are the same physical function (alignment: outer faces fixed)
    np.testing.assert_allclose(
        there[0, 0].numpy(), smooth_field(size, np.array(shape) * native / size).numpy(), atol=2.0
    )
    inner = (slice(2, -2),) * 3  # trilinear interpolation of a smooth field: small errors away from the faces
    assert float((back - x)[inner].abs().max()) < 1.5
    assert float((back - x).abs().mean()) < 0.3


def test_resampling_at_the_same_size_is_the_identity_bit_for_bit():
    x = torch.randn(1, 1, 5, 6, 7)
    assert resample(x, (5, 6, 7)) is x


def test_a_tiny_mask_survives_resampling_to_a_coarser_grid_and_a_ball_keeps_its_volume():
    tiny = torch.zeros(20, 20, 20, dtype=torch.bool)
    tiny[7, 7, 7] = True
    assert int(resample_mask(tiny, (5, 5, 5)).sum()) == 1
    _, _, ball, _ = liver_box(shape=(30, 40, 40), spacing=(1.0, 1.0, 1.0))
    coarse = resample_mask(ball, (15, 20, 20))
    assert abs(int(coarse.sum()) * 8 - int(ball.sum())) / int(ball.sum()) < 0.15


def test_synthesis_box_holds_the_generator_crop_in_mm_and_the_mask_with_its_margin():
    mask = np.zeros((40, 200, 200), dtype=bool)
    mask[18:22, 90:110, 150:170] = True
    spacing = (5.0, 0.75, 0.75)
    box = synthesis_box(mask, spacing, min_size_mm=(96 * 1.5,) * 3, margin_mm=24.0)
    size_mm = [(b.stop - b.start) * s for b, s in zip(box, spacing)]
    assert all(mm >= 96 * 1.5 for mm in size_mm)
    assert box[2].stop <= 200 and box[2].start >= 0  # shifted to stay inside the image
    for b, (lo, hi), s, n in zip(box, [(18, 22), (90, 110), (150, 170)], spacing, mask.shape):
        assert b.start <= lo - np.ceil(24 / s) or b.start == 0
        assert b.stop >= hi + np.ceil(24 / s) or b.stop == n
    small = synthesis_box(mask, spacing, (0, 0, 0), 10.0)  # no generator: just the mask and its margin
    assert [b.stop - b.start for b in small] == [4 + 2 * 2, 20 + 2 * 14, 20 + 2 * 14]


# --- synthesis in a box --------------------------------------------------------------------------------------------


def at_plan_spacing(network: nn.Module) -> BoxGenerator:
    """A generator trained at the box's own spacing (2.5, 1, 1) with the plan's normalization, no size constraint."""
    return BoxGenerator(network, (2.5, 1.0, 1.0), PLAN_NORM, (1, 1, 1))


@pytest.mark.parametrize("generator_spacing", [(2.5, 1.0, 1.0), (1.5, 1.5, 1.5)])
def test_generator_box_changes_only_voxels_inside_the_soft_mask(generator_spacing):
    hu, organ, mask, soft = liver_box()
    torch.manual_seed(0)
    spec = unet_spec((4, 8), 1, 1)
    net = build(spec).eval()
    gen = BoxGenerator(net, generator_spacing, PLAN_NORM, divisor(spec))
    out, plan_hu = generator_box(gen, hu, soft, 0, (2.5, 1.0, 1.0), CFG)
    assert out.shape == hu.shape and out.dtype == torch.float32
    assert torch.equal(out[soft == 0], hu[soft == 0])  # bit-identical outside the soft mask
    assert bool((out[mask] != hu[mask]).all())  # every tumor voxel changed
    assert not bool((out != hu)[~organ].any())
    assert plan_hu.shape == size_at_spacing(hu.shape, (2.5, 1.0, 1.0), generator_spacing)


def test_generator_box_difference_is_the_soft_mask_times_the_residual_and_is_not_clipped_by_the_plan_window():
    hu, organ, mask, soft = liver_box()
    g = ConstantGenerator(10.0)  # tanh -> 1: the residual is one window width (425 HU), darker (polarity -1)
    out, plan_hu = generator_box(at_plan_spacing(g), hu, soft, 0, (2.5, 1.0, 1.0), CFG)
    core = mask.clone()
    core[:3], core[-3:] = False, False  # the 7-tap blur of tanh(G) is 1 away from the box faces
    expected = hu - 425.0 * soft
    np.testing.assert_allclose(out[core].numpy(), expected[core].numpy(), atol=1e-3)
    assert float(out[core].min()) < PLAN_NORM.lower - 200  # far below the plan's clip window: kept in HU
    assert torch.equal(plan_hu, out)  # equal spacings: the plan-spacing result is the native one


def test_generator_box_feeds_the_generator_the_plan_window_clipped_input_it_was_trained_on():
    hu, _, _, soft = liver_box()
    hu[0, 0, 0] = 3000.0  # bone-bright voxel outside the plan window
    seen = {}

    class Spy(ConstantGenerator):
        def forward(self, x):
            seen["x"] = x.clone()
            return super().forward(x)

    generator_box(at_plan_spacing(Spy(0.0)), hu, soft, 0, (2.5, 1.0, 1.0), CFG)
    window = (PLAN_NORM.upper - CFG.window.hu_min) / (CFG.window.hu_max - CFG.window.hu_min)
    assert float(seen["x"][0, 0, 0, 0, 0]) == pytest.approx(window)  # clipped to 190 HU, then windowed


def test_handcrafted_box_darkens_inside_the_soft_mask_only():
    hu, organ, mask, soft = liver_box()
    out = handcrafted_box(hu, soft, (2.5, 1.0, 1.0), CFG, np.random.default_rng(0))
    assert torch.equal(out[soft == 0], hu[soft == 0])
    lo, hi = CFG.handcrafted.hu_difference
    diff = (hu - out)[mask]
    assert float(diff.min()) > 0 and float(diff.max()) <= hi
    again = handcrafted_box(hu, soft, (2.5, 1.0, 1.0), CFG, np.random.default_rng(0))
    assert torch.equal(out, again)  # all randomness comes from the rng


def p_of(segmenter: FrozenSegmenter, hu: torch.Tensor, mask: torch.Tensor) -> float:
    return float(judge(segmenter.segment_hu(hu[None, None]), mask[None, None], (2,), 0.7)[0][0])


def test_the_gate_on_an_hu_box_is_the_share_of_mask_voxels_the_segmenter_calls_tumor():
    hu = torch.full((8, 16, 16), 110.0)
    mask = torch.zeros_like(hu, dtype=torch.bool)
    mask[2:6, 4:12, 4:12] = True  # 256 voxels
    dark = mask.clone()
    dark[2:6, 4:12, 4:8] = False  # 128 of them dark
    hu[dark] = 40.0
    segmenter = stub_segmenter(PLAN_NORM.from_hu(torch.tensor(60.0)).item())
    assert p_of(segmenter, hu, mask) == pytest.approx(0.5)
    assert p_of(segmenter, hu, dark) == pytest.approx(1.0)


# --- files and folders ---------------------------------------------------------------------------------------------


def test_staged_folder_leaves_nothing_behind_on_error_and_replaces_the_target_on_success(tmp_path):
    target = tmp_path / "Dataset950_X"
    with pytest.raises(RuntimeError), staged_folder(target) as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    target.mkdir()
    (target / "old.txt").write_text("old")
    with staged_folder(target) as tmp:
        (tmp / "new.txt").write_text("new")
        assert (target / "old.txt").is_file()  # the old one stays until the new one is complete
    assert [p.name for p in tmp_path.iterdir()] == ["Dataset950_X"]
    assert [p.name for p in target.iterdir()] == ["new.txt"]


def test_write_like_keeps_the_source_geometry(tmp_path):
    ref = sitk.GetImageFromArray(np.zeros((4, 5, 6), np.int16))
    ref.SetSpacing((0.7, 0.8, 2.5))
    ref.SetOrigin((-10.0, 20.0, 5.0))
    ref.SetDirection((0, 1, 0, 1, 0, 0, 0, 0, -1))
    write_like(np.ones((4, 5, 6), np.float32), ref, tmp_path / "x.nii.gz")
    out = sitk.ReadImage(str(tmp_path / "x.nii.gz"))
    assert out.GetSpacing() == pytest.approx(ref.GetSpacing()) and out.GetOrigin() == pytest.approx(ref.GetOrigin())
    assert out.GetDirection() == pytest.approx(ref.GetDirection())
    assert out.GetPixelID() == sitk.sitkFloat32


def test_raw_training_cases_refuse_datasets_nnunet_does_not_read_with_simpleitk(tmp_path):
    with pytest.raises(FreeTumorConfigError, match="SimpleITK"):
        raw_training_cases(tmp_path, {"file_ending": ".png", "channel_names": {"0": "R"}})
    with pytest.raises(FreeTumorConfigError, match="single-channel"):
        raw_training_cases(tmp_path, {"file_ending": ".nii.gz", "channel_names": {"0": "CT", "1": "PET"}})


# --- the export on a hand-made dataset (no trained models) ---------------------------------------------------------

SRC = "Dataset990_Mini"
SPACING_ZYX = (3.0, 1.5, 1.2)
SHAPE_ZYX = (14, 36, 30)


def write_mini_dataset(root: Path, transpose_forward=(0, 2, 1)) -> tuple[Path, Path]:
    """Three cases (two healthy, one with a tumor) in nnU-Net raw format and a minimal plans file whose axis order
    is not the file's (so every transposition is exercised)."""
    raw, pre = root / "raw", root / "pre"
    folder = raw / SRC
    for sub in ("imagesTr", "labelsTr"):
        (folder / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        labels = np.zeros(SHAPE_ZYX, np.uint8)
        labels[2:12, 6:30, 5:25] = 1
        image = np.full(SHAPE_ZYX, -50, np.int16)
        image[labels == 1] = 105
        image = (image + rng.normal(0, 8, SHAPE_ZYX)).astype(np.int16)
        if i == 2:
            labels[6:9, 14:20, 10:16] = 2
            image[labels == 2] = 60
        for arr, name in ((image, f"imagesTr/case_{i}_0000.nii.gz"), (labels, f"labelsTr/case_{i}.nii.gz")):
            img = sitk.GetImageFromArray(arr)
            img.SetSpacing(SPACING_ZYX[::-1])
            img.SetOrigin((1.0, 2.0, 3.0))
            sitk.WriteImage(img, str(folder / name))
    dj = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "liver": 1, "liver tumor": 2},
        "numTraining": 3,
        "file_ending": ".nii.gz",
        "name": SRC,
    }
    (folder / "dataset.json").write_text(json.dumps(dj))
    tf = list(transpose_forward)
    plans = {
        "dataset_name": SRC,
        "plans_name": "nnUNetPlans",
        "transpose_forward": tf,
        "transpose_backward": [tf.index(i) for i in range(3)],
        "foreground_intensity_properties_per_channel": {
            "0": {"mean": 100.0, "std": 25.0, "percentile_00_5": 20.0, "percentile_99_5": 190.0}
        },
        "configurations": {
            "3d_fullres": {
                "data_identifier": "nnUNetPlans_3d_fullres",
                "patch_size": [SHAPE_ZYX[i] for i in tf],
                "spacing": [SPACING_ZYX[i] for i in tf],
                "normalization_schemes": ["CTNormalization"],
                "architecture": {"network_class_name": "x", "arch_kwargs": {}, "_kw_requires_import": []},
            }
        },
    }
    (pre / SRC).mkdir(parents=True)
    (pre / SRC / "nnUNetPlans.json").write_text(json.dumps(plans))
    return raw, pre


def read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def check_export_against_source(out: Path, src: Path, n_expected: int) -> list[dict]:
    """Every exported case: tumor labels only on changed voxels inside the source organ, everything else identical
    (values and geometry), the synthetic-mask file equal to the new tumor voxels; returns the log's cases."""
    log = json.loads((out / SYNTHESIS_LOG).read_text())
    assert len(log["cases"]) == n_expected
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == n_expected
    for c in log["cases"]:
        s = c["source_case"]
        img0, lab0 = read(src / "imagesTr" / f"{s}_0000.nii.gz"), read(src / "labelsTr" / f"{s}.nii.gz")
        img1, lab1 = read(out / c["image"]), read(out / c["label"])
        syn = read(out / c["synthetic_mask"]).astype(bool)
        changed = img1 != img0.astype(img1.dtype)
        new_tumor = (lab1 == c["tumor_label"]) & (lab0 != c["tumor_label"])
        assert img1.dtype == np.float32 and changed.any()
        assert np.array_equal(new_tumor, syn) and int(syn.sum()) == c["mask_voxels"]
        assert not (new_tumor & ~changed).any()  # tumor labels only where the image changed
        assert not (changed & (lab0 != c["organ"])).any()  # nothing changes outside the organ
        assert np.array_equal(lab1[~syn], lab0[~syn])
        assert tuple(np.round(np.argwhere(syn).mean(0)).astype(int)) == tuple(c["centre_voxel"])
        a, b = sitk.ReadImage(str(out / c["image"])), sitk.ReadImage(str(src / "imagesTr" / f"{s}_0000.nii.gz"))
        assert a.GetSpacing() == pytest.approx(b.GetSpacing()) and a.GetOrigin() == pytest.approx(b.GetOrigin())
        assert (out / "synthesis_png" / f"{c['case']}.png").is_file()
    return log["cases"]


def test_handcrafted_export_writes_labels_only_where_the_image_changed_and_refuses_to_overwrite(tmp_path, monkeypatch):
    monkeypatch.delenv("nnUNet_freetumor_config", raising=False)
    raw, pre = write_mini_dataset(tmp_path)
    req = ExportRequest(dataset=SRC, out_id=991, method="handcrafted", n_per_case=2, seed=3)
    result = OfflineExport(req, raw, pre, None).run(progress=False)
    out = raw / "Dataset991_Mini_handcrafted"
    assert result.folder == out and result.skipped_cases == ["case_2"]  # the tumor case is not healthy
    cases = check_export_against_source(out, raw / SRC, n_expected=4)
    assert [c["case"] for c in cases] == ["case_0_syn00", "case_0_syn01", "case_1_syn00", "case_1_syn01"]
    assert all(c["gate_p"] is None and c["accepted"] for c in cases)
    assert sorted(p.name for p in raw.iterdir()) == [SRC, out.name]  # no temporary folder left

    with pytest.raises(FreeTumorConfigError, match="--overwrite"):
        OfflineExport(req, raw, pre, None)
    again = OfflineExport(replace(req, overwrite=True), raw, pre, None).run(progress=False)
    assert [c["mask_voxels"] for c in again.written] == [c["mask_voxels"] for c in cases]  # same seed, same data

    every = ExportRequest(dataset=SRC, out_id=992, method="handcrafted", cases="all")
    assert len(OfflineExport(every, raw, pre, None).run(progress=False).written) == 3  # the tumor case too
    with pytest.raises(FreeTumorConfigError, match="already uses dataset id 991"):
        OfflineExport(replace(req, name="Other"), raw, pre, None)


@pytest.mark.parametrize("threshold, accepted", [(-1e9, 0), (1e9, 2)])
def test_the_gate_keeps_only_tumors_the_segmenter_sees_and_an_all_rejected_export_writes_nothing(
    tmp_path, monkeypatch, threshold, accepted
):
    monkeypatch.delenv("nnUNet_freetumor_config", raising=False)
    raw, pre = write_mini_dataset(tmp_path)
    export = OfflineExport(ExportRequest(dataset=SRC, out_id=993, method="handcrafted"), raw, pre, None)
    export.synthesizer.segmenter = stub_segmenter(
        threshold
    )  # -1e9: nothing is tumor (P = 0); 1e9: everything is (P = 1)
    if not accepted:
        with pytest.raises(FreeTumorConfigError, match="rejected every synthetic tumor.*Nothing was written"):
            export.run(progress=False)
        assert sorted(p.name for p in raw.iterdir()) == [SRC]
        return
    result = export.run(progress=False)
    assert [c["gate_p"] for c in result.written] == [1.0] * accepted and not result.rejected
    check_export_against_source(result.folder, raw / SRC, accepted)


def test_the_export_refuses_unplanned_datasets_unknown_configurations_and_missing_generators(tmp_path):
    raw, pre = write_mini_dataset(tmp_path)
    with pytest.raises(FreeTumorConfigError, match="nnUNetv2_plan_and_preprocess"):
        OfflineExport(ExportRequest(dataset=SRC, out_id=994, plans="OtherPlans"), raw, pre, None)
    with pytest.raises(FreeTumorConfigError, match="configuration '2d' is not in"):
        OfflineExport(ExportRequest(dataset=SRC, out_id=994, configuration="2d"), raw, pre, None)
    with pytest.raises(FreeTumorConfigError, match="freetumor_train_generator"):
        OfflineExport(ExportRequest(dataset=SRC, out_id=994), raw, pre, tmp_path / "results")
    with pytest.raises(FreeTumorConfigError, match="source dataset's id"):
        OfflineExport(ExportRequest(dataset=SRC, out_id=990, method="handcrafted"), raw, pre, None)


@pytest.mark.parametrize(
    "change, message", [("origin", "has origin"), ("spacing", "has spacing"), ("size", "has size")]
)
def test_a_label_file_off_its_images_grid_is_refused_naming_the_case_before_anything_is_written(
    tmp_path, change, message
):
    raw, pre = write_mini_dataset(tmp_path)
    path = raw / SRC / "labelsTr" / "case_1.nii.gz"
    img = sitk.ReadImage(str(path))
    if change == "size":
        img = img[:, :, :-1]
    elif change == "origin":
        img.SetOrigin((1.0, 2.0, 4.0))
    else:
        img.SetSpacing((1.2, 1.5, 2.5))
    sitk.WriteImage(img, str(path))
    req = ExportRequest(dataset=SRC, out_id=995, method="handcrafted", n_per_case=1, seed=0)
    with pytest.raises(
        FreeTumorConfigError, match=f"case case_1: the label file .*{message}.*verify_dataset_integrity"
    ):
        OfflineExport(req, raw, pre, None).run(progress=False)
    assert sorted(p.name for p in raw.iterdir()) == [SRC]


# --- end to end: the console scripts on the phantom, with the trained models ---------------------------------------


def _export_checks(demo: Demo, out_name: str, n_expected: int) -> list[dict]:
    return check_export_against_source(demo.dirs["nnUNet_raw"] / out_name, demo.raw, n_expected)


@pytest.mark.e2e
def test_synthesize_exports_verify_with_nnunet_and_feed_the_turing_kit_and_the_frechet_distance(
    demo: Demo, baseline, generator, tmp_path
):
    raw = demo.dirs["nnUNet_raw"]
    n_healthy = sum(
        c["healthy"]
        for c in json.loads((demo.raw / "phantom_cases.json").read_text()).values()
        if c["split"] == "train"
    )
    gen = run(
        ["freetumor_synthesize", "-d", DATASET_ID, "-o", 950, "--gate", "--gate_threshold", 0, "--no_progress"],
        demo.env,
    )
    assert f"wrote {n_healthy} synthetic case(s)" in gen.stdout
    hand = run(
        ["freetumor_synthesize", "-d", DATASET_ID, "-o", 951, "--method", "handcrafted", "--no_progress"], demo.env
    )
    assert "handcrafted" in hand.stdout
    cases = _export_checks(demo, "Dataset950_FreeTumorDemo_generator", n_healthy)
    assert all(0.0 <= c["gate_p"] <= 1.0 for c in cases)  # the gate ran (T = 0 keeps everything)
    _export_checks(demo, "Dataset951_FreeTumorDemo_handcrafted", n_healthy)

    refused = run(["freetumor_synthesize", "-d", DATASET_ID, "-o", 950, "--no_progress"], demo.env, expect_ok=False)
    assert refused.returncode == 2 and "already exists: pass --overwrite" in refused.stderr
    assert "Traceback" not in refused.stderr

    # nnU-Net accepts the export (the handcrafted one is written by the same code)
    run(
        [
            "nnUNetv2_plan_and_preprocess",
            "-d",
            950,
            "-c",
            "3d_fullres",
            "--verify_dataset_integrity",
            "-np",
            1,
            "-npfp",
            1,
        ],
        demo.env,
    )

    kit = tmp_path / "kit"
    run(["freetumor_turing", "make", "-d", DATASET_ID, "--synthetic", 950, "-o", kit, "--n", 3], demo.env)
    with open(kit / "key" / "answer_key.csv") as f:
        key = list(csv.DictReader(f))
    assert sorted(p.name for p in kit.glob("case_*.png")) == [f"case_{i:03d}.png" for i in range(len(key))]
    assert {r["truth"] for r in key} == {"real", "synthetic"}
    answers = tmp_path / "answers.csv"
    answers.write_text("id,answer\n" + "".join(f"{r['id']},synthetic\n" for r in key))  # calls everything synthetic
    run(["freetumor_turing", "score", answers, "--key", kit / "key" / "answer_key.csv"], demo.env)
    score = json.loads((tmp_path / "answers_score.json").read_text())
    n_syn = sum(r["truth"] == "synthetic" for r in key)
    assert (score["sensitivity"], score["specificity"]) == (1.0, 0.0)
    assert score["accuracy"] == pytest.approx(n_syn / len(key))

    fid = run(
        [
            "freetumor_turing",
            "fid",
            "-d",
            DATASET_ID,
            "--synthetic",
            raw / "Dataset950_FreeTumorDemo_generator",
            "-f",
            0,
            "-o",
            tmp_path / "fid.json",
        ],
        demo.env,
    )
    report = json.loads((tmp_path / "fid.json").read_text())
    assert np.isfinite(report["frechet_distance"]) and report["frechet_distance"] >= 0
    assert report["n_synthetic"] == n_healthy and report["n_features"] > 0
    assert f"N synthetic {n_healthy}" in fid.stdout and f"F {report['n_features']}" in fid.stdout
    assert DATASET in report["dataset"]
