"""The labeled dataset the unlabeled cases join: what it has (dataset.json, labels, channels, FreeTumor config,
training cases), where the merged dataset goes (in place, or a new dataset id), and its updated dataset.json."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnunet_freetumor.config import FreeTumorConfig, FreeTumorConfigError
from nnunet_freetumor.unlabeled.request import UnlabeledRequest
from nnunet_freetumor.utilities.files import new_dataset_folder


@dataclass(frozen=True)
class RawDataset:
    """A raw nnU-Net dataset as ``load_raw_dataset`` read it."""

    name: str  # DatasetXXX_Name
    raw: Path  # $nnUNet_raw/<name>
    preprocessed: Path  # $nnUNet_preprocessed/<name> (need not exist)
    dataset_json: dict[str, Any]
    file_ending: str
    labels: dict[str, int]  # dataset.json's labels
    n_channels: int
    ct_channel: int  # the channel the HU checks look at
    cfg: FreeTumorConfig
    cfg_source: str
    organ_names: dict[int, str]  # configured organ id -> the dataset's label name
    tumor_names: dict[int, str]
    existing: list[str]  # the training cases, sorted

    @property
    def label_ids(self) -> set[int]:
        return set(self.labels.values())


def int_labels(dataset_json: Mapping[str, Any], what: str) -> dict[str, int]:
    """dataset.json's labels; region-based labels (lists of ids) are refused."""
    labels = dataset_json.get("labels")
    if not isinstance(labels, dict) or any(not isinstance(v, int) for v in labels.values()):
        raise FreeTumorConfigError(
            f"{what} dataset.json must have integer labels (region-based labels are not supported)"
        )
    return labels


def load_raw_dataset(dataset: str, raw_root: str | os.PathLike, preprocessed_root: str | os.PathLike) -> RawDataset:
    """The raw dataset ``dataset`` (name or id): name, dataset.json, labels, channels, FreeTumor config and existing
    training cases. Only datasets SimpleITK reads are supported."""
    from nnunetv2.utilities.utils import get_identifiers_from_splitted_dataset_folder

    from nnunet_freetumor.labels import config_for_dataset
    from nnunet_freetumor.utilities.dataset import check_simpleitk_dataset, dataset_name

    name = dataset_name(dataset)
    raw = Path(raw_root) / name
    if not (raw / "dataset.json").is_file():
        raise FreeTumorConfigError(f"{raw / 'dataset.json'} does not exist: the dataset must be in $nnUNet_raw")
    dj = json.loads((raw / "dataset.json").read_text())
    check_simpleitk_dataset(raw, dj)
    fe = dj["file_ending"]
    labels = int_labels(dj, "the dataset's")
    channel_names = dj.get("channel_names", {})
    if len(channel_names) < 1:
        raise FreeTumorConfigError(f"{raw / 'dataset.json'} has no channel_names")
    ordered = [str(v).lower() for _, v in sorted(channel_names.items(), key=lambda kv: int(kv[0]))]
    preprocessed = Path(preprocessed_root) / name
    cfg, cfg_source = config_for_dataset(dj, preprocessed)
    id_to_name = {v: k for k, v in labels.items()}
    if "dataset" in dj:
        existing = sorted(dj["dataset"])
    elif (raw / "imagesTr").is_dir():
        existing = sorted(str(i) for i in get_identifiers_from_splitted_dataset_folder(str(raw / "imagesTr"), fe))
    else:
        existing = []
    return RawDataset(
        name=name,
        raw=raw,
        preprocessed=preprocessed,
        dataset_json=dj,
        file_ending=fe,
        labels=labels,
        n_channels=len(channel_names),
        ct_channel=ordered.index("ct") if "ct" in ordered else 0,
        cfg=cfg,
        cfg_source=cfg_source,
        organ_names={p.organ: id_to_name.get(p.organ, p.name or str(p.organ)) for p in cfg.pairs},
        tumor_names={t: id_to_name.get(t, str(t)) for t in cfg.tumor_labels},
        existing=existing,
    )


def check_clashes(dataset: RawDataset, new_ids: Mapping[str, str]) -> None:
    """An existing case is never overwritten: a new id the dataset already has (or has files of) is refused."""
    existing = set(dataset.existing)
    fe = dataset.file_ending
    for case, new in new_ids.items():
        files = [dataset.raw / "labelsTr" / f"{new}{fe}", dataset.raw / "imagesTr" / f"{new}_0000{fe}"]
        if new in existing or any(f.exists() for f in files):
            raise FreeTumorConfigError(
                f"unlabeled case {case} would become {new}, which {dataset.name} already has: nothing was written. "
                "Choose another --prefix (existing cases are never overwritten)"
            )


def output_folder(req: UnlabeledRequest, dataset: RawDataset, results_root: str | os.PathLike | None = None) -> Path:
    """The raw folder of the merged dataset: the source dataset (in place), or a new dataset with the free id
    ``req.output_id`` (free in nnUNet_raw, nnUNet_preprocessed and nnUNet_results)."""
    if req.output_id is None:
        if req.name:
            raise FreeTumorConfigError("--name names a new dataset: use it with -o NEW_DATASET_ID")
        return dataset.raw
    name = req.name or f"{dataset.name.split('_', 1)[1]}_{req.prefix}"
    return new_dataset_folder(
        dataset.raw.parent,
        req.output_id,
        name,
        other_roots=(dataset.preprocessed.parent, Path(results_root) if results_root else None),
        source=dataset.name,
    )


def updated_dataset_json(
    dataset: RawDataset,
    req: UnlabeledRequest,
    new_ids: Sequence[str],
    model_folder: Path | None,
    name: str | None = None,
) -> str:
    """The text of the merged dataset's dataset.json: ``numTraining`` (and the ``dataset`` entries where there are
    any) with the new cases, ``name`` where given, and an entry in its ``freetumor_unlabeled`` history."""
    dj = json.loads(json.dumps(dataset.dataset_json))
    dj["numTraining"] = len(dataset.existing) + len(new_ids)
    if "dataset" in dj:
        fe, n = dataset.file_ending, dataset.n_channels
        for new in new_ids:
            dj["dataset"][new] = {
                "images": [f"imagesTr/{new}_{c:04d}{fe}" for c in range(n)],
                "label": f"labelsTr/{new}{fe}",
            }
    if name is not None:
        dj["name"] = name
    history = dj.get("freetumor_unlabeled")
    history = history if isinstance(history, list) else []
    history.append(
        {
            "prefix": req.prefix,
            "cases_added": len(new_ids),
            "input_folder": str(Path(req.input_folder).resolve()),
            "organ_masks": "supplied" if req.organ_masks else f"predicted by {model_folder}",
            "source_dataset": dataset.name,
        }
    )
    dj["freetumor_unlabeled"] = history
    return json.dumps(dj, indent=4) + "\n"
