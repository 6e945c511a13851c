"""Data scaling: fixed labeled cases plus 0 / N / 2N / 4N unlabeled healthy scans, baseline vs FreeTumor.

    python -m benchmarks.scaling [--preset quick|cpu] [--rows all|core] [--seeds S] [--epochs E] [--workdir DIR]
                                 [--results FILE]

The unlabeled scans enter the way a user brings them: `freetumor_add_unlabeled -d BASE -i SCANS --organ-masks MASKS
-o NEW --make_split` (organ masks supplied: the phantom's own organ labels, i.e. a perfect organ model), so the study
also exercises the merging tool. Each dataset is planned and preprocessed; for every seed a baseline
(`nnUNetTrainerBaseline`), a generator, `nnUNetTrainerFreeTumor` and (rows "all") `nnUNetTrainerFreeTumor_noGate`
are trained on fold 0 (same validation cases in every dataset: the unlabeled scans only join the training lists) and
evaluated on the same test cases. As in the paper, S (the generator's segmentation loss and the quality gate) is the
baseline of the labeled cases only, for every k: `freetumor_config -d <merged> --gate_dataset <labeled>` (its
training cases are fold 0's training cases of every merged dataset, so nothing leaks into validation).
Writes the section "Data scaling (<preset>)" of RESULTS.md (a table and a plot).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from benchmarks.common import claim_workdir, mean_sd, sh, write_section
from benchmarks.compare import PRESETS as COMPARE_PRESETS
from benchmarks.compare import Comparison, Run, apply_overrides, synthetic_tumors, used_of_synthesized

# compare.py's presets with a labeled-only base dataset (healthy 0) and the unlabeled pool's unit N
PRESETS = {
    # --make_split needs 5 labeled cases for nnU-Net's 5 folds
    "quick": dict(COMPARE_PRESETS["quick"], labeled=5, n=2, n_test=4, seeds=1, healthy=0.0),
    "cpu": dict(COMPARE_PRESETS["cpu-small"], labeled=6, n=6, seeds=2, healthy=0.0),
}
BASE_ID, BASE_NAME = 920, "FreeTumorScale"
COLUMNS = {  # headline() key -> table heading
    "dice_tumor": "Dice (tumor)",
    "lesion_sensitivity": "lesion sens.",
    "small_lesion_sensitivity": "small-lesion sens.",
    "patient_specificity": "patient spec.",
}
RUNS = [
    Run("baseline", "nnUNetTrainerBaseline", None),
    Run("FreeTumor (T=0.7)", "nnUNetTrainerFreeTumor", "both"),
    # same generator, every synthetic tumor used: what the tumors do when a weak S would reject them all
    Run("FreeTumor no gate", "nnUNetTrainerFreeTumor_noGate", "both"),
]


def tumor_onset(model: Path) -> int | None:
    """First epoch (0-based) in which nnU-Net's validation pseudo Dice of a tumor class is above 0 (the training log in
    ``fold_0/checkpoint_final.pth``); None: never during the whole training."""
    from nnunet_freetumor.labels import infer_pairs
    from nnunet_freetumor.segmenter import load_nnunet_checkpoint

    labels = json.loads((model / "dataset.json").read_text())["labels"]
    foreground = sorted(v for v in labels.values() if v != 0)  # nnU-Net's order of the per-class Dice
    tumors = [foreground.index(p.tumor) for p in infer_pairs({"labels": labels})]
    per_epoch = load_nnunet_checkpoint(model / "fold_0" / "checkpoint_final.pth")["logging"]["dice_per_class_or_region"]
    return next((e for e, dice in enumerate(per_epoch) if max(float(dice[i]) for i in tumors) > 0), None)


def write_unlabeled_scans(folder: Path, n: int, p: dict) -> None:
    """``n`` healthy phantom scans (seeded apart from the dataset's cases) with their organ masks."""
    import SimpleITK as sitk

    from nnunet_freetumor.dataset_conversion.phantom import make_case

    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    spacing = (4.0, 2.5, 2.5)
    for i in range(n):
        image, labels, _ = make_case(p["shape"], spacing, np.random.default_rng([777, i]), [])
        for arr, path in (
            (image, folder / "images" / f"scan{i:03d}_0000.nii.gz"),
            (labels, folder / "masks" / f"scan{i:03d}.nii.gz"),
        ):
            img = sitk.GetImageFromArray(arr)
            img.SetSpacing(tuple(reversed(spacing)))
            sitk.WriteImage(img, str(path), useCompression=True)


def subset(folder: Path, k: int) -> Path:
    """The first ``k`` scans of the pool as their own input folders (symlinks)."""
    out = folder / f"first_{k}"
    if not out.exists():
        for sub, pattern in (("images", "scan{:03d}_0000.nii.gz"), ("masks", "scan{:03d}.nii.gz")):
            (out / sub).mkdir(parents=True)
            for i in range(k):
                (out / sub / pattern.format(i)).symlink_to(folder / sub / pattern.format(i))
    return out


def build_datasets(work: Path, p: dict, device: str, counts: list[int]) -> dict[int, Comparison]:
    """The labeled-only dataset (k = 0) and one dataset per k with k unlabeled healthy scans added by
    ``freetumor_add_unlabeled``, all preprocessed."""
    base = Comparison(work, p, device, BASE_ID, BASE_NAME)
    base.dataset()  # labeled cases only (healthy fraction 0) + the test split
    pool = work / "unlabeled_pool"
    if not (pool / "masks" / f"scan{counts[-1] - 1:03d}.nii.gz").is_file():
        write_unlabeled_scans(pool, counts[-1], p)
    datasets = {0: base}
    for j, k in enumerate(counts[1:], start=1):
        c = Comparison(work, p, device, BASE_ID + j, f"{BASE_NAME}{k}", gate_dataset=BASE_ID)
        if not (c.raw / c.ds / "dataset.json").is_file():
            src = subset(pool, k)
            sh(
                [
                    "freetumor_add_unlabeled",
                    "-d",
                    BASE_ID,
                    "-i",
                    src / "images",
                    "--organ-masks",
                    src / "masks",
                    "-o",
                    BASE_ID + j,
                    "--name",
                    f"{BASE_NAME}{k}",
                    "--make_split",
                    "--min_organ_ml",
                    0,
                    "--no_progress",
                ],
                c.base_env,
                c.log,
            )
        c.preprocess()
        datasets[k] = c
    return datasets


def plot(table: dict, runs, counts: list[int], png: Path) -> None:
    """Tumor Dice and small-lesion sensitivity over the number of unlabeled scans, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in zip(axes, ("dice_tumor", "small_lesion_sensitivity"), ("Dice (tumor)", "small-lesion sens.")):
        for r in runs:
            means = [np.mean([h[key] for h in table[r.row][k] if h[key] is not None] or [np.nan]) for k in counts]
            ax.plot(counts, means, "o-", label=r.row)
        ax.set_xlabel("unlabeled healthy scans added")
        ax.set_title(label)
        ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)


def train_and_evaluate(datasets: dict[int, Comparison], runs, counts: list[int], seeds: int) -> dict:
    """Every seed x k x method (resuming finished runs): the test-set headline, synthetic-tumor counts and the epoch
    the tumor class first appeared, as table[method][k] = [one dict per seed]."""
    from nnunet_freetumor.evaluation.report import headline

    table: dict[str, dict[int, list[dict]]] = {r.row: {k: [] for k in counts} for r in runs}
    for seed in range(seeds):
        for k, c in datasets.items():
            for run in runs:
                if k == 0 and run.generator is not None:
                    continue  # FreeTumor needs tumor-free organ crops: the labeled phantoms have none (see the note)
                model = c.train(seed, run)
                table[run.row][k].append(
                    {**headline(c.evaluate(seed, run, model)), **synthetic_tumors(model), "onset": tumor_onset(model)}
                )
                print(f"seed {seed} unlabeled {k} {run.row}: {table[run.row][k][-1]}", flush=True)
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=list(PRESETS), default="cpu")
    ap.add_argument("--quick", action="store_const", const="quick", dest="preset")
    ap.add_argument(
        "--rows", choices=("all", "core"), default="all", help="all: with the no-gate row; core: baseline and FreeTumor"
    )
    ap.add_argument("--seeds", type=int)
    ap.add_argument("--epochs", type=int, help="nnU-Net epochs of every trainer [the preset's]")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workdir", default=None, help="[benchmarks/work_scaling_<preset>]")
    ap.add_argument("--results", default=str(Path(__file__).with_name("RESULTS.md")))
    a = ap.parse_args()
    p = dict(PRESETS[a.preset], n_train=PRESETS[a.preset]["labeled"])
    flags = ("" if a.rows == "all" else f" --rows {a.rows}") + apply_overrides(a, p, ("seeds", "epochs"))
    runs = RUNS if a.rows == "all" else RUNS[:2]
    work = Path(a.workdir or Path(__file__).with_name(f"work_scaling_{a.preset}")).resolve()
    claim_workdir(work, p, a.device)

    counts = [0, p["n"], 2 * p["n"], 4 * p["n"]]
    datasets = build_datasets(work, p, a.device, counts)

    table = train_and_evaluate(datasets, runs, counts, p["seeds"])
    compute = json.loads((work / "compute_seconds.json").read_text())  # all datasets share the work folder
    title = f"## Data scaling ({a.preset})"
    lines = [
        title,
        "",
        f"Generated by `python -m benchmarks.scaling --preset {a.preset}{flags}` ({compute / 3600:.1f} h of commands). "
        f"{p['labeled']} labeled training cases + k unlabeled healthy scans added with `freetumor_add_unlabeled` "
        f"(supplied organ masks); {p['n_test']} test cases; {p['epochs']} epochs x {p['iters']} iterations; "
        f"{p['seeds']} seed(s); mean ± sd over seeds. S (generator loss and quality gate) for every k: the k = 0 "
        "baseline, i.e. trained on the labeled cases only (`freetumor_config --gate_dataset`), as in the paper.",
        "",
        "| unlabeled scans | method | "
        + " | ".join(COLUMNS.values())
        + " | tumor class first seen (epoch, per seed) | synthetic tumors used / synthesized (per seed) |",
        "|---|---|" + "---|" * (len(COLUMNS) + 2),
    ]
    for k in counts:
        for r in runs:
            rows = table[r.row][k]
            onset = " ; ".join("never" if h["onset"] is None else str(h["onset"]) for h in rows) or "-"
            cells = [mean_sd([h[key] for h in rows]) for key in COLUMNS] + [onset, used_of_synthesized(rows)]
            lines.append(f"| {k} | {r.row} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "FreeTumor at 0 unlabeled scans is n/a: its generator paints into tumor-free organ crops, and on these small "
        "phantoms a patch-sized crop of a labeled case always contains that case's lesion, so without healthy scans "
        "there is nothing to paint into (`freetumor_train_generator` stops with 'found no healthy organ crop'). On "
        "real CT, patches are much smaller than the organ and labeled cases do have tumor-free crops.",
    ]
    lines += [
        "",
        "'Tumor class first seen': the first epoch in which nnU-Net's validation pseudo Dice of the tumor class is "
        f"above 0 (of {p['epochs']}; from the training log in checkpoint_final.pth), 'never' if it stayed 0: a model "
        "that never segments a tumor on its validation cases scores 0 on the test set too.",
    ]
    gated = [h for k in counts[1:] for h in table[RUNS[1].row][k]]
    if gated and sum(h["used"] for h in gated) == 0:
        lines += [
            "",
            "The quality gate accepted none of the synthetic tumors in any gated run (its frozen S is the k = 0 "
            "baseline), so gated FreeTumor trained on the same data as the baseline: rejected "
            "crops are left unchanged. At this schedule the gated rows say nothing about the paper's claim"
            + ("; the no-gate row shows what the synthetic tumors themselves do." if a.rows == "all" else "."),
        ]
    png = Path(a.results).with_name(f"scaling_{a.preset}.png")
    plot(table, runs, counts, png)
    lines += ["", f"![scaling]({png.name})", ""]
    section = "\n".join(lines)
    write_section(Path(a.results), section, title)
    print(section)


if __name__ == "__main__":
    sys.exit(main())
