"""Writing the merged dataset all or nothing (nnunet_freetumor.unlabeled.transaction)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nnunet_freetumor.config import FreeTumorConfigError
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
