"""The phantom dataset: deterministic, CT-like, lesions of the right sizes inside their organs, valid nnU-Net data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import clean_env, run
from scipy.ndimage import binary_dilation, label

from nnunet_freetumor.evaluation import longest_diameter_mm
from nnunet_freetumor.phantom import SIZE_CLASSES, make_case, make_demo_dataset

SPACING = (4.0, 2.5, 2.0)


def test_same_seed_gives_identical_cases_and_another_seed_differs():
    a = make_case(rng=np.random.default_rng(1), lesion_classes=["small"])
    b = make_case(rng=np.random.default_rng(1), lesion_classes=["small"])
    c = make_case(rng=np.random.default_rng(2), lesion_classes=["small"])
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("cls", list(SIZE_CLASSES))
def test_lesions_have_their_class_diameter_in_mm_lie_inside_the_liver_and_are_darker(cls):
    shape = (40, 96, 96)
    for seed in range(3):
        image, labels, info = make_case(shape, SPACING, np.random.default_rng(seed), [cls])
        if info["skipped_lesions"]:
            continue  # the class did not fit this liver: allowed, and reported
        lesion = labels == 2
        lo, hi = SIZE_CLASSES[cls]
        assert lo <= longest_diameter_mm(lesion, SPACING) < hi
        assert info["lesions"][0]["longest_diameter_mm"] == pytest.approx(longest_diameter_mm(lesion, SPACING), 0.01)
        # embedded in the liver: its shell is mostly liver (it may touch the liver's surface, as real tumors do)
        ring = binary_dilation(lesion) & ~lesion
        assert (labels[ring] == 1).mean() > 0.5
        around = binary_dilation(lesion, iterations=3) & (labels == 1)
        assert np.median(image[lesion]) < np.median(image[around]) - 20
        return
    pytest.fail(f"no {cls} lesion fitted in 3 seeds")


def test_hounsfield_ranges_look_like_abdominal_ct():
    image, labels, _ = make_case(rng=np.random.default_rng(0))
    assert np.median(image[:, :2, :2]) == pytest.approx(-1000, abs=40)  # air in the corners
    assert 80 <= np.median(image[labels == 1]) <= 140
    assert (image < -50).sum() > 0.05 * image.size and (image > 300).sum() > 0  # fat, bone
    noise = image[labels == 1].std()
    assert 8 < noise < 40


def test_healthy_cases_have_no_tumor_and_kidneys_are_optional():
    _, labels, info = make_case(rng=np.random.default_rng(0), lesion_classes=[])
    assert set(np.unique(labels)) == {0, 1} and info["lesions"] == []
    _, labels, _ = make_case(rng=np.random.default_rng(0), organs=("liver", "kidney"))
    assert 3 in np.unique(labels)


def test_written_dataset_has_nnunet_layout_geometry_and_case_list(tmp_path):
    folder = make_demo_dataset(tmp_path, 905, "T", n_train=4, n_test=2, shape=(16, 32, 32), spacing=SPACING)
    ds = json.loads((folder / "dataset.json").read_text())
    assert ds["channel_names"] == {"0": "CT"} and ds["labels"] == {"background": 0, "liver": 1, "liver tumor": 2}
    assert ds["numTraining"] == 4 and ds["file_ending"] == ".nii.gz"
    images = sorted((folder / "imagesTr").glob("*.nii.gz"))
    assert len(images) == 4 and len(list((folder / "labelsTs").glob("*.nii.gz"))) == 2
    img = sitk.ReadImage(str(images[0]))
    lab = sitk.ReadImage(str(folder / "labelsTr" / images[0].name.replace("_0000", "")))
    assert img.GetSpacing() == pytest.approx(tuple(reversed(SPACING))) and img.GetSize() == (32, 32, 16)
    assert lab.GetSize() == img.GetSize() and lab.GetSpacing() == img.GetSpacing()
    cases = json.loads((folder / "phantom_cases.json").read_text())
    assert sum(c["healthy"] for c in cases.values() if c["split"] == "train") == 2


def test_existing_dataset_is_refused_without_overwrite_and_no_partial_folder_is_left(tmp_path):
    make_demo_dataset(tmp_path, 906, "T", n_train=2, n_test=0, shape=(16, 32, 32))
    with pytest.raises(FileExistsError, match="--overwrite"):
        make_demo_dataset(tmp_path, 906, "T", n_train=2, n_test=0, shape=(16, 32, 32))
    with pytest.raises(FileExistsError, match="already uses dataset id 906"):
        make_demo_dataset(tmp_path, 906, "Other", n_train=2, n_test=0, shape=(16, 32, 32))
    with pytest.raises(ValueError):
        make_demo_dataset(tmp_path, 907, "T", n_train=2, n_test=0, shape=(16, 32, 32), organs=("lung",))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Dataset906_T"]
    make_demo_dataset(tmp_path, 906, "T", n_train=3, n_test=0, shape=(16, 32, 32), overwrite=True)
    assert json.loads((tmp_path / "Dataset906_T" / "dataset.json").read_text())["numTraining"] == 3


@pytest.mark.parametrize(
    "args, msg",
    [(["--shape", "8", "32", "32"], "shape"), (["--healthy_fraction", "2"], "healthy"), (["-d", "0"], "1..999")],
)
def test_cli_bad_arguments_give_one_clear_error(tmp_path, args, msg):
    proc = run(["freetumor_make_demo_dataset", "-o", tmp_path, *args], clean_env(), expect_ok=False)
    assert proc.returncode == 2 and msg in proc.stderr and "Traceback" not in proc.stderr
    assert not any(tmp_path.iterdir())


def test_cli_writes_the_dataset_and_prints_the_next_command(tmp_path):
    proc = run(
        ["freetumor_make_demo_dataset", "-d", 908, "--n_train", 3, "--n_test", 1, "--shape", 16, 32, 32],
        clean_env(nnUNet_raw=str(tmp_path)),
    )
    assert "nnUNetv2_plan_and_preprocess -d 908" in proc.stdout
    assert (tmp_path / "Dataset908_FreeTumorDemo" / "dataset.json").is_file()
    (labels,) = [
        label(sitk.GetArrayFromImage(sitk.ReadImage(str(p))) == 2)[1]
        for p in sorted((tmp_path / "Dataset908_FreeTumorDemo" / "labelsTs").glob("*.nii.gz"))
    ]
    assert labels >= 1
