"""nnU-Net's 5-fold split of the merged dataset.

Where ``splits_final.json`` exists (``$nnUNet_preprocessed/<dataset>/``, and also in the raw folder, which nnU-Net's
planner compares with it), the new cases are appended to the *train* list of every fold and never to a validation
list: the folds, and the baseline S trained on each, stay valid. Without a split nnU-Net creates a random one at the
first training, with unlabeled cases in validation folds; ``make_split`` writes nnU-Net's own default split of the
existing cases (``generate_crossval_split``, seed 12345: the split nnU-Net would make) and adds the new cases to every
training list.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from nnunet_freetumor.config import FreeTumorConfigError
from nnunet_freetumor.unlabeled.dataset import RawDataset

SPLITS = "splits_final.json"
NNUNET_SPLIT_SEED = 12345  # nnUNetTrainer.do_split


def add_to_splits(splits: Any, new_ids: Sequence[str], where: str = SPLITS) -> list[dict[str, list[str]]]:
    """nnU-Net splits (a list of {"train": [...], "val": [...]}) with ``new_ids`` appended to every fold's train list;
    validation lists unchanged. A new id that is already in a fold is refused."""
    if not isinstance(splits, list) or not all(
        isinstance(s, dict) and isinstance(s.get("train"), list) and isinstance(s.get("val"), list) for s in splits
    ):
        raise FreeTumorConfigError(f"{where} is not an nnU-Net split (a list of {{'train': [...], 'val': [...]}})")
    out = []
    for i, s in enumerate(splits):
        present = set(s["train"]) | set(s["val"])
        dup = [c for c in new_ids if c in present]
        if dup:
            raise FreeTumorConfigError(f"{where}: fold {i} already lists {dup[:3]}: choose another --prefix")
        out.append({**s, "train": list(s["train"]) + list(new_ids), "val": list(s["val"])})
    return out


def nnunet_default_split(identifiers: Sequence[str]) -> list[dict[str, list[str]]]:
    """The 5-fold split nnU-Net creates on first training (``nnUNetTrainer.do_split``: sorted ids, seed 12345)."""
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    ids = sorted(identifiers)
    if len(ids) < 5:
        raise FreeTumorConfigError(
            f"--make_split needs at least 5 existing training cases for 5 folds, found {len(ids)}"
        )
    return [
        {"train": [str(x) for x in s["train"]], "val": [str(x) for x in s["val"]]}
        for s in generate_crossval_split(ids, seed=NNUNET_SPLIT_SEED, n_splits=5)
    ]


def read_splits(dataset: RawDataset, make_split: bool) -> dict[str, Any]:
    """The dataset's splits by where they are ("preprocessed", "raw"), each checked; with ``make_split`` and none
    found: nnU-Net's default split of the existing cases as the "preprocessed" one."""
    pre = dataset.preprocessed / SPLITS
    raw = dataset.raw / SPLITS
    found = {k: p for k, p in (("preprocessed", pre), ("raw", raw)) if p.is_file()}
    splits = {}
    for k, p in found.items():
        try:
            splits[k] = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise FreeTumorConfigError(f"{p} is not valid JSON ({e})") from None
        add_to_splits(splits[k], [], str(p))  # validates the format
    if not splits and make_split:
        splits["preprocessed"] = nnunet_default_split(dataset.existing)
    return splits


def split_texts(splits: Mapping[str, Any], new_ids: Sequence[str]) -> dict[str, str]:
    """The text of each split file with the new cases in every training list (keys as in ``read_splits``)."""
    return {k: json.dumps(add_to_splits(s, new_ids), indent=4) + "\n" for k, s in splits.items()}


def split_note(dataset: RawDataset, make_split: bool, texts: Mapping[str, str]) -> str:
    """What becomes of the split, for the report and the command's output."""
    if texts:
        made = make_split and not any(p.is_file() for p in (dataset.preprocessed / SPLITS, dataset.raw / SPLITS))
        return (
            "wrote nnU-Net's default 5-fold split of the existing cases (seed 12345); " if made else ""
        ) + "the new cases are in the training list of every fold and in no validation list"
    return (
        "no splits_final.json: at the first training nnU-Net creates a random 5-fold split that puts the new "
        "unlabeled cases into validation folds too (their Dice says nothing about tumors). To avoid it, rerun "
        "with --make_split (nnU-Net's own split of the existing cases + the new ones in training), or add the "
        "unlabeled cases after the baseline has created its split"
    )
