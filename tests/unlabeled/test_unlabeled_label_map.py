"""Source label ids -> the dataset's (nnunet_freetumor.unlabeled.label_map)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from unlabeled_data import SRC, add, ct_case, plan, read, unlabeled

from nnunet_freetumor.config import FreeTumorConfigError
from nnunet_freetumor.unlabeled.label_map import parse_label_map, remap_labels
from nnunet_freetumor.unlabeled.report import REPORT_JSON


def test_label_map_parsing_and_remapping_send_unmapped_ids_to_background():
    assert parse_label_map(["5:1", " 7 : 2 "]) == {5: 1, 7: 2}
    for bad in (["5"], ["a:1"], ["5:1", "5:2"], ["-1:2"]):
        with pytest.raises(FreeTumorConfigError):
            parse_label_map(bad)
    mask = np.array([[0, 5, 5], [7, 9, 9], [9, 3, 0]], dtype=np.int16)
    out, unmapped = remap_labels(mask, {5: 1, 7: 2})
    assert out.dtype == np.uint8
    assert out.tolist() == [[0, 1, 1], [2, 0, 0], [0, 0, 0]]
    assert unmapped == {3: 1, 9: 3}
    with pytest.raises(FreeTumorConfigError, match="non-negative integer"):
        remap_labels(np.array([0.5, 1.0]), {1: 1})


def test_supplied_masks_with_other_label_ids_are_remapped_and_unmapped_ids_reported(roots, tmp_path):
    raw = roots["raw"] / SRC
    image, labels = ct_case(10)
    foreign = np.where(labels == 1, 5, 0).astype(np.uint8)  # liver is 5 in the mask source
    foreign[0, 0:3, 0:3] = 9  # another structure the dataset has no label for
    folder = unlabeled(tmp_path / "in", {"scan": (image, foreign)}, masks=tmp_path / "masks")
    result = add(roots, input_folder=str(folder), organ_masks=str(tmp_path / "masks"), label_map={5: 1})
    assert result.cases[0].decision == "added"
    assert result.cases[0].unmapped_voxels == {"9": 9}
    assert np.array_equal(read(raw / "labelsTr" / "unlabeled_scan.nii.gz"), labels)
    report = json.loads((raw / REPORT_JSON).read_text())
    assert report["label_map"] == {"5": 1} and report["unmapped_label_ids"]["cases_per_id"] == {"9": 1}
    with pytest.raises(FreeTumorConfigError, match=r"target id\(s\) \[7\] are not labels"):
        plan(roots, input_folder=str(folder), organ_masks=str(tmp_path / "masks"), label_map={5: 7}, prefix="x")
