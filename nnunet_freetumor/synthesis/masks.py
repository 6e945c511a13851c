"""Synthetic tumor masks: deformed ellipsoids sized in millimetres, centred inside the eroded organ, clipped to it.

All arrays are 3-D in the crop's voxel order (the plan's axis order); ``spacing`` gives the voxel size in mm along
those axes (nnU-Net's ``configuration_manager.spacing``), so the same config draws the same physical tumor sizes on
any plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import distance_transform_edt, zoom

from nnunet_freetumor.config import MaskConfig, SizeClass


def choose_size_class(cfg: MaskConfig, rng: np.random.Generator) -> SizeClass:
    w = np.array([c.weight for c in cfg.size_classes], dtype=float)
    return cfg.size_classes[int(rng.choice(len(w), p=w / w.sum()))]


def bbox(mask: np.ndarray, pad: int = 1) -> tuple[slice, ...]:
    """Bounding box of the True voxels of a non-empty mask, grown by ``pad`` voxels (clipped to the array)."""
    box = []
    for ax in range(mask.ndim):
        nz = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != ax)))
        box.append(slice(max(int(nz[0]) - pad, 0), min(int(nz[-1]) + 1 + pad, mask.shape[ax])))
    return tuple(box)


def centre_candidates(organ: np.ndarray, spacing: Sequence[float], cfg: MaskConfig) -> np.ndarray:
    """(N, 3) voxel indices where a tumor centre may go: the organ eroded by ``erosion_mm``, restricted along axis 0
    to ``center_extent`` of the organ's extent. Falls back to a weaker rule when a stronger one leaves nothing."""
    if not organ.any():
        return np.zeros((0, 3), dtype=int)
    box = bbox(organ)
    sub = organ[box]
    offset = np.array([s.start for s in box])
    eroded = distance_transform_edt(sub, sampling=spacing) > cfg.erosion_mm
    zs = np.nonzero(sub.any(axis=(1, 2)))[0]
    z0, z1 = zs[0], zs[-1]
    lo = z0 + cfg.center_extent[0] * (z1 - z0)
    hi = z0 + cfg.center_extent[1] * (z1 - z0)
    zsel = np.zeros(sub.shape[0], dtype=bool)
    zsel[int(np.floor(lo)) : int(np.ceil(hi)) + 1] = True
    for cand in (eroded & zsel[:, None, None], eroded, sub):
        pts = np.argwhere(cand)
        if len(pts):
            return pts + offset
    return np.zeros((0, 3), dtype=int)


def deformed_ellipsoid(
    radii_mm: Sequence[float], spacing: Sequence[float], deform_mm: float, rng: np.random.Generator
) -> np.ndarray:
    """A boolean ellipsoid with semi-axes ``radii_mm`` on a voxel grid of ``spacing``, centred in an odd-sized box.

    The surface is displaced by a smooth random field with standard deviation ``deform_mm`` (a 4^3 grid of Gaussian
    control values, cubic-spline upsampled), which makes irregular, lobulated but connected shapes.
    """
    radii = np.asarray(radii_mm, float)
    sp = np.asarray(spacing, float)
    half = np.ceil((radii + 3 * deform_mm) / sp).astype(int) + 1
    shape = tuple(2 * half + 1)
    coords = [(np.arange(n) - h) * s for n, h, s in zip(shape, half, sp)]
    grid = np.meshgrid(*coords, indexing="ij")
    if deform_mm > 0:
        control = rng.normal(0.0, deform_mm, size=(3, 4, 4, 4))
        grid = [g + upsample_control(c, shape) for g, c in zip(grid, control)]
    dist = sum((g / r) ** 2 for g, r in zip(grid, radii))
    out = dist <= 1.0
    out[tuple(half)] = True  # the centre voxel always belongs to the tumor
    return out


@lru_cache(maxsize=512)
def _spline_weights(n: int) -> np.ndarray:
    """(n, 4): row i weighs the 4 control values at output voxel i of ``scipy.ndimage.zoom(control, n / 4, order=3,
    mode="nearest", grid_mode=True)`` along one axis (zoom is linear: its columns are the zooms of the unit vectors)."""
    w = np.stack([zoom(e, n / 4.0, order=3, mode="nearest", grid_mode=True) for e in np.eye(4)], axis=1)
    w.setflags(write=False)
    return w


