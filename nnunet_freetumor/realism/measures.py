"""Measures of one lesion in HU, the same for real and synthetic ones: intensity, size, contrast to the organ ring
around it, edge sharpness, and what the frozen S sees of it (P of Eq. 4 on the gate's box)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from nnunet_freetumor.evaluation.lesions import longest_diameter_mm
from nnunet_freetumor.synthesis.boxes import synthesis_box
from nnunet_freetumor.synthesis.pipeline import judge

RING_MM = 5.0  # "the organ around a lesion": organ voxels within this distance of it
# 4-neighbourhood within a slice (axis 0 = slices): edges are measured in-plane
INPLANE = np.zeros((3, 3, 3), dtype=bool)
INPLANE[1] = ndimage.generate_binary_structure(2, 1)


def ring_mask(lesion: np.ndarray, organ: np.ndarray, spacing: Sequence[float], ring_mm: float = RING_MM) -> np.ndarray:
    """The organ around a lesion: voxels of ``organ`` (not of the lesion) within ``ring_mm`` of ``lesion`` (bool arrays
    of one shape, ``spacing`` in mm per axis)."""
    lesion = np.asarray(lesion, dtype=bool)
    dist = ndimage.distance_transform_edt(~lesion, sampling=spacing)
    return np.asarray(organ, dtype=bool) & ~lesion & (dist > 0) & (dist <= ring_mm)


def contrast_to_ring(
    hu: np.ndarray, lesion: np.ndarray, organ: np.ndarray, spacing: Sequence[float], ring_mm: float = RING_MM
) -> float:
    """Mean HU inside ``lesion`` minus the mean HU of the organ ring around it (``ring_mask``): negative for a lesion
    darker than its organ. NaN when the lesion or the ring is empty."""
    lesion = np.asarray(lesion, dtype=bool)
    ring = ring_mask(lesion, organ, spacing, ring_mm)
    if not lesion.any() or not ring.any():
        return float("nan")
    return float(hu[lesion].mean() - hu[ring].mean())


def lesion_measures(
    hu: np.ndarray, lesion: np.ndarray, organ: np.ndarray, spacing: Sequence[float], other: np.ndarray | None = None
) -> dict:
    """HU statistics inside ``lesion``, contrast to the surrounding ``organ`` within RING_MM (``ring_organ_hu``: the
    organ ring's mean), and in-plane edge sharpness (arrays (z, y, x) with thick slices along axis 0, ``spacing`` in mm
    in the same order). ``other``: another lesion in the scan (its distance is reported when it is near)."""
    sp = np.asarray(spacing, float)
    pad = np.ceil((RING_MM + 2 * sp) / sp).astype(int)
    idx = np.argwhere(lesion)
    box = tuple(slice(max(lo - p, 0), hi + p + 1) for lo, hi, p in zip(idx.min(0), idx.max(0), pad))
    h, m, lu = hu[box].astype(np.float32), lesion[box], organ[box] & ~lesion[box]
    vals = h[m]
    ring = ring_mask(m, lu, sp, RING_MM)
    # in-plane gradient magnitude (HU/mm; the 5 mm slice axis is left out) on both sides of the in-plane contour
    gy, gx = np.gradient(h, sp[1], sp[2], axis=(1, 2))
    grad = np.hypot(gy, gx)
    edge = ndimage.binary_dilation(m, INPLANE) & ~ndimage.binary_erosion(m, INPLANE, border_value=1)
    contrast = float(vals.mean() - h[ring].mean()) if ring.any() else float("nan")
    edge_grad = float(grad[edge].mean())
    out = {
        "voxels": int(m.sum()),
        "volume_ml": float(m.sum() * sp.prod() / 1000),
        "diameter_mm": longest_diameter_mm(m, sp),
        "mean_hu": float(vals.mean()),
        "sd_hu": float(vals.std()),
        "p5_hu": float(np.percentile(vals, 5)),
        "p95_hu": float(np.percentile(vals, 95)),
        "ring_voxels": int(ring.sum()),
        "ring_organ_hu": float(h[ring].mean()) if ring.any() else float("nan"),
        "contrast_hu": contrast,
        "edge_gradient_hu_per_mm": edge_grad,
        "edge_width_mm": abs(contrast) / edge_grad if edge_grad > 0 else float("nan"),  # darker lesions too
    }
    if other is not None:
        # only near lesions matter (within RING_MM): measured inside the box, None when the other lesion is not in it
        o = other[box]
        out["distance_to_real_lesion_mm"] = (
            float(ndimage.distance_transform_edt(~o, sampling=sp)[m].min()) if o.any() else None
        )
    return out


def gate_view(segmenter, hu: np.ndarray, lesion: np.ndarray, spacing, cfg, transpose_forward) -> float:
    """P (Eq. 4): the share of the lesion that the frozen S labels as lesion, on a lesion-centred box with the gate's
    margin, as the quality gate sees a synthetic tumor (the export's gate; the data are already at the plan's
    spacing)."""

    tf = list(transpose_forward)
    hu_t, m_t = hu.transpose(tf), lesion.transpose(tf)
    sp = [spacing[i] for i in tf]
    box = synthesis_box(m_t, sp, (0.0, 0.0, 0.0), cfg.gate_bbox_margin_mm)
    with torch.no_grad():
        logits = segmenter.segment_hu(torch.from_numpy(np.ascontiguousarray(hu_t[box], dtype=np.float32))[None, None])
    mask = torch.from_numpy(np.ascontiguousarray(m_t[box]))[None, None].to(logits.device)
    return float(judge(logits, mask, cfg.tumor_labels, cfg.gate_threshold)[0][0])


def measure_all(exports: dict[str, Path], src, segmenter, organ: int, lesion: int) -> dict:
    """Per lesion: measures + S's P, for the real lesions (raw cases of ``src``) and the synthetic lesions of every
    export (key -> freetumor_synthesize folder); ``organ``, ``lesion``: label values."""
    from nnunet_freetumor.export.log import read_synthesis_log
    from nnunet_freetumor.utilities.dataset import raw_training_cases
    from nnunet_freetumor.utilities.image_io import read_image

    out: dict[str, list[dict]] = {"real": []}
    for case in raw_training_cases(src.raw, src.dataset_json):
        hu, sp, _ = read_image(case.image)
        labels = read_image(case.label)[0]
        comps, n = ndimage.label(labels == lesion, structure=np.ones((3, 3, 3)))
        for i in range(1, n + 1):
            m = comps == i
            rec = {"case": case.identifier, **lesion_measures(hu, m, labels == organ, sp)}
            rec["gate_p"] = gate_view(segmenter, hu, m, sp, src.cfg, src.transpose_forward)
            rec["centre"] = [int(round(c)) for c in np.argwhere(m).mean(0)]
            out["real"].append(rec)
    for key, folder in exports.items():
        log = read_synthesis_log(folder)
        recs = []
        for c in log["cases"]:
            hu, sp, _ = read_image(folder / c["image"])
            labels = read_image(folder / c["label"])[0]
            m = read_image(folder / c["synthetic_mask"])[0] > 0
            real = (labels == lesion) & ~m
            rec = {
                "case": c["case"],
                "source_case": c["source_case"],
                "size_class": c["size_class"],
                **lesion_measures(hu, m, labels == organ, sp, other=real),
            }
            rec["gate_p"] = gate_view(segmenter, hu, m, sp, src.cfg, src.transpose_forward)
            rec["centre"] = [int(v) for v in c["centre_voxel"]]
            recs.append(rec)
        out[key] = recs
    return out
