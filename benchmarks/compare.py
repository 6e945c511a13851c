"""Baseline vs handcrafted vs FreeTumor, the gate ablation and the generator loss ablation, over several seeds.

    python -m benchmarks.compare [--preset quick|cpu-small|gpu] [--lesions hypodense|hyperdense|heterogeneous]
                                 [--rows all|core] [--seeds N] [--epochs E] [--iters I] [--gen_steps G]
                                 [--workdir DIR] [--device cpu|cuda] [--results benchmarks/RESULTS.md]

A deliberately hard setting on the phantom: few labeled lesion cases, many healthy cases, a test split rich in small
lesions. Every run uses the real command-line tools (nnUNetv2_train / freetumor_train_generator / nnUNetv2_predict)
with the same schedule, on fold 0, and is evaluated on the test cases with freetumor_evaluate's metrics. Runs that
already finished in the workdir are reused, so an interrupted comparison continues where it stopped; the workdir
refuses a run with other parameters (its params.json), so one table never mixes two schedules.

Rows (per seed):
  baseline                nnUNetTrainerBaseline (= nnUNetTrainer with the plugin's schedule/seed variables)
  handcrafted             nnUNetTrainerHandcraftedTumor           handcrafted+gate  nnUNetTrainerHandcraftedTumor_gate
  FreeTumor (T=0.7)       nnUNetTrainerFreeTumor                  no gate / T=0.5 / T=0.9: the gate ablation
  G: L_seg only / L_cls only / both (no gate): the generator loss ablation (the paper reports it without gate)

--lesions: the phantom's lesion appearance (freetumor_make_demo_dataset --lesions; hypodense by default, the
handcrafted recipe's own kind); each appearance has its own dataset, work folder and RESULTS.md section.

Writes the tables, a plot and the paired comparisons to RESULTS.md (section "Comparison (<preset>[, <lesions>])",
replaced on every run), with a realism line per row: the generator's realism monitor at its last step (contrast to
the organ ring and S's acceptance, on its fixed held-out masks) and the handcrafted recipe on the same masks, the real
lesions beside them, so that each Dice row can be read against the tumors it trained on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.common import claim_workdir, format_p, mean_sd, sh, write_section

DATASET_ID = 903
NAME = "FreeTumorCompare"
DATASET = f"Dataset{DATASET_ID}_{NAME}"

# the phantom's lesions: longest diameters 5-10 / 10-20 / 20-40 / 40-60 mm -> mask radii in mm (the config's defaults
# are sized for real abdominal CT)
PHANTOM_SIZE_CLASSES = ("tiny:2.5-5", "small:5-10", "medium:10-20", "large:20-30")
APPEARANCES = ("hypodense", "hyperdense", "heterogeneous")  # freetumor_make_demo_dataset --lesions

PRESETS = {
    # smoke test: minutes on CPU, numbers meaningless
    "quick": dict(
        shape=(24, 48, 48),
        n_train=8,
        healthy=0.5,
        n_test=4,
        seeds=2,
        epochs=1,
        iters=4,
        gen_steps=2,
        gen_features=(4, 8, 16),
        disc_features=(4, 8),
        monitor_every=1,
        monitor_n=4,
        size_classes=PHANTOM_SIZE_CLASSES,
    ),
    # 2 CPU cores (measured): ~25 min per nnU-Net training in the 11.4 h run (3 seeds, all rows), so ~2 h per seed for
    # the core rows with the generator; another day's VM 30 s per epoch (~3.4 h), a slow one 85 s (~4x). 80 epochs:
    # at 15 the baseline (= the gate's S) had not yet learned the tumor class, so the gate rejected every synthetic
    # tumor. The generator: freetumor_train_generator's defaults for 450 steps (generator_convergence.py: 15-30 min on
    # 2 cores)
    "cpu-small": dict(
        shape=(24, 48, 48),
        n_train=24,
        healthy=0.75,
        n_test=12,
        seeds=3,
        epochs=80,
        iters=20,
        gen_steps=450,
        gen_features=None,
        disc_features=None,
        monitor_every=50,
        monitor_n=32,
        size_classes=PHANTOM_SIZE_CLASSES,
    ),
    # one GPU
    "gpu": dict(
        shape=(48, 96, 96),
        n_train=40,
        healthy=0.75,
        n_test=20,
        seeds=3,
        epochs=100,
        iters=100,
        gen_steps=2000,
        gen_features=None,
        disc_features=None,
        monitor_every=100,
        monitor_n=32,
        size_classes=PHANTOM_SIZE_CLASSES,
    ),
}


def dataset_of(appearance: str) -> tuple[int, str]:
    """The comparison dataset's id and name for a lesion appearance (hypodense keeps the original 903)."""
    i = APPEARANCES.index(appearance)
    return DATASET_ID + 10 * i, NAME + ("" if i == 0 else appearance.title())


