"""``-tr nnUNetTrainerBaseline``: nnU-Net's default trainer, unchanged, except that it honours the plugin's schedule
overrides (``nnUNet_freetumor_epochs`` / ``_iters`` / ``_val_iters``) so that demos and smoke tests can train a short
baseline (the quality gate's frozen segmenter) with the same schedule as the synthesis trainers."""

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_freetumor import env
from nnunet_freetumor.config import FreeTumorConfigError
from nnunet_freetumor.training.trainer_base import apply_schedule_overrides, seed_from_env


class nnUNetTrainerBaseline(nnUNetTrainer):
    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),
    ):
        try:
            schedule = env.schedule_overrides()
        except FreeTumorConfigError as e:
            raise SystemExit(f"error: {e}") from None
        super().__init__(plans, configuration, fold, dataset_json, device)
        apply_schedule_overrides(self, schedule)

    def initialize(self):
        seed_from_env(self)
        super().initialize()
