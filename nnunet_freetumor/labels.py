"""Organ -> tumor label mapping: inference from dataset.json, config resolution, candidate test and label update."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nnunet_freetumor import env
from nnunet_freetumor.config import (
    CONFIG_FILENAME,
    FreeTumorConfig,
    FreeTumorConfigError,
    OrganTumorPair,
)

TUMOR_WORDS = ("tumor", "tumour", "lesion", "cancer", "carcinoma", "mass", "nodule", "metastasis", "metastases")
_FIX_HINT = (
    "Write the pairs explicitly: `freetumor_config -d DATASET --pair ORGAN_ID:TUMOR_ID --write` "
    f"(or point the environment variable {env.CONFIG} to a JSON config)."
)


def _norm(name: str) -> str:
    return " ".join(re.sub(r"[_\-/]+", " ", name.lower()).split())


def strip_tumor_word(name: str) -> str | None:
    """'liver tumor' -> 'liver'; 'tumor' -> ''; 'liver' -> None (not a tumor label)."""
    words = _norm(name).split()
    if not any(w in TUMOR_WORDS for w in words):
        return None
    return " ".join(w for w in words if w not in TUMOR_WORDS)


def infer_pairs(dataset_json: dict[str, Any]) -> tuple[OrganTumorPair, ...]:
    """Pair every tumor label of dataset.json with its organ label by name.

    "liver tumor"/"liver_tumour"/"Liver-Lesion" pair with "liver"; a bare "tumor"/"cancer" label pairs with the single
    organ label when there is exactly one (MSD Task03 Liver: liver 1, cancer 2). Raises FreeTumorConfigError otherwise.
    """
    labels = dataset_json.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise FreeTumorConfigError("dataset.json has no 'labels' dictionary")
    if any(not isinstance(v, int) for v in labels.values()):
        raise FreeTumorConfigError(
            "dataset.json uses region-based labels (lists of ids); FreeTumor needs one integer label per organ and per "
            f"tumor. {_FIX_HINT}"
        )
    organs = {_norm(k): v for k, v in labels.items() if v != 0 and strip_tumor_word(k) is None and k != "ignore"}
    tumors = {k: v for k, v in labels.items() if v != 0 and strip_tumor_word(k) is not None}
    pairs: list[OrganTumorPair] = []
    for tname, tid in tumors.items():
        base = strip_tumor_word(tname)
        if base in organs:
            pairs.append(OrganTumorPair(organ=organs[base], tumor=tid, name=base))
        elif base == "" and len(organs) == 1:
            ((oname, oid),) = organs.items()
            pairs.append(OrganTumorPair(organ=oid, tumor=tid, name=oname))
    if not pairs:
        raise FreeTumorConfigError(
            f"cannot tell which organ label gets which tumor label from dataset.json labels {labels}: FreeTumor needs "
            f"an organ label and its tumor label (e.g. 'liver': 1, 'liver tumor': 2). {_FIX_HINT}"
        )
    if len({p.organ for p in pairs}) != len(pairs):
        raise FreeTumorConfigError(f"several tumor labels match the same organ in {labels}. {_FIX_HINT}")
    return tuple(sorted(pairs, key=lambda p: p.organ))


def check_pairs_against_dataset(cfg: FreeTumorConfig, dataset_json: dict[str, Any]) -> None:
    """Every configured label id must exist in dataset.json."""
    ids = {v for v in dataset_json.get("labels", {}).values() if isinstance(v, int)}
    for p in cfg.pairs:
        missing = [x for x in (p.organ, p.tumor) if x not in ids]
        if missing:
            raise FreeTumorConfigError(
                f"label id(s) {missing} of the FreeTumor pair {p.organ}->{p.tumor} are not in dataset.json labels "
                f"{dataset_json.get('labels')}. {_FIX_HINT}"
            )


def config_for_dataset(
    dataset_json: dict[str, Any],
    preprocessed_dataset_folder: str | os.PathLike | None,
    environ: dict[str, str] | None = None,
) -> tuple[FreeTumorConfig, str]:
    """The effective config and where it came from (see ``nnunet_freetumor.config``)."""
    if env.get(env.CONFIG, environ):
        path = env.path(env.CONFIG, environ)
        if not path.is_file():
            raise FreeTumorConfigError(
                f"{env.CONFIG}={path} does not exist. Unset it or write the file with "
                f"`freetumor_config -d DATASET --write -o {path}`."
            )
        cfg, source = FreeTumorConfig.load(path), str(path)
    elif preprocessed_dataset_folder is not None and Path(preprocessed_dataset_folder, CONFIG_FILENAME).is_file():
        path = Path(preprocessed_dataset_folder, CONFIG_FILENAME)
        cfg, source = FreeTumorConfig.load(path), str(path)
    else:
        cfg, source = FreeTumorConfig(pairs=infer_pairs(dataset_json)), "inferred from dataset.json"
    check_pairs_against_dataset(cfg, dataset_json)
    return cfg, source


# --- label operations used by the DA pipeline and the trainers -----------------------------------------------------


def healthy_organs(seg: np.ndarray | torch.Tensor, cfg: FreeTumorConfig) -> list[int]:
    """Organ labels of ``cfg`` that are in this crop with >= min_organ_voxels voxels and without their tumor label.

    ``seg``: integer label map of one crop (any shape). These organs are the synthesis candidates: crops with a real
    tumor of that organ are never touched.
    """
    per_pair = _healthy_per_pair(seg.reshape(1, -1), cfg)
    return [p.organ for p, healthy in zip(cfg.pairs, per_pair) if bool(healthy[0])]


def has_healthy_organ(seg: torch.Tensor, cfg: FreeTumorConfig) -> torch.Tensor:
    """(B,) bool: which crops of a (B, ...) label batch have a synthesis candidate (see ``healthy_organs``)."""
    per_pair = _healthy_per_pair(seg.reshape(seg.shape[0], -1), cfg)
    return torch.stack(per_pair).any(0) if per_pair else torch.zeros(seg.shape[0], dtype=torch.bool)


def _healthy_per_pair(flat: np.ndarray | torch.Tensor, cfg: FreeTumorConfig) -> list:
    """Per organ-tumor pair, (B,) bool over the rows of a (B, N) label map: organ large enough, none of its tumor."""
    return [((flat == p.organ).sum(1) >= cfg.mask.min_organ_voxels) & ~(flat == p.tumor).any(1) for p in cfg.pairs]


def tumor_label_lut(cfg: FreeTumorConfig, size: int | None = None) -> np.ndarray:
    """Lookup table organ id -> tumor id (0 for every other id), for vectorised label updates."""
    n = max(size or 0, max(p.organ for p in cfg.pairs) + 1)
    lut = np.zeros(n, dtype=np.int64)
    for p in cfg.pairs:
        lut[p.organ] = p.tumor
    return lut


def apply_tumor_labels(
    seg: torch.Tensor, mask_organ: torch.Tensor, lut: torch.Tensor, accept: torch.Tensor | None = None
) -> torch.Tensor:
    """Give accepted synthetic-tumor voxels the tumor label of their organ.

    seg: (B, 1, *spatial) or (1, *spatial) integer labels. mask_organ: same shape, the organ id at synthetic-tumor
    voxels and 0 elsewhere. lut: 1-D organ -> tumor lookup (``tumor_label_lut``). accept: (B,) bool or None (all).
    Voxels outside the mask, and real tumors (never inside a mask), keep their label. Returns a new tensor.
    """
    m = mask_organ.long()
    if accept is not None:
        m = m * accept.view(-1, *([1] * (m.ndim - 1))).long()
    new = lut.to(m.device)[m.clamp_min(0)]
    return torch.where(m > 0, new.to(seg.dtype), seg)
