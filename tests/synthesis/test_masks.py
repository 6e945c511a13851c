import numpy as np
import pytest
import torch

from nnunet_freetumor.config import DEFAULT_SIZE_CLASSES, MaskConfig
from nnunet_freetumor.synthesis.masks import centre_candidates, deformed_ellipsoid, relative_depth, sample_tumor_mask

ANISO = (3.0, 1.5, 0.8)  # mm per axis, deliberately different


def ellipsoid_organ(shape, centre, radii):
    grid = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1


def extent_mm(mask, spacing):
    idx = np.argwhere(mask)
    return (idx.max(0) - idx.min(0) + 1) * np.asarray(spacing)


@pytest.mark.parametrize("size_class", DEFAULT_SIZE_CLASSES, ids=lambda c: c.name)
def test_mask_extent_in_mm_matches_its_size_class_on_anisotropic_spacing(size_class):
    # an organ far larger than the largest tumor, with the centre kept > 60 mm (largest radius) from its boundary,
    # so clipping never interferes
    shape = (64, 128, 236)
    organ = np.zeros(shape, bool)
    organ[1:-1, 1:-1, 1:-1] = True
    cfg = MaskConfig(deform_fraction=(0.0, 0.0), erosion_mm=61.0, center_extent=(0.0, 1.0))
    rng = np.random.default_rng(1)
    for _ in range(3):
        m = sample_tumor_mask(organ, ANISO, cfg, rng, size_class=size_class)
        ext = extent_mm(m, ANISO)
        lo, hi = 2 * size_class.radius_mm[0], 2 * size_class.radius_mm[1]
        # every axis spans a diameter of the class, within one voxel of that axis
        assert np.all(ext >= lo - np.array(ANISO)), (size_class.name, ext)
        assert np.all(ext <= hi + np.array(ANISO)), (size_class.name, ext)


def test_same_mm_config_gives_same_physical_size_on_different_spacings():
    cfg = MaskConfig(deform_fraction=(0.0, 0.0), erosion_mm=0.0, center_extent=(0.5, 0.5))
    cls = DEFAULT_SIZE_CLASSES[2]
    vols = []
    for spacing in [(1.0, 1.0, 1.0), (2.5, 0.7, 0.7)]:
        shape = tuple(int(120 / s) for s in spacing)
        m = sample_tumor_mask(np.ones(shape, bool), spacing, cfg, np.random.default_rng(7), size_class=cls)
        vols.append(m.sum() * np.prod(spacing))
    assert vols[0] == pytest.approx(vols[1], rel=0.1)


def test_masks_stay_inside_the_organ_and_centres_avoid_its_boundary():
    shape = (40, 80, 80)
    organ = ellipsoid_organ(shape, (20, 40, 40), (12, 30, 25))
    cfg = MaskConfig()
    rng = np.random.default_rng(0)
    for _ in range(20):
        m = sample_tumor_mask(organ, (2.0, 1.0, 1.0), cfg, rng)
        assert m is not None and m.any()
        assert not (m & ~organ).any()
    pts = centre_candidates(organ, (2.0, 1.0, 1.0), cfg)
    from scipy.ndimage import distance_transform_edt

    dist = distance_transform_edt(organ, sampling=(2.0, 1.0, 1.0))
    assert np.all(dist[tuple(pts.T)] > cfg.erosion_mm)
    zs = np.nonzero(organ.any((1, 2)))[0]
    rel = (pts[:, 0] - zs[0]) / (zs[-1] - zs[0])
    assert rel.min() >= 0.3 - 1 / (zs[-1] - zs[0]) and rel.max() <= 0.7 + 1 / (zs[-1] - zs[0])


def test_thin_organ_falls_back_to_any_organ_voxel_and_empty_organ_gives_none():
    organ = np.zeros((10, 20, 20), bool)
    organ[5, 10, 5:15] = True  # a one-voxel-thin line: erosion removes everything
    m = sample_tumor_mask(organ, (1.0, 1.0, 1.0), MaskConfig(), np.random.default_rng(0))
    assert m is not None and not (m & ~organ).any()
    assert sample_tumor_mask(np.zeros((10, 20, 20), bool), (1, 1, 1), MaskConfig(), np.random.default_rng(0)) is None


