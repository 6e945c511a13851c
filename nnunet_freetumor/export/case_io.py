"""A source case read in the plan's axis order, and one synthetic case written back in the file's order: image,
label, the synthetic tumor's mask and a PNG (before / after, the mask outlined)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nnunet_freetumor.config import FreeTumorConfig
from nnunet_freetumor.export.attempt import Attempt
from nnunet_freetumor.plots import Example, save_montage
from nnunet_freetumor.utilities.dataset import RawCase
from nnunet_freetumor.utilities.image_io import read_image, write_like

MASKS_FOLDER = "synthetic_masksTr"
PNG_FOLDER = "synthesis_png"


@dataclass
class SourceCase:
    """A raw training case as the export works on it: arrays and native spacing in the plan's axis order, the
    SimpleITK images for their geometry, and the image type synthetic images are written with (float32 for integer
    sources: sub-HU differences survive and the original values are exactly representable)."""

    identifier: str
    image: np.ndarray
    labels: np.ndarray
    spacing: list[float]
    image_ref: Any
    label_ref: Any
    out_dtype: np.dtype

    @classmethod
    def read(cls, case: RawCase, transpose_forward: Sequence[int]) -> SourceCase:
        image, spacing, image_ref = read_image(case.image)
        labels, _, label_ref = read_image(case.label)
        out_dtype = image.dtype if np.issubdtype(image.dtype, np.floating) else np.dtype(np.float32)
        return cls(
            case.identifier,
            image.transpose(transpose_forward),
            labels.transpose(transpose_forward),
            [spacing[i] for i in transpose_forward],
            image_ref,
            label_ref,
            out_dtype,
        )


def write_case(
    folder: Path,
    out_id: str,
    src: SourceCase,
    a: Attempt,
    cfg: FreeTumorConfig,
    transpose_backward: Sequence[int],
    file_ending: str,
    method: str,
) -> dict[str, Any]:
    """Write the synthetic case ``out_id`` (the source with ``a``'s box and tumor label) into ``folder``; returns its
    entry of the synthesis log."""
    new_image = src.image.astype(src.out_dtype)  # a copy; the original values are exact in out_dtype
    region = new_image[a.box]
    changed = a.hu_box.numpy() != region.astype(np.float32)
    region[changed] = a.hu_box.numpy()[changed].astype(src.out_dtype)
    tumor = cfg.tumor_of(a.organ)
    new_labels = src.labels.copy()
    new_labels[a.mask] = tumor
    image_out, labels_out, mask_out = (x.transpose(transpose_backward) for x in (new_image, new_labels, a.mask))
    files = {
        "image": f"imagesTr/{out_id}_0000{file_ending}",
        "label": f"labelsTr/{out_id}{file_ending}",
        "synthetic_mask": f"{MASKS_FOLDER}/{out_id}{file_ending}",
    }
    write_like(np.ascontiguousarray(image_out), src.image_ref, folder / files["image"])
    write_like(np.ascontiguousarray(labels_out), src.label_ref, folder / files["label"])
    write_like(np.ascontiguousarray(mask_out.astype(np.uint8)), src.label_ref, folder / files["synthetic_mask"])
    idx = np.argwhere(mask_out)
    spacing_raw = [float(s) for s in reversed(src.image_ref.GetSpacing())]
    title = f"{method}: {a.size_class} tumor in organ {a.organ}" + ("" if a.p is None else f", P = {a.p:.2f}")
    window = (cfg.window.hu_min, cfg.window.hu_max)
    before = src.image.transpose(transpose_backward)
    montage(folder / PNG_FOLDER / f"{out_id}.png", before, image_out, mask_out, spacing_raw, title, window)
    pair = next(p for p in cfg.pairs if p.organ == a.organ)
    return {
        "case": out_id,
        "source_case": src.identifier,
        "accepted": True,
        "organ": a.organ,
        "organ_name": pair.name,
        "tumor_label": tumor,
        "size_class": a.size_class,
        "mask_voxels": int(a.mask.sum()),
        "mask_volume_ml": float(a.mask.sum() * np.prod(spacing_raw) / 1000.0),
        "edge_sigma_mm": a.edge_sigma_mm,
        "centre_voxel": [int(round(c)) for c in idx.mean(0)],
        "bbox": [[int(lo), int(hi) + 1] for lo, hi in zip(idx.min(0), idx.max(0))],
        "changed_voxels": int(changed.sum()),
        "gate_p": a.p,
        **files,
    }


def montage(
    path: str | os.PathLike,
    before: np.ndarray,
    after: np.ndarray,
    mask: np.ndarray,
    spacing: Sequence[float],
    title: str,
    window: tuple[float, float] | None = None,
    min_fov_mm: float = 64.0,
) -> None:
    """PNG: axial and coronal slices (file axes 0 and 1 fixed; SimpleITK (z, y, x) order) through the centre of
    ``mask``, before and after synthesis, the mask outlined, cropped to the tumour's surroundings (its extent on each
    side, at least ``min_fov_mm`` in all), square pixels; HU clipped to ``window`` (the config's) when given."""
    idx = np.argwhere(mask)
    centre = np.round(idx.mean(0)).astype(int)
    extent_mm = (idx.max(0) - idx.min(0) + 1) * np.asarray(spacing)
    half = [int(np.ceil(max(min_fov_mm / 2, 1.5 * e) / s)) for e, s in zip(extent_mm, spacing)]
    view_box = tuple(slice(max(c - h, 0), c + h + 1) for c, h in zip(centre, half))
    examples = []
    for axis, view in ((0, "axial"), (1, "coronal")):
        cut = list(view_box)
        cut[axis] = int(centre[axis])
        sp = [s for i, s in enumerate(spacing) if i != axis]
        b, im, m = (_isotropic(x[tuple(cut)], sp, order) for x, order in ((before, 1), (after, 1), (mask, 0)))
        if window is not None:
            b, im = np.clip(b, *window), np.clip(im, *window)
        examples.append(Example(image=im, mask=m > 0.5, title=view, before=b))
    save_montage(examples, path, title)


def _isotropic(image2d: np.ndarray, spacing2d: Sequence[float], order: int) -> np.ndarray:
    """A 2-D slice resampled to square pixels of the finer spacing (so that montages show true proportions)."""
    from scipy.ndimage import zoom

    s = min(spacing2d)
    return zoom(np.asarray(image2d, dtype=np.float32), [sp / s for sp in spacing2d], order=order)