def upsample_control(control: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """A (4, 4, 4) control grid cubic-spline upsampled to ``shape``: equal to ``scipy.ndimage.zoom(control,
    shape / 4, order=3, mode="nearest", grid_mode=True)`` (to ~1e-14), axis by axis: a tensor-product spline's filter
    and interpolation both separate, so three small (n, 4) weight matrices replace zoom's 64 weights per voxel
    (~70x faster; zoom was ~90 % of a DA worker's mask drawing)."""
    w0, w1, w2 = (_spline_weights(int(n)) for n in shape)
    return np.einsum("ai,bj,ck,ijk->abc", w0, w1, w2, control, optimize=True)


def paste(mask_shape: Sequence[int], shape_mask: np.ndarray, centre: Sequence[int]) -> np.ndarray:
    """Place ``shape_mask`` (odd-sized box, centred) at voxel ``centre`` of an all-False array of ``mask_shape``."""
    out = np.zeros(tuple(mask_shape), dtype=bool)
    src, dst = [], []
    for n, c, m in zip(mask_shape, centre, shape_mask.shape):
        start = int(c) - m // 2
        lo, hi = max(start, 0), min(start + m, n)
        if lo >= hi:
            return out
        dst.append(slice(lo, hi))
        src.append(slice(lo - start, hi - start))
    out[tuple(dst)] = shape_mask[tuple(src)]
    return out


def sample_tumor_mask(
    organ: np.ndarray,
    spacing: Sequence[float],
    cfg: MaskConfig,
    rng: np.random.Generator,
    size_class: SizeClass | None = None,
) -> np.ndarray | None:
    """Draw one synthetic tumor mask inside ``organ``.

    organ: (X, Y, Z) bool, the healthy organ in the crop. spacing: voxel size in mm per axis. Returns a bool array of
    the same shape (the tumor, clipped to the organ) or None when the organ has no voxel to put a centre on.
    """
    organ = np.asarray(organ, dtype=bool)
    if organ.ndim != 3:
        raise ValueError(f"organ mask must be 3-D, got shape {organ.shape}")
    pts = centre_candidates(organ, spacing, cfg)
    if len(pts) == 0:
        return None
    centre = pts[rng.integers(len(pts))]
    cls = size_class or choose_size_class(cfg, rng)
    radii = rng.uniform(cls.radius_mm[0], cls.radius_mm[1], size=3)
    deform = float(rng.uniform(*cfg.deform_fraction)) * float(radii.mean())
    shape = deformed_ellipsoid(radii, spacing, deform, rng)
    mask = paste(organ.shape, shape, centre) & organ
    return mask if mask.any() else None


# --- soft masks (Gaussian smoothing, torch) ------------------------------------------------------------------------


def gaussian_kernel1d(sigma: float, size: int | None = None, device=None, dtype=torch.float32) -> torch.Tensor:
    """Normalised 1-D Gaussian; ``size`` defaults to 2*ceil(3 sigma)+1 (odd)."""
    if size is None:
        size = 2 * int(np.ceil(3 * sigma)) + 1
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    k = torch.exp(-0.5 * (x / max(sigma, 1e-6)) ** 2)
    return k / k.sum()


def gaussian_blur3d(x: torch.Tensor, sigma: Sequence[float], size: int | None = None) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, X, Y, Z) with per-axis ``sigma`` in voxels, zero padding ('same' size)."""
    b, c = x.shape[:2]
    out = x.reshape(b * c, 1, *x.shape[2:])
    for axis, s in enumerate(sigma):
        if s <= 0:
            continue
        k = gaussian_kernel1d(float(s), size, device=x.device, dtype=x.dtype)
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = k.numel()
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = k.numel() // 2
        out = F.conv3d(F.pad(out, pad), k.view(shape))
    return out.reshape(x.shape)


def soft_masks(
    mask: torch.Tensor, organ: torch.Tensor, sigma_mm: Sequence[float], spacing: Sequence[float]
) -> torch.Tensor:
    """Soft tumor masks for Eq. 1: each (hard) mask blurred with its own sigma (mm), multiplied by its organ so that
    nothing outside the organ changes. mask, organ: (B, 1, X, Y, Z) bool; sigma_mm: B values -> (B, 1, ...) float."""
    sp = torch.as_tensor(spacing, dtype=torch.float64)
    out = torch.stack([gaussian_blur3d(m[None].float(), (float(s) / sp).tolist())[0] for m, s in zip(mask, sigma_mm)])
    return out * organ.to(out.dtype)


def inside_soft_mask(soft: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """The tumor of each sample's soft mask: (B, ...) -> bool, soft >= ``threshold`` x the sample's peak (a tiny
    tumor's blurred mask may peak below 0.5); all False for an empty mask."""
    peak = soft.flatten(1).amax(1).view(-1, *([1] * (soft.ndim - 1)))
    return (soft >= threshold * peak) & (peak > 0)


def relative_depth(soft: torch.Tensor) -> torch.Tensor:
    """How deep each voxel lies inside its tumor, relative to the tumor's deepest voxel: (B, 1, X, Y, Z) soft masks ->
    same shape in [0, 1], 0 outside the tumor (``inside_soft_mask``), 1 at its deepest voxels (one tumor per sample).

    Depth counts the 3x3x3 erosions a voxel survives (a chessboard distance to the mask's edge, in voxels), so it runs
    as max-pooling on any device. A mask-conditioned generator given this channel can place structure that depends on
    depth relative to the tumor's size, e.g. a necrotic core deeper than half the tumor's maximum depth, without
    having to measure the tumor across its own receptive field.

    One host synchronisation in all: a voxel of depth d is the centre of a (2d - 1)^3 cube inside the tumor, so d is
    at most (n + 1) // 2 for the fewest slices n the tumor occupies along an axis; that many erosions are run."""
    inside = inside_soft_mask(soft)
    axes = range(2, inside.ndim)
    occupied = torch.stack([inside.any(dim=tuple(a for a in axes if a != ax)).sum(-1) for ax in axes])  # (3, B)
    n = int(occupied.amin(0).amax()) if inside.numel() else 0  # the fewest slices along an axis, worst sample
    cur = inside.to(soft.dtype)
    depth = torch.zeros_like(cur)
    for _ in range((n + 1) // 2):
        depth = depth + cur
        cur = -F.max_pool3d(-F.pad(cur, (1,) * 6), kernel_size=3, stride=1)  # erosion; outside the box is outside
    top = depth.flatten(1).amax(1).clamp_min(1.0).view(-1, *([1] * (depth.ndim - 1)))
    return depth / top
