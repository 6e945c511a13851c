"""What ``freetumor_synthesize`` is asked to do, checked before anything is read or loaded."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nnunet_freetumor.errors import FreeTumorConfigError

METHODS = ("generator", "handcrafted")
CASE_SELECTIONS = ("healthy", "all")


@dataclass(frozen=True)
class ExportRequest:
    """What ``freetumor_synthesize`` was asked to do (see its --help)."""

    dataset: str
    out_id: int
    configuration: str = "3d_fullres"
    plans: str = "nnUNetPlans"
    fold: str = "0"
    method: str = "generator"
    generator: str | None = None  # default: the conventional generator_final.safetensors of dataset/plans/config/fold
    gate: bool = False
    gate_checkpoint: str | None = None  # default: the config's gate_trainer baseline of the fold
    gate_threshold: float | None = None  # default: the config's
    n_per_case: int = 1
    seed: int = 0
    name: str | None = None  # default: <source name>_<method>
    cases: str = "healthy"
    overwrite: bool = False
    device: str = "cpu"

    def check(self) -> None:
        """One clear error for an option that cannot work (before any file is read)."""
        if self.method not in METHODS:
            raise FreeTumorConfigError(f"--method must be one of {METHODS}, got {self.method!r}")
        if self.cases not in CASE_SELECTIONS:
            raise FreeTumorConfigError(f"--cases must be one of {CASE_SELECTIONS}, got {self.cases!r}")
        if self.n_per_case < 1:
            raise FreeTumorConfigError(f"--n_per_case must be >= 1, got {self.n_per_case}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise FreeTumorConfigError("--device cuda, but no CUDA GPU is available: use --device cpu")
