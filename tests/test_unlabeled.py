"""freetumor_add_unlabeled: unlabeled CT + organ masks (supplied or predicted) added to a FreeTumor dataset."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import DATASET_ID, GENERATOR_ARGS, Demo, run

from nnunet_freetumor.config import FreeTumorConfig, FreeTumorConfigError, OrganTumorPair
from nnunet_freetumor.unlabeled.label_map import parse_label_map, remap_labels
from nnunet_freetumor.unlabeled.qc import assess_case, largest_component_share
from nnunet_freetumor.unlabeled.report import REPORT_JSON, REPORT_MD, UnlabeledResult
from nnunet_freetumor.unlabeled.request import QualityFilters, UnlabeledRequest
from nnunet_freetumor.unlabeled.splits import SPLITS, add_to_splits, nnunet_default_split
from nnunet_freetumor.unlabeled.workflow import UnlabeledPlan, add_unlabeled, plan_unlabeled

SRC = "Dataset980_Unl"
SHAPE = (12, 32, 32)  # z, y, x
SPACING = (3.0, 1.5, 1.5)  # z, y, x (mm): 6.75 mm^3 = 0.00675 ml per voxel
VOXEL_ML = 0.00675
LIVER = (slice(2, 10), slice(8, 24), slice(6, 22))  # 8 * 16 * 16 = 2048 voxels = 13.824 ml
CFG = FreeTumorConfig(pairs=(OrganTumorPair(1, 2, "liver"),))


def ct_case(seed: int, tumor: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(image int16 HU, labels uint8), (z, y, x): air around a soft-tissue body, a 110 HU liver, a darker tumor."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in SHAPE], indexing="ij")
    image = np.where(y**2 + x**2 <= 0.9, 40.0, -1000.0)
    labels = np.zeros(SHAPE, np.uint8)
    labels[LIVER] = 1
    image[LIVER] = 110.0
    if tumor:
        labels[5:8, 14:18, 10:14] = 2
        image[5:8, 14:18, 10:14] = 60.0
    return np.round(image + rng.normal(0, 8, SHAPE)).astype(np.int16), labels


def write(path: Path, array: np.ndarray, spacing=SPACING, origin=(1.0, 2.0, 3.0)) -> None:
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(tuple(float(s) for s in reversed(spacing)))
    img.SetOrigin(origin)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path), useCompression=True)


def read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


@pytest.fixture
def roots(tmp_path, monkeypatch) -> dict[str, Path]:
    """nnU-Net's three folders with the labeled dataset 980 (5 training cases, 1 test case); env set for nnU-Net."""
    out = {k: tmp_path / k for k in ("raw", "pre", "results")}
    for v in out.values():
        v.mkdir()
    for k, v in zip(("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"), out.values()):
        monkeypatch.setenv(k, str(v))
    monkeypatch.delenv("nnUNet_freetumor_config", raising=False)
    folder = out["raw"] / SRC
    for i in range(5):
        image, labels = ct_case(i, tumor=i % 2 == 1)
        write(folder / "imagesTr" / f"case_{i}_0000.nii.gz", image)
        write(folder / "labelsTr" / f"case_{i}.nii.gz", labels)
    image, labels = ct_case(99, tumor=True)
    write(folder / "imagesTs" / "test_0_0000.nii.gz", image)
    write(folder / "labelsTs" / "test_0.nii.gz", labels)
    dj = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "liver": 1, "liver tumor": 2},
        "numTraining": 5,
        "file_ending": ".nii.gz",
        "name": SRC,
        "licence": "test",
    }
    (folder / "dataset.json").write_text(json.dumps(dj, indent=4))
    (out["pre"] / SRC).mkdir()
    return out


def unlabeled(folder: Path, cases: dict[str, tuple[np.ndarray, np.ndarray]], masks: Path | None = None, **kw) -> Path:
    """Write ``{case}_0000.nii.gz`` images (and ``{case}.nii.gz`` masks into ``masks``)."""
    for case, (image, labels) in cases.items():
        write(folder / f"{case}_0000.nii.gz", image)
        if masks is not None:
            write(masks / f"{case}.nii.gz", labels, **kw)
    return folder


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``folder`` (hidden ones included)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def plan(roots, **kw) -> UnlabeledPlan:
    """The checked request (raises what the command would print)."""
    return plan_unlabeled(UnlabeledRequest(dataset=SRC, **kw), roots["raw"], roots["pre"], roots["results"])


