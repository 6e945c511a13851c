import numpy as np
import pytest
import torch

from nnunet_freetumor.config import FreeTumorConfigError, WindowConfig
from nnunet_freetumor.synthesis.intensity import (
    CTNormalization,
    ct_normalizations,
    hu_to_window,
    normalized_to_window,
    window_to_hu,
    window_to_normalized,
)

NORM = CTNormalization(mean=95.0, std=31.5, lower=37.0, upper=130.0)  # a narrow, liver-like plan window
WIN = WindowConfig(-175, 250)


@pytest.mark.parametrize("xp", ["numpy", "torch"])
def test_normalized_hu_round_trip_is_exact_inside_the_plan_window(xp):
    hu = np.linspace(NORM.lower, NORM.upper, 101)
    if xp == "torch":
        hu = torch.from_numpy(hu)
    back = NORM.to_hu(NORM.from_hu(hu))
    np.testing.assert_allclose(np.asarray(back), np.asarray(hu), atol=1e-9)


def test_from_hu_matches_nnunet_ct_normalization_including_clipping():
    from nnunetv2.preprocessing.normalization.default_normalization_schemes import CTNormalization as NnunetCT

    props = {"mean": NORM.mean, "std": NORM.std, "percentile_00_5": NORM.lower, "percentile_99_5": NORM.upper}
    hu = np.array([-1000, 0, 37, 80, 130, 500], dtype=np.float32)
    ref = NnunetCT(intensityproperties=props).run(hu.copy())
    np.testing.assert_allclose(NORM.from_hu(hu), ref, rtol=1e-6)
    # outside the plan window the network only ever sees the window's edge
    assert NORM.to_hu(NORM.from_hu(np.float64(-1000))) == pytest.approx(NORM.lower)


def test_window_maps_to_unit_interval_and_back():
    hu = np.array([-175.0, 0.0, 250.0, 400.0])
    w = hu_to_window(hu, WIN)
    np.testing.assert_allclose(w, [0, 175 / 425, 1, 1])
    np.testing.assert_allclose(window_to_hu(w[:3], WIN), hu[:3])
    x = NORM.from_hu(np.linspace(40, 120, 9))
    np.testing.assert_allclose(window_to_normalized(normalized_to_window(x, NORM, WIN), NORM, WIN), x, atol=1e-9)


def test_non_ct_normalization_is_refused_with_a_clear_error():
    plans = {
        "configurations": {"3d_fullres": {"normalization_schemes": ["ZScoreNormalization"]}},
        "foreground_intensity_properties_per_channel": {},
    }
    with pytest.raises(FreeTumorConfigError, match="CTNormalization"):
        ct_normalizations(plans, "3d_fullres")


def test_ct_normalizations_follow_inherited_configurations():
    props = {"0": {"mean": 1.0, "std": 2.0, "percentile_00_5": -3.0, "percentile_99_5": 4.0}}
    plans = {
        "configurations": {
            "3d_fullres": {"normalization_schemes": ["CTNormalization"]},
            "3d_big": {"inherits_from": "3d_fullres"},
        },
        "foreground_intensity_properties_per_channel": props,
    }
    assert ct_normalizations(plans, "3d_big") == (CTNormalization(1.0, 2.0, -3.0, 4.0),)
