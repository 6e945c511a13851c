"""Quality control of the organ masks of the unlabeled cases: measurements and a decision per case.

Decision per case (all reasons are reported; the first one names the decision):

1. **tumor**: a voxel of a configured tumor label (``FreeTumorConfig.tumor_labels``) is never silently turned into
   healthy organ: ``tumors="exclude"`` skips the case, ``"keep"`` adds it with the predicted tumor label;
2. **organ volume** (ml = voxels x voxel volume / 1000) per configured organ: an organ above ``max_organ_ml`` rejects
   the case (a leaking segmentation); at least one organ must be within [``min_organ_ml``, ``max_organ_ml``] (organs
   below the minimum are absent or cut by the field of view: allowed, they just do not count);
3. **largest connected component** (26-connectivity) of every organ within the volume range must hold at least
   ``min_largest_component`` of its voxels (a fragmented mask is a failed segmentation);
4. **CT in HU**: the image's 1st percentile below ``max_p1_hu`` (air in the field of view) and the median HU of the
   voxels of the organs within the volume range inside ``organ_hu`` (abdomen default -200..400 HU; a chest config,
   ``window.polarity = +1``, widens it to -1000..400 HU for lungs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nnunet_freetumor.config import FreeTumorConfig, FreeTumorConfigError
from nnunet_freetumor.unlabeled.dataset import RawDataset
from nnunet_freetumor.unlabeled.discovery import UnlabeledCase
from nnunet_freetumor.unlabeled.label_map import remap_labels
from nnunet_freetumor.unlabeled.request import QualityFilters

# decision of a case
ADDED, ADDED_WITH_TUMOR, SKIPPED_TUMOR, REJECTED = "added", "added_with_tumor", "skipped_tumor", "rejected"


def largest_component_share(mask: np.ndarray) -> float | None:
    """Share of the voxels of a boolean mask in its largest 26-connected component; None for an empty mask."""
    from scipy import ndimage

    from nnunet_freetumor.evaluation.lesions import connectivity_structure

    mask = np.asarray(mask, dtype=bool)
    boxes = ndimage.find_objects(mask.astype(np.uint8))
    if not boxes or boxes[0] is None:
        return None
    crop = mask[boxes[0]]
    comp, n = ndimage.label(crop, structure=connectivity_structure(crop.ndim, 26))
    sizes = np.bincount(comp.ravel())[1:]
    return float(sizes.max() / sizes.sum())


@dataclass
class CaseAssessment:
    """The measurements and the decision for one unlabeled case (volumes in ml, HU)."""

    case: str
    new_id: str
    organ_ml: dict[str, float]
    largest_component: dict[str, float | None]
    p1_hu: float
    organ_median_hu: float | None
    tumor_voxels: dict[str, int]
    unmapped_voxels: dict[str, int]
    decision: str = ADDED
    reasons: list[str] = field(default_factory=list)
    category: str | None = None  # tumor | organ_volume | largest_component | hu (the first failing check)

    @property
    def accepted(self) -> bool:
        return self.decision in (ADDED, ADDED_WITH_TUMOR)


@dataclass
class _Measurements:
    organ_ml: dict[str, float]  # rounded for the report
    largest_component: dict[str, float | None]  # rounded; None for an absent organ
    in_range: list[int]  # organ ids within the volume range
    too_large: list[str]  # a reason per organ above max_organ_ml
    tumor_voxels: dict[str, int]
    p1: float  # HU
    median: float | None  # HU of the organs in range (of all configured organs when none is)


def _measure(
    image_hu: np.ndarray,
    labels: np.ndarray,
    spacing: Sequence[float],
    cfg: FreeTumorConfig,
    filters: QualityFilters,
    organ_names: Mapping[int, str],
    tumor_names: Mapping[int, str],
) -> _Measurements:
    voxel_ml = float(np.prod(spacing)) / 1000.0
    max_ml = np.inf if filters.max_organ_ml is None else float(filters.max_organ_ml)
    organ_ml: dict[str, float] = {}
    lcc: dict[str, float | None] = {}
    in_range: list[int] = []
    too_large: list[str] = []
    for p in cfg.pairs:
        name = organ_names.get(p.organ, str(p.organ))
        m = labels == p.organ
        ml = float(m.sum()) * voxel_ml
        organ_ml[name] = round(ml, 3)
        lcc[name] = None if ml == 0 else round(largest_component_share(m), 4)
        if ml > max_ml:
            too_large.append(f"{name} {ml:.1f} ml > --max_organ_ml {filters.max_organ_ml:g}")
        elif ml >= filters.min_organ_ml and ml > 0:
            in_range.append(p.organ)
    tumor_voxels = {tumor_names.get(t, str(t)): int((labels == t).sum()) for t in cfg.tumor_labels}
    p1 = float(np.percentile(image_hu, 1))
    organ_union = np.isin(labels, in_range) if in_range else np.isin(labels, list(cfg.organ_labels))
    median = float(np.median(image_hu[organ_union])) if organ_union.any() else None
    return _Measurements(organ_ml, lcc, in_range, too_large, tumor_voxels, p1, median)


def _failures(
    m: _Measurements, cfg: FreeTumorConfig, filters: QualityFilters, tumors: str, organ_names: Mapping[int, str]
) -> list[tuple[str, str]]:
    """(category, reason) of every failed check, in the order of the module docstring."""
    out = []
    if sum(m.tumor_voxels.values()) and tumors == "exclude":
        where = ", ".join(f"{n} voxels of {k}" for k, n in m.tumor_voxels.items() if n)
        out.append(("tumor", f"tumor in the organ mask ({where}); --tumors keep adds such cases with that label"))
    out += [("organ_volume", reason) for reason in m.too_large]
    if not m.in_range:
        vols = ", ".join(f"{k} {v:.1f} ml" for k, v in m.organ_ml.items())
        hi = "inf" if filters.max_organ_ml is None else f"{filters.max_organ_ml:g}"
        out.append(("organ_volume", f"no configured organ within [{filters.min_organ_ml:g}, {hi}] ml ({vols})"))
    for organ in m.in_range:
        name = organ_names.get(organ, str(organ))
        share = m.largest_component[name]
        if share is not None and share < filters.min_largest_component:
            out.append(
                (
                    "largest_component",
                    f"{name}: largest component holds {share:.2f} < --min_largest_component "
                    f"{filters.min_largest_component:g}",
                )
            )
    if m.p1 >= filters.max_p1_hu:
        out.append(
            ("hu", f"1st percentile {m.p1:.0f} HU >= {filters.max_p1_hu:g} HU: not CT in HU (no air in the image?)")
        )
    lo, hi_hu = filters.organ_hu_for(cfg)
    if m.median is not None and not lo <= m.median <= hi_hu:
        out.append(("hu", f"organ median {m.median:.0f} HU outside [{lo:g}, {hi_hu:g}] HU"))
    return out


def assess_case(
    case: str,
    new_id: str,
    image_hu: np.ndarray,
    labels: np.ndarray,
    spacing: Sequence[float],
    cfg: FreeTumorConfig,
    filters: QualityFilters,
    tumors: str = "exclude",
    organ_names: Mapping[int, str] | None = None,
    tumor_names: Mapping[int, str] | None = None,
    unmapped: Mapping[int, int] | None = None,
) -> CaseAssessment:
    """Measure one case and decide (see the module docstring for the rules).

    image_hu: (z, y, x) CT in HU; labels: same shape, dataset label ids (already remapped); spacing: mm per axis.
    """
    organ_names = organ_names or {p.organ: p.name or str(p.organ) for p in cfg.pairs}
    tumor_names = tumor_names or {t: str(t) for t in cfg.tumor_labels}
    m = _measure(image_hu, labels, spacing, cfg, filters, organ_names, tumor_names)
    failures = _failures(m, cfg, filters, tumors, organ_names)
    a = CaseAssessment(
        case=case,
        new_id=new_id,
        organ_ml=m.organ_ml,
        largest_component=m.largest_component,
        p1_hu=round(m.p1, 1),
        organ_median_hu=None if m.median is None else round(m.median, 1),
        tumor_voxels=m.tumor_voxels,
        unmapped_voxels={str(k): int(v) for k, v in (unmapped or {}).items()},
        decision=ADDED_WITH_TUMOR if sum(m.tumor_voxels.values()) else ADDED,
        reasons=[reason for _, reason in failures],
        category=failures[0][0] if failures else None,
    )
    if failures:
        a.decision = SKIPPED_TUMOR if a.category == "tumor" else REJECTED
    return a


def assess_file(
    case: UnlabeledCase,
    new_id: str,
    dataset: RawDataset,
    label_map: Mapping[int, int],
    filters: QualityFilters,
    tumors: str,
) -> tuple[CaseAssessment, np.ndarray, Any]:
    """Read a case's CT channel and organ mask, remap the mask and assess the case. Returns (assessment, remapped
    labels (z, y, x), the SimpleITK image whose geometry the label gets)."""
    from nnunet_freetumor.utilities.image_io import read_image

    image, spacing, ref = read_image(case.images[dataset.ct_channel])
    mask, _, _ = read_image(case.mask)
    if mask.shape != image.shape:
        raise FreeTumorConfigError(
            f"case {case.identifier}: the organ mask {case.mask} has shape {mask.shape}, the image {image.shape}"
        )
    labels, unmapped = remap_labels(mask, label_map)
    a = assess_case(
        case.identifier,
        new_id,
        image,
        labels,
        spacing,
        dataset.cfg,
        filters,
        tumors,
        dataset.organ_names,
        dataset.tumor_names,
        unmapped,
    )
    return a, labels, ref
