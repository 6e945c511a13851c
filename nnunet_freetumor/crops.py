"""Tumor-centred crops of training patches: the generator and the gate only need the tumor and its surroundings."""

from __future__ import annotations

from collections.abc import Sequence

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
