"""Does the generator learn? Its realism over training steps, per lesion appearance and seed, on a CPU budget.

    python -m benchmarks.generator_convergence [--preset cpu|quick] [--lesions A [A ...]] [--seeds N] [--s_epochs N]
                                               [--workdir DIR] [--results RESULTS.md] [--device cpu|cuda]

For every lesion appearance of the demo phantom (`freetumor_make_demo_dataset --lesions`: hypodense, hyperdense,
heterogeneous) and every seed, in a resumable work folder (finished runs are reused):
1. the phantom of that appearance, planned and preprocessed; the FreeTumor config with mask sizes matched to the
   phantom's lesions (radii 2.5-30 mm in four classes; the defaults are sized for real abdominal CT) and the default
   window and polarity (darker tumors): the generator has to find the sign itself, from S and C;
2. the baseline S (`nnUNetTrainerBaseline`, the preset's schedule, seed 0): the frozen segmenter of Eq. 2 and the
   gate, one per appearance and shared by the generator seeds (an 80-epoch S costs about an hour on 2 CPU cores; the
   seeds here vary what is under study, the generator);
3. `freetumor_train_generator` with its defaults (only the schedule and the monitor's cadence set here); its realism
   monitor (generator/monitor.py) writes, every few steps, the synthetic tumors' median contrast to the organ around
   them, the share S labels tumor at T = 0.7 and the Fréchet distance with its same-distribution band, on a fixed set
   of held-out masks, and the real lesions' numbers beside them;
4. the handcrafted recipe (SyntheticTumors, `nnUNetTrainerHandcraftedTumor`'s) measured the same way on the same masks;
5. the phantom's own lesion code painted on the same masks (as its real lesions are made, without the core, added to
   the organ instead of replacing it): what S accepts of lesions made exactly like the real ones, on these masks;
6. real lesions S never saw: 16 new phantom cases of the appearance (another seed, all with lesions), preprocessed
   with the same plans and measured as the training lesions are: the fair reference for S's acceptance (S accepts
   its own training lesions more readily than any other lesion, real or synthetic).
Then the section "## Generator convergence (<preset>)" of RESULTS.md: per appearance, each seed's numbers at the last
monitor point within the time budget next to the targets (contrast sign and within +-25 % of the real lesions'
median; S accepts >= 50 % of synthetic tumors; FD inside the band), and a plot of the curves
(generator_convergence_<preset>.png); a run on fewer appearances (--lesions) writes a section (and plot) of its own,
"## Generator convergence (<preset>, <appearances>)"; so does a run with another S (--s_epochs N, in its own --workdir):
"## Generator convergence (<preset>[, <appearances>], S <N> epochs)".
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import claim_workdir, sh, write_section
from benchmarks.compare import PHANTOM_SIZE_CLASSES, Comparison, Run
from benchmarks.monitor import (
    RECIPES,
    UNSEEN_SEED,
    build_monitor,
    cached_for_segmenter,
    recipe_numbers,
    unseen_lesion_numbers,
)
from benchmarks.monitor import handcrafted_numbers as monitor_handcrafted

APPEARANCES = ("hypodense", "hyperdense", "heterogeneous")
DATASET_ID = 940  # + the appearance's index
BASELINE = Run("baseline", "nnUNetTrainerBaseline", None)
PRESETS = {
    # smoke test: minutes, numbers meaningless
    "quick": dict(
        shape=(24, 48, 48),
        n_train=8,
        healthy=0.5,
        n_test=0,
        seeds=1,
        epochs=1,
        iters=4,
        steps=4,
        monitor_every=2,
        monitor_n=6,
        budget_min=30,
        size_classes=PHANTOM_SIZE_CLASSES,
        gen_args=("--gen_features", 4, 8, 16, "--disc_features", 4, 8),
    ),
    # 2 CPU cores: S as in compare.py's cpu-small (80 x 20 iterations, ~20 min); the generator's defaults
    "cpu": dict(
        shape=(24, 48, 48),
        n_train=24,
        healthy=0.75,
        n_test=0,
        seeds=3,
        epochs=80,
        iters=20,
        steps=450,  # ~3 s per step of 4 + the monitor: the whole run fits the 30 min budget
        monitor_every=50,
        monitor_n=32,
        budget_min=30,
        size_classes=PHANTOM_SIZE_CLASSES,
        gen_args=(),
    ),
}
CONTRAST_TOLERANCE = 0.25
ACCEPT_TARGET = 0.5


def comparison(work: Path, p: dict, device: str, appearance: str) -> Comparison:
    i = APPEARANCES.index(appearance)
    return Comparison(
        work / appearance, {**p, "lesions": appearance}, device, DATASET_ID + i, f"FreeTumorConv{appearance.title()}"
    )


def gate_checkpoint(c: Comparison) -> Path:
    """The appearance's S: the seed-0 baseline."""
    return c.fold(0, None, BASELINE.trainer) / "checkpoint_final.pth"


