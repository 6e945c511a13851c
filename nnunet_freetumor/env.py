"""Every environment variable the plugin reads, in one place: nnU-Net's three folders and the ``nnUNet_freetumor_*``
switches (README: "Configuration and environment variables").

nnU-Net's folders are read through ``nnunetv2.paths`` (in nnU-Net 2.8 its ``_EnvPath`` objects read the environment
when asked, so a value set later in the same process is seen, as nnU-Net itself sees it). Every reader takes an
optional ``environ`` mapping that replaces the environment (tests, callers that pass their own).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from nnunet_freetumor.errors import FreeTumorConfigError

RAW, PREPROCESSED, RESULTS = "nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"

CONFIG = "nnUNet_freetumor_config"  # a FreeTumor config JSON that wins over the dataset's own
GATE_CHECKPOINT = "nnUNet_freetumor_gate_checkpoint"  # S for the trainers instead of the config's baseline
GENERATOR = "nnUNet_freetumor_generator"  # G for nnUNetTrainerFreeTumor instead of the fold's generator
ALLOW_FOREIGN_GENERATOR = "nnUNet_freetumor_allow_foreign_generator"  # "1": a G of another dataset/plans/fold
TRUST_CHECKPOINTS = "nnUNet_freetumor_trust_checkpoints"  # "1": full unpickling of nnU-Net checkpoints
SEED = "nnUNet_freetumor_seed"  # seed python/numpy/torch in the plugin trainers
# schedule overrides for demos and smoke tests -> the nnU-Net trainer attribute each one sets
SCHEDULE = {
    "nnUNet_freetumor_epochs": "num_epochs",
    "nnUNet_freetumor_iters": "num_iterations_per_epoch",
    "nnUNet_freetumor_val_iters": "num_val_iterations_per_epoch",
    # nnU-Net writes checkpoint_latest every 50 epochs: a killed short run (a benchmark, a preemptible job) continues
    # with --c from the last one
    "nnUNet_freetumor_save_every": "save_every",
}


def _environ(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def get(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The variable's value; None when it is unset or empty."""
    if environ is None and name in (RAW, PREPROCESSED, RESULTS):
        from nnunetv2 import paths

        return getattr(paths, name).get() or None
    return _environ(environ).get(name) or None


def flag(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """True when the variable is set to 1."""
    return _environ(environ).get(name) == "1"


def path(name: str, environ: Mapping[str, str] | None = None) -> Path | None:
    value = get(name, environ)
    return Path(value) if value else None


def nnunet_folders(*names: str, environ: Mapping[str, str] | None = None) -> dict[str, Path]:
    """nnU-Net's folder variables ``names`` (RAW, PREPROCESSED, RESULTS) as paths; one error that names every one
    that is not set."""
    missing = [n for n in names if not get(n, environ)]
    if missing:
        raise FreeTumorConfigError(
            f"set the nnU-Net path variable(s) {', '.join(missing)} (see nnU-Net's documentation/set_environment_"
            "variables.md)"
        )
    return {n: Path(get(n, environ)) for n in names}


def positive_int(name: str, environ: Mapping[str, str] | None = None) -> int | None:
    value = get(name, environ)
    if value is None:
        return None
    try:
        out = int(value)
        if out < 1:
            raise ValueError
    except ValueError:
        raise FreeTumorConfigError(f"{name} must be a positive integer, got {value!r}") from None
    return out


def schedule_overrides(environ: Mapping[str, str] | None = None) -> dict[str, int]:
    """num_epochs / iterations from the variables in ``SCHEDULE`` (validated), as {trainer attribute: value}."""
    values = {attr: positive_int(var, environ) for var, attr in SCHEDULE.items()}
    return {attr: v for attr, v in values.items() if v is not None}


def seed(environ: Mapping[str, str] | None = None) -> int | None:
    value = get(SEED, environ)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise FreeTumorConfigError(f"{SEED} must be an integer, got {value!r}") from None
