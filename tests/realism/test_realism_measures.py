"""realism/measures.py: what each lesion measures (the numbers of RESULTS.md's real-CT and phantom realism
sections), on hand-built volumes."""

import numpy as np
import pytest
from scipy import ndimage

from nnunet_freetumor.realism.measures import RING_MM, contrast_to_ring, lesion_measures


def lung_with_lesion(lesion_hu=-100.0, lung_hu=-850.0, body_hu=40.0, blur=0.0):
    """(z, y, x) volume at 5 x 1 x 1 mm: a lung block with a cylindrical lesion of radius 6 mm in slices 2-5, body
    outside the lung."""
    shape, sp = (8, 48, 48), (5.0, 1.0, 1.0)
    z, y, x = np.indices(shape)
    lung = (y >= 8) & (y < 40) & (x >= 8) & (x < 40)
    lesion = ((y - 24) ** 2 + (x - 24) ** 2 <= 36) & (z >= 2) & (z <= 5)
    hu = np.where(lung, lung_hu, body_hu).astype(np.float32)
    hu[lesion] = lesion_hu
    if blur:
        hu = ndimage.gaussian_filter(hu, (0, blur, blur))
    return hu, lesion, lung, sp


def test_lesion_measures_intensity_size_and_contrast_to_the_organ_ring():
    hu, lesion, lung, sp = lung_with_lesion()
    m = lesion_measures(hu, lesion, lung, sp)
    assert m["voxels"] == int(lesion.sum()) and m["volume_ml"] == pytest.approx(lesion.sum() * 5.0 / 1000)
    assert m["mean_hu"] == pytest.approx(-100) and m["sd_hu"] == pytest.approx(0, abs=1e-4)
    assert m["p5_hu"] == pytest.approx(-100) and m["p95_hu"] == pytest.approx(-100)
    assert m["ring_organ_hu"] == pytest.approx(-850) and m["contrast_hu"] == pytest.approx(750)
    assert m["contrast_hu"] == pytest.approx(contrast_to_ring(hu, lesion, lung, sp, RING_MM))
    # voxel centres 12 mm apart in-plane and 15 mm apart across the 4 slices: the longest segment is the diagonal
    assert m["diameter_mm"] == pytest.approx(np.hypot(12, 15), abs=0.5)
    # the ring is organ only: body (40 HU) within 5 mm of the lesion does not enter it
    narrow = lung & (np.abs(np.indices(lung.shape)[1] - 24) <= 9)
    body_near = np.where(narrow | lesion, hu, np.float32(40.0))
    m2 = lesion_measures(body_near, lesion, narrow, sp)
    assert m2["ring_organ_hu"] == pytest.approx(-850) and 0 < m2["ring_voxels"] < m["ring_voxels"]


def test_lesion_measures_edge_width_grows_with_blur_and_ignores_the_sign():
    sharp = lesion_measures(*lung_with_lesion())
    soft = lesion_measures(*lung_with_lesion(blur=2.0))
    dark = lesion_measures(*lung_with_lesion(lesion_hu=-950.0, lung_hu=-700.0))
    assert soft["edge_width_mm"] > 1.5 * sharp["edge_width_mm"] > 0
    assert soft["edge_gradient_hu_per_mm"] < sharp["edge_gradient_hu_per_mm"]
    assert dark["contrast_hu"] == pytest.approx(-250) and dark["edge_width_mm"] > 0


def test_lesion_measures_distance_to_another_lesion_only_when_it_is_near():
    hu, lesion, lung, sp = lung_with_lesion()
    near = np.zeros_like(lesion)
    near[3, 24, 33] = True  # 3 voxels (3 mm) right of the lesion's edge at x = 30
    far = np.zeros_like(lesion)
    far[3, 24, 0] = True  # outside the lesion's box (ring margin)
    assert lesion_measures(hu, lesion, lung, sp, other=near)["distance_to_real_lesion_mm"] == pytest.approx(3.0)
    assert lesion_measures(hu, lesion, lung, sp, other=far)["distance_to_real_lesion_mm"] is None