# --variants: one setting changed at a time, mostly a default switched back (the stabilisers are defaults only where
# this shows they help)
VARIANTS = {
    "paper": ("L_seg = Eq. 2, 1 - p (--seg_loss paper)", ("--seg_loss", "paper")),
    "random": ("random initialisation (--init random)", ("--init", "random")),
    "nomask": ("G sees the image only (--no_mask_input)", ("--no_mask_input",)),
    "before": (
        "all three back (the earlier generator's choices)",
        ("--seg_loss", "paper", "--init", "random", "--no_mask_input"),
    ),
    "cls": ("L_cls weight 0.5 instead of 0.1 (--lambda_cls 0.5)", ("--lambda_cls", "0.5")),
    "sharp": ("residual not blurred (--residual_blur 0)", ("--residual_blur", "0")),
    "depth": ("G also sees the relative depth in the tumor (--depth_input)", ("--depth_input",)),
    "margin16": (
        "16 mm of context around the tumor instead of the gate's 24 mm (--crop_margin_mm 16; S judges there too)",
        ("--crop_margin_mm", "16"),
    ),
}


def variant_spec(text: str) -> tuple[str | None, str]:
    """``--variants`` item: ``VARIANT`` (on the first appearance) or ``APPEARANCE:VARIANT``."""
    appearance, _, name = text.rpartition(":")
    if name not in VARIANTS or (appearance and appearance not in APPEARANCES):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected [APPEARANCE:]VARIANT with APPEARANCE in {', '.join(APPEARANCES)} and VARIANT in "
            + ", ".join(VARIANTS)
        )
    return appearance or None, name


def train_generator(c: Comparison, seed: int, p: dict, variant: str = "both") -> Path:
    """The seed's generator with the defaults (``variant="both"``, results root seed_<s>/main) or with one of
    ``VARIANTS`` (its own results root, the same S)."""
    folder = c.generator_folder(seed, variant)
    if not (folder / "generator_final.safetensors").is_file():
        cmd = ["freetumor_train_generator", c.dataset_id, "-f", 0, "--steps", p["steps"], "--seed", seed]
        cmd += ["--gate_checkpoint", gate_checkpoint(c)]
        cmd += ["--monitor_every", p["monitor_every"], "--monitor_n", p["monitor_n"], "--device", c.device]
        cmd += [*p["gen_args"], *(VARIANTS[variant][1] if variant != "both" else ())]
        if (folder / "checkpoint_latest.safetensors").is_file():
            cmd.append("--c")  # an interrupted run continues where it stopped
        sh(cmd, c.env(seed, variant), c.log)
    return folder


def within_budget(history: list[dict], budget_min: float) -> dict:
    """The last monitor point reached within ``budget_min`` minutes of generator training (training and monitor time
    counted), with its cumulative minutes."""
    total, best = 0.0, {**history[0], "minutes": 0.0}
    for h in history:
        total += h.get("time_s", 0.0) + h.get("monitor_s", 0.0)
        if total / 60 > budget_min:
            break
        best = {**h, "minutes": total / 60}
    return best


