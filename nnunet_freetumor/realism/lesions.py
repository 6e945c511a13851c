"""Where the tumors are, for the realism measures and the Turing kit: real ones (connected components of the tumor
labels in the raw training cases), synthetic ones (``synthesis_log.json`` of a ``freetumor_synthesize`` export), and
tumor-centred crops of them at the plan's spacing."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from nnunet_freetumor.config import FreeTumorConfigError
from nnunet_freetumor.export.log import read_synthesis_log
from nnunet_freetumor.synthesis.resample import resample
from nnunet_freetumor.utilities.dataset import RawCase
from nnunet_freetumor.utilities.image_io import read_image

# lesions smaller than this are left out of the Turing test and the FD (both kinds alike)
MIN_LESION_VOXELS = 10
MAX_CROP = 64


@dataclass(frozen=True)
class Lesion:
    """One tumor: where to find it. Voxel indices in the file's (SimpleITK (z, y, x)) order."""

    kind: str  # "real" | "synthetic"
    case: str
    image: Path
    centre: tuple[int, int, int]  # centre of mass, rounded
    voxels: int


def real_lesions(
    cases: Sequence[RawCase], tumor_labels: Sequence[int], min_voxels: int = MIN_LESION_VOXELS
) -> list[Lesion]:
    """Every connected component (26-connectivity) of the tumor labels in the cases' label files with at least
    ``min_voxels`` voxels, in case order."""
    from nnunet_freetumor.evaluation.lesions import connectivity_structure

    out = []
    for case in cases:
        labels = read_image(case.label)[0]
        comps, n = ndimage.label(np.isin(labels, list(tumor_labels)), structure=connectivity_structure(3, 26))
        for i, box in enumerate(ndimage.find_objects(comps, max_label=n), start=1):
            comp = comps[box] == i
            if int(comp.sum()) < min_voxels:
                continue
            centre = np.argwhere(comp).mean(0) + [s.start for s in box]
            out.append(
                Lesion(
                    "real",
                    case.identifier,
                    case.image,
                    tuple(int(round(c)) for c in centre),
                    int(comp.sum()),
                )
            )
    return out


def synthetic_lesions(export_folder: str | os.PathLike, min_voxels: int = MIN_LESION_VOXELS) -> list[Lesion]:
    """The accepted synthetic tumors of a ``freetumor_synthesize`` export (one per case), as its log describes them."""
    log = read_synthesis_log(export_folder)
    out = []
    for c in log["cases"]:
        if c["mask_voxels"] < min_voxels:
            continue
        out.append(
            Lesion(
                "synthetic",
                c["case"],
                Path(export_folder, c["image"]),
                tuple(int(v) for v in c["centre_voxel"]),
                int(c["mask_voxels"]),
            )
        )
    return out


def resolve_export(arg: str, raw_root: str | os.PathLike | None) -> Path:
    """An export given as a folder, or as a dataset id/name under ``$nnUNet_raw``."""
    if Path(arg).is_dir():
        folder = Path(arg)
    else:
        from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

        if raw_root is None:
            raise FreeTumorConfigError(f"{arg} is not a folder; set nnUNet_raw to look it up as a dataset id")
        try:
            folder = Path(raw_root, maybe_convert_to_dataset_name(arg))
        except RuntimeError as e:
            raise FreeTumorConfigError(f"--synthetic {arg}: {e}") from None
    read_synthesis_log(folder)  # a clear error when it is not an export
    return folder


def crop_size(patch_size: Sequence[int], max_size: int = MAX_CROP) -> tuple[int, ...]:
    """The FD crop: the plan's patch size, at most ``max_size`` voxels per axis."""
    return tuple(min(int(p), max_size) for p in patch_size)


def plan_crop(
    image: np.ndarray,
    spacing: Sequence[float],
    centre: Sequence[int],
    transpose_forward: Sequence[int],
    target_spacing: Sequence[float],
    size: Sequence[int],
) -> torch.Tensor:
    """A tumor-centred crop of ``size`` voxels at ``target_spacing`` (the plan's, plan axis order), HU float32.

    image, spacing, centre: the file's (z, y, x) order. The native box covering the same millimetres is cut (padded
    with the image minimum outside the image) and resampled trilinearly (``synthesis.resample``)."""
    from acvl_utils.cropping_and_padding.bounding_boxes import crop_and_pad_nd

    tf = list(transpose_forward)
    img = image.transpose(tf)
    sp = [spacing[i] for i in tf]
    c = [int(centre[i]) for i in tf]
    native = [max(1, int(np.ceil(n * t / s - 1e-6))) for n, t, s in zip(size, target_spacing, sp)]
    bbox = [[ci - n // 2, ci - n // 2 + n] for ci, n in zip(c, native)]
    crop = crop_and_pad_nd(img, bbox, pad_value=float(img.min())).astype(np.float32)
    return resample(torch.from_numpy(crop)[None, None], size)[0, 0]


def lesion_crops(
    lesions: Sequence[Lesion],
    transpose_forward: Sequence[int],
    target_spacing: Sequence[float],
    size: Sequence[int],
) -> torch.Tensor:
    """(N, 1, *size) HU crops of every lesion (each image file read once)."""
    out: list[torch.Tensor] = []
    cache: dict[Path, tuple[np.ndarray, Any]] = {}
    for les in lesions:
        if les.image not in cache:
            cache.clear()
            arr, sp, _ = read_image(les.image)
            cache[les.image] = (arr, sp)
        arr, sp = cache[les.image]
        out.append(plan_crop(arr, sp, les.centre, transpose_forward, target_spacing, size))
    return torch.stack(out)[:, None]
