"""Reading and writing the images of a raw dataset (SimpleITK), and the checks that come before: a completeness
check for image files that readers would load half-written, and a same-voxel-grid check for an image and its label
file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from nnunet_freetumor.errors import FreeTumorConfigError

# how far two files' headers may differ and still count as the same voxel grid (mm, mm, direction cosines)
GEOMETRY_ATOL = {"spacing": 1e-4, "origin": 1e-3, "direction": 1e-4}


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
                f"case {case}: the {what} {other} has {key} {_vector(go[key])} but the image {image} has "
                f"{_vector(gi[key])} (tolerance {atol}): {fix}"
            )


def _vector(values) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def read_image(path: str | os.PathLike):
    """(array in SimpleITK's (z, y, x) order, spacing in the same order (mm), the SimpleITK image for its geometry)."""
    import SimpleITK as sitk

    try:
        check_complete(path)  # SimpleITK reads a truncated .nii.gz without an error
        img = sitk.ReadImage(str(path))
        arr = sitk.GetArrayFromImage(img)
    except (RuntimeError, ValueError) as e:  # unreadable, truncated or corrupt file
        last = str(e).strip().splitlines()[-1][:200] if str(e).strip() else repr(e)
        raise FreeTumorConfigError(
            f"cannot read {path} (corrupt or truncated file?): {last}; re-export or remove this file and run again"
        ) from None
    if arr.ndim != 3:
        raise FreeTumorConfigError(f"{path} is not a 3-D single-channel image (array shape {arr.shape})")
    return arr, tuple(float(s) for s in reversed(img.GetSpacing())), img


def write_like(array: np.ndarray, reference, path: str | os.PathLike) -> None:
    """Write ``array`` ((z, y, x)) with the geometry (origin, spacing, direction) of the SimpleITK image
    ``reference``."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(array)
    img.CopyInformation(reference)
    sitk.WriteImage(img, str(path), useCompression=True)