def run_monitor(c: Comparison, seed: int, p: dict):
    """The generator run's realism monitor (its fixed masks, real lesions and S), built in this process."""
    return build_monitor(c, seed, p["monitor_n"], gate_checkpoint(c))


def handcrafted_numbers(c: Comparison, seed: int, p: dict) -> dict:
    """The realism monitor's numbers for the handcrafted recipe on the generator run's fixed masks (same S)."""
    return monitor_handcrafted(c, seed, p["monitor_n"], gate_checkpoint(c), c.work / f"handcrafted_seed_{seed}.json")


MARGINS_MM = (8, 12, 16, 24)  # context around a real lesion's box for S's P vs the margin (24: the gate's default)


def box_vs_patch(c: Comparison, p: dict) -> dict:
    """S's P (Eq. 4) on the real lesions of the training split: on the generator's tumor box (mask + margin, what L_seg
    and the gate see) vs on the whole context crop (here the whole patch), and how often P >= T agrees; the same for
    the boxes of other margins (``MARGINS_MM``): how much context S needs. Cached per S and margins."""
    setting = {"margins_mm": list(MARGINS_MM)}
    return cached_for_segmenter(c.work / "box_vs_patch.json", gate_checkpoint(c), lambda: _box_vs_patch(c, p), setting)


@torch.no_grad()
def _box_vs_patch(c: Comparison, p: dict) -> dict:
    from nnunet_freetumor.synthesis.boxes import CropRule
    from nnunet_freetumor.synthesis.gate import gate_proportion

    trainer, monitor = run_monitor(c, 0, p)
    s = trainer.setup

    def p_on(image: torch.Tensor, mask: torch.Tensor) -> float:
        logits = s.segmenter(image[None].float())
        return float(gate_proportion(logits.float(), mask[None, None], s.cfg.tumor_labels)[0])

    box, patch = [], []
    margins = {m: {"p": [], "voxels": []} for m in MARGINS_MM}
    max_mm = tuple(n * sp for n, sp in zip(s.crop_size, s.spacing))
    for it in monitor.real:
        m = torch.from_numpy(it.mask)
        box.append(p_on(it.image[(slice(None), *it.box)], m[it.box]))
        patch.append(p_on(it.image, m))
        for margin, out in margins.items():
            b = CropRule(float(margin), max_size_mm=max_mm).box(it.mask, s.spacing)
            out["p"].append(p_on(it.image[(slice(None), *b)], m[b]))
            out["voxels"].append(int(np.prod([sl.stop - sl.start for sl in b])))
    t = s.cfg.gate_threshold
    numbers = {
        "n": len(box),
        "p_box": box,
        "p_patch": patch,
        "box_shape_mean_voxels": float(np.mean([np.prod([s.stop - s.start for s in it.box]) for it in monitor.real])),
        "patch_voxels": int(np.prod(monitor.real[0].image.shape[1:])) if monitor.real else 0,
        "agree": float(np.mean([(a >= t) == (b >= t) for a, b in zip(box, patch)])) if box else float("nan"),
        "accept_box": float(np.mean([a >= t for a in box])) if box else float("nan"),
        "accept_patch": float(np.mean([b >= t for b in patch])) if box else float("nan"),
        "gate_margin_mm": float(s.rule.margin_mm),
        "margins": {
            str(margin): {
                "p": out["p"],
                "voxels_mean": float(np.mean(out["voxels"])) if box else float("nan"),
                "accept": float(np.mean([a >= t for a in out["p"]])) if box else float("nan"),
                "agree": float(np.mean([(a >= t) == (b >= t) for a, b in zip(out["p"], patch)]))
                if box
                else float("nan"),
            }
            for margin, out in margins.items()
        },
    }
    return numbers