def test_same_seed_same_mask_and_deformation_changes_the_shape():
    organ = np.ones((30, 60, 60), bool)
    cfg = MaskConfig()
    a = sample_tumor_mask(organ, (2, 1, 1), cfg, np.random.default_rng(5))
    b = sample_tumor_mask(organ, (2, 1, 1), cfg, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    plain = deformed_ellipsoid((10, 10, 10), (1, 1, 1), 0.0, np.random.default_rng(0))
    bumpy = deformed_ellipsoid((10, 10, 10), (1, 1, 1), 2.5, np.random.default_rng(0))
    inner = tuple(slice((b - a) // 2, (b - a) // 2 + a) for a, b in zip(plain.shape, bumpy.shape))
    assert (bumpy[inner] != plain).sum() > 0.05 * plain.sum()


def test_relative_depth_is_zero_outside_one_at_the_deepest_voxels_and_a_core_sits_inside_a_rim_at_any_size():
    soft = torch.zeros(2, 1, 24, 24, 24)
    big = torch.from_numpy(ellipsoid_organ((24, 24, 24), (12, 12, 12), (10, 10, 10)))
    small = torch.from_numpy(ellipsoid_organ((24, 24, 24), (12, 12, 12), (3, 3, 3)))
    soft[0, 0][big] = 1.0
    soft[1, 0][small] = 0.45  # a tiny tumor's blurred mask peaks below 0.5: inside = soft >= half the peak
    soft[1, 0][~small] = 0.2  # a blurred edge below that counts as outside
    depth = relative_depth(soft)
    assert depth.shape == soft.shape and torch.all(depth[0, 0][~big] == 0) and torch.all(depth[1, 0][~small] == 0)
    assert depth[0].max() == 1.0 and depth[1].max() == 1.0  # relative to each tumor's own deepest voxel
    assert depth[0, 0, 12, 12, 12] == 1.0 and 0 < depth[0, 0, 12, 12, 2] < 0.2  # centre deepest, edge shallow
    for d, m in ((depth[0, 0], big), (depth[1, 0], small)):
        core = d > 0.5
        assert 0 < core.sum() < m.sum()
        idx = torch.nonzero(core)
        lo, hi = idx.min(0).values, idx.max(0).values
        assert torch.all(lo > 12 - 10) and torch.all(hi < 12 + 10)  # the core never reaches the edge: a rim remains
    assert torch.equal(relative_depth(torch.zeros(1, 1, 5, 5, 5)), torch.zeros(1, 1, 5, 5, 5))  # no tumor: zeros


def _depth_by_erosion_until_empty(inside: torch.Tensor) -> torch.Tensor:
    """Reference: erode until nothing is left (one host synchronisation per erosion)."""
    cur, depth = inside.float(), torch.zeros(inside.shape)
    while bool(cur.any()):
        depth += cur
        cur = -torch.nn.functional.max_pool3d(-torch.nn.functional.pad(cur, (1,) * 6), kernel_size=3, stride=1)
    return depth / depth.flatten(1).amax(1).clamp_min(1.0).view(-1, 1, 1, 1, 1)


def test_relative_depth_runs_as_many_erosions_as_the_deepest_tumor_needs_on_odd_shapes():
    g = torch.Generator().manual_seed(0)
    soft = torch.zeros(4, 1, 9, 20, 14)
    soft[0, 0] = (torch.rand(9, 20, 14, generator=g) > 0.3).float()  # ragged, touches the box's faces
    soft[1, 0, 1:8, 2:18, 3:11] = 1.0  # a slab: depth limited by its thinnest axis (z: 7 slices -> 4)
    soft[2, 0, 2:7, 2:18, 2:12] = 1.0
    soft[2, 0, 3:6, 8:12, 2:12] = 0.0  # a tunnel through it: non-convex
    soft[3, 0] = 1.0  # the whole box
    expected = _depth_by_erosion_until_empty(soft >= 0.5)
    assert torch.equal(relative_depth(soft), expected)
    slab = relative_depth(soft[1:2])[0, 0]  # 7 slices thick in z: depth 4 at its middle slice, exactly (n + 1) // 2
    assert slab[4, 10, 7] == 1.0 and slab[1, 10, 7] == 0.25 and slab[3, 10, 7] == 0.75


def test_control_grid_upsampling_equals_scipy_zoom_cubic_spline():
    from scipy.ndimage import zoom

    from nnunet_freetumor.synthesis.masks import upsample_control

    rng = np.random.default_rng(3)
    for shape in [(5, 9, 13), (3, 4, 5), (41, 41, 25), (7, 60, 8)]:
        control = rng.normal(0.0, 2.0, size=(4, 4, 4))
        ref = zoom(control, np.array(shape) / 4.0, order=3, mode="nearest", grid_mode=True)
        out = upsample_control(control, shape)
        assert out.shape == ref.shape == shape
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-10)
