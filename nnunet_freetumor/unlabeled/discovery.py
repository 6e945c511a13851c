"""Finding the unlabeled scans and their supplied organ masks.

Images: ``{case}_{CCCC}{file_ending}`` files of one folder (nnU-Net naming; exactly the channels and the file ending
of the dataset's dataset.json). Supplied masks: ``{case}{file_ending}`` in a mask folder, on the image's voxel grid
(shape; spacing, origin and direction within ``io.GEOMETRY_ATOL``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from nnunet_freetumor.config import FreeTumorConfigError
from nnunet_freetumor.utilities.image_io import check_same_grid


@dataclass(frozen=True)
class UnlabeledCase:
    identifier: str
    images: tuple[Path, ...]  # one per channel, _0000 first
    mask: Path | None = None  # organ mask, supplied or predicted


def find_unlabeled_cases(folder: str | os.PathLike, file_ending: str, n_channels: int) -> list[UnlabeledCase]:
    """``{case}_{CCCC}{file_ending}`` files of ``folder`` grouped by case; every case must have exactly the channels
    0..n_channels-1. Clear errors for a missing folder, no matching files or a channel mismatch."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FreeTumorConfigError(f"the unlabeled image folder {folder} does not exist")
    pattern = re.compile(r"^(.+)_(\d{4})" + re.escape(file_ending) + "$")
    channels: dict[str, dict[int, Path]] = {}
    bad_names = []
    for f in sorted(folder.iterdir()):
        if f.name.startswith(".") or not f.is_file():
            continue
        m = pattern.match(f.name)
        if m:
            channels.setdefault(m.group(1), {})[int(m.group(2))] = f
        elif f.name.endswith(file_ending):
            bad_names.append(f.name)
    if bad_names:
        raise FreeTumorConfigError(
            f"{folder / bad_names[0]} does not follow nnU-Net's naming: rename the images to "
            f"{{case}}_0000{file_ending} (one file per channel)"
        )
    if not channels:
        others = sorted({"".join(f.suffixes) for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")})
        raise FreeTumorConfigError(
            f"{folder} has no {{case}}_0000{file_ending} images (the dataset's file_ending)"
            + (f"; found files ending {others}: convert them to {file_ending}" if others else "")
        )
    cases = []
    for case, ch in sorted(channels.items()):
        if sorted(ch) != list(range(n_channels)):
            found = ", ".join(f"_{c:04d}" for c in sorted(ch))
            raise FreeTumorConfigError(
                f"case {case} in {folder} has channel file(s) {found}, but the dataset has {n_channels} input "
                f"channel(s) (dataset.json channel_names): provide exactly _0000..._{n_channels - 1:04d}"
            )
        cases.append(UnlabeledCase(case, tuple(ch[c] for c in range(n_channels))))
    return cases


def attach_masks(cases: Sequence[UnlabeledCase], folder: Path, file_ending: str) -> list[UnlabeledCase]:
    """``cases`` with their supplied masks ``folder/{case}{file_ending}``; a missing mask or one off the image's grid
    is an error naming the case."""
    if not folder.is_dir():
        raise FreeTumorConfigError(f"the organ mask folder {folder} does not exist")
    out = []
    for c in cases:
        mask = folder / f"{c.identifier}{file_ending}"
        if not mask.is_file():
            raise FreeTumorConfigError(
                f"case {c.identifier}: no organ mask {mask} (supplied masks are named {{case}}{file_ending})"
            )
        check_same_grid(
            c.identifier, c.images[0], mask, "organ mask", "resample the mask to the image, nearest neighbour"
        )
        out.append(replace(c, mask=mask))
    return out
