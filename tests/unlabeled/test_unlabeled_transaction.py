"""Writing the merged dataset all or nothing (nnunet_freetumor.unlabeled.transaction)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from unlabeled_data import CFG, SRC, add, ct_case, snapshot, unlabeled

from nnunet_freetumor.config import FreeTumorConfigError
from nnunet_freetumor.unlabeled.report import REPORT_JSON
from nnunet_freetumor.unlabeled.splits import SPLITS, nnunet_default_split
from nnunet_freetumor.unlabeled.transaction import Transaction


def tree(folder: Path) -> dict[str, str | None]:
    """Relative path -> text of every file (None for a folder) under ``folder``."""
    return {str(p.relative_to(folder)): p.read_text() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def test_a_transaction_undoes_every_change_last_first_when_its_block_raises(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("old")
    (tmp_path / "stage").mkdir()
    (tmp_path / "stage" / "case.txt").write_text("case")
    before = tree(tmp_path / "data")
    with pytest.raises(KeyboardInterrupt), Transaction() as tx:
        tx.write_text(tmp_path / "data" / "a.txt", "new")
        tx.write_text(tmp_path / "data" / "a.txt", "newer")  # undone to "new", then to "old"
        tx.write_text(tmp_path / "data" / "sub" / "deeper" / "b.txt", "b")  # its two new folders go too
        tx.move_in(tmp_path / "stage" / "case.txt", tmp_path / "data" / "imagesTr" / "case.txt")
        with tx.new_folder(tmp_path / "data" / "built") as tmp:
            (tmp / "c.txt").write_text("c")
        assert (tmp_path / "data" / "built" / "c.txt").read_text() == "c"
        raise KeyboardInterrupt  # an interrupt is undone too
    assert tree(tmp_path / "data") == before


def test_a_transaction_keeps_its_changes_and_never_overwrites_by_moving_in(tmp_path):
    (tmp_path / "stage").mkdir()
    for name in ("x.txt", "y.txt"):
        (tmp_path / "stage" / name).write_text(name)
    with Transaction() as tx:
        tx.move_in(tmp_path / "stage" / "x.txt", tmp_path / "data" / "x.txt")
        tx.write_text(tmp_path / "data" / "dataset.json", "{}")
    assert tree(tmp_path / "data") == {"x.txt": "x.txt", "dataset.json": "{}"}
    (tmp_path / "data" / "y.txt").write_text("someone else's")
    with pytest.raises(FreeTumorConfigError, match="appeared while this command ran"), Transaction() as tx:
        tx.write_text(tmp_path / "data" / "dataset.json", '{"numTraining": 1}')
        tx.move_in(tmp_path / "stage" / "y.txt", tmp_path / "data" / "y.txt")
    assert tree(tmp_path / "data") == {"x.txt": "x.txt", "dataset.json": "{}", "y.txt": "someone else's"}
    assert (tmp_path / "stage" / "y.txt").read_text() == "y.txt"


def test_a_new_folder_is_removed_again_and_its_staging_folder_never_stays(tmp_path):
    with pytest.raises(OSError, match="disk full"), Transaction() as tx:
        with tx.new_folder(tmp_path / "pre" / "Dataset985_More") as tmp:
            (tmp / "splits_final.json").write_text("[]")
        with tx.new_folder(tmp_path / "raw" / "Dataset985_More") as tmp:
            (tmp / "dataset.json").write_text("{}")
            raise OSError("disk full")
    assert tree(tmp_path) == {}  # also the folders pre/ and raw/ it created


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


def test_an_error_after_the_new_datasets_preprocessed_folder_is_in_place_undoes_it_and_restores_the_report(
    roots, tmp_path, monkeypatch
):
    import nnunet_freetumor.unlabeled.transaction as transaction

    (roots["pre"] / SRC / SPLITS).write_text(json.dumps(nnunet_default_split([f"case_{i}" for i in range(5)])))
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / REPORT_JSON).write_text("{}")  # a previous report at --report is restored
    folder = unlabeled(tmp_path / "in", {"a": ct_case(10)}, masks=tmp_path / "masks")
    before = {k: snapshot(roots[k]) for k in ("raw", "pre")}, snapshot(tmp_path / "reports")
    real_staged_folder = transaction.staged_folder

    @contextlib.contextmanager
    def failing_rename(target):
        with real_staged_folder(target) as tmp:
            yield tmp
            if target.parent == roots["raw"]:  # the very last step: the raw dataset's rename
                assert (roots["pre"] / target.name / SPLITS).is_file()
                raise OSError("rename failed")

    monkeypatch.setattr(transaction, "staged_folder", failing_rename)
    with pytest.raises(OSError, match="rename failed"):
        add(
            roots,
            input_folder=str(folder),
            organ_masks=str(tmp_path / "masks"),
            output_id=986,
            report=str(tmp_path / "reports"),
        )
    assert ({k: snapshot(roots[k]) for k in ("raw", "pre")}, snapshot(tmp_path / "reports")) == before
    assert sorted(p.name for p in roots["raw"].iterdir()) == [SRC]
    assert sorted(p.name for p in roots["pre"].iterdir()) == [SRC]
