"""The generator's realism monitor on hand-built inputs: known contrasts, an S that labels everything / nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nnunet_freetumor.config import FreeTumorConfig, OrganTumorPair
from nnunet_freetumor.generator.monitor import Item, RealismMonitor
from nnunet_freetumor.segmenter import FrozenSegmenter
from nnunet_freetumor.synthesis.intensity import CTNormalization

NORM = CTNormalization(mean=100.0, std=20.0, lower=-100.0, upper=300.0)
CFG = FreeTumorConfig(pairs=(OrganTumorPair(1, 2, "liver"),))
SPACING = (2.0, 2.0, 2.0)
CONTEXT = (12, 16, 16)
ORGAN_HU = 100.0


class Encoder(nn.Module):
    """Bottleneck 'features': the crop's mean and the mean of its centre (F = 2)."""

    def forward(self, x):
        centre = x[..., 4:8, 6:10, 6:10]
        return [torch.cat([x.mean((2, 3, 4), keepdim=True), centre.mean((2, 3, 4), keepdim=True)], 1)]


class ConstantS(nn.Module):
    """Logits (bg, liver, tumor) that call every voxel tumor (``tumor=True``) or liver."""

    def __init__(self, tumor: bool):
        super().__init__()
        self.tumor = tumor
        self.encoder = Encoder()
        self.dummy = nn.Parameter(torch.zeros(1))  # the monitor reads the device from a parameter

    def forward(self, x):
        logits = torch.zeros(x.shape[0], 3, *x.shape[2:])
        logits[:, 2 if self.tumor else 1] = 10.0
        return logits


def segmenter(tumor: bool) -> FrozenSegmenter:
    return FrozenSegmenter(ConstantS(tumor), (NORM,), 3, CONTEXT, (1, 1, 1), Path("S"), "test")


def item(lesion_hu: float | None, k: int) -> Item:
    """An organ filling the context (100 HU, noise seeded by ``k``), a cubic tumor mask in its centre; with
    ``lesion_hu`` the tumor is painted in (a real lesion), else it is a synthetic mask on healthy organ."""
    rng = np.random.default_rng(k)
    hu = ORGAN_HU + rng.normal(0, 2, CONTEXT).astype(np.float32)
    mask = np.zeros(CONTEXT, dtype=bool)
    r = 2
    mask[6 - r : 6 + r, 8 - r : 8 + r, 8 - r : 8 + r] = True
    if lesion_hu is not None:
        hu[mask] += lesion_hu
    labels = np.where(mask & (lesion_hu is not None), 2, 1).astype(np.int16)
    box = tuple(slice(0, n) for n in CONTEXT)
    return Item(f"case{k}", NORM.from_hu(torch.from_numpy(hu))[None], labels, mask, 1, box, edge_sigma_mm=0.01)


def darker(by_hu: float):
    """A 'generator' that makes the soft-mask region ``by_hu`` darker (Eq. 1 with a constant residual)."""

    def synth(x, soft, organ_index):
        return NORM.from_hu(NORM.to_hu(x) - by_hu * soft)

    return synth


@pytest.mark.parametrize("tumor", [True, False])
def test_monitor_reads_known_contrasts_and_what_s_labels(tumor):
    real = [item(-40.0, k) for k in range(6)]
    synthetic = [item(None, 100 + k) for k in range(20)]
    mon = RealismMonitor(synthetic, real, segmenter(tumor), NORM, CFG, SPACING)
    n, images = mon.evaluate(darker(40.0))
    assert n["real_contrast_hu"] == pytest.approx(-40.0, abs=1.5)
    assert n["synthetic_contrast_hu"] == pytest.approx(-40.0, abs=1.5)
    expected = 1.0 if tumor else 0.0  # S labels every voxel tumor / none
    assert n["synthetic_accept"] == n["real_accept"] == expected
    assert n["n_synthetic"] == 20 and n["n_real"] == 6 and n["held_out"] == 0
    # the same look: inside the same-distribution band; twice the contrast: far outside it
    assert n["fd_ref_lo"] <= n["fd"] <= n["fd_ref_hi"], n
    far, _ = mon.evaluate(darker(80.0))
    assert far["synthetic_contrast_hu"] == pytest.approx(-80.0, abs=2.0)
    assert far["fd"] > far["fd_ref_hi"]
    # an unchanged image: no contrast; a brighter one: the opposite sign
    assert mon.evaluate(darker(0.0))[0]["synthetic_contrast_hu"] == pytest.approx(0.0, abs=1.5)
    assert mon.evaluate(darker(-30.0))[0]["synthetic_contrast_hu"] == pytest.approx(30.0, abs=1.5)
    # the synthesized set is pasted into the context: outside the mask nothing changed
    for it, img in zip(synthetic, images):
        assert torch.allclose(img[0][~torch.from_numpy(it.mask)], it.image[0][~torch.from_numpy(it.mask)])


def test_monitor_s_acceptance_follows_the_gate_threshold():
    class HalfS(ConstantS):
        """Tumor only in the upper half of the first axis: P = 0.5 for masks centred on the middle."""

        def forward(self, x):
            logits = torch.zeros(x.shape[0], 3, *x.shape[2:])
            logits[:, 1] = 10.0
            logits[:, 2, : x.shape[2] // 2] = 20.0
            return logits

    segmenter = FrozenSegmenter(HalfS(True), (NORM,), 3, CONTEXT, (1, 1, 1), Path("S"), "test")
    real = [item(-40.0, k) for k in range(3)]
    for t, accepted in ((0.4, 1.0), (0.7, 0.0)):
        mon = RealismMonitor(
            [item(None, 10 + k) for k in range(8)], real, segmenter, NORM, CFG.replace(gate_threshold=t), SPACING
        )
        n, _ = mon.evaluate(darker(40.0))
        assert n["synthetic_p"] == pytest.approx(0.5, abs=0.01)
        assert n["synthetic_accept"] == accepted


def test_monitor_reports_the_held_out_real_lesions_only_when_there_are_some():
    """Validation lesions (neither S nor G saw them) are measured as the training lesions are, under their own keys;
    a run without them logs no such keys."""
    real = [item(-40.0, k) for k in range(4)]
    held_out_real = [item(-25.0, 50 + k) for k in range(3)]
    synthetic = [item(None, 100 + k) for k in range(12)]
    for tumor in (True, False):
        mon = RealismMonitor(synthetic, real, segmenter(tumor), NORM, CFG, SPACING, held_out_real=held_out_real)
        n, _ = mon.evaluate(darker(40.0))
        assert n["n_held_out_real"] == 3
        assert n["held_out_real_contrast_hu"] == pytest.approx(-25.0, abs=1.5)
        assert n["real_contrast_hu"] == pytest.approx(-40.0, abs=1.5)
        assert n["held_out_real_accept"] == (1.0 if tumor else 0.0)
        assert "3 of the validation split" in mon.describe(10)
    n, _ = RealismMonitor(synthetic, real, segmenter(True), NORM, CFG, SPACING).evaluate(darker(40.0))
    assert not any(k.startswith(("held_out_real", "n_held_out_real")) for k in n)
