"""Visual Turing test kit (make, score) and the automated realism measure (Fréchet distance on S's features)."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnunet_freetumor.config import FreeTumorConfigError
from nnunet_freetumor.generator.networks import build, unet_spec
from nnunet_freetumor.realism.frechet import covariance, frechet_distance
from nnunet_freetumor.realism.lesions import Lesion, plan_crop, real_lesions
from nnunet_freetumor.realism.turing import axial_crop, make_kit, score
from nnunet_freetumor.segmenter import FrozenSegmenter
from nnunet_freetumor.synthesis.intensity import CTNormalization
from nnunet_freetumor.utilities.dataset import RawCase

# --- scoring --------------------------------------------------------------------------------------------------------

KEY = [("a", "synthetic"), ("b", "synthetic"), ("c", "synthetic"), ("d", "synthetic")] + [(x, "real") for x in "efghij"]


def write_csv(path: Path, header: str, rows) -> Path:
    path.write_text(header + "\n" + "".join(",".join(r) + "\n" for r in rows))
    return path


def test_score_of_a_known_answer_sheet_gives_exact_sensitivity_specificity_and_accuracy(tmp_path):
    key = write_csv(tmp_path / "key.csv", "id,truth,source_case", [(i, t, "x") for i, t in KEY])
    # 3 of 4 synthetic called synthetic, 4 of 6 real called real; order, case and spaces do not matter
    calls = {"a": "synthetic", "b": "S", "c": " Synthetic ", "d": "real"}
    calls |= {"e": "real", "f": "r", "g": "REAL", "h": "real", "i": "synthetic", "j": "s"}
    answers = write_csv(tmp_path / "answers.csv", "id,answer", sorted(calls.items(), reverse=True))
    result = score(answers, key)
    assert result["n"] == 10 and result["n_synthetic"] == 4 and result["n_real"] == 6
    assert result["sensitivity"] == 0.75
    assert result["specificity"] == pytest.approx(4 / 6)
    assert result["accuracy"] == pytest.approx(0.7)
    assert (result["synthetic_called_real"], result["real_called_synthetic"]) == (1, 2)


@pytest.mark.parametrize(
    "rows, message",
    [
        ([(i, "real") for i, _ in KEY[:-1]], "no answer for 1 id\\(s\\): j"),
        ([(i, "real") for i, _ in KEY[:-1]] + [("j", "")], "no answer for 1 id\\(s\\): j"),
        ([(i, "real") for i, _ in KEY] + [("zz", "real")], "not in the key: zz"),
        ([(i, "maybe" if i == "c" else "real") for i, _ in KEY], "got c='maybe'"),
        ([(i, "real") for i, _ in KEY] + [("a", "real")], "more than once: a"),
    ],
)
def test_score_names_missing_ids_unknown_ids_unknown_answers_and_duplicates(tmp_path, rows, message):
    key = write_csv(tmp_path / "key.csv", "id,truth", KEY)
    with pytest.raises(FreeTumorConfigError, match=message):
        score(write_csv(tmp_path / "answers.csv", "id,answer", rows), key)


def test_score_refuses_a_sheet_without_the_answer_column(tmp_path):
    key = write_csv(tmp_path / "key.csv", "id,truth", KEY)
    with pytest.raises(FreeTumorConfigError, match="needs the column"):
        score(write_csv(tmp_path / "answers.csv", "id,guess", [(i, "real") for i, _ in KEY]), key)


# --- Fréchet distance ----------------------------------------------------------------------------------------------


def reference_fd(a: np.ndarray, b: np.ndarray) -> float:
    """Independent computation: tr((S_a S_b)^(1/2)) = tr((S_a^(1/2) S_b S_a^(1/2))^(1/2)), symmetric PSD (eigh)."""

    def psd_sqrt(m):
        w, v = np.linalg.eigh(m)
        return (v * np.sqrt(np.clip(w, 0, None))) @ v.T

    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ra = psd_sqrt(ca)
    d = a.mean(0) - b.mean(0)
    return float(d @ d + np.trace(ca) + np.trace(cb) - 2 * np.trace(psd_sqrt(ra @ cb @ ra)))


@pytest.mark.parametrize("n, f", [(200, 8), (6, 32)])  # well conditioned, and N < F (singular covariances)
def test_frechet_distance_of_identical_sets_is_zero_and_it_is_symmetric(n, f):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(n, f)) * rng.uniform(0.5, 3, size=f)
    b = rng.normal(size=(n + 3, f)) + 0.3
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-6)
    assert frechet_distance(torch.from_numpy(a), b) == pytest.approx(frechet_distance(a, b))


def test_frechet_distance_matches_an_independent_computation():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6))
    b = rng.normal(size=(250, 6)) * 2 + 1
    assert frechet_distance(a, b) == pytest.approx(reference_fd(a, b), rel=1e-6)


@pytest.mark.parametrize("n, f", [(100, 8), (5, 64)])
def test_frechet_distance_grows_monotonically_with_a_mean_shift_by_its_square(n, f):
    rng = np.random.default_rng(2)
    a = rng.normal(size=(n, f))
    shifts = [0.0, 0.25, 0.5, 1.0, 2.0, 4.0]
    fds = [frechet_distance(a, a + s) for s in shifts]
    assert all(x < y for x, y in zip(fds, fds[1:]))
    np.testing.assert_allclose(fds, [f * s**2 for s in shifts], rtol=1e-5, atol=1e-5)  # |shift vector|^2


def test_frechet_distance_refuses_too_few_samples_and_mismatched_features():
    with pytest.raises(ValueError, match="at least 2 samples"):
        frechet_distance(np.zeros((1, 4)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="same F"):
        frechet_distance(np.zeros((3, 4)), np.zeros((3, 5)))


def test_shrinkage_makes_a_small_sample_covariance_full_rank_and_keeps_its_trace():
    feats = np.random.default_rng(3).normal(size=(5, 20))
    plain, shrunk = covariance(feats), covariance(feats, shrinkage=0.2)
    assert np.linalg.matrix_rank(plain) == 4 and np.linalg.matrix_rank(shrunk) == 20
    assert np.trace(shrunk) == pytest.approx(np.trace(plain))
    assert np.isfinite(frechet_distance(feats, feats + 1, shrinkage=0.2))


# --- features of the frozen segmenter ------------------------------------------------------------------------------


def tiny_segmenter(divisor=(4, 4, 4)) -> FrozenSegmenter:
    torch.manual_seed(0)
    net = build(unet_spec((4, 8, 16), 1, 3)).eval()
    norm = CTNormalization(100.0, 25.0, 20.0, 190.0)
    return FrozenSegmenter(net, (norm,), 3, (16, 16, 16), divisor, Path("tiny"), "tiny")


def test_segmenter_features_are_the_global_average_of_the_deepest_skip_on_s_normalized_input():
    segmenter = tiny_segmenter()
    hu = 100.0 + 60.0 * torch.randn(5, 1, 16, 16, 16)
    feats = segmenter.features(hu, batch_size=2)
    with torch.no_grad():
        expected = segmenter.network.encoder(segmenter.normalizations[0].from_hu(hu))[-1].mean(dim=(2, 3, 4))
    assert feats.shape == (5, 16)
    torch.testing.assert_close(feats, expected, rtol=1e-4, atol=1e-5)
    odd = segmenter.features(100.0 + torch.randn(2, 1, 15, 13, 16))  # padded to the stride
    assert odd.shape == (2, 16) and torch.isfinite(odd).all()


# --- lesions, crops and the kit ------------------------------------------------------------------------------------


def write_image(path: Path, array: np.ndarray, spacing_zyx) -> Path:
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(tuple(reversed(spacing_zyx)))
    sitk.WriteImage(img, str(path))
    return path


def test_real_lesions_are_the_tumor_components_with_their_centres_and_tiny_ones_are_left_out(tmp_path):
    labels = np.zeros((10, 30, 30), np.uint8)
    labels[1:9, 2:28, 2:28] = 1
    labels[3:6, 5:8, 5:8] = 2  # 27 voxels, centre (4, 6, 6)
    labels[7, 20:22, 20] = 2  # 2 voxels: too small
    write_image(tmp_path / "c_lab.nii.gz", labels, (2.0, 1.0, 1.0))
    lesions = real_lesions([RawCase("c", tmp_path / "c_img.nii.gz", tmp_path / "c_lab.nii.gz")], (2,))
    assert [(les.kind, les.case, les.centre, les.voxels) for les in lesions] == [("real", "c", (4, 6, 6), 27)]


def test_plan_crop_is_tumor_centred_at_the_target_spacing_and_size():
    image = np.full((20, 80, 60), -100, np.int16)
    image[9:12, 38:43, 20:25] = 300  # bright 'lesion' around (10, 40, 22)
    crop = plan_crop(image, (2.0, 1.0, 1.0), (10, 40, 22), (0, 2, 1), (4.0, 2.0, 2.0), (8, 16, 12))
    assert crop.shape == (8, 16, 12)  # plan axis order: file axes (0, 2, 1)
    peak = np.unravel_index(int(crop.argmax()), crop.shape)
    assert all(abs(p - s / 2) <= 1.5 for p, s in zip(peak, crop.shape))
    edge = plan_crop(image, (2.0, 1.0, 1.0), (0, 0, 0), (0, 1, 2), (2.0, 1.0, 1.0), (4, 6, 6))
    assert edge.shape == (4, 6, 6) and float(edge.min()) == -100  # padded with the image minimum


def test_axial_crop_has_the_requested_millimetres_per_pixel_on_anisotropic_images():
    image = np.full((5, 100, 50), -1000, np.float32)
    image[2, 40:60, 15:35] = 100  # a 20 x 20 voxel square: 10 mm x 20 mm at spacing (y 0.5, x 1.0)
    crop = axial_crop(image, (3.0, 0.5, 1.0), (2, 50, 25), fov_mm=40, size_px=80)
    rows, cols = np.nonzero(crop > 0)
    assert crop.shape == (80, 80)
    assert rows.max() - rows.min() + 1 == pytest.approx(20, abs=2)  # 10 mm at 0.5 mm per pixel
    assert cols.max() - cols.min() + 1 == pytest.approx(40, abs=2)  # 20 mm


def lesions_on_disk(tmp_path: Path, kind: str, n: int, level: float) -> list[Lesion]:
    out = []
    for i in range(n):
        image = np.full((6, 40, 40), 100, np.float32)
        image[2:4, 15:25, 15:25] = level
        path = write_image(tmp_path / f"{kind}_{i}.nii.gz", image, (3.0, 1.0, 1.0))
        out.append(Lesion(kind, f"{kind}_case_{i}", path, (3, 20, 20), 200))
    return out


def test_make_kit_writes_blinded_shuffled_same_sized_pngs_a_separate_key_and_an_empty_answer_sheet(tmp_path):
    real = lesions_on_disk(tmp_path, "real", 3, 40.0)
    synthetic = lesions_on_disk(tmp_path, "synthetic", 5, 60.0)
    kit = tmp_path / "kit"
    info = make_kit(real, synthetic, kit, (-175.0, 250.0), n=4, seed=0, fov_mm=32, size_px=64)
    assert (info["n"], info["n_real"], info["n_synthetic"]) == (7, 3, 4)  # only 3 real exist
    pngs = sorted(kit.glob("*.png"))
    assert [p.name for p in pngs] == [f"case_{i:03d}.png" for i in range(7)]
    assert {mpimg.imread(p).shape[:2] for p in pngs} == {(64, 64)}
    with open(kit / "key" / "answer_key.csv") as f:
        key = list(csv.DictReader(f))
    with open(kit / "answers_template.csv") as f:
        template = list(csv.DictReader(f))
    assert [r["id"] for r in template] == [r["id"] for r in key] and all(r["answer"] == "" for r in template)
    assert sorted(r["truth"] for r in key) == ["real"] * 3 + ["synthetic"] * 4
    assert [r["truth"] for r in key] != sorted(r["truth"] for r in key)  # shuffled
    assert not any("real" in p.name or "synthetic" in p.name for p in kit.iterdir())  # nothing gives it away
    # one HU window for all: the same lesion intensity is the same grey in every image
    level = {r["id"]: mpimg.imread(kit / f"{r['id']}.png")[32, 32, 0] for r in key}
    assert len({round(float(v), 3) for i, v in level.items() if key[int(i[-3:])]["truth"] == "real"}) == 1
    with pytest.raises(FreeTumorConfigError, match="--overwrite"):
        make_kit(real, synthetic, kit, (-175.0, 250.0), n=4)
    same = make_kit(real, synthetic, kit, (-175.0, 250.0), n=4, seed=0, fov_mm=32, size_px=64, overwrite=True)
    with open(kit / "key" / "answer_key.csv") as f:
        assert list(csv.DictReader(f)) == key and same == info  # the seed fixes selection and order
    with pytest.raises(FreeTumorConfigError, match="no accepted synthetic tumor"):
        make_kit(real, [], tmp_path / "kit2", (-175.0, 250.0))
