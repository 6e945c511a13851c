"""Realism on the phantom: how close the generator's and the handcrafted tumors are to the phantom's real lesions,
and how the frozen S of each seed sees them — the evidence behind the comparison's ordering.

    python -m benchmarks.phantom_realism [--preset cpu-small] [--workdir DIR] [--n_per_case K] [--results FILE]

Runs on a finished `python -m benchmarks.compare` work folder (same --preset / --workdir; nothing is trained
here). For every seed that has a generator (losses "both") and a baseline S:
1. `freetumor_synthesize --method generator` and `--method handcrafted` on the comparison dataset's healthy training
   cases, K tumors per case, same seed (so every method paints into the same masks), no gate; also with the loss
   ablation's generators (L_seg only, L_cls only) where the comparison trained them;
2. per lesion, for the real lesions of the labeled training cases and both exports: HU inside the lesion, contrast to
   the organ within 5 mm, edge width, and S's P (Eq. 4, the quality gate's view; nnunet_freetumor.realism.measures);
3. the Fréchet distance real vs synthetic in S's bottleneck features (`freetumor_turing fid`'s computation) with a
   within-method reference at the same N (real_ct.py's `frechet`);
4. each generator's training curve (L_seg, the share of its tumors the gate would accept) from its progress.json.
Writes the section "Realism on the phantom (<preset>)" of RESULTS.md. A seed's analysis is kept in the work folder's
phantom_realism.json and reused while its exports and its S are the same files (a new seed or a new ablation generator
analyses only that seed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from benchmarks.common import file_stamp, fmt, mean_sd, sh, write_section
from benchmarks.compare import PRESETS, Comparison
from benchmarks.real_ct import frechet
from nnunet_freetumor.realism.measures import measure_all

ORGAN, TUMOR = 1, 2  # the phantom's liver / liver tumor labels
# method -> (freetumor_synthesize --method, the generator's losses = compare.py's results root; "both" for handcrafted)
METHODS = {
    "generator": ("generator", "both"),
    "handcrafted": ("handcrafted", "both"),
    "G: L_seg only": ("generator", "seg"),
    "G: L_cls only": ("generator", "cls"),
}
LOSSES = {"both": "both losses", "seg": "L_seg only", "cls": "L_cls only"}
EXPORT_ID = 960  # seed s, method m -> 960 + 20 (m // 2) + 2 s + m % 2: 960.. generator/handcrafted, 980.. ablation
COLUMNS = (
    ("diameter_mm", "diameter mm", 0),
    ("mean_hu", "mean HU", 0),
    ("sd_hu", "sd HU", 0),
    ("ring_organ_hu", "organ ≤5 mm HU", 0),
    ("contrast_hu", "contrast HU", 0),
    ("edge_width_mm", "edge width mm", 1),
    ("gate_p", "S: P", 2),
)


def methods_of(c: Comparison, seed: int) -> list[str]:
    """The methods of one seed: generator and handcrafted, and the loss ablation's generators that were trained."""
    return [
        m
        for m, (kind, losses) in METHODS.items()
        if kind == "handcrafted" or (c.generator_folder(seed, losses) / "generator_final.safetensors").is_file()
    ]


