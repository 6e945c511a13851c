"""File safety: atomic writes (a crash or ``kill -9`` leaves either the old file or the new one, never half of one)
a completeness check for image files that readers would load half-written, and a same-voxel-grid check for an image
and its label file."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from nnunet_freetumor.errors import FreeTumorConfigError

# how far two files' headers may differ and still count as the same voxel grid (mm, mm, direction cosines)
GEOMETRY_ATOL = {"spacing": 1e-4, "origin": 1e-3, "direction": 1e-4}


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


def check_complete(path: str | os.PathLike) -> None:
    """Raise ``ValueError`` when an image file is cut short: a gzip stream that ends early or fails its CRC, or a NIfTI
    (``.nii`` / ``.nii.gz``) with fewer voxel bytes than its header announces.

    SimpleITK does not notice either: a ``.nii.gz`` cut in half reads without an error, the missing half filled with
    whatever the decoder left there. Costs one extra decompression pass; other formats are left to the reader.
    """
    import gzip
    import struct
    import zlib

    path = Path(path)
    name = path.name.lower()
    gz = name.endswith(".gz")
    if not (gz or name.endswith(".nii")):
        return
    opener = gzip.open if gz else open
    total, head = 0, b""
    try:
        with opener(path, "rb") as f:
            while chunk := f.read(1 << 24):
                if len(head) < 348:
                    head += chunk[: 348 - len(head)]
                total += len(chunk)
    except (EOFError, OSError, zlib.error) as e:  # gzip: "Compressed file ended before the end-of-stream marker ..."
        raise ValueError(f"{path} is truncated or corrupt ({e})") from None
    if not (name.endswith(".nii") or name.endswith(".nii.gz")) or len(head) < 348:
        return
    for endian in "<>":
        if struct.unpack(endian + "i", head[:4])[0] == 348:  # NIfTI-1 header size, in the file's byte order
            dim = struct.unpack(endian + "8h", head[40:56])
            bitpix = struct.unpack(endian + "h", head[72:74])[0]
            vox_offset = struct.unpack(endian + "f", head[108:112])[0]
            n = 1
            for d in dim[1 : 1 + max(0, min(dim[0], 7))]:
                n *= max(int(d), 1)
            expected = int(vox_offset) + n * bitpix // 8
            if total < expected:
                raise ValueError(f"{path} is truncated: {total} bytes of NIfTI data, its header announces {expected}")
            return


def image_geometry(path: str | os.PathLike) -> dict[str, Any]:
    """Size (x, y, z), spacing, origin and direction of an image file, read from its header only (SimpleITK)."""
    import SimpleITK as sitk

    r = sitk.ImageFileReader()
    r.SetFileName(str(path))
    try:
        r.ReadImageInformation()
    except RuntimeError as e:
        raise FreeTumorConfigError(f"cannot read {path}: {str(e).strip().splitlines()[-1][:200]}") from None
    return {
        "size": tuple(r.GetSize()),
        "spacing": tuple(r.GetSpacing()),
        "origin": tuple(r.GetOrigin()),
        "direction": tuple(r.GetDirection()),
    }


def check_same_grid(case: str, image: str | os.PathLike, other: str | os.PathLike, what: str, fix: str) -> None:
    """``other`` (the case's ``what``: label, mask) must lie on ``image``'s voxel grid (size exactly; spacing, origin
    and direction within ``GEOMETRY_ATOL``); otherwise one clear error naming the case, both values and ``fix``."""
    gi, go = image_geometry(image), image_geometry(other)
    if gi["size"] != go["size"]:
        raise FreeTumorConfigError(
            f"case {case}: the {what} {other} has size {go['size']} but the image {image} has {gi['size']}: {fix}"
        )
    for key, atol in GEOMETRY_ATOL.items():
        if len(gi[key]) != len(go[key]) or not np.allclose(gi[key], go[key], rtol=0, atol=atol):
            raise FreeTumorConfigError(
                f"case {case}: the {what} {other} has {key} {_fmt(go[key])} but the image {image} has "
                f"{_fmt(gi[key])} (tolerance {atol}): {fix}"
            )


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"
