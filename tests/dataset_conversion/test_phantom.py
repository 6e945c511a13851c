"""The phantom dataset: deterministic, CT-like, lesions of the right sizes inside their organs, valid nnU-Net data."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import BIN, clean_env, run
from scipy import ndimage
from scipy.spatial.distance import pdist

from nnunet_freetumor.config import FreeTumorConfigError
from nnunet_freetumor.dataset_conversion import phantom
from nnunet_freetumor.dataset_conversion.phantom import (
    LESION_APPEARANCES,
    SIZE_CLASSES,
    TISSUES,
    make_anatomy,
    make_case,
    make_demo_dataset,
    plan_dataset,
)
from nnunet_freetumor.entrypoints import make_demo_dataset as cli

ANISO = (5.0, 1.5, 2.0)  # (z, y, x) mm: three different spacings catch any axis mix-up
SMALL = (16, 32, 32)
CUBE26 = np.ones((3, 3, 3), dtype=bool)


def lesion_components(labels: np.ndarray, info: dict, tumor_label: int = 2) -> list[tuple[dict, np.ndarray]]:
    """(info entry, boolean mask) of each lesion of ``tumor_label``, matched through the bbox in info."""
    comp, n = ndimage.label(labels == tumor_label, CUBE26)
    entries = [e for e in info["lesions"] if e["label"] == tumor_label]
    assert n == len(entries), f"{n} connected tumor components for {len(entries)} lesions"
    out = []
    for e in entries:
        counts = np.bincount(comp[tuple(slice(a, b) for a, b in e["bbox"])].ravel(), minlength=n + 1)
        counts[0] = 0
        out.append((e, comp == counts.argmax()))
    return out


def brute_diameter_mm(mask: np.ndarray, spacing) -> float:
    """Longest distance in mm between two voxel centres of ``mask`` (all pairs, independent of the package)."""
    pts = np.argwhere(mask) * np.asarray(spacing, float)
    return float(pdist(pts).max()) if len(pts) > 1 else 0.0


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def written_lesions(folder: Path, spacing, ring_mm: float = 5.0):
    """(lesion entry, image, lesion mask, organ ring) of every liver lesion of a written dataset, read from its NIfTI
    files: the ring is the liver within ``ring_mm`` (mm) outside the lesion."""
    cases = json.loads((folder / "phantom_cases.json").read_text())
    for case_id, case in cases.items():
        tag = "Tr" if case["split"] == "train" else "Ts"
        image = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / f"images{tag}" / f"{case_id}_0000.nii.gz")))
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / f"labels{tag}" / f"{case_id}.nii.gz")))
        for entry, lesion in lesion_components(labels, case):
            distance = ndimage.distance_transform_edt(~lesion, sampling=spacing)
            yield entry, image.astype(np.float64), lesion, (distance <= ring_mm) & (labels == 1)


def core_minus_rim_hu(image: np.ndarray, lesion: np.ndarray, spacing) -> float:
    """Mean HU of the lesion's deepest voxels (inner depth > half its maximum) minus that of the others."""
    depth = ndimage.distance_transform_edt(lesion, sampling=spacing)
    core = lesion & (depth > 0.5 * depth.max())
    return float(image[core].mean() - image[lesion & ~core].mean()) if (lesion & ~core).any() else float("nan")


# --- single cases ----------------------------------------------------------------------------------------------------


def test_same_seed_gives_identical_cases():
    a = make_case(SMALL, ANISO, np.random.default_rng(1), ["small", "tiny"], organs=("liver", "kidney"))
    b = make_case(SMALL, ANISO, np.random.default_rng(1), ["small", "tiny"], organs=("liver", "kidney"))
    assert a[0].dtype == np.int16 and a[1].dtype == np.uint8 and a[0].shape == a[1].shape == SMALL
    assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes() and a[2] == b[2]


def test_different_seed_changes_the_image():
    a, la, _ = make_case(SMALL, ANISO, np.random.default_rng(1), ["small"])
    b, lb, _ = make_case(SMALL, ANISO, np.random.default_rng(2), ["small"])
    assert (a != b).mean() > 0.5  # noise alone changes most voxels
    assert not np.array_equal(la, lb)  # and the anatomy moves


