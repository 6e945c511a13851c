"""The generator's realism monitor (generator/monitor.py) for the benchmarks: its numbers at a finished run's last
monitor point, and the handcrafted recipe measured the same way on the same fixed masks with the same S.

``c`` is a ``benchmarks.compare.Comparison`` (its dataset, environment and work folder); this module does not import
it, so that compare.py can use this one."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import file_stamp, sh


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


def cached_for_segmenter(cache: Path, gate_checkpoint: Path, compute, setting: dict | None = None) -> dict:
    """``compute()``'s numbers, kept in ``cache`` with the S they were judged by (path and modification time) and the
    ``setting`` they were computed with: a retrained S (or another one), or another setting, computes them again
    instead of reusing numbers that are not theirs."""
    key = file_stamp(gate_checkpoint) if setting is None else [file_stamp(gate_checkpoint), setting]
    if cache.is_file():
        data = json.loads(cache.read_text())
        if data.get("judged_by") == key:
            return data["numbers"]
    numbers = compute()
    cache.write_text(json.dumps({"judged_by": key, "numbers": numbers}, indent=1) + "\n")
    return numbers


def handcrafted_numbers(c, seed: int, monitor_n: int, gate_checkpoint: Path, cache: Path) -> dict:
    """The monitor's numbers for the handcrafted recipe (SyntheticTumors, as nnUNetTrainerHandcraftedTumor paints) on
    the fixed masks of the seed's generator run, judged by the same S; cached in ``cache`` (per S)."""
    return cached_for_segmenter(
        cache, gate_checkpoint, lambda: _handcrafted_numbers(c, seed, monitor_n, gate_checkpoint)
    )


def _handcrafted_numbers(c, seed: int, monitor_n: int, gate_checkpoint: Path) -> dict:
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
    return numbers


# --- the phantom's own lesion recipe on the fixed masks --------------------------------------------------------------
RECIPES = {
    "replaced": "the phantom's recipe: the organ replaced by the lesion (its texture and noise, no vessels)",
    "rim only": "the same without the necrotic core (the rim's contrast throughout)",
    "added": "the phantom's lesion added to the organ (its texture and vessels kept, as Eq. 1 keeps them)",
}


def paint_phantom_lesion(
    hu: np.ndarray, mask: np.ndarray, spacing, appearance: str, how: str, rng: np.random.Generator
) -> np.ndarray:
    """One lesion of the demo phantom's ``appearance`` painted into a healthy-organ crop ``hu`` (HU, (z, y, x)) on the
    hard ``mask``, with the phantom's own code (``phantom._paint_lesion``: offsets, texture, core, partial volume):
    ``how`` = "replaced" as the phantom makes its lesions (the organ under the mask replaced; the image noise redrawn
    inside at the phantom's level), "rim only" the same with the lesion too small for a core, "added" the lesion's
    offset and texture added to the organ (which keeps its own texture, noise and vessels). Returns a new array."""
    from nnunet_freetumor.dataset_conversion import phantom
    from nnunet_freetumor.evaluation.lesions import longest_diameter_mm
    from nnunet_freetumor.synthesis.masks import bbox

    if how not in RECIPES:
        raise ValueError(f"how must be one of {list(RECIPES)}, got {how!r}")
    spacing = np.asarray(spacing, dtype=float)
    box = bbox(mask, pad=0)
    base = float(np.median(hu[mask]))
    diameter = longest_diameter_mm(mask, spacing) if how != "rim only" else 0.0  # < 10 mm: no core
    organ, tumor = 1, 2
    labels = np.full(hu.shape, organ, dtype=np.uint8)
    if how == "added":
        flat = np.full(hu.shape, base, dtype=np.float32)
        phantom._paint_lesion(flat, labels, box, mask[box], organ, tumor, base, diameter, spacing, rng, appearance)
        return (hu + (flat - base)).astype(np.float32)
    out = hu.astype(np.float32).copy()
    phantom._paint_lesion(out, labels, box, mask[box], organ, tumor, base, diameter, spacing, rng, appearance)
    sigma = float(rng.uniform(10.0, 15.0))  # the phantom's noise level
    return out + phantom.partial_volume_weight(mask) * phantom.image_noise(hu.shape, sigma, rng)


def recipe_numbers(c, seed: int, monitor_n: int, gate_checkpoint: Path, cache: Path, appearance: str) -> dict:
    """The monitor's numbers for the phantom's own lesions (``RECIPES``) painted on the fixed masks of the seed's
    generator run, judged by the same S: what S accepts of lesions made exactly as the real ones are, on these masks
    (lesions S never saw in training; G, which optimises S's P, can exceed it), and which part of the recipe S relies
    on. Cached in ``cache`` (per S)."""
    return cached_for_segmenter(
        cache, gate_checkpoint, lambda: _recipe_numbers(c, seed, monitor_n, gate_checkpoint, appearance)
    )


