"""A deterministic, CT-like abdominal phantom in Hounsfield units (HU), written as an nnU-Net v2 raw dataset.

Conventions: numpy arrays are (z, y, x), spacings are (z, y, x) in mm. With SimpleITK's identity direction (LPS) the
x index grows towards the patient's left, y towards posterior and z towards superior, so the liver (patient's right)
sits at small x (image left, radiological convention) and the spine at large y. Anatomy is defined in coordinates
normalised to the field of view ([-1, 1] per axis), so it scales with shape and spacing; lesion sizes are in mm
(longest diameter, WHO style, measured between voxel centres as in
:func:`nnunet_freetumor.evaluation.lesions.longest_diameter_mm`).

One case (noise-free values, then correlated noise of sigma 10-15 HU):

=============================  ===============  ===================================================================
tissue                         HU               where
=============================  ===============  ===================================================================
air                            -1000            outside an elliptical body
subcutaneous fat               ~-100            outer ring of the body
muscle                         ~+50             abdominal wall ring, paraspinal muscles
visceral fat / bowel           ~-90 / ~+30      inside the wall, mixed by a smooth random field
vertebra                       300-700          posterior midline: cancellous ~320, cortical shell ~650, arch
discs, spinal canal            ~90, ~15         between vertebrae, inside the arch
aorta, inferior vena cava      ~190, ~140       anterior to the spine (not labelled)
liver                          100-120          right, irregular (deformed ellipsoid), texture +-10 HU
hepatic vessels                160-200          curved tubes through the liver (labelled liver)
kidneys (optional)             ~150 / ~90       two bean shapes: cortex / medulla
lesions (``lesions=``)         by appearance:   irregular, inside their organ, own texture (sd 4-9 HU)
- "hypodense" (default)        organ - 30-70    >= 15 mm: sometimes a core 15-30 HU darker, or a brighter rim
- "hyperdense"                 organ + 30-70    arterial phase; >= 15 mm: sometimes a centre 20-40 % less bright
- "heterogeneous"              rim organ-20-40  necrotic core (deeper than half the max depth) 30-60 darker than the
                               core rim-30-60   rim; lesions < 10 mm or < 2 voxels deep: homogeneous, the rim only
=============================  ===============  ===================================================================

Labels (uint8): 0 background, 1 liver, 2 liver tumor; with kidneys 3 kidney, 4 kidney tumor. Tumor voxels replace
organ voxels; lesions lie fully inside their organ and never touch each other (each one is its own 26-connected
component). Everything is a pure function of its arguments and the random generator passed in.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from scipy import ndimage

from nnunet_freetumor.evaluation.lesions import longest_diameter_mm
from nnunet_freetumor.utilities.files import new_dataset_folder, staged_folder

# longest diameter (mm) of each lesion size class: [min, max); ordered from small to large
SIZE_CLASSES: dict[str, tuple[float, float]] = {
    "tiny": (5.0, 10.0),
    "small": (10.0, 20.0),
    "medium": (20.0, 40.0),
    "large": (40.0, 60.0),
}
# class weights of the lesions of training cases and of the (small-lesion rich) test cases
TRAIN_CLASS_WEIGHTS: dict[str, float] = {"tiny": 0.25, "small": 0.25, "medium": 0.25, "large": 0.25}
TEST_CLASS_WEIGHTS: dict[str, float] = {"tiny": 0.35, "small": 0.35, "medium": 0.2, "large": 0.1}
TRAIN_LESIONS_PER_CASE = (1, 3)  # inclusive
TEST_LESIONS_PER_CASE = (2, 4)  # inclusive

ORGANS: dict[str, tuple[int, int]] = {"liver": (1, 2), "kidney": (3, 4)}  # organ -> (organ label, tumor label)
LABEL_NAMES: dict[str, int] = {"background": 0, "liver": 1, "liver tumor": 2, "kidney": 3, "kidney tumor": 4}
# codes of the noise-free tissue map returned by make_anatomy (for tests and figures; not written to disk)
TISSUES: dict[str, int] = {
    "air": 0,
    "subcutaneous_fat": 1,
    "muscle": 2,
    "visceral_fat": 3,
    "bowel": 4,
    "bone": 5,
    "disc_or_canal": 6,
    "great_vessel": 7,
    "liver": 8,
    "liver_vessel": 9,
    "kidney": 10,
}

MIN_SHAPE = 16  # voxels per axis
LESION_GAP_MM = 3.0  # minimum distance between two lesions (at least one voxel diagonal, see _lesion_gap_mm)
KIDNEY_LESION_FRACTION = 0.3  # share of lesions that go into a kidney when kidneys are present
# appearance of the lesions (``lesions=`` of make_case / make_demo_dataset, --lesions of the console script)
LESION_APPEARANCES: dict[str, str] = {
    "hypodense": "darker than the parenchyma by 30-70 HU; lesions >= 15 mm sometimes with a darker core or a "
    "brighter rim (the default)",
    "hyperdense": "brighter than the parenchyma by 30-70 HU, as hypervascular lesions in an arterial phase; lesions "
    ">= 15 mm sometimes with a less bright (still hyperdense) centre",
    "heterogeneous": "a rim 20-40 HU darker than the parenchyma around a necrotic core 30-60 HU darker still; "
    "lesions < 10 mm (or too thin for a core) are the rim alone",
}
NOISE_SMOOTHING_VOXELS = 0.6
_ATTEMPTS_PER_CLASS = 40
_MIN_KEPT_FRACTION = 0.8  # a lesion clipped to its organ keeps at least this share of its ellipsoid
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


class Anatomy(NamedTuple):
    """Noise-free anatomy of one case: ``hu`` float32 (z, y, x) in HU, ``labels`` uint8 organ labels (1 liver,
    3 kidney), ``tissue`` uint8 codes of :data:`TISSUES`, ``parenchyma_hu`` organ name -> mean parenchymal HU."""

    hu: np.ndarray
    labels: np.ndarray
    tissue: np.ndarray
    parenchyma_hu: dict[str, float]


# ---------------------------------------------------------------------------------------------------------------
# validation


def _check_shape_spacing(shape: Sequence[int], spacing: Sequence[float]) -> tuple[tuple[int, int, int], np.ndarray]:
    try:
        shp = tuple(int(s) for s in shape)
        ok = len(shp) == 3 and all(float(s) == int(s) for s in shape)
    except (TypeError, ValueError):
        ok = False
    if not ok or any(s < MIN_SHAPE for s in shp):
        raise ValueError(f"shape must be 3 integers >= {MIN_SHAPE} voxels (z, y, x), got {tuple(shape)}")
    try:
        sp = np.asarray([float(s) for s in spacing], dtype=np.float64)
    except (TypeError, ValueError):
        sp = np.zeros(0)
    if sp.shape != (3,) or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise ValueError(f"spacing must be 3 positive values in mm (z, y, x), got {tuple(spacing)}")
    return shp, sp  # type: ignore[return-value]


def _check_organs(organs: Sequence[str]) -> tuple[str, ...]:
    if isinstance(organs, str):
        organs = (organs,)
    organs = tuple(organs)
    unknown = [o for o in organs if o not in ORGANS]
    if unknown:
        raise ValueError(f"unknown organ(s) {unknown}: known organs are {list(ORGANS)}")
    if "liver" not in organs or len(set(organs)) != len(organs):
        raise ValueError(f"organs must contain 'liver' once (and optionally 'kidney'), got {list(organs)}")
    return organs


def _check_appearance(lesions: str) -> str:
    if not isinstance(lesions, str) or lesions not in LESION_APPEARANCES:
        raise ValueError(f"unknown lesion appearance {lesions!r}: known appearances are {list(LESION_APPEARANCES)}")
    return lesions


def _check_classes(lesion_classes: Sequence[str]) -> list[str]:
    if isinstance(lesion_classes, str):
        lesion_classes = (lesion_classes,)
    classes = [str(c) for c in lesion_classes]
    unknown = [c for c in classes if c not in SIZE_CLASSES]
    if unknown:
        raise ValueError(f"unknown lesion size class(es) {unknown}: known classes are {list(SIZE_CLASSES)}")
    return classes


# ---------------------------------------------------------------------------------------------------------------
# anatomy


def _smooth_noise(shape: Sequence[int], sigma: float | Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """float32 array of ``shape``: Gaussian white noise smoothed with ``sigma`` (voxels), rescaled to mean 0, std 1."""
    n = ndimage.gaussian_filter(rng.standard_normal(tuple(shape), dtype=np.float32), sigma, mode="wrap")
    return (n - n.mean()) / (n.std() + 1e-6)


def _grid(shape: Sequence[int]) -> list[np.ndarray]:
    """Normalised coordinates in [-1, 1] per axis as three float32 (z, y, x) arrays."""
    return np.meshgrid(*[np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape], indexing="ij")


class _Canvas:
    """The arrays an anatomy is painted into: HU, tissue codes, organ labels."""

    def __init__(self, shape: tuple[int, int, int]):
        self.hu = np.full(shape, -1000.0, dtype=np.float32)
        self.tissue = np.zeros(shape, dtype=np.uint8)
        self.labels = np.zeros(shape, dtype=np.uint8)

    def put(self, mask: np.ndarray, value: float | np.ndarray, code: str) -> None:
        self.hu[mask] = value[mask] if isinstance(value, np.ndarray) else value
        self.tissue[mask] = TISSUES[code]


def make_anatomy(shape: Sequence[int], rng: np.random.Generator, organs: Sequence[str] = ("liver",)) -> Anatomy:
    """The noise-free anatomy of one case (see the module docstring for tissues and HU values).

    shape: (z, y, x) voxels, each >= 16. The anatomy is defined in normalised coordinates, so it does not depend on
    the spacing. ``make_case`` calls this first with its generator: the same generator state gives the same anatomy.
    The parts are painted in a fixed order (each draws from ``rng`` in turn): body, spine, great vessels, liver,
    kidneys.
    """
    shape, _ = _check_shape_spacing(shape, (1.0, 1.0, 1.0))
    organs = _check_organs(organs)
    grid = _grid(shape)
    c = _Canvas(shape)
    in_body, inner, fat_texture = _paint_body(c, grid, rng)
    spine = _paint_spine(c, grid, in_body, fat_texture, rng)
    z, y, x = grid
    aorta = ((x - 0.07) / 0.055) ** 2 + ((y - 0.17) / 0.055) ** 2 <= 1.0  # anterior to the spine, arterial contrast
    ivc = ((x + 0.13) / 0.05) ** 2 + ((y - 0.14) / 0.04) ** 2 <= 1.0  # inferior vena cava
    c.put(aorta & inner, rng.uniform(180.0, 200.0), "great_vessel")
    c.put(ivc & inner, rng.uniform(130.0, 150.0), "great_vessel")
    parenchyma = {"liver": _paint_liver(c, grid, inner & ~spine & ~aorta & ~ivc, rng)}
    if "kidney" in organs:  # two beans, lateral to the spine; they take precedence over the liver
        parenchyma["kidney"] = _paint_kidneys(c, grid, in_body & ~spine, rng)
    return Anatomy(c.hu, c.labels, c.tissue, parenchyma)


def _paint_body(c: _Canvas, grid: list[np.ndarray], rng: np.random.Generator):
    """An ellipse, a bit wider at the bottom of the field of view: fat ring, muscle wall, visceral fat and bowel,
    paraspinal muscles. Returns (inside the muscle wall, inside the abdominal cavity, the fat texture)."""
    z, y, x = grid
    shape = x.shape
    a, b = rng.uniform(0.86, 0.94), rng.uniform(0.68, 0.78)
    body_r = (x / a) ** 2 + ((y - 0.05) / b) ** 2 * (1.0 + 0.05 * z**2)
    fat_texture = 4.0 * _smooth_noise(shape, (1.0, 2.0, 2.0), rng)
    c.put(body_r <= 1.0, -100.0 + fat_texture, "subcutaneous_fat")
    wall = rng.uniform(0.84, 0.88) ** 2
    c.put(body_r <= wall, 50.0 + fat_texture, "muscle")
    inner = body_r <= (np.sqrt(wall) - 0.06) ** 2
    bowel = _smooth_noise(shape, (1.5, 3.0, 3.0), rng) > 0.25
    c.put(inner & ~bowel, -90.0 + fat_texture, "visceral_fat")
    c.put(inner & bowel, 30.0 + 2.0 * fat_texture, "bowel")
    for side in (-1.0, 1.0):  # paraspinal muscles
        c.put(((x - side * 0.17) / 0.12) ** 2 + ((y - 0.55) / 0.12) ** 2 <= 1.0, 50.0 + fat_texture, "muscle")
    return body_r <= wall, inner, fat_texture


def _paint_spine(
    c: _Canvas, grid: list[np.ndarray], in_body: np.ndarray, fat_texture: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Vertebral bodies (cancellous core, cortical shell) separated by discs, canal, arch, spinous process.
    Returns the spine's voxels (organs never overlap them)."""
    z, y, x = grid
    vb = (x / 0.12) ** 2 + ((y - 0.36) / 0.11) ** 2
    period, phase = rng.uniform(0.4, 0.5), rng.uniform(0.0, 1.0)
    disc = ((z / period + phase) % 1.0) < 0.2
    c.put((vb <= 1.0) & in_body, 650.0, "bone")
    c.put((vb <= 0.6) & in_body, 320.0 + 15.0 * fat_texture, "bone")
    c.put((vb <= 1.0) & disc & in_body, 90.0, "disc_or_canal")
    canal = (x / 0.05) ** 2 + ((y - 0.55) / 0.045) ** 2
    arch = ((x / 0.095) ** 2 + ((y - 0.56) / 0.085) ** 2 <= 1.0) & (y >= 0.47)
    spinous = (np.abs(x) <= 0.025) & (y >= 0.56) & (y <= 0.72)
    c.put((arch | spinous) & ~disc & in_body, 500.0, "bone")
    c.put((canal <= 1.0) & in_body, 15.0, "disc_or_canal")
    return (vb <= 1.0) | arch | spinous


