"""Quality control of the unlabeled cases (nnunet_freetumor.unlabeled.qc): measurements, reasons, decisions."""

from __future__ import annotations

import json

import numpy as np
import pytest
from unlabeled_data import CFG, SPACING, SRC, VOXEL_ML, add, ct_case, read, snapshot, unlabeled

from nnunet_freetumor.config import FreeTumorConfigError
from nnunet_freetumor.unlabeled.qc import assess_case, largest_component_share
from nnunet_freetumor.unlabeled.report import REPORT_JSON
from nnunet_freetumor.unlabeled.request import QualityFilters


def test_largest_component_share_counts_26_connected_voxels():
    m = np.zeros((5, 10, 10), bool)
    assert largest_component_share(m) is None
    m[0:2, 0:3, 0:3] = True  # 18 voxels
    m[2, 3, 3] = True  # touches the block only at a corner: same component with 26-connectivity
    m[4, 8:10, 8:10] = True  # 4 voxels, separate
    assert largest_component_share(m) == pytest.approx(19 / 23)


def test_quality_filters_give_a_reason_for_each_failure():
    image, labels = ct_case(0)
    ok = assess_case("a", "u_a", image, labels, SPACING, CFG, QualityFilters())
    assert ok.decision == "added" and ok.reasons == []
    assert ok.organ_ml == {"liver": pytest.approx(2048 * VOXEL_ML)}
    assert ok.largest_component == {"liver": 1.0}
    assert ok.p1_hu < -900 and 90 < ok.organ_median_hu < 130

    small = assess_case("a", "u_a", image, labels, SPACING, CFG, QualityFilters(min_organ_ml=14.0))
    assert small.decision == "rejected" and small.category == "organ_volume"
    assert "no configured organ within [14, inf] ml (liver 13.8 ml)" in small.reasons[0]
    large = assess_case("a", "u_a", image, labels, SPACING, CFG, QualityFilters(min_organ_ml=1, max_organ_ml=5))
    assert large.category == "organ_volume" and "liver 13.8 ml > --max_organ_ml 5" in large.reasons[0]

    fragmented = labels.copy()
    fragmented[0, 0:4, 0:4] = 1  # 16 voxels apart from the liver: share 2048 / 2064
    frag = assess_case("a", "u_a", image, fragmented, SPACING, CFG, QualityFilters(min_largest_component=0.995))
    assert frag.category == "largest_component" and frag.largest_component["liver"] == pytest.approx(0.9922, abs=1e-4)
    assert assess_case("a", "u_a", image, fragmented, SPACING, CFG, QualityFilters()).decision == "added"

    shifted = assess_case("a", "u_a", image + 1024, labels, SPACING, CFG, QualityFilters())  # stored without offset
    assert shifted.category == "hu" and len(shifted.reasons) == 2  # no air, liver median ~1134 HU
    assert "1st percentile" in shifted.reasons[0] and "organ median" in shifted.reasons[1]


@pytest.mark.parametrize("mode", ["exclude", "keep"])
def test_cases_with_a_tumor_label_are_skipped_or_kept_as_flagged_and_counted(roots, tmp_path, mode):
    raw = roots["raw"] / SRC
    cases = {"healthy": ct_case(10), "sick": ct_case(11, tumor=True)}
    folder = unlabeled(tmp_path / "in", cases, masks=tmp_path / "masks")
    result = add(roots, input_folder=str(folder), organ_masks=str(tmp_path / "masks"), tumors=mode)
    by_case = {a.case: a for a in result.cases}
    assert by_case["sick"].tumor_voxels == {"liver tumor": 3 * 4 * 4}
    assert by_case["healthy"].decision == "added"
    counts = json.loads((raw / REPORT_JSON).read_text())["counts"]
    if mode == "exclude":
        assert by_case["sick"].decision == "skipped_tumor" and "tumor in the organ mask" in by_case["sick"].reasons[0]
        assert counts["skipped_tumor"] == 1 and counts["added_with_tumor"] == 0
        assert not (raw / "labelsTr" / "unlabeled_sick.nii.gz").exists()
        assert not (raw / "imagesTr" / "unlabeled_sick_0000.nii.gz").exists()
        assert json.loads((raw / "dataset.json").read_text())["numTraining"] == 6
    else:
        assert by_case["sick"].decision == "added_with_tumor" and by_case["sick"].reasons == []
        assert counts["added_with_tumor"] == 1 and counts["skipped_tumor"] == 0
        assert int((read(raw / "labelsTr" / "unlabeled_sick.nii.gz") == 2).sum()) == 48
        assert json.loads((raw / "dataset.json").read_text())["numTraining"] == 7


def test_a_truncated_scan_is_a_clear_error_naming_the_file_and_nothing_is_written(roots, tmp_path):
    raw = roots["raw"] / SRC
    before = snapshot(raw)
    folder = unlabeled(tmp_path / "in", {"a": ct_case(10), "b": ct_case(11)}, masks=tmp_path / "masks")
    data = (folder / "b_0000.nii.gz").read_bytes()
    (folder / "b_0000.nii.gz").write_bytes(data[: len(data) // 2])  # header intact, voxel data cut off
    with pytest.raises(FreeTumorConfigError, match=r"cannot read .*b_0000\.nii\.gz \(corrupt or truncated"):
        add(roots, input_folder=str(folder), organ_masks=str(tmp_path / "masks"))
    assert snapshot(raw) == before
    assert sorted(p.name for p in roots["raw"].iterdir()) == [SRC]