def _recipe_numbers(c, seed: int, monitor_n: int, gate_checkpoint: Path, appearance: str) -> dict:
    from nnunet_freetumor.synthesis.masks import inside_soft_mask

    trainer, monitor = build_monitor(c, seed, monitor_n, gate_checkpoint)
    norm, spacing = trainer.setup.norm, trainer.setup.spacing
    out = {}
    for how in RECIPES:
        rng = np.random.default_rng(0)

        def recipe(x: torch.Tensor, soft: torch.Tensor, organ_index: torch.Tensor, _how=how, _rng=rng) -> torch.Tensor:
            hu = norm.to_hu(x[0, 0].float()).numpy()
            inside = inside_soft_mask(soft)[0, 0].numpy()
            painted = paint_phantom_lesion(hu, inside, spacing, appearance, _how, _rng)
            return norm.from_hu(torch.from_numpy(painted))[None, None].to(x.dtype)

        out[how], _ = monitor.evaluate(recipe)
    return out


# --- real lesions S never saw ----------------------------------------------------------------------------------------
UNSEEN_ID_OFFSET = 10  # the unseen cases' dataset id: the comparison's + this
UNSEEN_SEED = 1  # the comparison's phantom is seed 0


def unseen_lesion_numbers(c, gate_checkpoint: Path, cache: Path, appearance: str, n_cases: int = 16) -> dict:
    """S's view of real lesions it never saw: the lesions of ``n_cases`` new phantom cases of ``appearance`` (another
    seed, every case with lesions, the training split's size classes and lesions per case), preprocessed with the
    comparison's own plans (its normalization) and measured as the monitor measures the training split's lesions
    (contrast to the organ ring, S's P on the gate's box). The reference a generator's acceptance compares with
    fairly: the training lesions' rate is what S gives lesions it has learned. Cached in ``cache`` (per S)."""
    setting = {"cases": n_cases, "seed": UNSEEN_SEED, "appearance": appearance, "shape": list(c.p["shape"])}
    return cached_for_segmenter(
        cache, gate_checkpoint, lambda: _unseen_lesion_numbers(c, gate_checkpoint, setting), setting
    )


def _unseen_lesion_numbers(c, gate_checkpoint: Path, setting: dict) -> dict:
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    from nnunet_freetumor.generator.data import CaseStore, GeneratorData
    from nnunet_freetumor.generator.monitor import real_lesions

    dataset_id, name = c.dataset_id + UNSEEN_ID_OFFSET, f"{c.name}Unseen"
    ds = f"Dataset{dataset_id:03d}_{name}"
    env = {**c.base_env, "nnUNet_results": str(c.work / "unseen_results")}
    trainer, monitor = build_monitor(c, 0, 1, gate_checkpoint)
    s = trainer.setup
    plans = json.loads((c.pre / c.ds / "nnUNetPlans.json").read_text())
    folder = c.pre / ds / plans["configurations"]["3d_fullres"]["data_identifier"]
    done = c.pre / ds / "unseen_complete.json"
    # the cases are made again when they are not these (the plans are copied with them)
    if not done.is_file() or json.loads(done.read_text()) != setting:
        shutil.rmtree(c.pre / ds, ignore_errors=True)
        cases, seed, appearance, shape = (setting[k] for k in ("cases", "seed", "appearance", "shape"))
        sh(
            ["freetumor_make_demo_dataset", "-d", dataset_id, "--name", name, "--n_train", cases, "--n_test", 0]
            + ["--healthy_fraction", 0, "--shape", *shape, "--seed", seed, "--lesions", appearance]
            + ["--overwrite", "-o", c.raw],
            env,
            c.log,
        )
        # nnU-Net's planner would create the preprocessed folder and copy dataset.json; here the plans come from the
        # comparison's dataset instead (nnU-Net's way of preprocessing a dataset with another dataset's plans)
        (c.pre / ds).mkdir(parents=True, exist_ok=True)
        shutil.copy(c.raw / ds / "dataset.json", c.pre / ds / "dataset.json")
        sh(
            ["nnUNetv2_move_plans_between_datasets", "-s", c.dataset_id, "-t", dataset_id, "-sp", "nnUNetPlans"],
            env,
            c.log,
        )
        sh(["nnUNetv2_preprocess", "-d", dataset_id, "-c", "3d_fullres", "-np", 2], env, c.log)
        done.write_text(json.dumps(setting) + "\n")
    ids = infer_dataset_class(str(folder)).get_identifiers(str(folder))
    data = GeneratorData(CaseStore(folder, ids), s.cfg, s.crop_size, s.spacing, s.rule)
    items = real_lesions(data, 10**6)
    if not items:
        raise SystemExit(f"no lesion of >= MIN_LESION_VOXELS voxels in the {len(ids)} unseen cases of {folder}")
    summary = monitor.summarise(monitor.measure_items(items))  # as the monitor summarises the training lesions
    return {"n_cases": len(ids), "n_lesions": len(items), **{k: summary[k] for k in ("contrast_hu", "accept", "p")}}
