import numpy as np
import pytest
import torch
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform
from batchgeneratorsv2.transforms.utils.pseudo2d import Convert2DTo3DTransform
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_freetumor.config import FreeTumorConfig, OrganTumorPair
from nnunet_freetumor.labels import apply_tumor_labels, tumor_label_lut
from nnunet_freetumor.synthesis.intensity import CTNormalization
from nnunet_freetumor.training.transform import TumorSynthesisTransform, insert_after_spatial, split_mask_channel

NORM = CTNormalization(mean=100.0, std=30.0, lower=-50.0, upper=200.0)
SPACING = (2.0, 1.0, 1.0)
CFG = FreeTumorConfig(pairs=(OrganTumorPair(1, 2, "liver"),), p_synthesis=1.0)


def crop(real_tumor=False, shape=(24, 48, 48)):
    """A liver-like organ at 110 HU in a -1 padded crop, nnU-Net normalized."""
    grid = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    organ = sum(((g - n / 2) / (n / 3)) ** 2 for g, n in zip(grid, shape)) <= 1
    seg = np.where(organ, 1, 0).astype(np.int16)
    seg[:, :, :2] = -1
    if real_tumor:
        seg[12, 24, 24] = 2
    hu = np.where(organ, 110.0, -20.0) + np.random.default_rng(0).normal(0, 5, shape)
    img = NORM.from_hu(hu).astype(np.float32)
    return {"image": torch.from_numpy(img[None]), "segmentation": torch.from_numpy(seg[None])}


def run(t, data, seed=0):
    np.random.seed(seed)
    return t(**{k: v.clone() for k, v in data.items()})


def test_crop_with_a_real_tumor_is_never_touched():
    data = crop(real_tumor=True)
    out = run(TumorSynthesisTransform(CFG, SPACING, handcrafted=True, normalizations=(NORM,)), data)
    assert torch.equal(out["image"], data["image"])
    assert torch.equal(out["segmentation"][:1], data["segmentation"])
    assert not out["segmentation"][1].any()


def test_mask_mode_appends_an_organ_id_channel_inside_the_organ_and_leaves_the_image():
    data = crop()
    out = run(TumorSynthesisTransform(CFG, SPACING), data)
    seg, mask = out["segmentation"][0], out["segmentation"][1]
    assert out["segmentation"].shape[0] == 2 and out["segmentation"].dtype == torch.int16
    assert mask.any() and set(mask.unique().tolist()) == {0, 1}
    assert (seg[mask > 0] == 1).all()
    assert torch.equal(out["image"], data["image"]) and torch.equal(seg, data["segmentation"][0])


def test_handcrafted_mode_darkens_the_tumor_labels_it_and_changes_nothing_outside_the_organ():
    data = crop()
    out = run(TumorSynthesisTransform(CFG, SPACING, handcrafted=True, normalizations=(NORM,)), data)
    seg, mask = out["segmentation"][0], out["segmentation"][1] > 0
    before_hu = NORM.to_hu(data["image"][0])
    after_hu = NORM.to_hu(out["image"][0])
    assert (seg[mask] == 2).all() and (seg[~mask] == data["segmentation"][0][~mask]).all()
    drop = (before_hu - after_hu)[mask].mean()
    assert 10 < drop < 145  # a darker tumor, by a textured fraction of the drawn 65-145 HU
    organ = data["segmentation"][0] == 1
    assert torch.equal(out["image"][0][~organ], data["image"][0][~organ])


def test_probability_zero_never_synthesizes():
    out = run(
        TumorSynthesisTransform(CFG.replace(p_synthesis=0.0), SPACING, handcrafted=True, normalizations=(NORM,)), crop()
    )
    assert not out["segmentation"][1].any()


def test_same_numpy_seed_gives_bit_identical_handcrafted_samples():
    t = TumorSynthesisTransform(CFG, SPACING, handcrafted=True, normalizations=(NORM,))
    a, b, c = run(t, crop(), 3), run(t, crop(), 3), run(t, crop(), 4)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["segmentation"], b["segmentation"])
    assert not torch.equal(a["image"], c["image"])


def test_deep_supervision_masks_update_every_scale_like_downsampling_the_updated_full_res_target():
    data = run(TumorSynthesisTransform(CFG, SPACING), crop(shape=(24, 48, 40)))
    ds = DownsampleSegForDSTransform(ds_scales=[[1, 1, 1], [1, 0.5, 0.5], [0.5, 0.25, 0.25]])
    targets = [t[None] for t in ds(segmentation=data["segmentation"].clone())["segmentation"]]
    labels, masks = split_mask_channel(targets)
    lut = torch.from_numpy(tumor_label_lut(CFG))
    updated = [apply_tumor_labels(lab, m, lut) for lab, m in zip(labels, masks)]
    reference = ds(segmentation=updated[0][0].clone())["segmentation"]
    for u, r in zip(updated, reference):
        assert torch.equal(u[0], r)
    assert (updated[0] == 2).any()


@pytest.mark.parametrize("dummy_2d", [False, True])
def test_synthesis_is_inserted_right_after_the_spatial_transform_of_nnunets_pipeline(dummy_2d):
    tr = nnUNetTrainer.get_training_transforms(
        (24, 48, 48), (-0.5, 0.5), [[1, 1, 1], [0.5, 0.5, 0.5]], (0, 1, 2), dummy_2d
    )
    new = TumorSynthesisTransform(CFG, SPACING)
    insert_after_spatial(tr.transforms, new)
    i = tr.transforms.index(new)
    prev = tr.transforms[i - 1]
    assert isinstance(prev, Convert2DTo3DTransform if dummy_2d else SpatialTransform)
    # and the whole pipeline runs, giving every deep-supervision scale the extra channel
    np.random.seed(0)
    out = tr(**crop())
    assert [t.shape[0] for t in out["segmentation"]] == [2, 2]
