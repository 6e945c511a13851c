"""Writing the merged dataset: all or nothing.

New case ids are ``{prefix}_{case}``; images are copied byte for byte, labels written with the image's geometry
(uint8). Everything is built in a hidden staging folder first, then moved in (in place) or the whole dataset is copied
into a staged new dataset (``output_id``, renamed into place at the end); dataset.json is written last and atomically.
Both ways run in one ``Transaction``, which journals every change (a file moved in, a file written, a folder renamed
into place) with its undo: any error undoes them, last first (what was moved in is removed, replaced files are
restored, folders it created are removed), so nothing is left behind. An existing case is never overwritten (a clash
is refused before anything is written, see ``dataset.check_clashes``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnunet_freetumor.config import FreeTumorConfigError
from nnunet_freetumor.unlabeled.dataset import RawDataset
from nnunet_freetumor.unlabeled.report import report_paths
from nnunet_freetumor.unlabeled.splits import SPLITS
from nnunet_freetumor.utilities.files import atomic_write_text, staged_folder


@dataclass(frozen=True)
class DatasetUpdate:
    """Everything the merged dataset gets, prepared before anything is written."""

    stage: Path  # imagesTr/ and labelsTr/ of the new cases (``stage_case``)
    split_texts: dict[str, str]  # "preprocessed" / "raw" -> the new splits_final.json
    report_texts: tuple[str, str]  # (json, md)
    report: str | None  # --report (None: in the dataset folder)
    dataset_json: str  # written last


@contextlib.contextmanager
def staging(parent: Path | None, name: str) -> Iterator[Path]:
    """A hidden working folder in ``parent`` (None: the system's temp folder), always removed. In place it is inside
    the dataset (the same file system as imagesTr, so files move in by renaming), beside it for a new dataset."""
    path = Path(tempfile.mkdtemp(prefix=f".{name}.unlabeled.", dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def stage_case(
    stage: Path, new_id: str, images: Sequence[Path], labels: np.ndarray, reference, file_ending: str
) -> None:
    """A new case in the staging folder: its images copied byte for byte, its label with ``reference``'s geometry."""
    from nnunet_freetumor.utilities.image_io import write_like

    for c, src in enumerate(images):
        shutil.copyfile(src, stage / "imagesTr" / f"{new_id}_{c:04d}{file_ending}")
    write_like(labels, reference, stage / "labelsTr" / f"{new_id}{file_ending}")


class Transaction:
    """All or nothing over files and folders: every change is journaled with its undo. ``with Transaction() as tx:``
    undoes the changes of the block, last first, when it raises (an interrupt included), and keeps them when it
    ends. Folders that a change had to create are removed again (while empty)."""

    def __init__(self) -> None:
        self._undo: list[Callable[[], object]] = []

    def __enter__(self) -> Transaction:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            for undo in reversed(self._undo):
                with contextlib.suppress(OSError):
                    undo()
        self._undo.clear()

    def move_in(self, src: Path, dst: Path) -> None:
        """Rename ``src`` to ``dst`` (the same file system); a ``dst`` that exists is refused, never overwritten."""
        self._make_folder(dst.parent)
        if dst.exists():
            raise FreeTumorConfigError(f"{dst} appeared while this command ran: nothing was written")
        os.replace(src, dst)
        self._undo.append(dst.unlink)

    def write_text(self, path: Path, text: str) -> None:
        """Write ``path`` atomically; undo restores the file it replaced, or removes it."""
        old = path.read_text() if path.is_file() else None
        self._make_folder(path.parent)
        self._undo.append(lambda: path.unlink(missing_ok=True) if old is None else atomic_write_text(path, old))
        atomic_write_text(path, text)

    @contextlib.contextmanager
    def new_folder(self, target: Path) -> Iterator[Path]:
        """Build the folder ``target`` in a hidden staging sibling (``io.staged_folder``: removed if the block
        raises); renamed into place when the block ends, and removed again by undo."""
        self._make_folder(target.parent)
        with staged_folder(target) as tmp:
            yield tmp
        self._undo.append(lambda: shutil.rmtree(target))

    def _make_folder(self, folder: Path) -> None:
        missing = []
        while not folder.exists():
            missing.append(folder)
            folder = folder.parent
        for d in reversed(missing):  # outermost first: undo removes the innermost first
            try:
                d.mkdir()
            except FileExistsError:  # made by someone else meanwhile: not ours to remove
                continue
            self._undo.append(d.rmdir)


def commit_in_place(update: DatasetUpdate, dataset: RawDataset) -> tuple[list[Path], list[Path]]:
    """Move the staged cases into the dataset, then write the splits and reports, dataset.json last, in one
    ``Transaction``. Returns (split files, report files)."""
    raw = dataset.raw
    split_files = [dataset.preprocessed / SPLITS if k == "preprocessed" else raw / SPLITS for k in update.split_texts]
    report_files = list(report_paths(update.report, raw))
    with Transaction() as tx:
        for sub in ("imagesTr", "labelsTr"):
            for f in sorted((update.stage / sub).iterdir()):
                tx.move_in(f, raw / sub / f.name)
        for path, text in zip(split_files, update.split_texts.values()):
            tx.write_text(path, text)
        for path, text in zip(report_files, update.report_texts):
            tx.write_text(path, text)
        tx.write_text(raw / "dataset.json", update.dataset_json)
    return split_files, report_files


def commit_new_dataset(update: DatasetUpdate, dataset: RawDataset, target: Path) -> tuple[list[Path], list[Path]]:
    """Build the new dataset ``target`` in a staging folder (a copy of the raw dataset, the new cases, split, reports
    and dataset.json), give its preprocessed folder the split (and the FreeTumor config) the same way, and rename
    both into place, in one ``Transaction``. Returns (split files, report files)."""
    pre_target = dataset.preprocessed.parent / target.name
    pre_files = _preprocessed_files(update, dataset)
    split_files = [target / SPLITS] if "raw" in update.split_texts else []
    split_files += [pre_target / SPLITS] if SPLITS in pre_files else []
    report_files = list(report_paths(update.report, target))
    with Transaction() as tx, tx.new_folder(target) as tmp:
        shutil.copytree(dataset.raw, tmp, dirs_exist_ok=True, ignore=_ignore_hidden)
        for sub in ("imagesTr", "labelsTr"):
            (tmp / sub).mkdir(exist_ok=True)
            for f in sorted((update.stage / sub).iterdir()):
                os.replace(f, tmp / sub / f.name)
        if "raw" in update.split_texts:
            (tmp / SPLITS).write_text(update.split_texts["raw"])
        for path, text in zip(report_files, update.report_texts):
            if update.report:
                tx.write_text(path, text)
            else:
                (tmp / path.name).write_text(text)
        (tmp / "dataset.json").write_text(update.dataset_json)
        if pre_files:  # in place before the raw dataset: nnU-Net never sees it without its split
            with tx.new_folder(pre_target) as ptmp:
                for fname, text in pre_files.items():
                    (ptmp / fname).write_text(text)
    return split_files, report_files


def _preprocessed_files(update: DatasetUpdate, dataset: RawDataset) -> dict[str, str]:
    """The new dataset's preprocessed folder: the split, and the source's FreeTumor config where it came from there."""
    from nnunet_freetumor.config import CONFIG_FILENAME

    out = {}
    if "preprocessed" in update.split_texts:
        out[SPLITS] = update.split_texts["preprocessed"]
    src_cfg = dataset.preprocessed / CONFIG_FILENAME
    if src_cfg.is_file() and dataset.cfg_source == str(src_cfg):
        out[CONFIG_FILENAME] = src_cfg.read_text()
    return out


def _ignore_hidden(folder: str, names: list[str]) -> list[str]:
    """copytree filter: leave out hidden entries (staging folders of running commands)."""
    return [n for n in names if n.startswith(".")]
