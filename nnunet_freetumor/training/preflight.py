"""Checks that run before nnU-Net creates a training's output folder (every one that can fail runs first, so a bad
dataset leaves no partial outputs): what the synthesis trainers cannot train on, and a dataset without the organ."""

from __future__ import annotations

from pathlib import Path

from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_freetumor.config import FreeTumorConfig, FreeTumorConfigError


def check_trainable(plans_manager: PlansManager, configuration: str, dataset_json: dict) -> None:
    """Integer labels and a 3-D configuration: what every synthesis trainer needs."""
    if plans_manager.get_label_manager(dataset_json).has_regions:
        raise FreeTumorConfigError(
            "region-based training (dataset.json labels as lists) is not supported by the FreeTumor trainers: "
            "synthetic tumors get integer tumor labels. Train on integer labels instead."
        )
    if len(plans_manager.get_configuration(configuration).patch_size) != 3:
        raise FreeTumorConfigError(
            f"configuration {configuration!r} is 2-D; tumor synthesis needs a 3-D configuration "
            "(3d_fullres, 3d_lowres, 3d_cascade_fullres)."
        )


def check_single_channel(plans_manager: PlansManager, configuration: str, dataset_json: dict, trainer: str) -> None:
    """One input channel (CT): what synthesis on the training device (generator, or the device handcrafted) needs."""
    n_in = determine_num_input_channels(plans_manager, plans_manager.get_configuration(configuration), dataset_json)
    if n_in != 1:
        raise FreeTumorConfigError(
            f"{trainer} synthesizes on single-channel CT; this dataset has {n_in} input channels. "
            "Use nnUNetTrainerHandcraftedTumor (it paints every CT channel) instead."
        )


def check_organs_present(preprocessed_folder: Path, cfg: FreeTumorConfig) -> None:
    """Refuse a dataset in which no preprocessed case contains any configured organ: nothing could be synthesized.

    Reads nnU-Net's per-case properties (their class_locations list the labels of each case); skipped when the folder
    does not exist yet (nnU-Net itself then says what is missing)."""
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    if not preprocessed_folder.is_dir():
        return
    dataset = infer_dataset_class(str(preprocessed_folder))
    ids = dataset.get_identifiers(str(preprocessed_folder))
    ds = dataset(str(preprocessed_folder), ids)
    for k in ids:
        locations = ds.load_case(k)[3]["class_locations"]
        if any(len(locations.get(o, ())) for o in cfg.organ_labels):
            return
    raise FreeTumorConfigError(
        f"none of the {len(ids)} cases in {preprocessed_folder} contains an organ label {list(cfg.organ_labels)}: "
        "there is no healthy organ to put a synthetic tumor into. Add organ labels to your cases (README: 'Using it "
        "on your data') or fix the label pairs with `freetumor_config`."
    )
