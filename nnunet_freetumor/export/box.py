"""Synthesis in a box at the case's native spacing: the generator (Eq. 1 at the spacing it was trained on, the HU
difference brought back) or the handcrafted recipe (in HU). Every voxel where the soft mask is 0 keeps its value."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from nnunet_freetumor.config import FreeTumorConfig
from nnunet_freetumor.synthesis.boxes import CropRule
from nnunet_freetumor.synthesis.handcrafted import handcrafted_synthesis, handcrafted_texture
from nnunet_freetumor.synthesis.intensity import CTNormalization
from nnunet_freetumor.synthesis.resample import resample, size_at_spacing
from nnunet_freetumor.synthesis.residual import BLUR_SIGMA, generator_synthesis
from nnunet_freetumor.utilities.dataset import PlannedDataset

# HU in, HU out: a CT normalization that is the identity and never clips (handcrafted synthesis works in HU)
HU_IDENTITY = CTNormalization(mean=0.0, std=1.0, lower=-np.inf, upper=np.inf)


@dataclass(frozen=True)
class BoxGenerator:
    """A trained generator with what it was trained on: its input's spacing (mm) and CT normalization, the size its
    input must be divisible by, whether it is mask-conditioned and how its residual is smoothed."""

    network: torch.nn.Module
    spacing: tuple[float, ...]
    norm: CTNormalization
    divisor: tuple[int, ...]
    mask_input: bool = False
    path: Path | None = None
    blur_sigma: float = BLUR_SIGMA
    depth_input: bool = False


def load_box_generator(
    src: PlannedDataset,
    cfg: FreeTumorConfig,
    fold: str,
    override: str | None,
    results_root: str | os.PathLike | None,
    device: torch.device,
) -> tuple[BoxGenerator, CropRule]:
    """The generator trained for ``src``'s plans/configuration and ``fold`` (or ``override``), and the crop rule it was
    trained with (its checkpoint's margin and largest crop, in mm)."""
    from nnunet_freetumor.generator.checkpoint import find_generator, generator_crop_rule, load_compatible_generator
    from nnunet_freetumor.generator.networks import synthesis_options

    key = src.model_key()
    where = {"dataset_name": key["dataset_name"], "plans": key["plans_name"], "configuration": key["configuration"]}
    path = find_generator(
        results_root,
        **where,
        fold=fold,
        override=override,
        alternatives=" (or pass --generator, or use --method handcrafted)",
    )
    network, meta = load_compatible_generator(path, cfg, **where, fold=fold, device=device)
    generator = BoxGenerator(
        network=network,
        spacing=tuple(float(s) for s in meta["spacing"]),
        norm=CTNormalization(**meta["normalization"]),
        **synthesis_options(meta["generator"]),
        path=path,
    )
    return generator, generator_crop_rule(meta, cfg)


def unclipped(norm: CTNormalization) -> CTNormalization:
    """The same normalization without the clip window (maps back to HU without losing what is outside it)."""
    return replace(norm, lower=-np.inf, upper=np.inf)


def generator_box(
    generator: BoxGenerator,
    hu: torch.Tensor,
    soft: torch.Tensor,
    organ_index: int,
    spacing: Sequence[float],
    cfg: FreeTumorConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 1 with the generator on a native-spacing box.

    hu, soft: (X, Y, Z) float32 HU and soft mask at ``spacing`` (mm), on the generator's device. The box is resampled
    to the generator's spacing, normalized as it was trained (its input is clipped to that window exactly as in
    training), synthesized, and the HU difference (never clipped) is resampled back and added where ``soft > 0``.
    Returns (synthesized box at the native spacing, equal to ``hu`` bit for bit where ``soft == 0``; synthesized box
    in HU at the generator's spacing, as the generator made it).
    """
    size = size_at_spacing(hu.shape, spacing, generator.spacing)
    hu_g = resample(hu[None, None], size)
    soft_g = resample(soft[None, None], size).clamp(0, 1)
    x = generator.norm.from_hu(hu_g)
    wide = unclipped(generator.norm)  # Eq. 1's result mapped back to HU without the plan's clipping
    index = torch.tensor([organ_index], device=hu.device)
    x_hat = generator_synthesis(
        generator.network,
        x,
        soft_g,
        index,
        wide,
        cfg.window,
        generator.divisor,
        mask_input=generator.mask_input,
        blur_sigma=generator.blur_sigma,
        depth_input=generator.depth_input,
    )
    diff_g = wide.to_hu(x_hat) - wide.to_hu(x)
    diff = resample(diff_g, hu.shape)[0, 0]
    return torch.where(soft > 0, hu + diff, hu), (hu_g + diff_g)[0, 0]


def handcrafted_box(
    hu: torch.Tensor, soft: torch.Tensor, spacing: Sequence[float], cfg: FreeTumorConfig, rng: np.random.Generator
) -> torch.Tensor:
    """SyntheticTumors' textured HU offset on a native-spacing (X, Y, Z) HU box; unchanged where ``soft == 0``."""
    gen = torch.Generator(device=hu.device).manual_seed(int(rng.integers(0, 2**31 - 1)))
    texture = handcrafted_texture(hu.shape, spacing, cfg.handcrafted, gen, hu.device)
    difference = float(rng.uniform(*cfg.handcrafted.hu_difference))
    return handcrafted_synthesis(hu, soft, texture, difference, HU_IDENTITY, cfg.window.polarity)
