"""A deterministic, CT-like abdominal phantom in Hounsfield units, written as an nnU-Net raw dataset.

Arrays are (z, y, x); spacings are (z, y, x) in mm. Anatomy is defined in coordinates normalised to the field of view
(so it scales with shape and spacing), lesion sizes in millimetres (longest diameter, WHO style).

Content per case: air (-1000 HU) around an elliptical body with subcutaneous fat (~-100), a muscle wall (~+50),
visceral fat and soft tissue, a vertebra (bone 300-700), a liver-like organ on the patient's right (image left) with
smooth parenchymal texture (~110 HU) and contrast-enhanced vessels (~180), optionally two kidneys (~150), and
correlated noise (sigma ~12 HU). Lesions are darker than parenchyma by 30-70 HU, with their own texture (and a
darker core or an enhancing rim when larger), irregular shapes, fully inside their organ, never overlapping.

Labels: 0 background, 1 liver, 2 liver tumor, (3 kidney, 4 kidney tumor).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.ndimage import distance_transform_edt, gaussian_filter

from nnunet_freetumor.evaluation import longest_diameter_mm
from nnunet_freetumor.io import staged_folder

# longest diameter (mm) of each lesion size class: [min, max)
SIZE_CLASSES: dict[str, tuple[float, float]] = {
    "tiny": (5.0, 10.0),
    "small": (10.0, 20.0),
    "medium": (20.0, 40.0),
    "large": (40.0, 60.0),
}
ORGANS = {"liver": (1, 2), "kidney": (3, 4)}  # name -> (organ label, tumor label)
TEST_CLASS_WEIGHTS = {"tiny": 0.35, "small": 0.35, "medium": 0.2, "large": 0.1}


def _smooth_noise(shape: Sequence[int], sigma: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-std Gaussian noise smoothed with ``sigma`` (voxels)."""
    n = gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    return (n - n.mean()) / (n.std() + 1e-6)


def _grid(shape: Sequence[int]) -> list[np.ndarray]:
    """Normalised coordinates in [-1, 1] per axis, full (z, y, x) arrays."""
    return np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in shape], indexing="ij")


def _validate(shape: Sequence[int], spacing: Sequence[float], organs: Sequence[str]) -> None:
    if len(shape) != 3 or any(int(s) < 16 for s in shape):
        raise ValueError(f"shape must be 3 sizes >= 16 voxels (z, y, x), got {tuple(shape)}")
    if len(spacing) != 3 or any(float(s) <= 0 for s in spacing):
        raise ValueError(f"spacing must be 3 positive values in mm (z, y, x), got {tuple(spacing)}")
    unknown = [o for o in organs if o not in ORGANS]
    if unknown or "liver" not in organs:
        raise ValueError(f"organs must include 'liver' and be among {sorted(ORGANS)}, got {list(organs)}")