def _paint_liver(c: _Canvas, grid: list[np.ndarray], room: np.ndarray, rng: np.random.Generator) -> float:
    """On the patient's right (small x), an ellipsoid with a thinner left lobe and low-frequency deformation, inside
    ``room``, with hepatic / portal vessels. Returns its parenchyma's HU."""
    z, y, x = grid
    shape = x.shape
    ctr = (rng.uniform(-0.1, 0.15), rng.uniform(-0.12, 0.0), rng.uniform(-0.42, -0.32))
    r = (rng.uniform(0.75, 0.9), rng.uniform(0.42, 0.5), rng.uniform(0.36, 0.42))
    taper = 1.0 - 0.35 * np.clip((x - ctr[2]) / r[2], 0.0, 1.0)  # the left lobe is thinner (anterior-posterior)
    f = ((z - ctr[0]) / r[0]) ** 2 + ((y - ctr[1]) / (r[1] * taper)) ** 2 + ((x - ctr[2]) / r[2]) ** 2
    f += 0.25 * _smooth_noise(shape, [max(n / 5.0, 1.0) for n in shape], rng)
    liver = (f <= 1.0) & room
    parenchyma = float(rng.uniform(100.0, 120.0))
    c.put(liver, parenchyma + 5.0 * _smooth_noise(shape, (1.0, 2.0, 2.0), rng), "liver")
    for _ in range(int(rng.integers(3, 5))):  # curved tubes
        p0 = np.array(ctr) + rng.uniform(-0.2, 0.2, 3)
        d = rng.standard_normal(3)
        d /= np.linalg.norm(d)
        bend = rng.uniform(-0.3, 0.3, 3)
        t = (z - p0[0]) * d[0] + (y - p0[1]) * d[1] + (x - p0[2]) * d[2]
        q = [g - (p + dd * t + bb * t**2) for g, p, dd, bb in zip((z, y, x), p0, d, bend)]
        vessel = (q[0] ** 2 * 0.25 + q[1] ** 2 + q[2] ** 2 <= rng.uniform(0.025, 0.045) ** 2) & liver
        c.put(vessel, rng.uniform(160.0, 200.0), "liver_vessel")
    c.labels[liver] = ORGANS["liver"][0]
    return parenchyma


