"""A planned nnU-Net dataset as the tools read it: its raw training cases, its plans and configuration (plan axis
order, spacing, patch size, CT normalization), its FreeTumor config and its fold split; one clear error, naming the
command that fixes it, for each missing piece."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnunet_freetumor.config import FreeTumorConfig, FreeTumorConfigError
from nnunet_freetumor.labels import config_for_dataset
from nnunet_freetumor.synthesis.intensity import CTNormalization, ct_normalizations


@dataclass(frozen=True)
class RawCase:
    identifier: str
    image: Path
    label: Path


def check_simpleitk_dataset(raw_folder: str | os.PathLike, dataset_json: dict[str, Any]) -> None:
    """Refuse a raw dataset that nnU-Net does not read with SimpleITK: the tools keep each file's geometry through
    SimpleITK."""
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    fe = dataset_json.get("file_ending", "")
    reader = dataset_json.get("overwrite_image_reader_writer")
    if fe not in SimpleITKIO.supported_file_endings or reader not in (None, "SimpleITKIO"):
        raise FreeTumorConfigError(
            f"{raw_folder}: only datasets read with SimpleITK ({', '.join(SimpleITKIO.supported_file_endings)}) are "
            f"supported (file_ending {fe!r}, reader {reader or 'auto'}). Convert the dataset to .nii.gz first."
        )


def raw_training_cases(raw_folder: str | os.PathLike, dataset_json: dict[str, Any]) -> list[RawCase]:
    """The training cases of a raw dataset (imagesTr/labelsTr or dataset.json's 'dataset' list), single-channel CT
    that nnU-Net reads with SimpleITK; a clear error otherwise."""
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

    check_simpleitk_dataset(raw_folder, dataset_json)
    if len(dataset_json.get("channel_names", {})) != 1:
        raise FreeTumorConfigError(
            f"{raw_folder} has {len(dataset_json.get('channel_names', {}))} input channels; synthesis works on "
            "single-channel CT"
        )
    found = get_filenames_of_train_images_and_targets(str(raw_folder), dataset_json)
    return [RawCase(k, Path(v["images"][0]), Path(v["label"])) for k, v in sorted(found.items())]


@dataclass(frozen=True)
class PlannedDataset:
    """A planned dataset: its raw folder and dataset.json, the plan's geometry (plan axis order) and the FreeTumor
    config (``labels.config_for_dataset``)."""

    name: str
    raw: Path
    dataset_json: dict[str, Any]
    plans: dict[str, Any]
    plans_name: str
    configuration: str
    spacing: tuple[float, ...]
    patch_size: tuple[int, ...]
    transpose_forward: list[int]
    transpose_backward: list[int]
    normalization: CTNormalization
    cfg: FreeTumorConfig
    cfg_source: str

    def model_key(self) -> dict[str, str]:
        """The dataset, plans and configuration a model (S, G) must have been trained for, as ``load_segmenter``
        and the generator lookup take them."""
        return {"dataset_name": self.name, "plans_name": self.plans_name, "configuration": self.configuration}


def dataset_name(dataset: str) -> str:
    """nnU-Net's folder name (DatasetXXX_Name) of a dataset name or id."""
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    try:
        return maybe_convert_to_dataset_name(dataset)
    except (RuntimeError, ValueError) as e:
        raise FreeTumorConfigError(f"{str(e).splitlines()[0]} Is nnUNet_raw set and the dataset in it?") from None


def planned_configuration(
    preprocessed_folder: str | os.PathLike, plans: str, configuration: str, dataset: str
) -> tuple[dict[str, Any], Any]:
    """The plans (``$nnUNet_preprocessed/<dataset>/<plans>.json``) and nnU-Net's ConfigurationManager of a 3-D
    ``configuration`` in them; ``dataset`` (as the user named it) goes into the error that says how to plan."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans_file = Path(preprocessed_folder, f"{plans}.json")
    if not plans_file.is_file():
        raise FreeTumorConfigError(
            f"{plans_file} does not exist. Run `nnUNetv2_plan_and_preprocess -d {dataset}` (with -pl for other "
            "planners) first: the tools work in the plan's axis order, spacing and CT normalization."
        )
    plans_dict = json.loads(plans_file.read_text())
    if configuration not in plans_dict["configurations"]:
        raise FreeTumorConfigError(
            f"configuration {configuration!r} is not in {plans_file} "
            f"(available: {sorted(plans_dict['configurations'])})"
        )
    cm = PlansManager(plans_dict).get_configuration(configuration)
    if len(cm.patch_size) != 3:
        raise FreeTumorConfigError(f"configuration {configuration!r} is 2-D; tumor synthesis needs a 3-D one")
    return plans_dict, cm


def planned_dataset(
    dataset: str,
    raw_root: str | os.PathLike,
    preprocessed_root: str | os.PathLike,
    plans: str = "nnUNetPlans",
    configuration: str = "3d_fullres",
) -> PlannedDataset:
    """Resolve a dataset name or id and read what the offline tools need; one clear error for each missing piece."""
    name = dataset_name(dataset)
    raw = Path(raw_root, name)
    if not (raw / "dataset.json").is_file():
        raise FreeTumorConfigError(f"{raw / 'dataset.json'} does not exist: the raw dataset must be in $nnUNet_raw")
    dataset_json = json.loads((raw / "dataset.json").read_text())
    pre = Path(preprocessed_root, name)
    plans_dict, cm = planned_configuration(pre, plans, configuration, dataset)
    cfg, cfg_source = config_for_dataset(dataset_json, pre)
    return PlannedDataset(
        name=name,
        raw=raw,
        dataset_json=dataset_json,
        plans=plans_dict,
        plans_name=plans,
        configuration=configuration,
        spacing=tuple(float(s) for s in cm.spacing),
        patch_size=tuple(int(p) for p in cm.patch_size),
        transpose_forward=list(plans_dict["transpose_forward"]),
        transpose_backward=list(plans_dict["transpose_backward"]),
        normalization=ct_normalizations(plans_dict, configuration)[0],  # refuses non-CT data
        cfg=cfg,
        cfg_source=cfg_source,
    )


def fold_split(dataset_folder: str | os.PathLike, fold: int | str, missing: str) -> dict[str, list[str]]:
    """Fold ``fold`` ({"train": [...], "val": [...]}) of nnU-Net's ``splits_final.json`` in ``dataset_folder``
    ($nnUNet_preprocessed/<dataset>); ``missing`` completes the error when the file is not there (how to make it)."""
    path = Path(dataset_folder, "splits_final.json")
    if not path.is_file():
        raise FreeTumorConfigError(f"{path} does not exist: {missing}")
    splits = _load_json(path)
    if int(fold) >= len(splits):
        raise FreeTumorConfigError(f"fold {fold} is not in {path} ({len(splits)} splits)")
    return splits[int(fold)]


def _load_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())