def targets(n: dict) -> dict[str, bool]:
    """The issue's targets on one set of monitor numbers."""
    syn, real = n["synthetic_contrast_hu"], n["real_contrast_hu"]
    sign = math.copysign(1, syn) == math.copysign(1, real) and abs(syn) > 0
    return {
        "contrast": bool(sign and abs(syn - real) <= CONTRAST_TOLERANCE * abs(real)),
        "accept": n["synthetic_accept"] >= ACCEPT_TARGET,
        "fd": bool(n["fd"] <= n["fd_ref_hi"]),  # inside or below the same-distribution band
    }


def _yes(v: bool) -> str:
    return "yes" if v else "no"


def section_name(preset: str, lesions: list[str], s_epochs: int | None = None) -> str:
    """RESULTS.md's section (and the plot's file stem) of a run: one per preset for all appearances; a run on fewer
    appearances, or with S trained for another number of epochs, writes a section of its own instead of replacing
    the full one."""
    subset = list(lesions) != list(APPEARANCES)
    other_s = f", S {s_epochs} epochs" if s_epochs else ""
    return f"Generator convergence ({preset}{', ' + ', '.join(lesions) if subset else ''}{other_s})"


def plot_name(preset: str, lesions: list[str], s_epochs: int | None = None) -> str:
    subset = list(lesions) != list(APPEARANCES)
    other_s = f"_s{s_epochs}" if s_epochs else ""
    return f"generator_convergence_{preset}{'_' + '_'.join(lesions) if subset else ''}{other_s}.png"


def report(
    results: dict,
    p: dict,
    preset: str,
    device: str,
    png: Path | None,
    compute_h: float,
    flags: str,
    title: str,
    unseen: dict,
) -> str:
    lines = [
        f"## {title}",
        "",
        f"Generated by `python -m benchmarks.generator_convergence --preset {preset}{flags}` ({compute_h:.1f} h of "
        f"commands) on {platform.machine()}, {os.cpu_count()} CPU threads, device {device}. Phantom {p['shape']} "
        f"voxels, {p['n_train']} training cases ({round(p['n_train'] * p['healthy'])} healthy), one per lesion "
        "appearance; FreeTumor config with mask radii matched to the phantom's lesions "
        f"({', '.join(PHANTOM_SIZE_CLASSES)} mm) and the default window and polarity (the generator must find the "
        f"contrast's sign itself). S: `nnUNetTrainerBaseline`, {p['epochs']} epochs x {p['iters']} iterations, one per "
        "appearance (seed 0), shared by the generator seeds. Generator: `freetumor_train_generator` defaults, "
        f"{p['steps']} steps, realism monitor every "
        f"{p['monitor_every']} steps on {p['monitor_n']} fixed masks in held-out (validation) cases. Numbers at the "
        f"last monitor point within {p['budget_min']} min of generator training (training + monitor time). Targets: "
        f"median contrast to the organ within 5 mm has the real lesions' sign and lies within ±"
        f"{CONTRAST_TOLERANCE:.0%} of their median; S labels >= {ACCEPT_TARGET:.0%} of the synthetic tumors tumor "
        "(P >= 0.7; beside it the rate of S's own training lesions and of real lesions S never saw); FD inside (or "
        "below) the same-distribution band (5th-95th "
        "percentile of the FD between N_real synthetic tumors and the rest, the real-vs-synthetic FD at the same "
        "sizes). Handcrafted: the SyntheticTumors recipe on the same masks, measured the same way.",
        "",
    ]
    if not any(results.values()):
        lines += [
            "No run with the defaults in this section (`--seeds 0`): its variants compare with the defaults' runs of "
            "the full section, whose S was trained the same way on the same phantom (not bit-identical: nnU-Net on "
            "CPU is not deterministic); the real lesions' and the handcrafted recipe's numbers in both sections show "
            "how alike the two S are.",
            "",
        ]
    for appearance, seeds in results.items():
        if not seeds:  # --seeds 0: the variants (and the recipes) only
            continue
        lines += [
            f"### {appearance}",
            "",
            "| seed | step | min | contrast HU: synthetic / real (target ±25 %) | S accepts: synthetic / real "
            "(training) / real (unseen) | FD [band] | targets met (contrast, S, FD) | handcrafted: contrast / S "
            "accepts / FD |",
            "|---|---|---|---|---|---|---|---|",
        ]
        met = {"contrast": 0, "accept": 0, "fd": 0}
        for seed, r in seeds.items():
            n, h = r["at_budget"], r["handcrafted"]
            t = targets(n)
            for k in met:
                met[k] += t[k]
            th = targets(h)
            lines.append(
                f"| {seed} | {n['step']} | {n['minutes']:.1f} | {n['synthetic_contrast_hu']:.1f} / "
                f"{n['real_contrast_hu']:.1f} | {n['synthetic_accept']:.2f} / {n['real_accept']:.2f} / "
                f"{unseen[appearance]['accept']:.2f} | {n['fd']:.3g} [{n['fd_ref_lo']:.3g}-{n['fd_ref_hi']:.3g}] | "
                f"{_yes(t['contrast'])}, {_yes(t['accept'])}, {_yes(t['fd'])} | "
                f"{h['synthetic_contrast_hu']:.1f} / {h['synthetic_accept']:.2f} / {h['fd']:.3g} "
                f"({'in' if th['fd'] else 'outside'} band) |"
            )
        n_seeds = len(seeds)
        lines += [
            "",
            f"Targets met in {met['contrast']}/{n_seeds} seeds (contrast), {met['accept']}/{n_seeds} (S accepts), "
            f"{met['fd']}/{n_seeds} (FD).",
            "",
        ]
    lines += [f"![generator convergence]({png.name})", "", ""] if png is not None else [""]
    return "\n".join(lines)