def add(roots, **kw) -> UnlabeledResult:
    """Check and run the request."""
    return add_unlabeled(plan(roots, **kw), progress=False)


# --- pure functions ------------------------------------------------------------------------------------------------


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


def test_splits_get_new_cases_in_every_training_list_and_nnunets_default_split_is_reproduced():
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    splits = [{"train": ["a", "b"], "val": ["c"]}, {"train": ["a", "c"], "val": ["b"]}]
    out = add_to_splits(splits, ["u_x", "u_y"])
    assert out == [{"train": ["a", "b", "u_x", "u_y"], "val": ["c"]}, {"train": ["a", "c", "u_x", "u_y"], "val": ["b"]}]
    assert splits[0]["train"] == ["a", "b"]  # input untouched
    with pytest.raises(FreeTumorConfigError, match="fold 0 already lists"):
        add_to_splits(splits, ["c"])
    with pytest.raises(FreeTumorConfigError, match="not an nnU-Net split"):
        add_to_splits({"train": []}, ["x"])
    ids = [f"case_{i}" for i in range(7)]
    expected = generate_crossval_split(sorted(ids), seed=12345, n_splits=5)
    assert nnunet_default_split(ids[::-1]) == [{"train": list(s["train"]), "val": list(s["val"])} for s in expected]


# --- the operation with supplied masks -----------------------------------------------------------------------------


def test_merging_in_place_keeps_existing_cases_and_the_test_set_and_passes_nnunets_integrity_check(roots, tmp_path):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    raw = roots["raw"] / SRC
    before = snapshot(raw)
    old_dj = json.loads((raw / "dataset.json").read_text())
    cases = {"scan_a": ct_case(10), "scan_b": ct_case(11)}
    folder = unlabeled(tmp_path / "in", cases, masks=tmp_path / "masks")
    result = add(roots, input_folder=str(folder), organ_masks=str(tmp_path / "masks"))

    assert [a.decision for a in result.cases] == ["added", "added"]
    after = snapshot(raw)
    assert {k: v for k, v in after.items() if k in before and k != "dataset.json"} == {
        k: v for k, v in before.items() if k != "dataset.json"
    }
    new = sorted(set(after) - set(before))
    assert new == sorted(
        [
            "imagesTr/unlabeled_scan_a_0000.nii.gz",
            "imagesTr/unlabeled_scan_b_0000.nii.gz",
            "labelsTr/unlabeled_scan_a.nii.gz",
            "labelsTr/unlabeled_scan_b.nii.gz",
            REPORT_JSON,
            REPORT_MD,
        ]
    )
    for case in cases:  # images byte for byte, labels equal to the masks, on the image's grid
        src = folder / f"{case}_0000.nii.gz"
        assert (raw / "imagesTr" / f"unlabeled_{case}_0000.nii.gz").read_bytes() == src.read_bytes()
        label = sitk.ReadImage(str(raw / "labelsTr" / f"unlabeled_{case}.nii.gz"))
        assert np.array_equal(sitk.GetArrayFromImage(label), cases[case][1])
        assert label.GetOrigin() == sitk.ReadImage(str(src)).GetOrigin()
    dj = json.loads((raw / "dataset.json").read_text())
    assert dj["numTraining"] == 7
    assert {k: v for k, v in dj.items() if k != "freetumor_unlabeled"} == {**old_dj, "numTraining": 7}
    assert dj["freetumor_unlabeled"][0]["cases_added"] == 2
    assert not [p for p in raw.iterdir() if p.name.startswith(".")]  # staging removed
    report = json.loads((raw / REPORT_JSON).read_text())
    assert (
        report["counts"]["added"] == 2 and "| scan_a | unlabeled_scan_a | liver 13.8 |" in (raw / REPORT_MD).read_text()
    )
    assert "no splits_final.json" in result.split_note
    verify_dataset_integrity(str(raw), 1)  # raises on any inconsistency


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


def test_new_cases_join_every_folds_training_list_and_never_a_validation_list(roots, tmp_path):
    raw, pre = roots["raw"] / SRC, roots["pre"] / SRC
    splits = nnunet_default_split([f"case_{i}" for i in range(5)])
    (pre / SPLITS).write_text(json.dumps(splits))
    (raw / SPLITS).write_text(json.dumps(splits))  # nnU-Net's planner checks a raw split against the preprocessed one
    folder = unlabeled(tmp_path / "in", {"a": ct_case(10), "b": ct_case(11)}, masks=tmp_path / "masks")
    result = add(roots, input_folder=str(folder), organ_masks=str(tmp_path / "masks"))
    for path in (pre / SPLITS, raw / SPLITS):
        new = json.loads(path.read_text())
        assert [s["val"] for s in new] == [s["val"] for s in splits]
        assert [s["train"] for s in new] == [s["train"] + ["unlabeled_a", "unlabeled_b"] for s in splits]
    assert sorted(result.split_files) == sorted([pre / SPLITS, raw / SPLITS])
    assert "training list of every fold and in no validation list" in result.split_note