def test_lesions_are_inside_the_organ_and_darker_than_parenchyma():
    n = 0
    for seed in range(3):
        image, labels, info = make_case((24, 64, 64), (4.0, 2.5, 2.5), seed, ["tiny", "small", "medium", "large"])
        organ_before = make_anatomy((24, 64, 64), np.random.default_rng(seed)).labels  # same generator state
        assert set(np.unique(labels[organ_before != 1])) <= {0}  # nothing outside the liver changed label
        for entry, lesion in lesion_components(labels, info):
            assert np.all(organ_before[lesion] == 1), entry  # every tumor voxel was liver
            around = ndimage.binary_dilation(lesion, iterations=4) & ~ndimage.binary_dilation(lesion) & (labels == 1)
            assert image[lesion].mean() < image[around].mean() - 20, entry
            assert entry["n_voxels"] == lesion.sum()
            n += 1
    assert n >= 10


@pytest.mark.parametrize("size_class", list(SIZE_CLASSES))
def test_lesion_diameters_match_their_size_class_in_mm_on_anisotropic_spacing(size_class):
    lo, hi = SIZE_CLASSES[size_class]
    tol = max(ANISO)  # ~1 voxel
    for seed in range(2):
        _, labels, info = make_case((32, 96, 96), ANISO, np.random.default_rng(seed), [size_class] * 2)
        assert not info["skipped_lesions"]
        for entry, lesion in lesion_components(labels, info):
            assert entry["size_class"] == size_class  # the organ is large enough: no fallback to a smaller class
            d = brute_diameter_mm(lesion, ANISO)
            assert lo - tol <= d < hi + tol, (size_class, d)
            assert entry["longest_diameter_mm"] == pytest.approx(d, abs=0.01)
            assert entry["volume_ml"] == pytest.approx(lesion.sum() * np.prod(ANISO) / 1000, rel=1e-3)


def test_a_lesion_too_large_for_the_organ_falls_back_to_a_smaller_class_and_never_leaves_it():
    _, labels, info = make_case((16, 24, 24), (2.5, 2.5, 2.5), 0, ["large"])  # liver ~25 mm wide
    (entry,) = info["lesions"]
    assert entry["requested_class"] == "large" and entry["size_class"] != "large"
    lo, hi = SIZE_CLASSES[entry["size_class"]]
    assert lo <= brute_diameter_mm(labels == 2, (2.5,) * 3) < hi
    assert np.all(make_anatomy((16, 24, 24), np.random.default_rng(0)).labels[labels == 2] == 1)
    # a field of view of 3 mm: not even a tiny lesion fits; it is skipped and reported, nothing is drawn
    _, labels, info = make_case((16, 16, 16), (0.2, 0.2, 0.2), 0, ["tiny"])
    assert info["lesions"] == [] and info["skipped_lesions"] == [{"organ": "liver", "requested_class": "tiny"}]
    assert 2 not in labels


def test_lesions_never_overlap_or_touch():
    for seed in range(3):
        _, labels, info = make_case((24, 48, 48), (4.0, 2.5, 2.5), seed, ["medium", "small", "small", "tiny", "tiny"])
        assert len(info["lesions"]) >= 4
        lesion_components(labels, info)  # one 26-connected component per lesion (asserted inside)