def crops_table(crops: dict) -> str:
    """S's view of the real lesions on the tumor box vs the whole patch, per appearance."""
    lines = [
        "### S on the tumor box vs the whole patch",
        "",
        "The generator's L_seg and the quality gate run S on the tumor's box (mask + the gate's 24 mm margin). Does S "
        "judge a real lesion there as on the whole patch? P (Eq. 4) of each real lesion of the training split, both "
        "ways (mean ± sd over lesions), the share with P >= 0.7 and how often the two decisions agree.",
        "",
        "| appearance | lesions | box voxels (mean) / patch | P on the box | P on the patch | P >= T: box / patch | "
        "decisions agree |",
        "|---|---|---|---|---|---|---|",
    ]
    for appearance, n in crops.items():
        lines.append(
            f"| {appearance} | {n['n']} | {n['box_shape_mean_voxels']:.0f} / {n['patch_voxels']} | "
            f"{np.mean(n['p_box']):.2f} ± {np.std(n['p_box']):.2f} | {np.mean(n['p_patch']):.2f} ± "
            f"{np.std(n['p_patch']):.2f} | {n['accept_box']:.2f} / {n['accept_patch']:.2f} | {n['agree']:.0%} |"
        )
    lines += [
        "",
        "How much context does S need? The same lesions on boxes with other margins (mm around the lesion's bounding "
        "box; the cost of S's passes grows with the box's voxels): mean P, the share with P >= T and how often the "
        "decision agrees with the whole patch's.",
        "",
        "| appearance | margin [mm] | box voxels (mean) | P on the box | P >= T | decisions agree with the patch |",
        "|---|---|---|---|---|---|",
    ]
    for appearance, n in crops.items():
        for margin, m in n["margins"].items():
            gate = " (the gate's)" if float(margin) == n["gate_margin_mm"] else ""
            lines.append(
                f"| {appearance} | {margin}{gate} | {m['voxels_mean']:.0f} | {np.mean(m['p']):.2f} ± "
                f"{np.std(m['p']):.2f} | {m['accept']:.2f} | {m['agree']:.0%} |"
            )
    return "\n".join(lines) + "\n\n"


