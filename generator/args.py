"""What defines a generator run (``freetumor_train_generator``'s options, saved in every checkpoint), checked when it is
made."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nnunet_freetumor.config import FreeTumorConfigError
from nnunet_freetumor.generator.losses import SEG_LOSSES
from nnunet_freetumor.synthesis.residual import BLUR_SIGMA

LOSSES = ("both", "seg", "cls")
CROPS = ("tumor", "patch")
INITS = ("zero", "random")


@dataclass
class GeneratorTrainingArgs:
    """Everything that defines a generator run (saved in every checkpoint). See ``freetumor_train_generator -h``."""

    dataset: str  # name (DatasetXXX_Name) or id
    configuration: str = "3d_fullres"
    plans: str = "nnUNetPlans"
    fold: str = "0"
    steps: int = 2000  # optimizer steps
    epochs: int | None = None  # alias: steps = epochs * ceil(cases with an organ / batch_size)
    batch_size: int = 4
    lr: float = 1e-3
    lr_c: float | None = None  # discriminator learning rate [lr]
    lambda_cls: float = 0.1
    losses: str = "both"  # both | seg (L_seg only) | cls (L_cls only): the paper's loss ablation
    seg_loss: str = "nonsat"  # nonsat (-log p) | paper (Eq. 2, 1 - p)
    seg_warmup_steps: int = 0  # L_G = L_seg alone for this many steps (C trains meanwhile)
    init: str = "zero"  # zero: G's last layer starts at 0 (no change at step 0) | random
    mask_input: bool = True  # G also sees the soft tumor mask
    depth_input: bool = False  # G also sees each voxel's depth in the tumor relative to its deepest voxel
    residual_blur: float = BLUR_SIGMA  # sigma (voxels) of the Gaussian smoothing tanh(G(x)); 0 = none
    crop: str = "tumor"  # tumor: the mask's box + crop_margin_mm | patch: the whole crop_size (earlier versions)
    crop_margin_mm: float | None = None  # default: the config's gate_bbox_margin_mm (S sees what the gate sees)
    crop_size: tuple[int, ...] | None = None  # the largest crop (context), voxels: default min(96, patch size)
    gen_features: tuple[int, ...] = (16, 32, 64, 128)
    disc_features: tuple[int, ...] = (8, 16, 32)
    grad_clip: float = 12.0
    seed: int = 0
    num_workers: int = 0
    device: str = "cuda"
    amp: bool = True  # CUDA only
    monitor_every: int = 100  # steps between log lines, monitor evaluations and checkpoints
    monitor_n: int = 32  # synthetic tumors in the monitor's fixed set
    gate_checkpoint: str | None = None  # default: the config's gate_trainer baseline of this fold
    cache_mb: float = 1024  # hold the training cases decompressed in memory when they fit
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("--losses", self.losses, LOSSES),
            ("--seg_loss", self.seg_loss, SEG_LOSSES),
            ("--crop", self.crop, CROPS),
            ("--init", self.init, INITS),
        ):
            if value not in allowed:
                raise FreeTumorConfigError(f"{name} must be one of {allowed}, got {value!r}")
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0 or (self.epochs is not None and self.epochs < 1):
            raise FreeTumorConfigError("--steps, --epochs and --batch_size must be >= 1 and --lr > 0")
        if self.monitor_every < 1 or self.seg_warmup_steps < 0 or self.residual_blur < 0:
            raise FreeTumorConfigError("--monitor_every must be >= 1, --seg_warmup_steps and --residual_blur >= 0")
