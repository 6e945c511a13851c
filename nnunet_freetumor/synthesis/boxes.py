"""Tumor-centred crops of training patches: the generator and the gate only need the tumor and its surroundings.

The box around a tumor mask is the same everywhere a generator or the gate looks at a tumor (generator training, the
nnU-Net trainers, the offline export): :class:`CropRule` (the mask's bounding box plus a margin in millimetres, at
least / at most a size), stored in every generator checkpoint so that a generator is used with the context it was
trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch


def tumor_box(mask: torch.Tensor, size: Sequence[int]) -> tuple[slice, ...]:
    """A box of ``size`` (clipped to the patch) centred on the bounding box of ``mask`` (X, Y, Z), shifted to stay
    inside the patch."""
    box = []
    for ax, s in enumerate(size):
        n = mask.shape[ax]
        s = min(int(s), n)
        nz = torch.nonzero(mask.any(dim=tuple(a for a in range(3) if a != ax)))
        lo, hi = (int(nz.min()), int(nz.max()) + 1) if len(nz) else (0, n)
        start = min(max((lo + hi) // 2 - s // 2, 0), n - s)
        box.append(slice(start, start + s))
    return tuple(box)


def crop_size_for(masks: torch.Tensor, min_size: Sequence[int], pad: Sequence[int]) -> tuple[int, ...]:
    """One crop size for a batch of masks (N, X, Y, Z): at least ``min_size``, and large enough to hold every mask's
    bounding box plus ``pad`` voxels on each side; never larger than the patch."""
    ext = [0, 0, 0]
    for m in masks:
        for ax in range(3):
            nz = torch.nonzero(m.any(dim=tuple(a for a in range(3) if a != ax)))
            if len(nz):
                ext[ax] = max(ext[ax], int(nz.max()) - int(nz.min()) + 1)
    shape = masks.shape[1:]
    return tuple(min(n, max(int(lo), e + 2 * int(p))) for n, lo, e, p in zip(shape, min_size, ext, pad))


def _voxels(mm: Sequence[float], spacing: Sequence[float]) -> list[int]:
    return [int(np.ceil(m / s - 1e-6)) for m, s in zip(mm, spacing)]


@dataclass(frozen=True)
class CropRule:
    """The box a tumor is seen in: its mask's bounding box plus ``margin_mm`` on every side, at least
    ``min_size_mm`` and at most ``max_size_mm`` per axis (None: no cap but the array), centred on the mask and shifted
    to stay inside the array. Millimetres, so that one rule fits every plan spacing."""

    margin_mm: float
    min_size_mm: tuple[float, ...] = (0.0, 0.0, 0.0)
    max_size_mm: tuple[float, ...] | None = None

    def size(self, mask: torch.Tensor | np.ndarray, spacing: Sequence[float]) -> tuple[int, ...]:
        """Box size in voxels for a (X, Y, Z) mask at ``spacing`` (mm)."""
        m = torch.as_tensor(np.ascontiguousarray(mask) if isinstance(mask, np.ndarray) else mask).bool()
        pad = _voxels([self.margin_mm] * 3, spacing)
        size = crop_size_for(m[None], _voxels(self.min_size_mm, spacing), pad)
        if self.max_size_mm is not None:
            size = tuple(
                min(s, max(1, int(np.floor(mx / sp + 1e-6)))) for s, mx, sp in zip(size, self.max_size_mm, spacing)
            )
        return size

    def batch_size(self, masks: torch.Tensor | Sequence[torch.Tensor], spacing: Sequence[float]) -> tuple[int, ...]:
        """One box size for several (X, Y, Z) masks of one shape: the largest ``size`` per axis (so that a batch of
        boxes stacks; every tumor gets at least the context the rule asks for)."""
        sizes = [self.size(m, spacing) for m in masks]
        return tuple(max(s[ax] for s in sizes) for ax in range(3))

    def box(self, mask: torch.Tensor | np.ndarray, spacing: Sequence[float]) -> tuple[slice, ...]:
        """The box (slices into the mask's array) of a non-empty (X, Y, Z) mask."""
        m = torch.as_tensor(np.ascontiguousarray(mask) if isinstance(mask, np.ndarray) else mask).bool()
        return tumor_box(m, self.size(m, spacing))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CropRule:
        mx = d.get("max_size_mm")
        return cls(
            float(d["margin_mm"]),
            tuple(float(v) for v in d.get("min_size_mm", (0.0, 0.0, 0.0))),
            None if mx is None else tuple(float(v) for v in mx),
        )


def synthesis_box(
    mask: np.ndarray, spacing: Sequence[float], min_size_mm: Sequence[float], margin_mm: float
) -> tuple[slice, ...]:
    """Box (slices) around a non-empty (X, Y, Z) mask: at least ``min_size_mm`` per axis and the mask's bounding box
    plus ``margin_mm`` on each side, centred on the mask, shifted to stay inside the array and clipped to it."""
    return CropRule(float(margin_mm), tuple(float(v) for v in min_size_mm)).box(mask, spacing)
