"""What ``freetumor_add_unlabeled`` was asked to do: the request, its quality filters and their argument checks."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from nnunet_freetumor.config import FreeTumorConfig, FreeTumorConfigError

TUMOR_MODES = ("exclude", "keep")
ABDOMEN_ORGAN_HU = (-200.0, 400.0)
CHEST_ORGAN_HU = (-1000.0, 400.0)
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")


@dataclass(frozen=True)
class QualityFilters:
    """Per-case quality filters (volumes in ml, HU in Hounsfield units, shares in [0, 1]; see ``qc``)."""

    min_organ_ml: float = 10.0
    max_organ_ml: float | None = None
    min_largest_component: float = 0.9
    max_p1_hu: float = -500.0
    organ_hu: tuple[float, float] | None = None  # None: ABDOMEN_ORGAN_HU, or CHEST_ORGAN_HU with a chest config

    def validate(self) -> None:
        if self.min_organ_ml < 0:
            raise FreeTumorConfigError(f"--min_organ_ml must be >= 0, got {self.min_organ_ml}")
        if self.max_organ_ml is not None and self.max_organ_ml < self.min_organ_ml:
            raise FreeTumorConfigError(
                f"--max_organ_ml ({self.max_organ_ml}) must be >= --min_organ_ml ({self.min_organ_ml})"
            )
        if not 0.0 <= self.min_largest_component <= 1.0:
            raise FreeTumorConfigError(f"--min_largest_component must be in [0, 1], got {self.min_largest_component}")
        if self.organ_hu is not None and not self.organ_hu[0] < self.organ_hu[1]:
            raise FreeTumorConfigError(f"--organ_hu needs LOW < HIGH, got {list(self.organ_hu)}")

    def organ_hu_for(self, cfg: FreeTumorConfig) -> tuple[float, float]:
        """The organ median HU range: ``organ_hu``, else the abdomen default, or the chest one where the config's
        window has ``polarity = +1`` (lungs)."""
        if self.organ_hu is not None:
            return (float(self.organ_hu[0]), float(self.organ_hu[1]))
        return CHEST_ORGAN_HU if cfg.window.polarity > 0 else ABDOMEN_ORGAN_HU


@dataclass(frozen=True)
class UnlabeledRequest:
    """What ``freetumor_add_unlabeled`` was asked to do (see its --help)."""

    dataset: str
    input_folder: str
    organ_masks: str | None = None  # folder of supplied masks; None: predict them
    label_map: Mapping[int, int] | None = None  # source id -> dataset id; None: identity / model labels by name
    organ_model: str | None = None  # nnU-Net model folder; None: the dataset's baseline (config's gate_trainer)
    plans: str = "nnUNetPlans"
    configuration: str = "3d_fullres"
    folds: tuple[str, ...] = ("0",)
    checkpoint: str = "checkpoint_final.pth"
    tumors: str = "exclude"
    output_id: int | None = None  # None: add in place
    name: str | None = None  # name of the new dataset [<source name>_<prefix>]
    prefix: str = "unlabeled"
    filters: QualityFilters = field(default_factory=QualityFilters)
    make_split: bool = False
    report: str | None = None  # a folder, or a .json path (the .md goes beside it)
    dry_run: bool = False
    device: str = "cpu"
    disable_tta: bool = False
    npp: int = 3  # nnU-Net's -npp / -nps; both 0: sequential prediction in this process
    nps: int = 3

    def validate(self) -> None:
        """The checks that need nothing but the arguments (the filters, --tumors, --prefix, one mask source)."""
        self.filters.validate()
        if self.tumors not in TUMOR_MODES:
            raise FreeTumorConfigError(f"--tumors must be one of {TUMOR_MODES}, got {self.tumors!r}")
        if not _ID.match(self.prefix):
            raise FreeTumorConfigError(f"--prefix must be letters, digits, '_' or '-', got {self.prefix!r}")
        if self.organ_masks and self.organ_model:
            raise FreeTumorConfigError(
                "pass either --organ-masks (supplied masks) or --organ-model (predict), not both"
            )