def _anatomy(shape, rng: np.random.Generator, organs: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """HU image without noise and the organ label map."""
    z, y, x = _grid(shape)
    a, b = rng.uniform(0.86, 0.94), rng.uniform(0.68, 0.78)
    body_r = (x / a) ** 2 + ((y - 0.05) / b) ** 2 * (1 + 0.05 * z**2)
    hu = np.full(shape, -1000.0, dtype=np.float32)
    hu[body_r <= 1.0] = -100.0  # subcutaneous fat
    hu[body_r <= 0.86**2] = 50.0  # muscle wall
    inner = body_r <= 0.80**2
    soft = -90.0 + 110.0 * (_smooth_noise(shape, (1.5, 3, 3), rng) > 0.2)  # visceral fat / bowel-like soft tissue
    hu[inner] = soft[inner]
    # vertebra: posterior midline
    spine = ((x / 0.13) ** 2 + ((y - 0.52) / 0.13) ** 2) <= 1
    hu[spine & inner] = 350.0 + 300.0 * (((x / 0.13) ** 2 + ((y - 0.52) / 0.13) ** 2) > 0.55)[spine & inner]
    labels = np.zeros(shape, dtype=np.uint8)
    # liver: image left, irregular
    c = (rng.uniform(-0.1, 0.1), rng.uniform(-0.12, 0.0), rng.uniform(-0.42, -0.3))
    r = (rng.uniform(0.75, 0.9), rng.uniform(0.42, 0.5), rng.uniform(0.36, 0.42))
    f = ((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2
    f = f + 0.25 * _smooth_noise(shape, [n / 5 for n in shape], rng)
    liver = (f <= 1.0) & inner & ~spine
    parenchyma = rng.uniform(100.0, 120.0)
    hu[liver] = parenchyma + 8.0 * _smooth_noise(shape, (1, 2, 2), rng)[liver]
    # vessels: a few curved tubes through the liver
    for _ in range(3):
        p0 = np.array(c) + rng.uniform(-0.2, 0.2, 3)
        d = rng.standard_normal(3)
        d /= np.linalg.norm(d)
        bend = rng.uniform(-0.3, 0.3, 3)
        t = (z - p0[0]) * d[0] + (y - p0[1]) * d[1] + (x - p0[2]) * d[2]
        q = [g - (p + dd * t + bb * t**2) for g, p, dd, bb in zip((z, y, x), p0, d, bend)]
        dist2 = q[0] ** 2 * 0.25 + q[1] ** 2 + q[2] ** 2
        vessel = (dist2 <= rng.uniform(0.03, 0.05) ** 2) & liver
        hu[vessel] = rng.uniform(170.0, 195.0)
    labels[liver] = ORGANS["liver"][0]
    if "kidney" in organs:
        for side in (-1, 1):
            kc = (rng.uniform(-0.2, 0.1), rng.uniform(0.25, 0.35), side * rng.uniform(0.38, 0.46))
            kf = ((z - kc[0]) / 0.3) ** 2 + ((y - kc[1]) / 0.14) ** 2 + ((x - kc[2]) / 0.11) ** 2
            kidney = (kf <= 1.0) & inner & ~spine & ~liver
            hu[kidney] = 150.0 + 10.0 * _smooth_noise(shape, (1, 2, 2), rng)[kidney]
            hu[kidney & (kf <= 0.35)] = 40.0  # renal sinus / medulla, darker, still kidney
            labels[kidney] = ORGANS["kidney"][0]
    return hu, labels


def _lesion(
    shape, spacing, organ: np.ndarray, taken: np.ndarray, size_class: str, rng: np.random.Generator
) -> tuple[np.ndarray, float] | None:
    """One irregular lesion mask of the class's longest diameter, inside ``organ`` and away from ``taken``."""
    lo, hi = SIZE_CLASSES[size_class]
    sp = np.asarray(spacing, float)
    free = organ & ~taken
    dist = distance_transform_edt(free, sampling=sp)
    for _ in range(30):
        d = rng.uniform(lo, hi * 0.98)
        radii = np.array([d / 2, d / 2 * rng.uniform(0.65, 1.0), d / 2 * rng.uniform(0.65, 1.0)])
        rng.shuffle(radii)
        room = np.argwhere(dist > radii.max() * 0.95)
        if len(room) == 0:
            continue
        centre = room[rng.integers(len(room))]
        half = np.ceil(radii.max() / sp).astype(int) + 2
        box = tuple(slice(max(c - h, 0), min(c + h + 1, n)) for c, h, n in zip(centre, half, shape))
        coords = np.meshgrid(*[(np.arange(s.start, s.stop) - c) * p for s, c, p in zip(box, centre, sp)], indexing="ij")
        wobble = 1 + 0.12 * _smooth_noise(tuple(s.stop - s.start for s in box), 1.5, rng)
        inside = sum((g / r) ** 2 for g, r in zip(coords, radii)) <= wobble
        mask = np.zeros(shape, dtype=bool)
        mask[box] = inside
        mask &= free
        idx = np.argwhere(mask)
        if len(idx) < 2:
            continue
        longest = longest_diameter_mm(mask, sp)
        if not lo <= longest < hi:
            continue
        return mask, longest
    return None


def make_case(
    shape: Sequence[int] = (32, 64, 64),
    spacing: Sequence[float] = (4.0, 2.5, 2.5),
    rng: np.random.Generator | None = None,
    lesion_classes: Sequence[str] = (),
    organs: Sequence[str] = ("liver",),
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """One phantom case: (image int16 HU (z, y, x), labels uint8 (z, y, x), info with one entry per lesion).

    ``lesion_classes`` empty gives a healthy case. Lesions go into the liver, or into a kidney (30 %) when kidneys
    are present. A lesion that does not fit its organ is retried elsewhere and finally skipped (info says so).
    """
    _validate(shape, spacing, organs)
    rng = np.random.default_rng(0) if rng is None else rng
    shape = tuple(int(s) for s in shape)
    hu, labels = _anatomy(shape, rng, organs)
    taken = np.zeros(shape, dtype=bool)
    lesions, skipped = [], []
    for cls in lesion_classes:
        if cls not in SIZE_CLASSES:
            raise ValueError(f"unknown lesion size class {cls!r}; known: {list(SIZE_CLASSES)}")
        organ_name = "kidney" if "kidney" in organs and rng.uniform() < 0.3 else "liver"
        organ_label, tumor_label = ORGANS[organ_name]
        found = _lesion(shape, spacing, labels == organ_label, taken, cls, rng)
        if found is None:
            skipped.append(cls)
            continue
        mask, diameter = found
        taken |= np.asarray(distance_transform_edt(~mask, sampling=spacing) < 3.0)  # keep lesions apart
        base = float(np.median(hu[labels == organ_label]))
        contrast = rng.uniform(30.0, 70.0)
        tex = 8.0 * _smooth_noise(shape, (0.7, 1.2, 1.2), rng)
        lesion_hu = base - contrast + tex
        inner = distance_transform_edt(mask, sampling=spacing)
        if cls in ("medium", "large"):
            depth = inner / max(inner.max(), 1e-6)
            if rng.uniform() < 0.5:
                lesion_hu = lesion_hu - 20.0 * (depth > 0.5)  # necrotic core
            else:
                lesion_hu = lesion_hu + 25.0 * ((depth > 0) & (depth < 0.25))  # enhancing rim
        soft = np.clip(gaussian_filter(mask.astype(np.float32), 0.6), 0, 1)
        soft[mask] = np.maximum(soft[mask], 0.85)
        soft *= labels == organ_label
        hu = hu * (1 - soft) + lesion_hu * soft
        labels[mask] = tumor_label
        lesions.append(
            {
                "organ": organ_name,
                "size_class": cls,
                "centre_voxel": [int(v) for v in np.argwhere(mask).mean(0)],
                "longest_diameter_mm": round(diameter, 2),
                "volume_ml": round(float(mask.sum() * np.prod(spacing)) / 1000.0, 4),
            }
        )
    noise = gaussian_filter(rng.standard_normal(shape).astype(np.float32), 0.6) * 12.0 * 1.9
    image = np.clip(np.round(hu + noise), -1024, 3071).astype(np.int16)
    return image, labels, {"lesions": lesions, "skipped_lesions": skipped}


def _write(path: Path, array: np.ndarray, spacing: Sequence[float]) -> None:
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(array)
    img.SetSpacing(tuple(float(s) for s in reversed(spacing)))  # SimpleITK: x, y, z
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
    progress: bool = False,
) -> Path:
    """Write ``raw_root/Dataset{id:03d}_{name}`` (imagesTr/labelsTr/imagesTs/labelsTs, dataset.json,
    phantom_cases.json). Built in a temporary sibling folder and moved into place at the end."""
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    _validate(shape, spacing, organs)
    if not 1 <= int(dataset_id) <= 999:
        raise ValueError(f"dataset id must be in 1..999, got {dataset_id}")
    if not 0.0 <= healthy_fraction <= 1.0:
        raise ValueError(f"healthy_fraction must be in [0, 1], got {healthy_fraction}")
    if n_train < 2 or n_test < 0:
        raise ValueError(f"need n_train >= 2 and n_test >= 0, got {n_train}, {n_test}")
    if not name or not name.replace("_", "").isalnum():
        raise ValueError(f"dataset name must be alphanumeric (underscores allowed), got {name!r}")
    raw_root = Path(raw_root)
    target = raw_root / f"Dataset{int(dataset_id):03d}_{name}"
    others = [p for p in raw_root.glob(f"Dataset{int(dataset_id):03d}_*") if p != target] if raw_root.is_dir() else []
    if others:
        raise FileExistsError(
            f"{others[0]} already uses dataset id {dataset_id} (nnU-Net resolves datasets by id): "
            "choose another id with -d"
        )
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists: pass --overwrite to replace it")
    with staged_folder(target) as tmp:
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            (tmp / sub).mkdir()
        n_healthy = int(round(n_train * healthy_fraction))
        cases: dict[str, Any] = {}
        plan = []
        for i in range(n_train):
            rng = np.random.default_rng([seed, i])
            healthy = i < n_healthy
            classes = [] if healthy else list(rng.choice(list(SIZE_CLASSES), size=int(rng.integers(1, 4))))
            plan.append((f"phantom_{i:03d}", "Tr", healthy, classes, rng))
        for i in range(n_test):
            rng = np.random.default_rng([seed, 100000 + i])
            healthy = n_test >= 4 and i == 0
            w = np.array(list(TEST_CLASS_WEIGHTS.values()))
            classes = (
                []
                if healthy
                else list(rng.choice(list(TEST_CLASS_WEIGHTS), size=int(rng.integers(2, 5)), p=w / w.sum()))
            )
            plan.append((f"phantom_test_{i:03d}", "Ts", healthy, classes, rng))
        iterator = plan
        if progress:
            from tqdm import tqdm

            iterator = tqdm(plan, desc="phantom cases")
        for case_id, split, healthy, classes, rng in iterator:
            image, labels, info = make_case(shape, spacing, rng, [str(c) for c in classes], organs)
            _write(tmp / f"images{split}" / f"{case_id}_0000.nii.gz", image, spacing)
            _write(tmp / f"labels{split}" / f"{case_id}.nii.gz", labels, spacing)
            cases[case_id] = {"split": "train" if split == "Tr" else "test", "healthy": healthy, **info}
        label_names = {"background": 0, "liver": 1, "liver tumor": 2}
        if "kidney" in organs:
            label_names.update({"kidney": 3, "kidney tumor": 4})
        generate_dataset_json(
            str(tmp),
            {0: "CT"},
            label_names,
            n_train,
            ".nii.gz",
            dataset_name=target.name,
            description="FreeTumor phantom: CT-like abdomen, healthy and lesion cases",
            phantom={
                "shape": list(map(int, shape)),
                "spacing": list(map(float, spacing)),
                "seed": seed,
                "healthy_fraction": healthy_fraction,
                "organs": list(organs),
            },
        )
        (tmp / "phantom_cases.json").write_text(json.dumps(cases, indent=1) + "\n")
    return target
