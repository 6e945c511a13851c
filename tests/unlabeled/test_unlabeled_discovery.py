"""Finding the unlabeled scans and their supplied masks (nnunet_freetumor.unlabeled.discovery)."""

from __future__ import annotations

import pytest
from unlabeled_data import SRC, add, ct_case, plan, snapshot, unlabeled, write

from nnunet_freetumor.config import FreeTumorConfigError


def test_inputs_with_the_wrong_channels_or_names_are_refused(roots, tmp_path):
    image, labels = ct_case(10)
    folder = unlabeled(tmp_path / "in", {"a": (image, labels)}, masks=tmp_path / "masks")
    write(folder / "a_0001.nii.gz", image)
    with pytest.raises(
        FreeTumorConfigError, match=r"case a .* has channel file\(s\) _0000, _0001, but the dataset has 1"
    ):
        plan(roots, input_folder=str(folder), organ_masks=str(tmp_path / "masks"))
    (folder / "a_0001.nii.gz").unlink()
    write(folder / "b.nii.gz", image)
    with pytest.raises(FreeTumorConfigError, match="does not follow nnU-Net's naming"):
        plan(roots, input_folder=str(folder), organ_masks=str(tmp_path / "masks"))
    with pytest.raises(FreeTumorConfigError, match="no organ mask"):
        plan(roots, input_folder=str(unlabeled(tmp_path / "in2", {"c": (image, labels)})), organ_masks=str(tmp_path))


@pytest.mark.parametrize(
    "geometry, message",
    [
        ({"spacing": (3.0, 1.5, 1.6)}, "has spacing"),
        ({"origin": (1.0, 2.0, 3.5)}, "has origin"),
        (None, "has size"),
    ],
)
def test_a_mask_off_the_image_grid_is_refused_naming_the_case_and_nothing_is_written(
    roots, tmp_path, geometry, message
):
    raw = roots["raw"] / SRC
    before = snapshot(raw)
    good, bad = ct_case(10), ct_case(11)
    folder = unlabeled(tmp_path / "in", {"good": good, "bad": bad})
    write(tmp_path / "masks" / "good.nii.gz", good[1])
    if geometry is None:
        write(tmp_path / "masks" / "bad.nii.gz", bad[1][:, :, :-1])
    else:
        write(tmp_path / "masks" / "bad.nii.gz", bad[1], **geometry)
    with pytest.raises(FreeTumorConfigError, match=f"case bad: the organ mask .*{message}"):
        add(roots, input_folder=str(folder), organ_masks=str(tmp_path / "masks"))
    assert snapshot(raw) == before
    assert sorted(p.name for p in roots["raw"].iterdir()) == [SRC]