def test_make_split_writes_nnunets_split_of_the_existing_cases_plus_the_new_ones_in_training(roots, tmp_path):
    folder = unlabeled(tmp_path / "in", {"a": ct_case(10)}, masks=tmp_path / "masks")
    shutil.rmtree(roots["pre"] / SRC)  # not planned yet
    add(roots, input_folder=str(folder), organ_masks=str(tmp_path / "masks"), make_split=True)
    written = json.loads((roots["pre"] / SRC / SPLITS).read_text())
    expected = nnunet_default_split([f"case_{i}" for i in range(5)])
    assert [s["val"] for s in written] == [s["val"] for s in expected]
    assert [s["train"] for s in written] == [s["train"] + ["unlabeled_a"] for s in expected]


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


def test_an_id_clash_is_refused_before_anything_is_written(roots, tmp_path):
    raw = roots["raw"] / SRC
    before = snapshot(raw)
    folder = unlabeled(tmp_path / "in", {"0": ct_case(10)}, masks=tmp_path / "masks")  # case_ + 0 = case_0
    with pytest.raises(FreeTumorConfigError, match="would become case_0, which .* already has"):
        plan(roots, input_folder=str(folder), organ_masks=str(tmp_path / "masks"), prefix="case")
    (roots["results"] / "Dataset981_Other").mkdir()
    with pytest.raises(FreeTumorConfigError, match="already uses dataset id 981"):
        plan(roots, input_folder=str(folder), organ_masks=str(tmp_path / "masks"), output_id=981)
    with pytest.raises(FreeTumorConfigError, match="is the source dataset's id"):
        plan(roots, input_folder=str(folder), organ_masks=str(tmp_path / "masks"), output_id=980)
    assert snapshot(raw) == before


def test_a_new_dataset_id_gets_a_copy_plus_the_new_cases_and_the_source_stays_unchanged(roots, tmp_path):
    raw, pre = roots["raw"] / SRC, roots["pre"] / SRC
    splits = nnunet_default_split([f"case_{i}" for i in range(5)])
    (pre / SPLITS).write_text(json.dumps(splits))
    CFG.save(pre / "freetumor_config.json")
    before_raw, before_pre = snapshot(raw), snapshot(pre)
    folder = unlabeled(tmp_path / "in", {"a": ct_case(10)}, masks=tmp_path / "masks")
    result = add(roots, input_folder=str(folder), organ_masks=str(tmp_path / "masks"), output_id=985, name="More")
    assert snapshot(raw) == before_raw and snapshot(pre) == before_pre
    out = roots["raw"] / "Dataset985_More"
    assert result.target == out
    copied = snapshot(out)
    assert {k: v for k, v in copied.items() if k in before_raw and k != "dataset.json"} == {
        k: v for k, v in before_raw.items() if k != "dataset.json"
    }
    assert "imagesTr/unlabeled_a_0000.nii.gz" in copied and "imagesTs/test_0_0000.nii.gz" in copied
    dj = json.loads((out / "dataset.json").read_text())
    assert dj["numTraining"] == 6 and dj["name"] == "Dataset985_More"
    new_splits = json.loads((roots["pre"] / "Dataset985_More" / SPLITS).read_text())
    assert [s["train"] for s in new_splits] == [s["train"] + ["unlabeled_a"] for s in splits]
    assert (roots["pre"] / "Dataset985_More" / "freetumor_config.json").read_bytes() == (
        pre / "freetumor_config.json"
    ).read_bytes()
    assert sorted(p.name for p in roots["raw"].iterdir()) == ["Dataset980_Unl", "Dataset985_More"]