def variants_table(default: dict | None, variants: dict, appearance: str) -> str:
    """The defaults against the variants (one setting changed) on one appearance, seed 0."""
    lines = [
        f"### Which defaults matter ({appearance}, seed 0)",
        "",
        "Each variant changes one of the generator's settings (mostly a default switched back), everything else "
        "equal (same S, masks, steps); "
        "numbers at the last monitor point within the budget, and the step at which the synthetic contrast first "
        "reached ±25 % of the real lesions' median ('never' if it did not).",
        "",
        "| generator | step | contrast HU: synthetic / real | S accepts: synthetic / real | FD [band] | targets met "
        "(contrast, S, FD) | first within ±25 % |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = ([("defaults", default)] if default else []) + [(VARIANTS[k][0], v) for k, v in variants.items()]
    for name, r in rows:
        n = r["at_budget"]
        t = targets(n)
        first = next(
            (h["step"] for h in r["history"] if "synthetic_contrast_hu" in h and targets(h)["contrast"]), "never"
        )
        lines.append(
            f"| {name} | {n['step']} | {n['synthetic_contrast_hu']:.1f} / {n['real_contrast_hu']:.1f} | "
            f"{n['synthetic_accept']:.2f} / {n['real_accept']:.2f} | {n['fd']:.3g} [{n['fd_ref_lo']:.3g}-"
            f"{n['fd_ref_hi']:.3g}] | {_yes(t['contrast'])}, {_yes(t['accept'])}, {_yes(t['fd'])} | {first} |"
        )
    return "\n".join(lines) + "\n"


def recipe_table(recipes: dict, unseen: dict) -> str:
    """What S makes of the phantom's own lesions painted on the fixed masks (benchmarks.monitor.RECIPES), beside the
    real lesions (S's training lesions and lesions it never saw) and the handcrafted recipe, per appearance."""
    lines = [
        "### The phantom's own lesions on the fixed masks",
        "",
        "The fixed masks of the monitor (seed 0's run, the same S) painted with the demo phantom's own lesion code "
        "(`phantom._paint_lesion`: the appearance's offsets, texture, core and partial volume): as the phantom makes "
        "its lesions (the organ replaced, the image noise redrawn inside), the same without a core, and the lesion "
        "added to the organ (its texture and vessels kept, which is what Eq. 1's additive residual does unless G "
        "cancels them). What S accepts there is its rate for lesions made exactly like the real ones but never seen in "
        "training (the real lesions' rate is for lesions S was trained on); a generator, which optimises S's P, can "
        "exceed it. The rows also show what S relies on.",
        "",
        "| appearance | tumors | contrast HU | S accepts | mean P | FD [band] |",
        "|---|---|---|---|---|---|",
    ]
    for appearance, rows in recipes.items():
        real = next(iter(rows.values()))
        lines.append(
            f"| {appearance}: real lesions (training split) | {real['n_real']} | {real['real_contrast_hu']:.1f} | "
            f"{real['real_accept']:.2f} | {real['real_p']:.2f} | - |"
        )
        u = unseen[appearance]
        lines.append(
            f"| {appearance}: real lesions S never saw ({u['n_cases']} new cases of the phantom, seed "
            f"{UNSEEN_SEED}) | {u['n_lesions']} | {u['contrast_hu']:.1f} | {u['accept']:.2f} | {u['p']:.2f} | - |"
        )
        for name, n in rows.items():
            label = RECIPES.get(name, "the handcrafted recipe (SyntheticTumors)")
            lines.append(
                f"| {appearance}: {label} | {n['n_synthetic']} | {n['synthetic_contrast_hu']:.1f} | "
                f"{n['synthetic_accept']:.2f} | {n['synthetic_p']:.2f} | {n['fd']:.3g} [{n['fd_ref_lo']:.3g}-"
                f"{n['fd_ref_hi']:.3g}] |"
            )
    return "\n".join(lines) + "\n\n"


def plot(curves: dict, png: Path, unseen: dict) -> None:
    """Monitor curves per appearance (columns): ``curves[appearance][label]`` = a run (its history, and the
    handcrafted numbers for a seed's run); ``unseen[appearance]``: real lesions S never saw (a grey line)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, len(curves), figsize=(5 * len(curves), 10), squeeze=False)
    for j, (appearance, runs) in enumerate(curves.items()):
        for label, r in runs.items():
            hist = [h for h in r["history"] if "synthetic_contrast_hu" in h]
            steps = [h["step"] for h in hist]
            line = axes[0, j].plot(steps, [h["synthetic_contrast_hu"] for h in hist], "o-", ms=3, label=label)
            color = line[0].get_color()
            axes[0, j].axhline(hist[-1]["real_contrast_hu"], color=color, linestyle=":", linewidth=1)
            if "handcrafted" in r:
                axes[0, j].axhline(r["handcrafted"]["synthetic_contrast_hu"], color=color, linestyle="--", linewidth=1)
            axes[1, j].plot(steps, [h["synthetic_accept"] for h in hist], "o-", ms=3, color=color)
            axes[1, j].axhline(hist[-1]["real_accept"], color=color, linestyle=":", linewidth=1)
            axes[2, j].plot(steps, [h["fd"] for h in hist], "o-", ms=3, color=color)
            axes[2, j].fill_between(
                steps, [h["fd_ref_lo"] for h in hist], [h["fd_ref_hi"] for h in hist], color=color, alpha=0.15
            )
        axes[1, j].axhline(unseen[appearance]["accept"], color="grey", linestyle="-.", linewidth=1)
        axes[0, j].set_title(f"{appearance}: contrast [HU] (dotted: real, dashed: handcrafted)", fontsize=9)
        axes[1, j].set_title(
            "S accepts (P >= 0.7); dotted: S's training lesions,\ngrey dash-dot: real lesions S never saw", fontsize=9
        )
        axes[1, j].set_ylim(-0.02, 1.02)
        axes[2, j].set_title("FD real vs synthetic; band: same distribution", fontsize=9)
        axes[2, j].set_xlabel("optimizer step")
        axes[0, j].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)


def appearance_runs(c: Comparison, p: dict, appearance: str) -> tuple[dict, dict, dict, dict]:
    """One appearance: its dataset and S, then the defaults' generator per seed; (the seeds' runs, S on the box vs
    the patch, the recipes on the fixed masks, real lesions S never saw)."""
    c.dataset()
    c.train(0, BASELINE)
    crops = box_vs_patch(c, p)
    unseen = unseen_lesion_numbers(c, gate_checkpoint(c), c.work / "unseen_lesions.json", appearance)
    recipes = {
        **recipe_numbers(c, 0, p["monitor_n"], gate_checkpoint(c), c.work / "recipes_seed_0.json", appearance),
        "handcrafted": handcrafted_numbers(c, 0, p),
    }
    seeds = {}
    for seed in range(p["seeds"]):
        history = json.loads((train_generator(c, seed, p) / "progress.json").read_text())
        seeds[seed] = {
            "history": history,
            "at_budget": within_budget(history, p["budget_min"]),
            "handcrafted": handcrafted_numbers(c, seed, p),
        }
        print(f"{appearance} seed {seed}: {seeds[seed]['at_budget']}", flush=True)
    return seeds, crops, recipes, unseen


def run_parameters(a: argparse.Namespace) -> tuple[dict, str, int | None]:
    """The preset with the command line's changes, those changes as flags (for RESULTS.md's command) and S's epochs
    where they differ from the preset's (None otherwise)."""
    p = dict(PRESETS[a.preset])
    flags = ""
    if a.seeds is not None:
        p["seeds"] = a.seeds
        flags += f" --seeds {a.seeds}"
    if list(a.lesions) != list(APPEARANCES):
        flags += " --lesions " + " ".join(a.lesions)
    s_epochs = a.s_epochs if a.s_epochs != p["epochs"] else None
    if s_epochs:
        p["epochs"] = s_epochs
        flags += f" --s_epochs {s_epochs}"
    return p, flags, s_epochs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=list(PRESETS), default="cpu")
    ap.add_argument("--lesions", nargs="+", choices=APPEARANCES, default=list(APPEARANCES))
    ap.add_argument("--seeds", type=int, help="[the preset's]; 0: only the --variants (on seed 0) and the tables of S")
    ap.add_argument(
        "--variants",
        nargs="*",
        type=variant_spec,
        default=None,
        metavar="[APPEARANCE:]VARIANT",
        help="also train these variants (one setting changed; " + ", ".join(VARIANTS) + ") on seed 0 of APPEARANCE "
        "[the first of --lesions], e.g. --variants paper random hyperdense:cls",
    )
    ap.add_argument(
        "--s_epochs",
        type=int,
        default=None,
        help="train S for this many epochs instead of the preset's (a stronger or weaker S: needs its own --workdir; "
        "writes a section and plot of its own)",
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workdir", default=None, help="[benchmarks/work_convergence_<preset>]")
    ap.add_argument("--results", default=str(Path(__file__).with_name("RESULTS.md")))
    a = ap.parse_args()
    runs_of_variants: dict[str, list[str]] = {}
    for appearance, v in a.variants or ():
        runs_of_variants.setdefault(appearance or a.lesions[0], []).append(v)
    if set(runs_of_variants) - set(a.lesions):
        ap.error(f"--variants on {' '.join(sorted(set(runs_of_variants) - set(a.lesions)))}: not among --lesions")
    if a.s_epochs is not None and a.s_epochs < 1:
        ap.error(f"--s_epochs {a.s_epochs}: S needs at least one epoch")
    p, flags, s_epochs = run_parameters(a)
    work = Path(a.workdir or Path(__file__).with_name(f"work_convergence_{a.preset}")).resolve()
    claim_workdir(work, p, a.device)
    results: dict[str, dict] = {}
    crops: dict[str, dict] = {}
    recipes: dict[str, dict] = {}
    unseen: dict[str, dict] = {}
    for appearance in a.lesions:
        results[appearance], crops[appearance], recipes[appearance], unseen[appearance] = appearance_runs(
            comparison(work, p, a.device, appearance), p, appearance
        )
    variants: dict[str, dict[str, dict]] = {}
    if a.variants:
        flags += " --variants " + " ".join(f"{w}:{v}" if w else v for w, v in a.variants)
    for appearance, names in sorted(runs_of_variants.items(), key=lambda kv: APPEARANCES.index(kv[0])):
        c = comparison(work, p, a.device, appearance)
        variants[appearance] = {}
        for v in names:
            history = json.loads((train_generator(c, 0, p, v) / "progress.json").read_text())
            variants[appearance][v] = {"history": history, "at_budget": within_budget(history, p["budget_min"])}
    compute = sum(json.loads(f.read_text()) for f in work.glob("*/compute_seconds.json"))
    results_md = Path(a.results)
    png = results_md.with_name(plot_name(a.preset, a.lesions, s_epochs))
    curves = {
        appearance: {
            **{f"seed {s}": r for s, r in results[appearance].items()},
            **{f"{v} (seed 0)": r for v, r in variants.get(appearance, {}).items()},
        }
        for appearance in results
    }
    if any(curves.values()):
        plot(curves, png, unseen)
    else:  # --seeds 0 without variants: nothing trained, no curves
        png = None
    (work / "convergence.json").write_text(json.dumps(results, indent=1, default=float) + "\n")
    title = section_name(a.preset, a.lesions, s_epochs)
    section = report(results, p, a.preset, a.device, png, compute / 3600, flags, title, unseen) + crops_table(crops)
    section += recipe_table(recipes, unseen)
    for appearance, runs in variants.items():
        section += variants_table(results[appearance].get(0), runs, appearance) + "\n"
    write_section(results_md, section, f"## {title}")
    print(section)


if __name__ == "__main__":
    sys.exit(main())
