import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from nnunet_freetumor.config import HandcraftedConfig, WindowConfig
from nnunet_freetumor.generator.networks import build, divisor, unet_spec
from nnunet_freetumor.synthesis.handcrafted import handcrafted_synthesis, handcrafted_texture
from nnunet_freetumor.synthesis.intensity import CTNormalization
from nnunet_freetumor.synthesis.masks import gaussian_blur3d, soft_masks
from nnunet_freetumor.synthesis.residual import apply_residual, generator_synthesis

NORM = CTNormalization(mean=100.0, std=30.0, lower=-100.0, upper=250.0)
ABDOMEN = WindowConfig(-175, 250, -1)


def liver_batch(b=2, shape=(16, 24, 24)):
    x = NORM.from_hu(110 + 5 * torch.randn((b, 1, *shape), generator=torch.Generator().manual_seed(0)))
    organ = torch.zeros((b, 1, *shape), dtype=torch.bool)
    organ[..., 2:14, 4:20, 4:20] = True
    mask = torch.zeros_like(organ)
    mask[..., 6:10, 9:15, 9:15] = True
    return x, organ, mask


def test_gaussian_blur_matches_scipy_inside_the_volume():
    v = np.random.default_rng(0).random((12, 20, 16)).astype(np.float32)
    ours = gaussian_blur3d(torch.from_numpy(v)[None, None], (1.0, 2.0, 0.5))[0, 0].numpy()
    ref = gaussian_filter(v, (1.0, 2.0, 0.5), mode="constant", truncate=3.0)
    np.testing.assert_allclose(ours, ref, atol=2e-3)


def test_soft_masks_stay_inside_the_organ_with_soft_edges_and_a_solid_core():
    _, organ, mask = liver_batch()
    organ[1, ..., 12:] = False  # second sample: an organ edge right next to the tumor
    soft = soft_masks(mask, organ, [1.5, 3.0], (2.0, 1.0, 1.0))
    assert soft.shape == mask.shape and soft.dtype == torch.float32
    assert soft[~organ].abs().max() == 0
    assert 0 < soft[0, 0, 8, 8, 12] < soft[0, 0, 8, 12, 12]
    assert soft[0, 0, 8, 12, 12] > 0.5
    assert soft[1, 0, 8, 12, 10] < soft[0, 0, 8, 12, 10]  # a wider sigma spreads the second mask further


@pytest.mark.parametrize("polarity", [-1, 1])
def test_residual_changes_only_the_masked_voxels_by_the_residual_in_window_units(polarity):
    x, organ, mask = liver_batch()
    soft = mask.float()
    residual = torch.full_like(x, 0.1)
    window = WindowConfig(-175, 250, polarity)
    out = apply_residual(x, soft, residual, NORM, window)
    assert torch.equal(out[~mask], x[~mask])  # bit-exact outside M
    delta_hu = (NORM.to_hu(out) - NORM.to_hu(x))[mask]
    np.testing.assert_allclose(delta_hu.numpy(), polarity * 0.1 * 425, rtol=1e-4)


def test_residual_result_is_clipped_to_the_plans_window_like_preprocessing():
    x, _, mask = liver_batch()
    out = apply_residual(x, mask.float(), torch.ones_like(x), NORM, ABDOMEN)  # -425 HU: far below p00_5
    assert torch.allclose(NORM.to_hu(out[mask]), torch.tensor(NORM.lower, dtype=out.dtype), atol=1e-3)


def test_generator_synthesis_uses_each_samples_organ_channel_and_leaves_the_rest_untouched():
    torch.manual_seed(0)
    spec = unet_spec([4, 8], in_channels=1, out_channels=2)
    g = build(spec).eval()
    x, organ, mask = liver_batch(shape=(15, 22, 21))  # not divisible by the stride: padded inside
    soft = soft_masks(mask, organ, [2.0, 2.0], (2.0, 1.0, 1.0))
    with torch.no_grad():
        a = generator_synthesis(g, x, soft, torch.tensor([0, 0]), NORM, ABDOMEN, divisor(spec))
        b = generator_synthesis(g, x, soft, torch.tensor([0, 1]), NORM, ABDOMEN, divisor(spec))
    assert a.shape == x.shape
    assert torch.equal(a[soft == 0], x[soft == 0])
    assert torch.equal(a[0], b[0]) and not torch.equal(a[1], b[1])


