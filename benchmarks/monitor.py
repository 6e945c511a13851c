"""The generator's realism monitor (generator/monitor.py) for the benchmarks: its numbers at a finished run's last
monitor point, and the handcrafted recipe measured the same way on the same fixed masks with the same S.

``c`` is a ``benchmarks.compare.Comparison`` (its dataset, environment and work folder); this module does not import
it, so that compare.py can use this one."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch


def last_monitor_point(generator_folder: Path) -> dict | None:
    """The last entry of a generator run's progress.json that has the monitor's numbers (None: no such run)."""
    progress = generator_folder / "progress.json"
    if not progress.is_file():
        return None
    points = [h for h in json.loads(progress.read_text()) if "synthetic_contrast_hu" in h]
    return points[-1] if points else None


def build_monitor(c, seed: int, monitor_n: int, gate_checkpoint: Path, results_key: str = "both"):
    """A generator run's monitor (its fixed masks, the training split's real lesions, S = ``gate_checkpoint``),
    built in this process without training: (the trainer, the monitor)."""
    from nnunet_freetumor.generator.args import GeneratorTrainingArgs
    from nnunet_freetumor.generator.train import GeneratorTrainer

    env = c.env(seed, results_key)
    os.environ.update({k: env[k] for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")})
    args = GeneratorTrainingArgs(
        dataset=str(c.dataset_id),
        fold="0",
        steps=1,
        seed=seed,
        device="cpu",
        monitor_n=monitor_n,
        gate_checkpoint=str(gate_checkpoint),
    )
    trainer = GeneratorTrainer(args, env["nnUNet_results"], env["nnUNet_preprocessed"])
    return trainer, trainer.build_monitor()


def handcrafted_numbers(c, seed: int, monitor_n: int, gate_checkpoint: Path, cache: Path) -> dict:
    """The monitor's numbers for the handcrafted recipe (SyntheticTumors, as nnUNetTrainerHandcraftedTumor paints) on
    the fixed masks of the seed's generator run, judged by the same S; cached in ``cache``."""
    if cache.is_file():
        return json.loads(cache.read_text())
    from nnunet_freetumor.synthesis.handcrafted import handcrafted_synthesis, handcrafted_texture

    trainer, monitor = build_monitor(c, seed, monitor_n, gate_checkpoint)
    cfg, norm, spacing = trainer.setup.cfg, trainer.setup.norm, trainer.setup.spacing
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)

    def handcrafted(x: torch.Tensor, soft: torch.Tensor, organ_index: torch.Tensor) -> torch.Tensor:
        texture = handcrafted_texture(x.shape[2:], spacing, cfg.handcrafted, gen)
        diff = float(rng.uniform(*cfg.handcrafted.hu_difference))
        return handcrafted_synthesis(x, soft, texture, diff, norm, cfg.window.polarity)

    numbers, _ = monitor.evaluate(handcrafted)
    cache.write_text(json.dumps(numbers, indent=1) + "\n")
    return numbers
