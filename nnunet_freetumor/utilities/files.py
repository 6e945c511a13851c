"""File safety: atomic writes (a crash or ``kill -9`` leaves either the old file or the new one, never half of one),
folders built in a hidden sibling and renamed at the end, and the rules for a new nnU-Net dataset folder."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from nnunet_freetumor.errors import FreeTumorConfigError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success fsync it and ``os.replace`` it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; results folders are often shared
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        with contextlib.suppress(OSError):  # make the rename durable where the platform allows it
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_save(path: str | os.PathLike, writer: Callable[[Path], None]) -> None:
    """``writer(tmp)`` writes the file (``torch.save``, ``safetensors.torch.save_file``, ...); then it is renamed."""
    with atomic_path(path) as tmp:
        writer(tmp)


@contextlib.contextmanager
def staged_folder(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a hidden temporary sibling of ``target`` to build a whole folder in; on success it replaces ``target``
    (an existing one is removed only after the new one is in place), on any error it is deleted: no partial outputs.
    Hidden, so nnU-Net's dataset lookup ignores it."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700 folders
    try:
        yield tmp
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            os.replace(target, old / target.name)
            os.replace(tmp, target)
            shutil.rmtree(old)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def new_dataset_folder(
    raw_root: str | os.PathLike,
    dataset_id: int,
    name: str,
    *,
    other_roots=(),
    source: str | None = None,
    overwrite: bool = False,
) -> Path:
    """``raw_root/DatasetXXX_name`` for a dataset about to be written, after nnU-Net's rules: an id in 1..999, an
    alphanumeric name, not the source dataset's id, and no other dataset with that id in ``raw_root`` or
    ``other_roots`` (nnU-Net resolves datasets by id). An existing folder of the same name needs ``overwrite``."""
    if not 1 <= int(dataset_id) <= 999:
        raise FreeTumorConfigError(f"the dataset id must be in 1..999, got {dataset_id}")
    if not name or not name.replace("_", "").isalnum():
        raise FreeTumorConfigError(f"the dataset name must be alphanumeric (underscores allowed), got {name!r}")
    prefix = f"Dataset{int(dataset_id):03d}_"
    if source is not None and source.startswith(prefix):
        raise FreeTumorConfigError(f"dataset id {dataset_id} is the source dataset's id: choose a free dataset id")
    target = Path(raw_root) / f"{prefix}{name}"
    for root in (raw_root, *other_roots):
        if root is None or not Path(root).is_dir():
            continue
        others = sorted(p for p in Path(root).glob(f"{prefix}*") if p.name != target.name)
        if others:
            raise FreeTumorConfigError(
                f"{others[0]} already uses dataset id {dataset_id} (nnU-Net finds datasets by id): choose another "
                "id, or remove that folder"
            )
    if target.exists() and not overwrite:
        raise FreeTumorConfigError(f"{target} already exists: pass --overwrite to replace it")
    return target