def export(c: Comparison, seed: int, method: str, n_per_case: int) -> Path:
    """The seed's freetumor_synthesize export of one method (reused when it exists)."""
    kind, losses = METHODS[method]
    m = list(METHODS).index(method)
    dataset_id = EXPORT_ID + 20 * (m // 2) + 2 * seed + m % 2
    name = f"{c.name}_s{seed}_{kind}" + ("" if losses == "both" else f"_{losses}")
    folder = c.raw / f"Dataset{dataset_id:03d}_{name}"
    if not (folder / "synthesis_log.json").is_file():
        cmd = ["freetumor_synthesize", "-d", c.dataset_id, "-f", 0, "--method", kind, "--n_per_case", n_per_case]
        cmd += ["--seed", 0, "-o", dataset_id, "--name", name, "--overwrite", "--device", "cpu", "--no_progress"]
        sh(cmd, c.env(seed, losses), c.log)
    return folder


def analyse(c: Comparison, seed: int, exports: dict[str, Path]) -> dict:
    """Measures and Fréchet distances of one seed, with that seed's S."""
    from nnunet_freetumor.segmenter import load_segmenter
    from nnunet_freetumor.utilities.dataset import planned_dataset

    env = c.env(seed, "both")
    for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ[k] = env[k]
    src = planned_dataset(str(c.dataset_id), c.raw, c.pre)
    segmenter = load_segmenter(src.cfg, **src.model_key(), fold="0", results=env["nnUNet_results"])
    return {
        "measures": measure_all(exports, src, segmenter, organ=ORGAN, lesion=TUMOR),
        "frechet": frechet(exports, src, segmenter),
        "threshold": src.cfg.gate_threshold,
    }


def fingerprint(c: Comparison, seed: int, exports: dict[str, Path]) -> dict:
    """What one seed's analysis reads: its exports (by their synthesis log's mtime) and its S's checkpoint."""
    s = c.fold(seed, "both", "nnUNetTrainerBaseline") / "checkpoint_final.pth"
    files = {m: e / "synthesis_log.json" for m, e in exports.items()} | {"S": s}
    return {m: file_stamp(f) for m, f in files.items()}


def cached_analyse(c: Comparison, seed: int, exports: dict[str, Path], cache: dict) -> dict:
    """``analyse`` of one seed, reused from the last run's phantom_realism.json when it read the same files."""
    key = fingerprint(c, seed, exports)
    old = cache.get(str(seed), {})
    if old.get("inputs") == key and "ring_lung_hu" not in json.dumps(old):  # earlier caches: the old key
        return old
    return {**analyse(c, seed, exports), "inputs": key}


def generator_curves(c: Comparison, seed: int) -> dict[str, list[dict]]:
    """losses -> the progress.json of that generator of the seed (the ones that were trained)."""
    out = {}
    for losses in LOSSES:
        path = c.generator_folder(seed, losses) / "progress.json"
        if path.is_file():  # training entries only (a generator's step-0 entry has the monitor alone)
            out[losses] = [h for h in json.loads(path.read_text()) if "loss_seg" in h]
    return out


def report(
    per_seed: dict[int, dict], curves: dict[int, dict[str, list[dict]]], baseline_dice: dict, cmd: str, n: int
) -> str:
    lines = [
        "",
        f"Generated by `{cmd}` on the models of the comparison above (no training here). Per seed: "
        f"`freetumor_synthesize` with that seed's generator, with the loss ablation's generators (G: L_seg only, "
        f"G: L_cls only) where the comparison trained them, and with the handcrafted recipe, {n} tumor(s) per healthy "
        "training case, the same masks for every method (same export seed, no gate); real = the lesions of the "
        "labeled training cases (S's own training data: its P on them is a training-set number). Per lesion as in "
        "the real-CT check: HU inside, the organ within 5 mm, contrast = lesion mean − that ring's mean, edge width "
        "≈ |contrast| / in-plane edge gradient; S: P = the share of the lesion the seed's frozen S labels tumor (the "
        "gate's Eq. 4). Mean ± sd over lesions.",
        "",
        "| seed | lesions | N | " + " | ".join(h for _, h, _ in COLUMNS) + " | P ≥ T |",
        "|---|---|---|" + "---|" * (len(COLUMNS) + 1),
    ]
    for seed, res in per_seed.items():
        t = res["threshold"]
        for key, recs in res["measures"].items():
            cells = [mean_sd([r[k] for r in recs], d) for k, _, d in COLUMNS]
            share = np.mean([r["gate_p"] >= t for r in recs]) if recs else float("nan")
            lines.append(f"| {seed} | {key} | {len(recs)} | " + " | ".join(cells) + f" | {fmt(share, 2)} |")
    lines += [
        "",
        "Fréchet distance real vs synthetic in each seed's S features (reference: the FD between N_real lesions "
        "drawn from the same method and the rest of that method's lesions, 50 draws, median [5th-95th percentile]: "
        "what two samples of one distribution give at this N and F).",
        "",
        "| seed | synthetic | N real | N synthetic | F | FD real vs synthetic | reference FD, same method |",
        "|---|---|---|---|---|---|---|",
    ]
    for seed, res in per_seed.items():
        for key, fd in res["frechet"].items():
            if "error" in fd:
                lines.append(f"| {seed} | {key} | - | {fd['n_synthetic']} | - | {fd['error']} | - |")
                continue
            ref = fd["reference_fd"]
            ref_s = f"{np.median(ref):.3g} [{np.percentile(ref, 5):.3g}-{np.percentile(ref, 95):.3g}]" if ref else "-"
            lines.append(
                f"| {seed} | {key} | {fd['n_real']} | {fd['n_synthetic']} | {fd['n_features']} | "
                f"{fd['frechet_distance']:.3g} | {ref_s} |"
            )
    lines += [
        "",
        "Generator training per seed (`progress.json`; L_seg = Eq. 2, 1 = S sees no tumor in the synthetic one, "
        "logged also when it is not trained on; accepted = share of the epoch's synthetic tumors with P ≥ T) and the "
        "seed's baseline S on the test split:",
        "",
        "| seed | S: test Dice (tumor) | generator | L_seg first → last epoch | accepted first → last | "
        "epochs with L_seg ≥ 0.99 |",
        "|---|---|---|---|---|---|",
    ]
    for seed, by_losses in curves.items():
        for losses, h in by_losses.items():
            stuck = sum(e["loss_seg"] >= 0.99 for e in h)
            lines.append(
                f"| {seed} | {fmt(baseline_dice.get(seed), 3)} | {LOSSES[losses]} | "
                f"{h[0]['loss_seg']:.3f} → {h[-1]['loss_seg']:.3f} | "
                f"{h[0]['gate_accept']:.2f} → {h[-1]['gate_accept']:.2f} | {stuck} / {len(h)} |"
            )
    lines += reading(per_seed, curves)
    return "\n".join(lines) + "\n"


def mean_contrast(records: list[dict]) -> float:
    return float(np.nanmean([r["contrast_hu"] for r in records]))


def reading(per_seed: dict[int, dict], curves: dict[int, dict[str, list[dict]]]) -> list[str]:
    """Sentences that follow from the numbers above (each one only when the numbers say so)."""
    out = []
    stuck = [s for s, h in curves.items() if "both" in h and all(e["loss_seg"] >= 0.99 for e in h["both"])]
    if stuck:
        out += [
            "",
            f"Seed(s) {', '.join(map(str, stuck))}: L_seg stayed ≥ 0.99 in every epoch. Eq. 2 is linear in S's tumor "
            "probability p, and d(1 − p)/d(logit) = −p(1 − p) vanishes when S is sure a region is not tumor: a "
            "confident S gives G no gradient to follow, so G learned from λ_cls·L_cls alone and its tumors "
            "did not reach the gate's threshold. The paper's loss, implemented as written, has this failure mode "
            "whenever the initial synthetic tumors are far from what S calls tumor.",
        ]
    for seed, res in per_seed.items():
        fds = {k: fd for k, fd in res["frechet"].items() if fd.get("reference_fd")}
        outside = [k for k, fd in fds.items() if fd["frechet_distance"] > np.percentile(fd["reference_fd"], 95)]
        if fds:
            out += [
                "",
                f"Seed {seed}, FD: "
                + (
                    f"the {' and '.join(outside)} tumors are farther from the real lesions than that method's own "
                    "lesions are from each other (above its reference's 95th percentile)"
                    if outside
                    else "no method's FD to the real lesions exceeds its own reference range"
                )
                + ".",
            ]
    for seed, res in per_seed.items():
        m = res["measures"]
        real_c = mean_contrast(m["real"])
        pair = ("generator", "handcrafted")
        gaps = {k: abs(mean_contrast(m[k]) - real_c) for k in pair}
        closer = min(gaps, key=gaps.get)
        out += [
            "",
            f"Seed {seed}: mean contrast to the organ — real {real_c:.0f} HU, "
            + ", ".join(f"{k} {mean_contrast(m[k]):.0f} HU" for k in pair)
            + f"; the {closer} tumors are closer to the real lesions in contrast (by "
            f"{abs(gaps['generator'] - gaps['handcrafted']):.0f} HU).",
        ]
    out += loss_ablation_reading(per_seed, curves)
    return out


def loss_ablation_reading(per_seed: dict[int, dict], curves: dict[int, dict[str, list[dict]]]) -> list[str]:
    """Per seed with the loss ablation's generators: whether each paints the real lesions' contrast sign, how strong
    its contrast is relative to theirs (a faint one labels tumor where the image shows almost none), and where each
    one's L_seg went over its training (without L_seg, nothing keeps G's tumors where S sees tumor)."""
    out = []
    for seed, res in per_seed.items():
        gens = [k for k, (kind, _) in METHODS.items() if kind == "generator" and k in res["measures"]]
        if len(gens) < 2:
            continue
        real_c = mean_contrast(res["measures"]["real"])
        contrast = {k: mean_contrast(res["measures"][k]) for k in gens}
        wrong = [k for k in gens if np.sign(contrast[k]) != np.sign(real_c)]
        owner = "generators'" if len(wrong) > 1 else "generator's"
        names = {k: LOSSES[METHODS[k][1]] for k in gens}
        h = {names[k]: curves.get(seed, {}).get(METHODS[k][1]) for k in gens}
        trend = [f"{g} {c[0]['loss_seg']:.2f} → {c[-1]['loss_seg']:.2f}" for g, c in h.items() if c]
        out += [
            "",
            f"Seed {seed}, generator loss ablation: mean contrast to the organ — real {real_c:.0f} HU, "
            + ", ".join(f"{names[k]} {contrast[k]:.0f} HU" for k in gens)
            + (
                f"; the {' and '.join(names[k] for k in wrong)} {owner} tumors are "
                f"{'brighter' if real_c < 0 else 'darker'} than the organ, the real lesions "
                f"{'darker' if real_c < 0 else 'brighter'}"
                if wrong
                else "; every generator paints tumors on the real lesions' side of the organ's intensity"
            )
            + "; contrast as a share of the real lesions': "
            + ", ".join(f"{names[k]} {contrast[k] / real_c:.2f}" for k in gens)
            + (f". L_seg over training: {', '.join(trend)}." if trend else "."),
        ]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=list(PRESETS), default="cpu-small", help="the comparison's preset")
    ap.add_argument("--workdir", default=None, help="the comparison's work folder [benchmarks/work_compare_<preset>]")
    ap.add_argument("--n_per_case", type=int, default=2, help="synthetic tumors per healthy training case [2]")
    ap.add_argument("--results", default=str(Path(__file__).with_name("RESULTS.md")))
    a = ap.parse_args()
    work = Path(a.workdir or Path(__file__).with_name(f"work_compare_{a.preset}")).resolve()
    c = Comparison(work, dict(PRESETS[a.preset]), "cpu")
    seeds = sorted(
        int(d.parent.parent.name.removeprefix("seed_"))
        for d in work.glob(f"seed_*/main/{c.ds}")
        if (d / "nnUNetTrainerBaseline__nnUNetPlans__3d_fullres").is_dir()
        and (d / "FreeTumorGenerator__nnUNetPlans__3d_fullres").is_dir()
    )
    if not seeds:
        raise SystemExit(
            f"error: {work} holds no seed with a baseline and a generator: run python -m benchmarks.compare first"
        )
    comparison = json.loads((work / "comparison.json").read_text()) if (work / "comparison.json").is_file() else {}
    baseline_dice = dict(enumerate(r["dice_tumor"] for r in comparison.get("results", {}).get("baseline", [])))
    cache_file = work / "phantom_realism.json"
    cache = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
    per_seed, curves = {}, {}
    for seed in seeds:
        exports = {m: export(c, seed, m, a.n_per_case) for m in methods_of(c, seed)}
        per_seed[seed] = cached_analyse(c, seed, exports, cache)
        curves[seed] = generator_curves(c, seed)
    from nnunet_freetumor.utilities.files import atomic_write_text

    atomic_write_text(cache_file, json.dumps(per_seed, indent=1, default=str) + "\n")
    title = f"## Realism on the phantom ({a.preset})"
    cmd = f"python -m benchmarks.phantom_realism --preset {a.preset} --n_per_case {a.n_per_case}"
    section = title + "\n" + report(per_seed, curves, baseline_dice, cmd, a.n_per_case)
    write_section(Path(a.results), section, title)
    print(section)


if __name__ == "__main__":
    sys.exit(main())