def _paint_kidneys(c: _Canvas, grid: list[np.ndarray], room: np.ndarray, rng: np.random.Generator) -> float:
    """Two beans with a hilum and a darker medulla, inside ``room`` (over the liver where they meet). Returns their
    cortex's HU."""
    z, y, x = grid
    parenchyma = float(rng.uniform(140.0, 160.0))
    medulla = rng.uniform(80.0, 100.0)
    texture = 5.0 * _smooth_noise(x.shape, (1.0, 2.0, 2.0), rng)
    for side in (-1.0, 1.0):
        kc = (rng.uniform(-0.35, -0.05), rng.uniform(0.3, 0.36), side * rng.uniform(0.4, 0.46))
        kr = (rng.uniform(0.4, 0.5), rng.uniform(0.15, 0.18), rng.uniform(0.13, 0.16))
        kf = ((z - kc[0]) / kr[0]) ** 2 + ((y - kc[1]) / kr[1]) ** 2 + ((x - kc[2]) / kr[2]) ** 2
        hilum = ((z - kc[0]) / (0.4 * kr[0])) ** 2 + ((y - kc[1]) / 0.07) ** 2 + (
            (x - kc[2] + side * kr[2]) / 0.08
        ) ** 2 <= 1.0
        kidney = (kf <= 1.0) & ~hilum & room
        c.put(kidney, parenchyma + texture, "kidney")
        c.put(kidney & (kf <= 0.3), medulla + texture, "kidney")
        c.labels[kidney] = ORGANS["kidney"][0]
    return parenchyma