def test_hu_ranges_look_like_ct():
    rng_seed = 0
    image, labels, info = make_case(rng=np.random.default_rng(rng_seed), lesion_classes=["medium"])
    anatomy = make_anatomy((32, 64, 64), np.random.default_rng(rng_seed))
    tissue = anatomy.tissue

    def median(name: str) -> float:
        return float(np.median(image[tissue == TISSUES[name]]))

    assert median("air") == pytest.approx(-1000, abs=15)
    assert -130 < median("subcutaneous_fat") < -50 and -130 < median("visceral_fat") < -50
    assert 30 < median("muscle") < 70
    assert 300 <= np.percentile(image[tissue == TISSUES["bone"]], 50) <= 700
    assert 80 <= np.median(image[labels == 1]) <= 140
    assert 160 <= median("liver_vessel") <= 200
    assert np.median(image[labels == 2]) < np.median(image[labels == 1]) - 30
    # noise: sigma 10-15 HU, slightly correlated between neighbours
    body = (tissue != TISSUES["air"]) & (labels == 1)
    healthy_image, _, healthy_info = make_case(rng=np.random.default_rng(rng_seed))
    noise = healthy_image.astype(np.float64) - anatomy.hu
    assert 9.5 < noise[body].std() < 15.5 and healthy_info["noise_sigma_hu"] == pytest.approx(noise.std(), abs=0.5)
    corr = np.corrcoef(noise[:, :, 1:].ravel(), noise[:, :, :-1].ravel())[0, 1]
    assert 0.1 < corr < 0.9


def test_healthy_cases_have_no_tumor_label():
    _, labels, info = make_case(SMALL, ANISO, 0, [])
    assert set(np.unique(labels)) == {0, 1} and info["lesions"] == [] and info["skipped_lesions"] == []
    _, labels, _ = make_case(SMALL, ANISO, 0, [], organs=("liver", "kidney"))
    assert set(np.unique(labels)) == {0, 1, 3}


def test_kidney_lesions_exist_only_with_kidneys_and_stay_in_the_kidney():
    shape, spacing = (32, 64, 64), (4.0, 2.5, 2.5)
    _, labels, info = make_case(shape, spacing, 3, ["small", "tiny"], ("liver", "kidney"), kidney_lesion_fraction=1.0)
    kidney_before = make_anatomy(shape, np.random.default_rng(3), ("liver", "kidney")).labels == 3
    assert [e["organ"] for e in info["lesions"]] == ["kidney", "kidney"] and 2 not in labels
    assert np.all(kidney_before[labels == 4]) and len(lesion_components(labels, info, tumor_label=4)) == 2
    _, labels, info = make_case(shape, spacing, 3, ["small", "tiny"], ("liver",), kidney_lesion_fraction=1.0)
    assert not np.isin(labels, [3, 4]).any() and {e["organ"] for e in info["lesions"]} == {"liver"}


def test_liver_is_on_the_patient_right_and_the_spine_posterior():
    anatomy = make_anatomy((32, 64, 64), np.random.default_rng(0))
    zl, yl, xl = np.argwhere(anatomy.labels == 1).mean(0)
    zb, yb, xb = np.argwhere(anatomy.tissue == TISSUES["bone"]).mean(0)
    assert xl < 32 - 8  # small x = patient's right with SimpleITK's identity (LPS) direction
    assert yb > 32 + 4 and abs(xb - 31.5) < 2  # posterior midline


# --- the dataset -----------------------------------------------------------------------------------------------------


def test_dataset_plan_follows_the_healthy_fraction_and_the_test_split_is_rich_in_small_lesions():
    plan = plan_dataset(n_train=20, n_test=6, healthy_fraction=0.5, seed=0)
    train = [c for c in plan if c["split"] == "train"]
    test = [c for c in plan if c["split"] == "test"]
    assert [c["case_id"] for c in train] == [f"phantom_{i:03d}" for i in range(20)]
    assert [c["case_id"] for c in test] == [f"phantom_test_{i:03d}" for i in range(6)]
    assert sum(c["healthy"] for c in train) == 10 and sum(c["healthy"] for c in test) == 1
    assert all(1 <= len(c["lesion_classes"]) <= 3 for c in train if not c["healthy"])
    assert all(2 <= len(c["lesion_classes"]) <= 4 for c in test if not c["healthy"])
    assert all(c["lesion_classes"] == [] for c in plan if c["healthy"])
    assert sum(c["healthy"] for c in plan_dataset(7, 3, 0.5, 0) if c["split"] == "train") == 4  # rounded, not floored
    assert not any(c["healthy"] for c in plan_dataset(7, 3, 0.5, 0) if c["split"] == "test")  # n_test < 4
    many = [k for c in plan_dataset(2, 600, 0.5, 1) if c["split"] == "test" for k in c["lesion_classes"]]
    share = {k: many.count(k) / len(many) for k in SIZE_CLASSES}
    assert share["tiny"] + share["small"] == pytest.approx(0.7, abs=0.04) and share["large"] < 0.14
    many = [k for c in plan_dataset(600, 0, 0.0, 1) for k in c["lesion_classes"]]
    assert all(many.count(k) / len(many) == pytest.approx(0.25, abs=0.04) for k in SIZE_CLASSES)