def test_handcrafted_texture_is_seeded_bounded_and_near_half_on_average():
    cfg = HandcraftedConfig()
    t1 = handcrafted_texture((20, 30, 30), (2.0, 1.0, 1.0), cfg, torch.Generator().manual_seed(3))
    t2 = handcrafted_texture((20, 30, 30), (2.0, 1.0, 1.0), cfg, torch.Generator().manual_seed(3))
    t3 = handcrafted_texture((20, 30, 30), (2.0, 1.0, 1.0), cfg, torch.Generator().manual_seed(4))
    assert torch.equal(t1, t2) and not torch.equal(t1, t3)
    assert t1.min() >= 0 and t1.max() <= 1
    assert 0.35 < float(t1[t1 > 0.12].mean()) < 0.7


def test_handcrafted_synthesis_darkens_by_texture_times_difference_inside_the_mask_only():
    x, organ, mask = liver_batch(b=1)
    soft = mask.float()
    out = handcrafted_synthesis(x, soft, torch.full_like(x, 0.5), 100.0, NORM, -1)
    np.testing.assert_allclose((NORM.to_hu(x) - NORM.to_hu(out))[mask].numpy(), 50.0, rtol=1e-4)
    assert torch.equal(out[~mask], x[~mask])


def test_clipped_voxels_still_pass_gradients_to_the_residual_but_values_are_exactly_clipped():
    x, _, mask = liver_batch(b=1)
    residual = torch.full_like(x, -0.5, requires_grad=True)  # +212 HU with polarity -1: above the plan's 250 HU
    out = apply_residual(x, mask.float(), residual, NORM, ABDOMEN)
    assert torch.allclose(NORM.to_hu(out[mask]), torch.tensor(NORM.upper, dtype=out.dtype), atol=1e-3)
    out[mask].sum().backward()
    assert (residual.grad[mask] != 0).all() and (residual.grad[~mask] == 0).all()


def test_crop_rule_boxes_hold_the_mask_and_its_margin_in_mm_on_anisotropic_spacing():
    from nnunet_freetumor.synthesis.boxes import CropRule

    spacing = (4.0, 2.5, 1.0)
    mask = torch.zeros((30, 60, 120), dtype=torch.bool)
    mask[10:14, 20:30, 40:70] = True  # 4 x 10 x 30 voxels = 16 x 25 x 30 mm
    rule = CropRule(margin_mm=10.0)
    box = rule.box(mask, spacing)
    sizes = [b.stop - b.start for b in box]
    assert sizes == [4 + 2 * 3, 10 + 2 * 4, 30 + 2 * 10]  # ceil(10 mm / spacing) voxels on each side
    assert int(mask[box].sum()) == int(mask.sum())
    assert [b.start for b in box] == [10 - 3, 20 - 4, 40 - 10]  # centred on the mask
    capped = CropRule(margin_mm=10.0, max_size_mm=(24.0, 30.0, 1000.0)).size(mask, spacing)
    assert capped == (6, 12, 50)  # at most 24 / 30 mm; the third axis keeps its margin
    assert CropRule(1.0, min_size_mm=(80.0, 0.0, 0.0)).size(mask, spacing)[0] == 20
    # at the array's edge the box shifts inside instead of shrinking
    edge = torch.zeros_like(mask)
    edge[0:2, 0:3, 0:3] = True
    box = rule.box(edge, spacing)
    assert [b.start for b in box] == [0, 0, 0] and [b.stop for b in box] == [2 + 6, 3 + 8, 3 + 20]
    # a batch gets the largest box any of its masks asks for
    assert rule.batch_size([mask, edge], spacing) == (10, 18, 50)
    assert CropRule.from_dict(rule.to_dict()) == rule
