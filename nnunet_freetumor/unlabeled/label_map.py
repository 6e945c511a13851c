"""The label map: source label ids (of supplied masks or of the organ model) -> the dataset's label ids.

Ids that the map does not name become background (0), and the report counts them per case. Without ``--label_map``
supplied masks are taken to use the dataset's ids, and an organ model must have the dataset's labels (otherwise the
error suggests a map from the label names).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from nnunet_freetumor.config import FreeTumorConfigError
from nnunet_freetumor.unlabeled.dataset import RawDataset


def parse_label_map(items: Sequence[str]) -> dict[int, int]:
    """``["5:1", "6:3"]`` -> ``{5: 1, 6: 3}`` (source label id -> dataset label id)."""
    out: dict[int, int] = {}
    for item in items:
        m = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", item)
        if not m:
            raise FreeTumorConfigError(f"--label_map entries are SRC:DST label ids (e.g. 5:1), got {item!r}")
        src, dst = int(m.group(1)), int(m.group(2))
        if src in out and out[src] != dst:
            raise FreeTumorConfigError(f"--label_map maps source id {src} twice ({out[src]} and {dst})")
        out[src] = dst
    return out


def remap_labels(labels: np.ndarray, label_map: Mapping[int, int]) -> tuple[np.ndarray, dict[int, int]]:
    """Map source label ids to dataset ids with a lookup table; ids the map does not name become 0.

    labels: integer array (any shape, non-negative). Returns (uint8/uint16 array of the same shape, {unmapped non-zero
    source id: voxel count}).
    """
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or not np.array_equal(labels, np.round(labels))):
        raise FreeTumorConfigError("organ masks must hold non-negative integer label ids")
    lab = labels.astype(np.int64)
    ids, counts = np.unique(lab, return_counts=True)
    n = int(max(ids.max() if ids.size else 0, max(label_map, default=0))) + 1
    lut = np.zeros(n, dtype=np.int64)
    for src, dst in label_map.items():
        lut[src] = dst
    unmapped = {int(i): int(c) for i, c in zip(ids, counts) if i != 0 and int(i) not in label_map}
    dtype = np.uint8 if max(label_map.values(), default=0) < 256 else np.uint16
    return lut[lab].astype(dtype), unmapped


def dataset_label_map(label_map: Mapping[int, int] | None, dataset: RawDataset) -> dict[int, int]:
    """The map of supplied masks: ``label_map`` (its targets must be labels of the dataset; targets 0 dropped), or
    the identity on the dataset's non-zero ids without one."""
    if label_map is None:  # the masks already use the dataset's ids
        return {i: i for i in dataset.label_ids if i != 0}
    bad = sorted({int(d) for d in label_map.values() if int(d) not in dataset.label_ids})
    if bad:
        raise FreeTumorConfigError(
            f"--label_map target id(s) {bad} are not labels of {dataset.name} ({dataset.labels}): DST must be a "
            "dataset label id (0 drops a source id)"
        )
    return {int(s): int(d) for s, d in label_map.items() if int(d) != 0}


def model_label_map(
    label_map: Mapping[int, int] | None, model_labels: dict[str, int], model_folder: Path, dataset: RawDataset
) -> dict[int, int]:
    """The map of an organ model's predictions: without ``label_map`` the model must have the dataset's labels (the
    error suggests a map from the label names); with one, its sources must be labels of the model."""
    if label_map is None:
        if model_labels != dataset.labels:
            matches = {
                v: dataset.labels[k2]
                for k, v in model_labels.items()
                for k2 in dataset.labels
                if v != 0 and _norm_name(k) == _norm_name(k2)
            }
            suggestion = " ".join(f"{s}:{d}" for s, d in sorted(matches.items())) or "SRC:DST ..."
            raise FreeTumorConfigError(
                f"the organ model's labels {model_labels} differ from {dataset.name}'s {dataset.labels}: pass "
                f"--label_map {suggestion} (model id -> dataset id; unmapped ids become background)"
            )
        return dataset_label_map(None, dataset)
    src_ids = set(model_labels.values())
    bad = sorted(int(s) for s in label_map if int(s) not in src_ids)
    if bad:
        raise FreeTumorConfigError(
            f"--label_map source id(s) {bad} are not labels of the organ model {model_folder} ({model_labels})"
        )
    return dataset_label_map(label_map, dataset)


def _norm_name(name: str) -> str:
    return " ".join(re.sub(r"[_\-/]+", " ", str(name).lower()).split())