def test_written_dataset_has_nnunet_layout_and_geometry(tmp_path):
    folder = make_demo_dataset(tmp_path, 905, "T", n_train=4, n_test=2, shape=SMALL, spacing=ANISO)
    assert folder == tmp_path / "Dataset905_T" and sorted(p.name for p in tmp_path.iterdir()) == ["Dataset905_T"]
    ds = json.loads((folder / "dataset.json").read_text())
    assert ds["channel_names"] == {"0": "CT"} and ds["labels"] == {"background": 0, "liver": 1, "liver tumor": 2}
    assert ds["numTraining"] == 4 and ds["file_ending"] == ".nii.gz"
    cases = json.loads((folder / "phantom_cases.json").read_text())
    for split, tag, ids in (
        ("train", "Tr", [f"phantom_{i:03d}" for i in range(4)]),
        ("test", "Ts", ["phantom_test_000", "phantom_test_001"]),
    ):
        assert sorted(p.name for p in (folder / f"images{tag}").iterdir()) == [f"{i}_0000.nii.gz" for i in ids]
        assert sorted(p.name for p in (folder / f"labels{tag}").iterdir()) == [f"{i}.nii.gz" for i in ids]
        for case_id in ids:
            img = sitk.ReadImage(str(folder / f"images{tag}" / f"{case_id}_0000.nii.gz"))
            lab = sitk.ReadImage(str(folder / f"labels{tag}" / f"{case_id}.nii.gz"))
            assert img.GetSpacing() == pytest.approx(tuple(reversed(ANISO))) and img.GetSize() == tuple(reversed(SMALL))
            assert img.GetOrigin() == (0.0, 0.0, 0.0) and img.GetDirection() == pytest.approx(np.eye(3).ravel())
            assert img.GetPixelID() == sitk.sitkInt16 and lab.GetPixelID() == sitk.sitkUInt8
            assert lab.GetSize() == img.GetSize() and lab.GetSpacing() == img.GetSpacing()
            assert lab.GetOrigin() == img.GetOrigin() and lab.GetDirection() == img.GetDirection()
            labels = sitk.GetArrayFromImage(lab)
            case = cases[case_id]
            assert case["split"] == split
            assert (2 in labels) == (not case["healthy"]) and len(case["lesions"]) == ndimage.label(
                labels == 2, CUBE26
            )[1]
    assert sum(c["healthy"] for c in cases.values() if c["split"] == "train") == 2


def test_same_arguments_give_byte_identical_files_and_another_seed_differs(tmp_path):
    kw = dict(n_train=3, n_test=1, shape=SMALL, spacing=ANISO)
    a = tree_digest(make_demo_dataset(tmp_path / "a", 905, "T", seed=3, **kw))
    b = tree_digest(make_demo_dataset(tmp_path / "b", 905, "T", seed=3, **kw))
    c = tree_digest(make_demo_dataset(tmp_path / "c", 905, "T", seed=4, **kw))
    assert a == b and len(a) == 10
    assert a["imagesTr/phantom_000_0000.nii.gz"] != c["imagesTr/phantom_000_0000.nii.gz"]


