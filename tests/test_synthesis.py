import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from nnunet_freetumor.config import HandcraftedConfig, WindowConfig
from nnunet_freetumor.generator.networks import build, divisor, unet_spec
from nnunet_freetumor.intensity import CTNormalization
from nnunet_freetumor.synthesis import (
    apply_residual,
    gaussian_blur3d,
    generator_synthesis,
    handcrafted_synthesis,
    handcrafted_texture,
    soft_masks,
)

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
