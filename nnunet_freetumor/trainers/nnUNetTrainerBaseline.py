"""``-tr nnUNetTrainerBaseline``: nnU-Net's default trainer, unchanged, except that it honours the plugin's schedule
overrides (``nnUNet_freetumor_epochs`` / ``_iters`` / ``_val_iters``) so that demos and smoke tests can train a short
baseline (the quality gate's frozen segmenter) with the same schedule as the synthesis trainers."""

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_freetumor.trainer_base import apply_schedule_overrides


class nnUNetTrainerBaseline(nnUNetTrainer):
    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),
    ):
        super().__init__(plans, configuration, fold, dataset_json, device)
        changed = apply_schedule_overrides(self)
        if changed:
            self.print_to_log_file("schedule overridden by environment: " + ", ".join(changed))