def test_existing_dataset_is_refused_without_overwrite_and_no_partial_folder_is_left(tmp_path, monkeypatch):
    kw = dict(n_train=2, n_test=0, shape=SMALL)
    make_demo_dataset(tmp_path, 906, "T", **kw)
    before = tree_digest(tmp_path / "Dataset906_T")
    with pytest.raises(FreeTumorConfigError, match=r"Dataset906_T already exists: pass --overwrite"):
        make_demo_dataset(tmp_path, 906, "T", **kw)
    with pytest.raises(FreeTumorConfigError, match="Dataset906_T already uses dataset id 906"):
        make_demo_dataset(tmp_path, 906, "Other", **kw)
    # a crash half-way (here: the third file write) leaves neither a partial dataset nor a temporary folder, and the
    # existing dataset is untouched even with overwrite=True
    calls = []
    real_write = phantom._write_nifti

    def failing_write(*args):
        calls.append(args[0])
        if len(calls) == 3:
            raise RuntimeError("disk full")
        real_write(*args)

    monkeypatch.setattr(phantom, "_write_nifti", failing_write)
    with pytest.raises(RuntimeError, match="disk full"):
        make_demo_dataset(tmp_path, 906, "T", overwrite=True, seed=1, **kw)
    calls.clear()
    with pytest.raises(RuntimeError, match="disk full"):
        make_demo_dataset(tmp_path, 907, "T", **kw)
    monkeypatch.setattr(phantom, "_write_nifti", real_write)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Dataset906_T"]  # no .Dataset906_T.* / Dataset907_T
    assert tree_digest(tmp_path / "Dataset906_T") == before
    # lesions that fit nowhere: a clear error, nothing written
    with pytest.raises(ValueError, match="too small"):
        make_demo_dataset(tmp_path, 908, "T", n_train=2, n_test=0, shape=(16, 16, 16), spacing=(0.2, 0.2, 0.2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Dataset906_T"]
    make_demo_dataset(tmp_path, 906, "T", n_train=3, n_test=0, shape=SMALL, overwrite=True)
    assert json.loads((tmp_path / "Dataset906_T" / "dataset.json").read_text())["numTraining"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Dataset906_T"]


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        ({"shape": (8, 32, 32)}, "shape must be 3 integers >= 16"),
        ({"shape": (16, 32)}, "shape must be 3 integers"),
        ({"spacing": (0.0, 1.0, 1.0)}, "spacing must be 3 positive"),
        ({"spacing": (1.0, float("nan"), 1.0)}, "spacing must be 3 positive"),
        ({"healthy_fraction": 1.5}, r"healthy_fraction must be in \[0, 1\]"),
        ({"n_train": 1}, "n_train must be an integer >= 2"),
        ({"n_test": -1}, "n_test must be an integer >= 0"),
        ({"dataset_id": 0}, r"1\.\.999"),
        ({"dataset_id": 1000}, r"1\.\.999"),
        ({"organs": ("liver", "lung")}, r"unknown organ\(s\) \['lung'\]"),
        ({"organs": ("kidney",)}, "must contain 'liver'"),
        ({"seed": -1}, "seed must be an integer >= 0"),
        ({"name": "bad name"}, "dataset name"),
        ({"lesions": "isodense"}, r"unknown lesion appearance 'isodense': known appearances are \['hypodense', "),
    ],
)
def test_bad_arguments_give_clear_errors(tmp_path, kwargs, msg):
    args = {"n_train": 2, "n_test": 0, "shape": SMALL, **kwargs}
    with pytest.raises(ValueError, match=msg):
        make_demo_dataset(tmp_path, **{"dataset_id": 909, **args})
    assert not any(tmp_path.iterdir())


def test_bad_case_arguments_give_clear_errors():
    with pytest.raises(ValueError, match=r"unknown lesion size class\(es\) \['huge'\]"):
        make_case(SMALL, ANISO, 0, ["small", "huge"])
    with pytest.raises(ValueError, match="unknown organ"):
        make_case(SMALL, ANISO, 0, [], organs=("liver", "spleen"))
    with pytest.raises(ValueError, match=r"unknown lesion appearance 'Hypodense': known appearances are \['hypo"):
        make_case(SMALL, ANISO, 0, ["small"], lesions="Hypodense")


# --- lesion appearances ----------------------------------------------------------------------------------------------

APPEARANCE_DATASET = dict(n_train=6, n_test=3, shape=(24, 48, 48), seed=1)


@pytest.mark.parametrize(
    "appearance, sign, spacing",
    [
        ("hypodense", -1, (4.0, 2.5, 2.5)),
        ("hyperdense", 1, (4.0, 2.5, 2.5)),
        ("heterogeneous", -1, (4.0, 2.5, 2.5)),
        ("hyperdense", 1, ANISO),
        ("heterogeneous", -1, ANISO),
    ],
)
def test_each_lesion_appearance_is_what_it_claims_on_the_written_nifti(tmp_path, appearance, sign, spacing):
    """Per lesion: mean HU inside minus mean HU of the liver within 5 mm around it, measured on the files."""
    folder = make_demo_dataset(tmp_path, 905, "T", spacing=spacing, lesions=appearance, **APPEARANCE_DATASET)
    assert json.loads((folder / "dataset.json").read_text())["phantom"]["lesions"] == appearance
    contrasts, painted = [], []
    for entry, image, lesion, ring in written_lesions(folder, spacing):
        assert entry["appearance"] == appearance and ring.sum() >= 20
        contrast = image[lesion].mean() - image[ring].mean()
        assert sign * contrast > 0, entry  # every lesion is on its side of the parenchyma
        assert abs(contrast) < 90, entry
        if lesion.sum() >= 30:  # enough voxels for the noise (sd 10-15 HU) to average out
            assert abs(contrast) > 10, entry
        contrasts.append(contrast)
        painted.append(entry["contrast_hu"])
    assert len(contrasts) >= 10
    assert 15 < sign * np.mean(contrasts) < 90
    # contrast_hu is what was painted: partial volume and the ring's vessels take a part of it, never add to it
    assert 0.5 < np.mean(np.abs(contrasts)) / np.mean(painted) < 1.1


def test_lesion_appearances_draw_their_documented_contrasts_and_patterns():
    seen = {a: set() for a in LESION_APPEARANCES}
    runs = [(spacing, a) for spacing in [(4.0, 2.5, 2.5)] for a in LESION_APPEARANCES]
    runs.append(((2.5, 1.25, 1.25), "heterogeneous"))  # fine voxels: tiny lesions are deep enough, yet have no core
    for seed in range(3):
        for spacing, appearance in runs:
            _, _, info = make_case(
                (24, 64, 64), spacing, seed, ["large", "medium", "small", "tiny"], lesions=appearance
            )
            for e in info["lesions"]:
                assert e["appearance"] == appearance
                seen[appearance].add(e["pattern"])
                if appearance == "heterogeneous":
                    rim, core = e["rim_contrast_hu"], e["core_contrast_hu"]
                    assert 20 <= rim <= 40
                    if e["longest_diameter_mm"] < 10:
                        assert e["pattern"] == "homogeneous"
                    if e["pattern"] == "homogeneous":
                        assert core is None and e["contrast_hu"] == rim
                    else:
                        assert e["pattern"] == "core_rim" and 30 <= core - rim <= 60
                        assert rim < e["contrast_hu"] < core  # the mean over rim and core voxels
                else:
                    assert 30 <= e["contrast_hu"] <= 70 and "rim_contrast_hu" not in e
                    if e["longest_diameter_mm"] < 15:
                        assert e["pattern"] == "homogeneous"
    assert seen == {
        "hypodense": {"homogeneous", "darker_core", "rim"},
        "hyperdense": {"homogeneous", "dimmer_centre"},
        "heterogeneous": {"homogeneous", "core_rim"},
    }


def test_heterogeneous_lesions_have_a_core_darker_than_their_rim_on_the_written_nifti(tmp_path):
    kw = dict(spacing=ANISO, **APPEARANCE_DATASET)
    hetero = make_demo_dataset(tmp_path / "h", 905, "T", lesions="heterogeneous", **kw)
    hypo = make_demo_dataset(tmp_path / "d", 905, "T", lesions="hypodense", **kw)
    with_core = [
        core_minus_rim_hu(image, lesion, ANISO)
        for entry, image, lesion, _ in written_lesions(hetero, ANISO)
        if entry["pattern"] == "core_rim"
    ]
    assert len(with_core) >= 5
    assert max(with_core) < -15  # every core is clearly darker than its rim
    # homogeneous hypodense lesions (no pattern): the same measure is small in comparison
    plain = [
        core_minus_rim_hu(image, lesion, ANISO)
        for entry, image, lesion, _ in written_lesions(hypo, ANISO)
        if entry["pattern"] == "homogeneous" and entry["longest_diameter_mm"] >= 10
    ]
    assert len(plain) >= 5
    assert abs(np.mean(plain)) < 8 and np.mean(with_core) < np.mean(plain) - 25


def test_the_default_appearance_is_hypodense_byte_for_byte_and_unchanged(tmp_path):
    kw = dict(n_train=3, n_test=1, shape=SMALL, spacing=ANISO, seed=2)
    default = tree_digest(make_demo_dataset(tmp_path / "a", 905, "T", **kw))
    assert default == tree_digest(make_demo_dataset(tmp_path / "b", 905, "T", lesions="hypodense", **kw))
    assert default != tree_digest(make_demo_dataset(tmp_path / "c", 905, "T", lesions="hyperdense", **kw))
    # the hypodense phantom as it was before appearances existed (same draws in the same order)
    image, labels, info = make_case((24, 48, 48), (4.0, 2.5, 2.5), 0, ["medium", "medium", "small", "small", "tiny"])
    assert [(e["size_class"], e["pattern"], e["contrast_hu"], e["n_voxels"]) for e in info["lesions"]] == [
        ("medium", "rim", 61.4, 366),
        ("medium", "homogeneous", 57.4, 217),
        ("small", "darker_core", 62.6, 70),
        ("small", "homogeneous", 46.2, 34),
        ("tiny", "homogeneous", 50.9, 5),
    ]
    assert int(image.astype(np.int64).sum()) == -29061939
    assert {e["appearance"] for e in info["lesions"]} == {"hypodense"}


# --- the console script ----------------------------------------------------------------------------------------------


def test_cli_writes_dataset_and_prints_next_command(tmp_path):
    proc = run(
        ["freetumor_make_demo_dataset", "-d", 908, "--shape", 24, 48, 48, "--n_train", 4, "--n_test", 2, "--kidney"],
        clean_env(nnUNet_raw=str(tmp_path)),
    )
    folder = tmp_path / "Dataset908_FreeTumorDemo"
    assert f"wrote {folder}" in proc.stdout
    assert "training cases: 4 (2 healthy, 2 with lesions)" in proc.stdout and "test cases: 2 (0 healthy)" in proc.stdout
    assert proc.stdout.rstrip().endswith(
        "next: nnUNetv2_plan_and_preprocess -d 908 -c 3d_fullres --verify_dataset_integrity"
    )
    assert "note" not in proc.stdout  # nnUNet_raw is where the dataset went
    ds = json.loads((folder / "dataset.json").read_text())
    assert ds["labels"] == {"background": 0, "liver": 1, "liver tumor": 2, "kidney": 3, "kidney tumor": 4}
    assert (
        len(list((folder / "imagesTr").glob("*_0000.nii.gz"))) == 4 and len(list((folder / "labelsTs").iterdir())) == 2
    )
    assert sitk.ReadImage(str(folder / "imagesTs" / "phantom_test_000_0000.nii.gz")).GetSize() == (48, 48, 24)


def test_cli_bad_input_gives_one_error_line_and_exit_code_2(tmp_path):
    proc = run(["freetumor_make_demo_dataset", "-o", tmp_path, "--shape", 8, 32, 32], clean_env(), expect_ok=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "error: shape must be 3 integers >= 16 voxels (z, y, x), got (8, 32, 32)"
    ]
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "argv, env, msg",
    [
        ([], {}, "set the nnUNet_raw environment variable (nnU-Net's raw data folder) or pass -o RAW_ROOT"),
        (["--healthy_fraction", "-0.1"], {"nnUNet_raw": "{tmp}"}, "healthy_fraction must be in [0, 1]"),
        (["-d", "1000"], {"nnUNet_raw": "{tmp}"}, "1..999"),
        (["--n_train", "1"], {"nnUNet_raw": "{tmp}"}, "n_train must be an integer >= 2"),
        (["-o", "{tmp}/file.txt"], {}, "is not a folder"),
        (
            ["--lesions", "bright"],
            {"nnUNet_raw": "{tmp}"},
            "error: unknown lesion appearance 'bright': known appearances are "
            "['hypodense', 'hyperdense', 'heterogeneous']",
        ),
    ],
)
def test_cli_errors_in_process(tmp_path, monkeypatch, capsys, argv, env, msg):
    (tmp_path / "file.txt").write_text("x")
    monkeypatch.delenv("nnUNet_raw", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v.format(tmp=tmp_path))
    with pytest.raises(SystemExit) as e:
        cli.main([a.format(tmp=tmp_path) for a in argv] + ["--no_progress"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and msg in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_cli_lesions_flag_sets_the_appearance(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_raw", str(tmp_path))
    argv = ["-d", "911", "--shape", "24", "48", "48", "--n_train", "2", "--n_test", "2", "--no_progress"]
    assert cli.main([*argv, "--lesions", "heterogeneous"]) == 0
    folder = tmp_path / "Dataset911_FreeTumorDemo"
    assert json.loads((folder / "dataset.json").read_text())["phantom"]["lesions"] == "heterogeneous"
    lesions = [e for c in json.loads((folder / "phantom_cases.json").read_text()).values() for e in c["lesions"]]
    assert lesions and {e["appearance"] for e in lesions} == {"heterogeneous"}
    assert cli.main([*argv, "-d", "912"]) == 0  # the default
    folder = tmp_path / "Dataset912_FreeTumorDemo"
    assert json.loads((folder / "dataset.json").read_text())["phantom"]["lesions"] == "hypodense"


def test_cli_refuses_an_existing_dataset_until_overwrite(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    (tmp_path / "pre" / "Dataset910_FreeTumorDemo").mkdir(parents=True)
    argv = ["-d", "910", "--shape", "16", "32", "32", "--n_train", "2", "--n_test", "0", "--no_progress"]
    assert cli.main(argv) == 0
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2 and "Dataset910_FreeTumorDemo already exists: pass --overwrite" in capsys.readouterr().err
    assert cli.main([*argv, "--overwrite"]) == 0
    assert "plan and preprocess again" in capsys.readouterr().out  # the old preprocessed data is stale


def test_cli_help_explains_the_dataset_and_the_next_command():
    proc = run([BIN / "freetumor_make_demo_dataset", "--help"], clean_env())
    text = " ".join(proc.stdout.split())
    for needle in (
        "healthy",
        "0 background, 1 liver, 2 liver tumor",
        "3 kidney, 4 kidney tumor",
        "nnUNetv2_plan_and_preprocess -d 901 -c 3d_fullres --verify_dataset_integrity",
        "--overwrite",
        "RAW_ROOT",
        "nnUNet_raw",
        "--lesions {hypodense,hyperdense,heterogeneous}",
        *[f"{name}: {text}" for name, text in LESION_APPEARANCES.items()],
    ):
        assert needle in text, needle


# --- end to end: nnU-Net itself accepts the dataset ------------------------------------------------------------------


@pytest.mark.e2e
def test_nnunet_plan_and_preprocess_accepts_the_dataset(demo):
    """The session fixture ran nnUNetv2_plan_and_preprocess --verify_dataset_integrity on a phantom: check its plans."""
    pre = demo.preprocessed
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    assert plans["configurations"]["3d_fullres"]["spacing"] == pytest.approx([4.0, 2.5, 2.5])  # (z, y, x) as written
    assert plans["configurations"]["3d_fullres"]["normalization_schemes"] == ["CTNormalization"]
    fingerprint = json.loads((pre / "dataset_fingerprint.json").read_text())
    assert 60 < fingerprint["foreground_intensity_properties_per_channel"]["0"]["median"] < 140  # HU of liver/tumor
    assert len(list((pre / "nnUNetPlans_3d_fullres").glob("phantom_*.pkl"))) == 8