# ---------------------------------------------------------------------------------------------------------------
# lesions


def _lesion_gap_mm(spacing: np.ndarray) -> float:
    """Lesions are kept this far apart: LESION_GAP_MM, and at least a voxel diagonal (never 26-adjacent)."""
    return max(LESION_GAP_MM, float(np.linalg.norm(spacing))) + 1e-3


def _box(centre: np.ndarray, half: np.ndarray, shape: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(max(int(c - h), 0), min(int(c + h + 1), n)) for c, h, n in zip(centre, half, shape))


def _grow(box: tuple[slice, ...], margin: Sequence[int], shape: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(max(s.start - m, 0), min(s.stop + m, n)) for s, m, n in zip(box, margin, shape))


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q *= np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def _try_shape(
    free: np.ndarray,
    dist: np.ndarray,
    spacing: np.ndarray,
    lo: float,
    hi: float,
    rng: np.random.Generator,
    attempts: int,
) -> tuple[tuple[slice, ...], np.ndarray, float] | None:
    """Up to ``attempts`` irregular lesions with longest diameter in [lo, hi) mm inside ``free``.

    Returns (box, boolean mask of the box, longest diameter in mm) of the first that fits, else None."""
    shape = free.shape
    for attempt in range(attempts):
        d = rng.uniform(lo + 0.05 * (hi - lo), hi - 0.05 * (hi - lo))
        radii = np.array([d / 2, d / 2 * rng.uniform(0.6, 0.95), d / 2 * rng.uniform(0.6, 0.95)])
        need = radii.max() * (0.9 if attempt < attempts // 2 else 0.6)
        room = np.flatnonzero(dist.ravel() > need)
        if len(room) == 0:
            if attempt >= attempts // 2:
                return None  # not even the relaxed condition fits anywhere: the organ is too small for the class
            continue
        centre = np.array(np.unravel_index(room[rng.integers(len(room))], shape))
        half = np.ceil(radii.max() * 1.3 / spacing).astype(int) + 1
        box = _box(centre, half, shape)
        box_shape = tuple(s.stop - s.start for s in box)
        coords = np.stack(
            np.meshgrid(*[(np.arange(s.start, s.stop) - c) * p for s, c, p in zip(box, centre, spacing)], indexing="ij")
        )
        # elastic-like deformation: a smooth random displacement field (mm), then a rotated ellipsoid with wobble
        sigma = np.maximum(radii.mean() / 2.0 / spacing, 0.5)
        amp = 0.15 * radii.mean()
        coords = coords + np.stack([amp * _smooth_noise(box_shape, sigma, rng) for _ in range(3)])
        u = np.tensordot(_random_rotation(rng).T, coords, axes=1)
        wobble = 1.0 + 0.1 * _smooth_noise(box_shape, sigma, rng)
        ellipsoid = ((u / radii[:, None, None, None]) ** 2).sum(0) <= wobble
        mask = ellipsoid & free[box]
        n_comp = 0
        if mask.any():
            comp, n_comp = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
        if n_comp == 0:
            continue
        if n_comp > 1:  # keep the largest piece: one lesion is one connected component
            mask = comp == (np.argmax(np.bincount(comp.ravel())[1:]) + 1)
        if mask.sum() < max(_MIN_KEPT_FRACTION * ellipsoid.sum(), 2):
            continue
        diameter = longest_diameter_mm(mask, spacing)
        if lo <= diameter < hi:
            return box, mask, diameter
    return None


def _place_lesion(
    labels: np.ndarray,
    organ_label: int,
    taken: np.ndarray,
    size_class: str,
    spacing: np.ndarray,
    rng: np.random.Generator,
) -> tuple[str, tuple[slice, ...], np.ndarray, float] | None:
    """Place one lesion of ``size_class`` in the free part of the organ; if it does not fit, retry elsewhere and then
    with the next smaller classes. Returns (actual class, box, mask of the box, diameter mm) or None."""
    free = (labels == organ_label) & ~taken
    if not free.any():
        return None
    dist = ndimage.distance_transform_edt(free, sampling=spacing)
    names = list(SIZE_CLASSES)
    for cls in reversed(names[: names.index(size_class) + 1]):
        found = _try_shape(free, dist, spacing, *SIZE_CLASSES[cls], rng, _ATTEMPTS_PER_CLASS)
        if found is not None:
            return (cls, *found)
    return None


def partial_volume_weight(mask: np.ndarray) -> np.ndarray:
    """The weight with which a lesion on ``mask`` is blended into the image (partial volume at its border)."""
    soft = ndimage.gaussian_filter(mask.astype(np.float32), 0.6)
    soft[mask] = np.maximum(soft[mask], 0.85)
    return soft


def image_noise(shape: Sequence[int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """The phantom's image noise: white noise smoothed over ``NOISE_SMOOTHING_VOXELS``, scaled to ``sigma`` HU."""
    noise = ndimage.gaussian_filter(rng.standard_normal(tuple(shape), dtype=np.float32), NOISE_SMOOTHING_VOXELS)
    return noise * (sigma / (float(noise.std()) + 1e-6))


def _paint_lesion(
    hu: np.ndarray,
    labels: np.ndarray,
    box: tuple[slice, ...],
    mask: np.ndarray,
    organ_label: int,
    tumor_label: int,
    base_hu: float,
    diameter_mm: float,
    spacing: np.ndarray,
    rng: np.random.Generator,
    appearance: str = "hypodense",
) -> dict[str, Any]:
    """Write one lesion into ``hu`` and ``labels`` (in place, within a box around it); return its appearance.

    ``appearance`` is one of :data:`LESION_APPEARANCES`; "hypodense" draws exactly as this function always did.
    The returned ``contrast_hu`` is a magnitude in HU: how much darker (hypodense, heterogeneous) or brighter
    (hyperdense) than ``base_hu`` the lesion is painted, before its texture, the noise and the partial volume at its
    border; for hypodense and hyperdense it is the offset before the >= 15 mm pattern, for heterogeneous the mean
    over the lesion's voxels of the rim and core offsets (``rim_contrast_hu``, ``core_contrast_hu``; the latter
    None without a core)."""
    pbox = _grow(box, (2, 2, 2), hu.shape)
    m = np.zeros(tuple(s.stop - s.start for s in pbox), dtype=bool)
    m[tuple(slice(b.start - p.start, b.stop - p.start) for b, p in zip(box, pbox))] = mask
    tex_sigma = np.maximum(1.5 / spacing, 0.5)
    extra: dict[str, Any] = {}
    if appearance == "heterogeneous":  # a necrotic core inside a rim of viable tissue, both darker than the organ
        rim = float(rng.uniform(20.0, 40.0))
        core_drop = float(rng.uniform(30.0, 60.0))
        lesion_hu = base_hu - rim + float(rng.uniform(4.0, 9.0)) * _smooth_noise(m.shape, tex_sigma, rng)
        depth = ndimage.distance_transform_edt(m, sampling=spacing)
        max_depth = float(depth.max())
        core = m & (depth > 0.5 * max_depth)
        # a core needs a rim around it: at least two voxel layers along the finest axis, and a lesion of 10 mm or more
        if diameter_mm >= 10.0 and max_depth >= 2.0 * float(spacing.min()) and core.sum() < m.sum():
            pattern = "core_rim"
            lesion_hu = lesion_hu - core_drop * core
            contrast = rim + core_drop * float(core.sum()) / float(m.sum())
            extra = {"rim_contrast_hu": round(rim, 1), "core_contrast_hu": round(rim + core_drop, 1)}
        else:
            pattern, contrast = "homogeneous", rim
            extra = {"rim_contrast_hu": round(rim, 1), "core_contrast_hu": None}
    else:
        contrast = float(rng.uniform(30.0, 70.0))
        sign = 1.0 if appearance == "hyperdense" else -1.0
        lesion_hu = base_hu + sign * contrast + float(rng.uniform(4.0, 9.0)) * _smooth_noise(m.shape, tex_sigma, rng)
        pattern = "homogeneous"
        if diameter_mm >= 15.0 and appearance == "hyperdense":
            pattern = str(rng.choice(["homogeneous", "dimmer_centre"], p=[0.6, 0.4]))
            if pattern == "dimmer_centre":  # less enhancing centre, still brighter than the organ
                depth = ndimage.distance_transform_edt(m, sampling=spacing)
                rel = depth / max(float(depth.max()), 1e-6)
                lesion_hu = lesion_hu - float(rng.uniform(0.2, 0.4)) * contrast * (rel > 0.5)
        elif diameter_mm >= 15.0:
            pattern = str(rng.choice(["homogeneous", "darker_core", "rim"], p=[0.4, 0.35, 0.25]))
            depth = ndimage.distance_transform_edt(m, sampling=spacing)
            rel = depth / max(float(depth.max()), 1e-6)
            if pattern == "darker_core":  # necrotic / cystic centre
                lesion_hu = lesion_hu - float(rng.uniform(15.0, 30.0)) * (rel > 0.5)
            elif pattern == "rim":  # a brighter, still hypodense, peripheral rim
                lesion_hu = lesion_hu + 0.35 * contrast * (m & (rel < 0.3))
    # partial volume at the border, only over this organ (never over another lesion or another tissue)
    soft = partial_volume_weight(m) * ((labels[pbox] == organ_label) | m)
    hu[pbox] = hu[pbox] * (1.0 - soft) + lesion_hu * soft
    labels[pbox][m] = tumor_label
    return {"appearance": appearance, "contrast_hu": round(contrast, 1), "pattern": pattern, **extra}


# ---------------------------------------------------------------------------------------------------------------
# cases


def make_case(
    shape: Sequence[int] = (32, 64, 64),
    spacing: Sequence[float] = (4.0, 2.5, 2.5),
    rng: np.random.Generator | int | None = None,
    lesion_classes: Sequence[str] = (),
    organs: Sequence[str] = ("liver",),
    kidney_lesion_fraction: float = KIDNEY_LESION_FRACTION,
    lesions: str = "hypodense",
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """One phantom case.

    shape: (z, y, x) voxels (each >= 16); spacing: (z, y, x) mm; rng: a numpy Generator (or an int seed; None means
    seed 0); lesion_classes: size class names of :data:`SIZE_CLASSES`, one per lesion (empty: a healthy case);
    organs: ("liver",) or ("liver", "kidney"). With kidneys, each lesion goes into a kidney with probability
    ``kidney_lesion_fraction`` (kidney tumors only exist when kidneys are enabled). lesions: the lesions' appearance,
    one of :data:`LESION_APPEARANCES` ("hypodense", the default, "hyperdense" or "heterogeneous"; see the module
    docstring); the anatomy and the first lesion's place do not depend on it.

    A lesion that does not fit its organ is retried elsewhere, then with the next smaller classes (its entry says
    ``requested_class`` and the ``size_class`` it got), and is skipped (listed in ``skipped_lesions``) only if even
    the smallest class does not fit. Lesions never leave their organ and never touch each other.

    Returns (image, labels, info): image int16 (z, y, x) in HU; labels uint8 (z, y, x) (0 background, 1 liver,
    2 liver tumor, 3 kidney, 4 kidney tumor); info a JSON-serialisable dict with ``lesions`` (per lesion: organ,
    size_class, requested_class, label, centre_voxel [z, y, x], bbox [[start, stop] per axis], longest_diameter_mm,
    volume_ml, n_voxels, appearance, contrast_hu, pattern, and for heterogeneous lesions rim_contrast_hu and
    core_contrast_hu), ``skipped_lesions``, ``parenchyma_hu`` and ``noise_sigma_hu``. ``contrast_hu`` and the rim/core
    contrasts are magnitudes in HU: how much darker (hypodense, heterogeneous) or brighter (hyperdense) than the
    parenchyma a lesion is painted, before texture, noise and partial volume; ``pattern`` is "homogeneous",
    "darker_core" or "rim" (hypodense, >= 15 mm), "dimmer_centre" (hyperdense, >= 15 mm) or "core_rim"
    (heterogeneous). For hypodense and hyperdense ``contrast_hu`` is the offset before the pattern, for heterogeneous
    the mean offset over the lesion's voxels (rim and core).
    """
    shape, sp = _check_shape_spacing(shape, spacing)
    organs = _check_organs(organs)
    classes = _check_classes(lesion_classes)
    appearance = _check_appearance(lesions)
    if not 0.0 <= kidney_lesion_fraction <= 1.0:
        raise ValueError(f"kidney_lesion_fraction must be in [0, 1], got {kidney_lesion_fraction}")
    if rng is None or isinstance(rng, int | np.integer):
        rng = np.random.default_rng(0 if rng is None else int(rng))
    anatomy = make_anatomy(shape, rng, organs)
    entries, skipped = _add_lesions(anatomy, classes, organs, kidney_lesion_fraction, sp, rng, appearance)
    sigma = float(rng.uniform(10.0, 15.0))
    hu = anatomy.hu + image_noise(shape, sigma, rng)
    image = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
    info = {
        "lesions": entries,
        "skipped_lesions": skipped,
        "parenchyma_hu": {k: round(v, 1) for k, v in anatomy.parenchyma_hu.items()},
        "noise_sigma_hu": round(sigma, 2),
    }
    return image, anatomy.labels, info


def _add_lesions(
    anatomy: Anatomy,
    classes: Sequence[str],
    organs: Sequence[str],
    kidney_lesion_fraction: float,
    sp: np.ndarray,
    rng: np.random.Generator,
    appearance: str,
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Place and paint one lesion per requested class into ``anatomy`` (in place), each at least the lesion gap away
    from the others. Returns (the lesions' entries, the requests that did not fit)."""
    hu, labels = anatomy.hu, anatomy.labels
    shape = hu.shape
    taken = np.zeros(shape, dtype=bool)
    gap = _lesion_gap_mm(sp)
    gap_vox = np.ceil(gap / sp).astype(int) + 1
    entries: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for requested in classes:
        organ = "kidney" if "kidney" in organs and rng.uniform() < kidney_lesion_fraction else "liver"
        organ_label, tumor_label = ORGANS[organ]
        placed = _place_lesion(labels, organ_label, taken, requested, sp, rng)
        if placed is None:
            skipped.append({"organ": organ, "requested_class": requested})
            continue
        cls, box, mask, diameter = placed
        look = _paint_lesion(
            hu, labels, box, mask, organ_label, tumor_label, anatomy.parenchyma_hu[organ], diameter, sp, rng, appearance
        )
        # keep later lesions away from this one (within a box around it)
        gbox = _grow(box, gap_vox, shape)
        inner = tuple(slice(b.start - g.start, b.stop - g.start) for b, g in zip(box, gbox))
        m = np.zeros(tuple(s.stop - s.start for s in gbox), dtype=bool)
        m[inner] = mask
        taken[gbox] |= ndimage.distance_transform_edt(~m, sampling=sp) <= gap
        idx = np.argwhere(mask) + [s.start for s in box]
        entries.append(
            {
                "organ": organ,
                "size_class": cls,
                "requested_class": requested,
                "label": tumor_label,
                "centre_voxel": [int(round(v)) for v in idx.mean(0)],
                "bbox": [[int(a), int(b) + 1] for a, b in zip(idx.min(0), idx.max(0))],
                "longest_diameter_mm": round(float(diameter), 2),
                "volume_ml": round(float(len(idx) * np.prod(sp)) / 1000.0, 4),
                "n_voxels": len(idx),
                **look,
            }
        )
    return entries, skipped


# ---------------------------------------------------------------------------------------------------------------
# dataset


def _spread(n: int, k: int) -> set[int]:
    """``k`` of the indices 0..n-1, evenly spread (k <= n)."""
    return {int((j + 0.5) * n / k) for j in range(k)} if k else set()


def plan_dataset(
    n_train: int = 20, n_test: int = 6, healthy_fraction: float = 0.5, seed: int = 0
) -> list[dict[str, Any]]:
    """The cases of a demo dataset, without images: per case ``case_id``, ``split`` ("train"/"test"), ``index``,
    ``healthy`` and ``lesion_classes`` (requested size classes).

    Training: ``round(n_train * healthy_fraction)`` healthy cases (organ labels only: FreeTumor's "unlabeled" data),
    evenly spread over the case ids; the others get 1-3 lesions with classes drawn uniformly. Test: rich in small
    lesions, 2-4 lesions per case with :data:`TEST_CLASS_WEIGHTS`; with ``n_test >= 4`` about one case in six (at
    least one) is healthy, for patient-level specificity. Each case draws from ``default_rng([seed, split, index])``.
    """
    n_healthy = int(round(n_train * healthy_fraction))
    n_healthy_test = max(1, n_test // 6) if n_test >= 4 else 0
    plan = []
    for split, n, healthy_ids, weights, (kmin, kmax) in (
        ("train", n_train, _spread(n_train, n_healthy), TRAIN_CLASS_WEIGHTS, TRAIN_LESIONS_PER_CASE),
        ("test", n_test, _spread(n_test, n_healthy_test), TEST_CLASS_WEIGHTS, TEST_LESIONS_PER_CASE),
    ):
        names, w = list(weights), np.array(list(weights.values()), dtype=float)
        for i in range(n):
            rng = np.random.default_rng([seed, 0 if split == "train" else 1, i, 0])
            healthy = i in healthy_ids
            k = 0 if healthy else int(rng.integers(kmin, kmax + 1))
            classes = [names[j] for j in rng.choice(len(names), size=k, p=w / w.sum())]
            plan.append(
                {
                    "case_id": f"phantom_{i:03d}" if split == "train" else f"phantom_test_{i:03d}",
                    "split": split,
                    "index": i,
                    "healthy": healthy,
                    "lesion_classes": classes,
                }
            )
    return plan


def case_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of one case's image (independent of the other cases and of the dataset size)."""
    return np.random.default_rng([seed, 0 if split == "train" else 1, index, 1])


def _write_nifti(path: Path, array: np.ndarray, spacing: Sequence[float]) -> None:
    """Write a (z, y, x) array with (z, y, x) spacing in mm: origin 0, identity direction, gzip-compressed."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(array)
    img.SetSpacing(tuple(float(s) for s in reversed(spacing)))  # SimpleITK: x, y, z
    img.SetOrigin((0.0, 0.0, 0.0))
    img.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    sitk.WriteImage(img, str(path), useCompression=True)


def make_demo_dataset(
    raw_root: str | os.PathLike,
    dataset_id: int = 901,
    name: str = "FreeTumorDemo",
    n_train: int = 20,
    n_test: int = 6,
    healthy_fraction: float = 0.5,
    shape: Sequence[int] = (32, 64, 64),
    spacing: Sequence[float] = (4.0, 2.5, 2.5),
    seed: int = 0,
    organs: Sequence[str] = ("liver",),
    overwrite: bool = False,
    progress: Callable[[Iterable[Any]], Iterable[Any]] | None = None,
    lesions: str = "hypodense",
) -> Path:
    """Write the phantom as nnU-Net raw dataset ``raw_root/Dataset{id:03d}_{name}`` and return that folder.

    Contents: imagesTr/{case}_0000.nii.gz (int16 HU), labelsTr/{case}.nii.gz (uint8), imagesTs/labelsTs likewise
    (case ids ``phantom_000``..., ``phantom_test_000``...), dataset.json (nnU-Net's ``generate_dataset_json``; channel
    0 "CT"; labels background 0, liver 1, liver tumor 2, with kidneys also kidney 3, kidney tumor 4) and
    phantom_cases.json (case id -> split, healthy, requested classes and the lesion list of :func:`make_case`).
    shape (z, y, x) voxels, spacing (z, y, x) mm; see :func:`plan_dataset` for the split. The same arguments give
    identical files. lesions: the lesions' appearance, one of :data:`LESION_APPEARANCES` (see :func:`make_case`);
    it is stored in dataset.json's ``phantom`` block and in each lesion's entry of phantom_cases.json.

    The dataset is built in a hidden temporary sibling folder and moved into place at the end; on any error the
    temporary folder is removed. An existing target is refused (FreeTumorConfigError) unless ``overwrite``, in which
    case it is replaced only once the new dataset is complete; another dataset with the same id is always refused.
    ``progress`` optionally wraps the list of cases (e.g. ``tqdm``).
    """
    shape, sp = _check_shape_spacing(shape, spacing)
    organs = _check_organs(organs)
    appearance = _check_appearance(lesions)
    _check_dataset_args(dataset_id, name, n_train, n_test, healthy_fraction, seed)
    raw_root = Path(raw_root)
    if raw_root.exists() and not raw_root.is_dir():
        raise NotADirectoryError(f"the nnU-Net raw folder {raw_root} is not a folder")
    target = new_dataset_folder(raw_root, int(dataset_id), name, overwrite=overwrite)

    plan = plan_dataset(int(n_train), int(n_test), float(healthy_fraction), int(seed))
    cases: dict[str, Any] = {}
    with staged_folder(target) as tmp:
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            (tmp / sub).mkdir()
        for case in progress(plan) if progress is not None else plan:
            rng = case_rng(int(seed), case["split"], case["index"])
            image, labels, info = make_case(shape, sp, rng, case["lesion_classes"], organs, lesions=appearance)
            if not case["healthy"] and not info["lesions"]:
                raise ValueError(
                    f"no lesion fits the organs of case {case['case_id']}: the field of view "
                    f"({' x '.join(f'{n * s:g}' for n, s in zip(shape, sp))} mm) is too small for lesions of "
                    f"{SIZE_CLASSES['tiny'][0]:g} mm or more; use a larger --shape or --spacing"
                )
            tag = "Tr" if case["split"] == "train" else "Ts"
            _write_nifti(tmp / f"images{tag}" / f"{case['case_id']}_0000.nii.gz", image, sp)
            _write_nifti(tmp / f"labels{tag}" / f"{case['case_id']}.nii.gz", labels, sp)
            cases[case["case_id"]] = {
                "split": case["split"],
                "healthy": case["healthy"],
                "requested_classes": case["lesion_classes"],
                **info,
            }
        phantom = {
            "shape": list(shape),
            "spacing": [float(s) for s in sp],
            "seed": int(seed),
            "n_test": int(n_test),
            "healthy_fraction": float(healthy_fraction),
            "organs": list(organs),
            "lesions": appearance,
            "size_classes_mm": {k: list(v) for k, v in SIZE_CLASSES.items()},
        }
        _write_dataset_json(tmp, target.name, int(n_train), organs, phantom)
        (tmp / "phantom_cases.json").write_text(json.dumps(cases, indent=1) + "\n")
    return target


def _check_dataset_args(dataset_id, name, n_train, n_test, healthy_fraction, seed) -> None:
    """One ValueError per argument of ``make_demo_dataset`` that cannot work."""
    if isinstance(dataset_id, bool) or not isinstance(dataset_id, int | np.integer) or not 1 <= dataset_id <= 999:
        raise ValueError(f"dataset id must be an integer in 1..999, got {dataset_id!r}")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"dataset name must be letters, digits, '_' or '-' (e.g. FreeTumorDemo), got {name!r}")
    if not isinstance(n_train, int | np.integer) or n_train < 2:
        raise ValueError(f"n_train must be an integer >= 2 (nnU-Net needs at least 2 training cases), got {n_train!r}")
    if not isinstance(n_test, int | np.integer) or n_test < 0:
        raise ValueError(f"n_test must be an integer >= 0, got {n_test!r}")
    if not (isinstance(healthy_fraction, int | float) and 0.0 <= healthy_fraction <= 1.0):
        raise ValueError(f"healthy_fraction must be in [0, 1], got {healthy_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")


def _write_dataset_json(
    folder: Path, dataset_name: str, n_train: int, organs: Sequence[str], phantom: dict[str, Any]
) -> None:
    """nnU-Net's dataset.json of the phantom, with how it was made under ``phantom``."""
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    generate_dataset_json(
        str(folder),
        {0: "CT"},
        {k: v for k, v in LABEL_NAMES.items() if v <= 2 or "kidney" in organs},
        n_train,
        ".nii.gz",
        dataset_name=dataset_name,
        description=(
            "nnunet-freetumor phantom: deterministic CT-like abdomen in HU; healthy training cases carry organ "
            "labels only (FreeTumor's unlabeled data); lesion lists in phantom_cases.json"
        ),
        license="synthetic data, no restrictions",
        converted_by="nnunet_freetumor.dataset_conversion.phantom.make_demo_dataset",
        phantom=phantom,
    )


def summarize_cases(cases: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Counts of a phantom_cases.json mapping: train_healthy, train_labeled, test, test_healthy, lesions."""
    train = [c for c in cases.values() if c["split"] == "train"]
    test = [c for c in cases.values() if c["split"] == "test"]
    return {
        "train_healthy": sum(bool(c["healthy"]) for c in train),
        "train_labeled": sum(not c["healthy"] for c in train),
        "test": len(test),
        "test_healthy": sum(bool(c["healthy"]) for c in test),
        "lesions": sum(len(c["lesions"]) for c in cases.values()),
    }
