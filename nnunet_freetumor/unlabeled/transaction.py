"""Writing the merged dataset: all or nothing.

New case ids are ``{prefix}_{case}``; images are copied byte for byte, labels written with the image's geometry
(uint8). Everything is built in a hidden staging folder first, then moved in (in place) or the whole dataset is copied
into a staged new dataset (``output_id``, renamed into place at the end); dataset.json is written last and atomically.
Any error removes what was moved in and restores the files that were replaced: nothing is left behind. An existing
case is never overwritten (a clash is refused before anything is written, see ``dataset.check_clashes``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnunet_freetumor.config import FreeTumorConfigError
from nnunet_freetumor.io import atomic_write_text, staged_folder
from nnunet_freetumor.unlabeled.dataset import SourceDataset
from nnunet_freetumor.unlabeled.report import REPORT_JSON, REPORT_MD, report_paths
from nnunet_freetumor.unlabeled.splits import SPLITS


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
    from nnunet_freetumor.offline import write_like

    for c, src in enumerate(images):
        shutil.copyfile(src, stage / "imagesTr" / f"{new_id}_{c:04d}{file_ending}")
    write_like(labels, reference, stage / "labelsTr" / f"{new_id}{file_ending}")


def commit_in_place(update: DatasetUpdate, dataset: SourceDataset) -> tuple[list[Path], list[Path]]:
    """Move the staged files in, then splits and reports, dataset.json last; undo everything on any error. Returns
    (split files, report files) written."""
    raw, pre_folder = dataset.raw, dataset.preprocessed
    moved: list[Path] = []
    replaced: dict[Path, str | None] = {}
    pre_existed = pre_folder.is_dir()

    def write(path: Path, text: str) -> None:
        if path not in replaced:
            replaced[path] = path.read_text() if path.is_file() else None
        atomic_write_text(path, text)

    try:
        for sub in ("imagesTr", "labelsTr"):
            (raw / sub).mkdir(exist_ok=True)
            for f in sorted((update.stage / sub).iterdir()):
                dst = raw / sub / f.name
                if dst.exists():
                    raise FreeTumorConfigError(f"{dst} appeared while this command ran: nothing was written")
                os.replace(f, dst)
                moved.append(dst)
        split_files = []
        for k, text in update.split_texts.items():
            path = pre_folder / SPLITS if k == "preprocessed" else raw / SPLITS
            write(path, text)
            split_files.append(path)
        paths = report_paths(update.report, raw)
        for p, text in zip(paths, update.report_texts):
            write(p, text)
        write(raw / "dataset.json", update.dataset_json)
    except BaseException:
        for dst in moved:
            with contextlib.suppress(OSError):
                dst.unlink()
        for path, old in replaced.items():
            with contextlib.suppress(OSError):
                if old is None:
                    path.unlink(missing_ok=True)
                else:
                    atomic_write_text(path, old)
        if not pre_existed:
            with contextlib.suppress(OSError):
                pre_folder.rmdir()  # only if empty: created for --make_split's split
        raise
    return split_files, list(paths)


def commit_new_dataset(update: DatasetUpdate, dataset: SourceDataset, target: Path) -> tuple[list[Path], list[Path]]:
    """Copy the raw dataset into a staged new dataset, add the new cases, splits, reports, dataset.json; the
    preprocessed folder of the new dataset gets the split (and the FreeTumor config) the same way. Returns (split
    files, report files) written."""
    from nnunet_freetumor.config import CONFIG_FILENAME

    pre_target = dataset.preprocessed.parent / target.name
    pre_files: dict[str, str] = {}
    if "preprocessed" in update.split_texts:
        pre_files[SPLITS] = update.split_texts["preprocessed"]
    src_cfg = dataset.preprocessed / CONFIG_FILENAME
    if src_cfg.is_file() and dataset.cfg_source == str(src_cfg):
        pre_files[CONFIG_FILENAME] = src_cfg.read_text()
    committed_pre = False
    split_files = []
    try:
        with staged_folder(target) as tmp:
            shutil.copytree(dataset.raw, tmp, dirs_exist_ok=True, ignore=_ignore_hidden)
            for sub in ("imagesTr", "labelsTr"):
                (tmp / sub).mkdir(exist_ok=True)
                for f in sorted((update.stage / sub).iterdir()):
                    os.replace(f, tmp / sub / f.name)
            if "raw" in update.split_texts:
                (tmp / SPLITS).write_text(update.split_texts["raw"])
                split_files.append(target / SPLITS)
            if update.report:
                paths = report_paths(update.report, target)
            else:
                paths = (tmp / REPORT_JSON, tmp / REPORT_MD)
            for p, text in zip(paths, update.report_texts):
                atomic_write_text(p, text)
            report_files = [target / p.name if p.parent == tmp else p for p in paths]
            (tmp / "dataset.json").write_text(update.dataset_json)
            if pre_files:
                with staged_folder(pre_target) as ptmp:
                    for fname, text in pre_files.items():
                        (ptmp / fname).write_text(text)
                committed_pre = True
                if SPLITS in pre_files:
                    split_files.append(pre_target / SPLITS)
    except BaseException:
        if committed_pre:
            shutil.rmtree(pre_target, ignore_errors=True)
        if update.report:
            for p in report_paths(update.report, target):
                p.unlink(missing_ok=True)
        raise
    return split_files, report_files


def _ignore_hidden(folder: str, names: list[str]) -> list[str]:
    """copytree filter: leave out hidden entries (staging folders of running commands)."""
    return [n for n in names if n.startswith(".")]