@dataclass(frozen=True)
class Run:
    row: str  # table row name
    trainer: str
    generator: str | None  # None, "both", "seg", "cls"


RUNS = [
    Run("baseline", "nnUNetTrainerBaseline", None),
    Run("handcrafted", "nnUNetTrainerHandcraftedTumor", None),
    Run("handcrafted + gate", "nnUNetTrainerHandcraftedTumor_gate", None),
    Run("FreeTumor (T=0.7)", "nnUNetTrainerFreeTumor", "both"),
    Run("FreeTumor no gate", "nnUNetTrainerFreeTumor_noGate", "both"),
    Run("FreeTumor T=0.5", "nnUNetTrainerFreeTumor_T05", "both"),
    Run("FreeTumor T=0.9", "nnUNetTrainerFreeTumor_T09", "both"),
    Run("G: L_seg only, no gate", "nnUNetTrainerFreeTumor_noGate", "seg"),
    Run("G: L_cls only, no gate", "nnUNetTrainerFreeTumor_noGate", "cls"),
]
ROW_SETS = {
    "all": [r.row for r in RUNS],
    "core": ["baseline", "handcrafted", "FreeTumor (T=0.7)", "FreeTumor no gate"],
}
METRICS = ("dice_tumor", "lesion_sensitivity", "small_lesion_sensitivity", "lesion_precision", "patient_specificity")

# The orderings the paper reports (METHOD.md; LiTS unless stated, its numbers quoted as reported): each claim lists
# rows from best to worst on one metric. The report checks every claim whose rows it has, on the means over seeds and
# seed by seed.
PAPER_ORDERINGS = (
    ("synthesis helps", "dice_tumor", ("FreeTumor (T=0.7)", "baseline"), "Dice 65.5 > 58.6"),
    ("the gate helps", "dice_tumor", ("FreeTumor (T=0.7)", "FreeTumor no gate"), "Dice 65.5 > 62.3"),
    ("even a loose gate helps", "dice_tumor", ("FreeTumor T=0.5", "FreeTumor no gate"), "Dice 63.5 > 62.3"),
    (
        "T = 0.7 is the best threshold",
        "dice_tumor",
        ("FreeTumor (T=0.7)", "FreeTumor T=0.9", "FreeTumor T=0.5"),
        "Dice 65.5 > 64.0 > 63.5",
    ),
    (
        "both generator losses beat one (no gate)",
        "dice_tumor",
        ("FreeTumor no gate", "G: L_seg only, no gate", "G: L_cls only, no gate"),
        "Dice 64.3 > 62.0 > 61.8",
    ),
    ("L_cls alone still helps", "dice_tumor", ("G: L_cls only, no gate", "baseline"), "Dice 61.8 > 58.6"),
    (
        "synthesis finds more small lesions",
        "small_lesion_sensitivity",
        ("FreeTumor (T=0.7)", "baseline"),
        "sensitivity 66.1 > 49.7 (12 datasets)",
    ),
    ("generated beats handcrafted tumors", "dice_tumor", ("FreeTumor (T=0.7)", "handcrafted"), "above SyntheticTumors"),
)


def apply_overrides(args: argparse.Namespace, p: dict, keys: tuple[str, ...]) -> str:
    """Copy the command-line values of ``keys`` that were given into the preset ``p``; return them as flags
    (' --seeds 2 ...') for the report's 'Generated by' line."""
    given = {k: getattr(args, k) for k in keys if getattr(args, k)}
    p.update(given)
    return "".join(f" --{k} {v}" for k, v in given.items())