def test_dry_run_writes_nothing_and_nothing_passing_is_an_error_with_nothing_written(roots, tmp_path):
    raw = roots["raw"] / SRC
    before = snapshot(raw)
    folder = unlabeled(tmp_path / "in", {"a": ct_case(10), "b": ct_case(11, tumor=True)}, masks=tmp_path / "masks")
    dry = add(roots, input_folder=str(folder), organ_masks=str(tmp_path / "masks"), dry_run=True)
    assert [a.decision for a in dry.cases] == ["added", "skipped_tumor"] and dry.report_files == []
    with pytest.raises(FreeTumorConfigError, match=r"none of the 2 unlabeled case\(s\) passed"):
        add(
            roots,
            input_folder=str(folder),
            organ_masks=str(tmp_path / "masks"),
            filters=QualityFilters(min_organ_ml=100),
        )
    assert snapshot(raw) == before
    assert sorted(p.name for p in roots["raw"].iterdir()) == [SRC]


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


def test_the_command_line_prints_one_error_line_and_exits_2(roots, tmp_path, capsys):
    from nnunet_freetumor.entrypoints.add_unlabeled import main

    folder = unlabeled(tmp_path / "in", {"a": ct_case(10)})
    with pytest.raises(SystemExit) as e:  # no baseline trained: predicting the masks needs one
        main(["-d", "980", "-i", str(folder), "--no_progress"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no nnU-Net model at ") and "nnUNetv2_train" in err[0]
    with pytest.raises(SystemExit) as e:
        main(["-d", "980", "-i", str(folder), "--label_map", "5-1"])
    assert e.value.code == 2 and "SRC:DST" in capsys.readouterr().err


def test_any_error_while_moving_in_leaves_the_dataset_as_it_was(roots, tmp_path, monkeypatch):
    import nnunet_freetumor.unlabeled.transaction as transaction

    raw, pre = roots["raw"] / SRC, roots["pre"] / SRC
    (pre / SPLITS).write_text(json.dumps(nnunet_default_split([f"case_{i}" for i in range(5)])))
    (raw / REPORT_JSON).write_text("{}")  # a previous report is restored too
    before_raw, before_pre = snapshot(raw), snapshot(pre)
    folder = unlabeled(tmp_path / "in", {"a": ct_case(10), "b": ct_case(11)}, masks=tmp_path / "masks")
    real_write = transaction.atomic_write_text

    def failing_write(path, text):
        if Path(path).name == "dataset.json":  # the very last step
            raise OSError("disk full")
        real_write(path, text)

    monkeypatch.setattr(transaction, "atomic_write_text", failing_write)
    with pytest.raises(OSError, match="disk full"):
        add(roots, input_folder=str(folder), organ_masks=str(tmp_path / "masks"))
    assert snapshot(raw) == before_raw and snapshot(pre) == before_pre

    def failing_json(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("nnunet_freetumor.unlabeled.workflow.updated_dataset_json", failing_json)
    with pytest.raises(OSError, match="disk full"):
        add(roots, input_folder=str(folder), organ_masks=str(tmp_path / "masks"), output_id=986)
    assert sorted(p.name for p in roots["raw"].iterdir()) == [SRC]
    assert sorted(p.name for p in roots["pre"].iterdir()) == [SRC]
    assert snapshot(raw) == before_raw


def fake_model(folder: Path, labels: dict[str, int]) -> Path:
    """An nnU-Net model folder whose checkpoint loads safely but holds no network (enough for the checks)."""
    import torch

    (folder / "fold_0").mkdir(parents=True)
    dj = {"channel_names": {"0": "CT"}, "labels": labels, "numTraining": 1, "file_ending": ".nii.gz"}
    (folder / "dataset.json").write_text(json.dumps(dj))
    (folder / "plans.json").write_text("{}")
    torch.save({"init_args": {}}, folder / "fold_0" / "checkpoint_final.pth")
    return folder


def test_an_organ_model_with_other_label_ids_needs_a_label_map_and_the_error_suggests_one(roots, tmp_path):
    folder = unlabeled(tmp_path / "in", {"a": ct_case(10)})
    model = fake_model(tmp_path / "organ_model", {"background": 0, "spleen": 1, "kidney": 2, "liver": 6})
    with pytest.raises(FreeTumorConfigError, match=r"labels .* differ .*: pass --label_map 6:1 \(model id"):
        plan(roots, input_folder=str(folder), organ_model=str(model))
    with pytest.raises(FreeTumorConfigError, match=r"source id\(s\) \[7\] are not labels of the organ model"):
        plan(roots, input_folder=str(folder), organ_model=str(model), label_map={7: 1})
    # the map is accepted; then nnU-Net's predictor cannot use a checkpoint without a network: one clear error
    with pytest.raises(FreeTumorConfigError, match="cannot load the organ model .*KeyError"):
        plan(roots, input_folder=str(folder), organ_model=str(model), label_map={6: 1})


# --- end to end: masks predicted by the tiny baseline through nnU-Net's predictor -----------------------------------


@pytest.mark.e2e
def test_unlabeled_scans_with_masks_predicted_by_the_baseline_become_a_new_dataset_nnunet_accepts_and_gated_by_it(
    demo: Demo, baseline: Path, tmp_path
):
    """... and the labeled dataset's baseline is the merged dataset's S (config gate_dataset), as in the paper."""
    from nnunet_freetumor.phantom import make_case

    new_id, name = 960, "Dataset960_FreeTumorDemo_unlabeled"
    demo_raw_before = snapshot(demo.raw)
    folder = tmp_path / "unlabeled"
    for i in range(2):
        image, _, _ = make_case((24, 48, 48), (4.0, 2.5, 2.5), np.random.default_rng([7, i]))
        write(folder / f"scan_{i}_0000.nii.gz", image, spacing=(4.0, 2.5, 2.5))
    cmd = ["freetumor_add_unlabeled", "-d", DATASET_ID, "-i", folder, "-o", new_id, "--no_progress"]
    permissive = ["--min_organ_ml", 0, "--min_largest_component", 0, "--organ_hu", -1000, 1000, "--tumors", "keep"]
    fast = ["-npp", 0, "-nps", 0, "--disable_tta"]
    try:
        proc = run([*cmd, *permissive, *fast], demo.env)
        out = demo.dirs["nnUNet_raw"] / name
        report = json.loads((out / REPORT_JSON).read_text())
        assert report["organ_masks"]["predicted"].endswith("nnUNetTrainerBaseline__nnUNetPlans__3d_fullres")
        assert report["counts"]["cases"] == 2
        added = [c for c in report["cases"] if c["decision"] in ("added", "added_with_tumor")]
        assert f"added {len(added)} of 2" in proc.stdout and f"nnUNetv2_plan_and_preprocess -d {new_id}" in proc.stdout
        dj = json.loads((out / "dataset.json").read_text())
        assert dj["numTraining"] == json.loads((demo.raw / "dataset.json").read_text())["numTraining"] + len(added)
        for c in added:  # the label is nnU-Net's prediction, on the image's grid, with the dataset's ids only
            label = read(out / "labelsTr" / f"{c['new_id']}.nii.gz")
            assert label.shape == (24, 48, 48) and set(np.unique(label)) <= {0, 1, 2}
            assert c["organ_ml"]["liver"] == pytest.approx(float((label == 1).sum()) * 0.025, abs=1e-3)
        splits = json.loads((demo.dirs["nnUNet_preprocessed"] / name / SPLITS).read_text())
        assert all(c["new_id"] in s["train"] and c["new_id"] not in s["val"] for s in splits for c in added)
        assert snapshot(demo.raw) == demo_raw_before  # the shared demo dataset is unchanged
        run(
            ["nnUNetv2_plan_and_preprocess", "-d", new_id, "-c", "3d_fullres", "--verify_dataset_integrity"]
            + ["-np", 1, "-npfp", 1],
            demo.env,
        )
        # S of the labeled dataset gates the merged one (same validation cases, new scans only in training) ...
        run(["freetumor_config", "-d", new_id, "--gate_dataset", DATASET_ID, "--write"], demo.env)
        split_file = demo.dirs["nnUNet_preprocessed"] / name / SPLITS
        seen = json.loads((demo.preprocessed / SPLITS).read_text())[0]["train"][0]  # a case S was trained on
        leaky = [{"train": [c for c in splits[0]["train"] if c != seen], "val": [*splits[0]["val"], seen]}, *splits[1:]]
        split_file.write_text(json.dumps(leaky))
        proc = run(["freetumor_train_generator", new_id, "-f", 0, *GENERATOR_ARGS], demo.env, expect_ok=False)
        assert proc.returncode == 2 and f"({seen})" in proc.stderr and "leak" in proc.stderr, proc.stderr
        assert not (demo.dirs["nnUNet_results"] / name).exists()  # refused before anything was written
        split_file.write_text(json.dumps(splits))  # ... and is used when no validation case leaks
        run(["freetumor_train_generator", new_id, "-f", 0, *GENERATOR_ARGS], demo.env)
        log = next((demo.dirs["nnUNet_results"] / name).rglob("training_log.txt")).read_text()
        assert f"frozen segmenter {baseline}" in log
    finally:  # leave the shared nnU-Net folders as they were for the other tests
        for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
            shutil.rmtree(demo.dirs[key] / name, ignore_errors=True)
