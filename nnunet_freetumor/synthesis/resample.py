"""Boxes between spacings: trilinear resampling of images and soft masks, occupancy resampling of hard masks.

Used where a box is synthesized at one spacing and judged or measured at another (the offline export: native spacing
<-> the generator's and the plan's; the realism measures: a lesion's crop at a common spacing).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def size_at_spacing(shape: Sequence[int], spacing: Sequence[float], target_spacing: Sequence[float]) -> tuple[int, ...]:
    """Voxels per axis of a box of ``shape`` voxels at ``spacing`` (mm) resampled to ``target_spacing`` (rounded)."""
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target_spacing))


def resample(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Trilinear resampling of (B, C, X, Y, Z) to (B, C, *size) with ``align_corners=False``: the box's outer faces
    stay where they are (n voxels at spacing s become m voxels at spacing n*s/m, the target spacing up to rounding).
    Returns the input itself when the size does not change (bit-exact round trips at equal spacings)."""
    size = tuple(int(s) for s in size)
    if tuple(x.shape[2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="trilinear", align_corners=False)


def resample_mask(mask: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Boolean (X, Y, Z) mask -> boolean mask of ``size``: trilinear occupancy >= 0.5. A non-empty mask that would
    vanish (smaller than the new voxels) becomes the new voxels that contain its voxel centres."""
    occ = resample(mask[None, None].float(), size)[0, 0]
    out = occ >= 0.5
    if not bool(out.any()) and bool(mask.any()):
        scale = torch.tensor([t / n for t, n in zip(size, mask.shape)], dtype=torch.float64)
        idx = ((torch.nonzero(mask).cpu().double() + 0.5) * scale).long()
        idx = torch.minimum(idx, torch.tensor(list(size)) - 1)
        out[tuple(idx.T.to(out.device))] = True
    return out