def synthetic_tumors(model: Path) -> dict:
    """Synthetic tumors over a whole training, from the trainer's ``freetumor_stats.json`` (fold 0): synthesized, and
    used (= accepted by the gate; every synthesized one without a gate). Empty for trainers that synthesize none."""
    stats = model / "fold_0" / "freetumor_stats.json"
    if not stats.is_file():
        return {}
    epochs = json.loads(stats.read_text())
    synthesized = sum(e["synthesized"] for e in epochs)
    return {"synthesized": synthesized, "used": sum(e.get("accepted", e["synthesized"]) for e in epochs)}


def used_of_synthesized(per_seed: list[dict]) -> str:
    """'used / synthesized' per seed, ';'-separated ('-' for runs without synthesis)."""
    return " ; ".join(f"{h['used']} / {h['synthesized']}" for h in per_seed if "used" in h) or "-"


class Comparison:
    """Runs and evaluations of one dataset inside a work folder (its own nnUNet_raw / _preprocessed; one results
    root per seed). Everything already done is reused."""

    def __init__(
        self,
        work: Path,
        p: dict,
        device: str,
        dataset_id: int = DATASET_ID,
        name: str = NAME,
        gate_dataset: int | None = None,  # S from another dataset's baseline (freetumor_config --gate_dataset)
    ):
        self.work, self.p, self.device = work, p, device
        self.dataset_id, self.name, self.gate_dataset = dataset_id, name, gate_dataset
        self.ds = f"Dataset{dataset_id:03d}_{name}"
        self.raw, self.pre = work / "nnUNet_raw", work / "nnUNet_preprocessed"
        self.log = work / "commands.log"
        self.base_env = {
            **os.environ,
            "nnUNet_raw": str(self.raw),
            "nnUNet_preprocessed": str(self.pre),
            "nnUNet_def_n_proc": "2",
            "nnUNet_freetumor_epochs": str(p["epochs"]),
            "nnUNet_freetumor_iters": str(p["iters"]),
            "nnUNet_freetumor_val_iters": str(max(2, p["iters"] // 5)),
            "nnUNet_freetumor_save_every": "10",  # checkpoint_latest every 10 epochs: a killed run loses little
        }

    def results_root(self, seed: int, generator: str | None) -> Path:
        """One nnU-Net results folder per seed; generator ablations get their own, sharing the seed's baseline."""
        root = self.work / f"seed_{seed}" / ("main" if generator in (None, "both") else f"gen_{generator}")
        base = root / self.ds / "nnUNetTrainerBaseline__nnUNetPlans__3d_fullres"
        main_base = self.work / f"seed_{seed}" / "main" / self.ds / base.name
        if root.name != "main" and not base.exists() and not base.is_symlink():  # a link to a baseline to come
            base.parent.mkdir(parents=True, exist_ok=True)
            base.symlink_to(main_base, target_is_directory=True)
        return root

    def generator_folder(self, seed: int, losses: str) -> Path:
        """Where freetumor_train_generator writes the seed's generator trained with ``losses``."""
        from nnunet_freetumor.generator.checkpoint import generator_folder

        return generator_folder(self.results_root(seed, losses), self.ds, "nnUNetPlans", "3d_fullres", 0)

    def fold(self, seed: int, generator: str | None, trainer: str) -> Path:
        """nnUNetv2_train's output folder of ``trainer`` (fold 0) in the seed's results root for ``generator``."""
        return self.results_root(seed, generator) / self.ds / f"{trainer}__nnUNetPlans__3d_fullres" / "fold_0"

    def env(self, seed: int, generator: str | None) -> dict:
        return {
            **self.base_env,
            "nnUNet_results": str(self.results_root(seed, generator)),
            "nnUNet_freetumor_seed": str(seed),
        }

    def dataset(self) -> None:
        """The comparison's phantom, planned and preprocessed."""
        p = self.p
        if not (self.pre / self.ds / "nnUNetPlans.json").is_file():
            sh(
                [
                    "freetumor_make_demo_dataset",
                    "-d",
                    self.dataset_id,
                    "--name",
                    self.name,
                    "--n_train",
                    p["n_train"],
                    "--n_test",
                    p["n_test"],
                    "--healthy_fraction",
                    p["healthy"],
                    "--shape",
                    *p["shape"],
                    "--seed",
                    0,
                    *(["--lesions", p["lesions"]] if p.get("lesions") else []),
                    "--overwrite",
                    "-o",
                    self.raw,
                ],
                self.base_env,
                self.log,
            )
        self.preprocess()

    def preprocess(self) -> None:
        if not (self.pre / self.ds / "nnUNetPlans.json").is_file():
            sh(
                [
                    "nnUNetv2_plan_and_preprocess",
                    "-d",
                    self.dataset_id,
                    "-c",
                    "3d_fullres",
                    "-np",
                    2,
                    "-npfp",
                    2,
                    "--verify_dataset_integrity",
                ],
                self.base_env,
                self.log,
            )
        gate = [] if self.gate_dataset is None else ["--gate_dataset", self.gate_dataset]
        gate += [a for c in self.p.get("size_classes", ()) for a in ("--size_class", c)]
        sh(
            ["freetumor_config", "-d", self.dataset_id, "--gate_trainer", "nnUNetTrainerBaseline", *gate, "--write"],
            self.base_env,
            self.log,
        )

    def train(self, seed: int, run: Run) -> Path:
        env = self.env(seed, run.generator)
        fold = self.fold(seed, run.generator, run.trainer)
        if not (fold / "checkpoint_final.pth").is_file():
            if run.generator:
                self.generator(seed, run.generator)
            # an interrupted run continues from nnU-Net's checkpoint_latest (every 10 epochs here); the RNG stream of
            # a continued run differs from an uninterrupted one, and commands.log shows the --c
            resume = ["--c"] if (fold / "checkpoint_latest.pth").is_file() else []
            sh(
                ["nnUNetv2_train", self.dataset_id, "3d_fullres", 0, "-tr", run.trainer, "-device", self.device]
                + resume,
                # DA in the main process: seedable, and on 2 cores workers buy nothing (never set for planning)
                {**env, "nnUNet_n_proc_DA": "0"},
                self.log,
            )
        return fold.parent

    def generator(self, seed: int, losses: str) -> None:
        """The seed's generator with ``losses``: freetumor_train_generator's defaults for the preset's steps (network
        sizes and the monitor's cadence only where the preset sets them); S = the seed's baseline (the config's
        gate)."""
        folder = self.generator_folder(seed, losses)
        if (folder / "generator_final.safetensors").is_file():
            return
        p = self.p
        cmd = ["freetumor_train_generator", self.dataset_id, "-f", 0, "--steps", p["gen_steps"], "--losses", losses]
        cmd += ["--seed", seed, "--device", self.device]
        for key in ("gen_features", "disc_features"):
            cmd += [f"--{key}", *p[key]] if p.get(key) else []
        for key in ("monitor_every", "monitor_n"):
            cmd += [f"--{key}", p[key]] if p.get(key) else []
        if (folder / "checkpoint_latest.safetensors").is_file():
            cmd.append("--c")  # an interrupted run continues where it stopped
        sh(cmd, self.env(seed, losses), self.log)

    def evaluate(self, seed: int, run: Run, model: Path) -> dict:
        from nnunet_freetumor.evaluation.evaluate import evaluate_folder

        row = run.row.replace(" ", "_").replace(":", "")
        out = (
            self.work / "predictions" / f"seed_{seed}" / row
            if self.ds == DATASET
            else self.work / "predictions" / self.ds / f"seed_{seed}" / row
        )
        summary_file = out / "summary_freetumor.json"
        if not summary_file.is_file():
            env = self.env(seed, run.generator)
            sh(
                [
                    "nnUNetv2_predict",
                    "-i",
                    self.raw / self.ds / "imagesTs",
                    "-o",
                    out,
                    "-d",
                    self.dataset_id,
                    "-c",
                    "3d_fullres",
                    "-f",
                    0,
                    "-tr",
                    run.trainer,
                    "-device",
                    self.device,
                    "-npp",
                    1,
                    "-nps",
                    1,
                ],
                env,
                self.log,
            )
            summary = evaluate_folder(
                out,
                self.raw / self.ds / "labelsTs",
                json.loads((model / "dataset.json").read_text()),
                num_processes=1,
                progress=False,
            )
            summary_file.write_text(json.dumps(summary, default=float) + "\n")
        return json.loads(summary_file.read_text())


def per_case_tumor_dice(summary: dict) -> dict[str, float]:
    tumor_names = {v["name"] for v in summary["lesion"].values()}
    out = {}
    for case in summary["per_case"]:
        vals = [m.get("Dice") for m in case["metrics"].values() if m.get("name") in tumor_names]
        vals = [v for v in vals if v is not None and np.isfinite(v)]
        if vals:
            out[case["case_id"]] = float(np.mean(vals))
    return out


def describe_generator(p: dict) -> str:
    sizes = "".join(f", {k} {list(p[k])}" for k in ("gen_features", "disc_features") if p.get(k))
    return f"freetumor_train_generator defaults, {p['gen_steps']} steps{sizes}"


def report(
    results: dict[str, list[dict]],
    summaries: dict[str, list[dict]],
    p: dict,
    preset: str,
    elapsed: float,
    rows: str,
    device: str,
    out_png: Path,
    realism: dict[str, list[dict | None]] | None = None,
) -> str:
    from scipy.stats import wilcoxon

    seeds = len(next(iter(results.values())))
    lines = [
        "## Comparison",
        "",
        f"Generated by `python -m benchmarks.compare --preset {preset}{rows}` ({elapsed / 3600:.1f} h of commands) on "
        f"{platform.machine()}, {os.cpu_count()} CPU threads, device {device}. Phantom: {p['n_train']} training cases "
        f"({round(p['n_train'] * p['healthy'])} healthy), {p['n_test']} test cases, {p['shape']} voxels, "
        f"{p.get('lesions', 'hypodense')} lesions; fold 0; {p['epochs']} epochs x {p['iters']} iterations per "
        f"training; generator: {describe_generator(p)}; mask radii {', '.join(p.get('size_classes', ()))} mm; "
        f"{seeds} seed(s). Mean ± sd over seeds. Synthetic tumors used / synthesized: over the whole training, from "
        "the trainer's freetumor_stats.json (used = accepted by the gate).",
        "",
        "| | Dice (tumor) | lesion sensitivity | small-lesion (<20 mm) sensitivity | lesion precision | "
        "patient specificity | synthetic tumors used / synthesized |",
        "|---|---|---|---|---|---|---|",
    ]
    for row, per_seed in results.items():
        cells = [mean_sd([r[m] for r in per_seed]) for m in METRICS] + [used_of_synthesized(per_seed)]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Paired against the baseline (same seed, same test cases): mean difference ± sd over seeds, seeds "
        "better/total, and a Wilcoxon signed-rank test on per-case tumor Dice pooled over seeds.",
        "",
        "| | Δ Dice | Δ lesion sens. | Δ small-lesion sens. | seeds better (Dice) | Wilcoxon p (per-case Dice) |",
        "|---|---|---|---|---|---|",
    ]
    base = results["baseline"]
    for row, per_seed in results.items():
        if row == "baseline":
            continue
        deltas = {
            m: [None if (a[m] is None or b[m] is None) else a[m] - b[m] for a, b in zip(per_seed, base)]
            for m in METRICS[:3]
        }
        better = sum(1 for d in deltas["dice_tumor"] if d is not None and d > 0)
        x, y = [], []
        for sa, sb in zip(summaries[row], summaries["baseline"]):
            da, db = per_case_tumor_dice(sa), per_case_tumor_dice(sb)
            for k in da.keys() & db.keys():
                x.append(da[k])
                y.append(db[k])
        diff = np.array(x) - np.array(y)
        pval = format_p(wilcoxon(x, y).pvalue) if len(x) >= 6 and np.any(diff != 0) else "n/a"
        lines.append(
            f"| {row} | {mean_sd(deltas['dice_tumor'])} | {mean_sd(deltas['lesion_sensitivity'])} | "
            f"{mean_sd(deltas['small_lesion_sensitivity'])} | {better}/{seeds} | {pval} |"
        )
    lines += realism_table(realism or {})
    lines += orderings_table(results)
    lines += ["", f"![comparison]({out_png.name})", ""]
    return "\n".join(lines)


def realism_table(realism: dict[str, list[dict | None]]) -> list[str]:
    """Per row, the tumors it trained on next to the real lesions (means over seeds; rows without synthesis: '-')."""
    if not realism:
        return []
    lines = [
        "",
        "The tumors each row trained on: the generator's realism monitor at its last step (median contrast to the "
        "organ within 5 mm, share S labels tumor at P >= 0.7, on the run's fixed held-out masks), the handcrafted "
        "recipe on the same masks with the same S (the seed's baseline); the real lesions of the training split "
        "beside them. Mean ± sd over seeds.",
        "",
        "| | contrast HU: synthetic / real | S accepts: synthetic / real |",
        "|---|---|---|",
    ]
    for row, per_seed in realism.items():
        got = [r for r in per_seed if r]
        if not got:
            lines.append(f"| {row} | - | - |")
            continue
        contrast = [mean_sd([r[f"{k}_contrast_hu"] for r in got], 1) for k in ("synthetic", "real")]
        accept = [mean_sd([r[f"{k}_accept"] for r in got], 2) for k in ("synthetic", "real")]
        lines.append(f"| {row} | {contrast[0]} / {contrast[1]} | {accept[0]} / {accept[1]} |")
    return lines


def descending(values: list) -> bool:
    """Each value strictly above the next (a missing value breaks the ordering)."""
    return all(a is not None and b is not None and a > b for a, b in zip(values, values[1:]))


def orderings_table(results: dict[str, list[dict]]) -> list[str]:
    """The paper's orderings (``PAPER_ORDERINGS``) that these rows can test: the means here, whether the ordering
    holds on the means (each row strictly above the next), and in how many seeds it holds."""
    claims = [c for c in PAPER_ORDERINGS if all(r in results for r in c[2])]
    if not claims:
        return []
    lines = [
        "",
        "The paper's orderings (its numbers as reported, LiTS unless stated), checked on these rows: holds = each "
        "row's mean strictly above the next one's; seeds = in how many seeds it holds.",
        "",
        "| claim | rows, best first | paper | here (mean) | holds | seeds |",
        "|---|---|---|---|---|---|",
    ]
    for text, metric, rows, paper in claims:
        per_seed = [[r[metric] for r in results[row]] for row in rows]  # [row][seed]
        means = [
            np.mean([v for v in vals if v is not None]) if any(v is not None for v in vals) else None
            for vals in per_seed
        ]
        seeds = sum(descending(list(col)) for col in zip(*per_seed))
        here = ", ".join("n/a" if m is None else f"{m:.3f}" for m in means)
        lines.append(
            f"| {text} | {' > '.join(rows)} | {paper} | {here} | {'yes' if descending(means) else 'no'} | "
            f"{seeds}/{min(map(len, per_seed))} |"
        )
    return lines


def plot(results: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(results)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), sharey=True)
    for ax, m, title in zip(axes, METRICS[:3], ("Dice (tumor)", "lesion sensitivity", "small-lesion sensitivity")):
        vals = [[r[m] for r in results[row] if r[m] is not None] for row in rows]
        ax.barh(
            range(len(rows)),
            [np.mean(v) if v else 0 for v in vals],
            xerr=[np.std(v) if len(v) > 1 else 0 for v in vals],
            color="tab:blue",
            alpha=0.7,
        )
        for i, v in enumerate(vals):
            ax.plot(v, [i] * len(v), "k.", ms=4)
        ax.set_title(title)
        ax.set_xlim(0, 1)
    axes[0].set_yticks(range(len(rows)), rows)
    axes[0].invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def row_realism(c: Comparison, seed: int, run: Run) -> dict | None:
    """What ``run`` trained on, as the generator's realism monitor measures it (see ``realism_table``)."""
    from benchmarks.monitor import handcrafted_numbers, last_monitor_point

    if run.generator:
        return last_monitor_point(c.generator_folder(seed, run.generator))
    if "Handcrafted" in run.trainer:
        s = c.fold(seed, None, "nnUNetTrainerBaseline") / "checkpoint_final.pth"
        cache = c.work / f"realism_handcrafted_seed_{seed}.json"
        return handcrafted_numbers(c, seed, c.p["monitor_n"], s, cache)
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=list(PRESETS), default="cpu-small")
    ap.add_argument("--quick", action="store_const", const="quick", dest="preset", help="same as --preset quick")
    ap.add_argument("--lesions", choices=APPEARANCES, default=APPEARANCES[0], help="the phantom's lesions [hypodense]")
    ap.add_argument("--seeds", type=int)
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--iters", type=int)
    ap.add_argument("--gen_steps", type=int, help="generator steps [the preset's]")
    ap.add_argument("--rows", choices=list(ROW_SETS), default="all", help="all rows, or the core comparison only")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workdir", default=None, help="[benchmarks/work_compare_<preset>[_<lesions>]]")
    ap.add_argument("--results", default=str(Path(__file__).with_name("RESULTS.md")))
    a = ap.parse_args()
    p = {**PRESETS[a.preset], "lesions": a.lesions}
    overrides = apply_overrides(a, p, ("seeds", "epochs", "iters", "gen_steps"))
    if a.device == "cuda" and a.preset != "gpu":
        print("note: --device cuda with a CPU preset; consider --preset gpu")
    default = a.lesions == APPEARANCES[0]
    tag = a.preset if default else f"{a.preset}_{a.lesions}"
    work = Path(a.workdir or Path(__file__).with_name(f"work_compare_{tag}")).resolve()
    claim_workdir(work, p, a.device)
    c = Comparison(work, p, a.device, *dataset_of(a.lesions))
    c.dataset()
    runs = [r for r in RUNS if r.row in ROW_SETS[a.rows]]
    results: dict[str, list[dict]] = {r.row: [] for r in runs}
    summaries: dict[str, list[dict]] = {r.row: [] for r in runs}
    realism: dict[str, list[dict | None]] = {r.row: [] for r in runs}
    from nnunet_freetumor.evaluation.report import headline

    for seed in range(p["seeds"]):
        for run in runs:
            model = c.train(seed, run)
            s = c.evaluate(seed, run, model)
            summaries[run.row].append(s)
            results[run.row].append({**headline(s), **synthetic_tumors(model)})
            realism[run.row].append(row_realism(c, seed, run))
            print(f"seed {seed} {run.row}: {results[run.row][-1]}", flush=True)
    results_md = Path(a.results)
    png = results_md.with_name(f"compare_{tag}{'' if a.rows == 'all' else '_' + a.rows}.png")
    plot(results, png)
    compute = json.loads((work / "compute_seconds.json").read_text())
    flags = (
        ("" if default else f" --lesions {a.lesions}") + ("" if a.rows == "all" else f" --rows {a.rows}") + overrides
    )
    section = report(results, summaries, p, a.preset, compute, flags, a.device, png, realism)
    (work / "comparison.json").write_text(
        json.dumps({"preset": a.preset, "params": p, "results": results, "realism": realism}, indent=1, default=str)
    )
    name = a.preset if default else f"{a.preset}, {a.lesions}"
    title = f"## Comparison ({name}{'' if a.rows == 'all' else ', ' + a.rows + ' rows'})"
    # all rows include the core rows (the same runs): that report replaces a core-rows one of the preset
    core = (f"## Comparison ({name}, core rows)\n",) if a.rows == "all" else ()
    write_section(results_md, section.replace("## Comparison", title, 1), title, supersedes=core)
    stale = png.with_name(f"compare_{tag}_core.png")
    if core and stale.is_file() and stale.name not in results_md.read_text():
        stale.unlink()
    print(section)


if __name__ == "__main__":
    sys.exit(main())
