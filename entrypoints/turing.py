"""freetumor_turing: visual Turing test kit (make, score) and an automated realism measure (fid)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nnunet_freetumor import env
from nnunet_freetumor.entrypoints._common import run_cli
from nnunet_freetumor.utilities.text import percent

EPILOG = """\
Typical use (after freetumor_synthesize -d DATASET -o OUT):
  freetumor_turing make -d DATASET --synthetic OUT -o turing_kit     # blinded PNGs + key/answer_key.csv
  (remove turing_kit/key/, give the folder to a reader, get back a filled answers_template.csv)
  freetumor_turing score answers.csv --key turing_kit/key/answer_key.csv
  freetumor_turing fid -d DATASET --synthetic OUT -f 0                # Fréchet distance in S's feature space
Sensitivity = synthetic tumors called synthetic / synthetic tumors (the paper's definition), specificity = real
called real / real; a reader at chance level is near 50 % on both.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="freetumor_turing",
        description="Judge the realism of synthetic tumors: a blinded visual Turing test for readers, and a "
        "Fréchet distance between real and synthetic tumors in the frozen baseline segmenter's features.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)

    def source_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("-d", "--dataset", required=True, help="source dataset (its labeled cases give real tumors)")
        sp.add_argument(
            "--synthetic", required=True, help="the freetumor_synthesize export: dataset id, name or folder"
        )
        sp.add_argument("-c", "--configuration", default="3d_fullres", help="[3d_fullres]")
        sp.add_argument("-p", "--plans", default="nnUNetPlans", help="[nnUNetPlans]")

    make = sub.add_parser(
        "make",
        help="write a blinded, shuffled set of real and synthetic tumor PNGs with an answer key",
        description="One axial slice through the centre of each tumor, the config's HU window for all, the same "
        "pixel size, no outline. Writes FOLDER/case_XXX.png, answers_template.csv, README.txt and "
        "key/answer_key.csv (id, truth, source case).",
    )
    source_args(make)
    make.add_argument("--n", type=int, default=20, help="real and synthetic tumors each (fewer if fewer exist) [20]")
    make.add_argument("--seed", type=int, default=0, help="seed of the selection and the order [0]")
    make.add_argument("--fov_mm", type=float, default=96.0, help="side of every image in mm [96]")
    make.add_argument("--size_px", type=int, default=256, help="side of every image in pixels [256]")
    make.add_argument("-o", "--output", required=True, help="new folder for the kit")
    make.add_argument("--overwrite", action="store_true", help="replace an existing kit folder")

    score = sub.add_parser(
        "score",
        help="score a filled answer sheet against the key",
        description="ANSWERS.csv has the columns id, answer (real or synthetic, also r/s); every id of the key "
        "must be answered once. Prints and writes sensitivity, specificity, accuracy and n as JSON.",
    )
    score.add_argument("answers", help="the filled answers CSV (id, answer)")
    score.add_argument("--key", required=True, help="KIT/key/answer_key.csv")
    score.add_argument("-o", "--output", help="JSON output [ANSWERS without .csv + _score.json]")

    fid = sub.add_parser(
        "fid",
        help="Fréchet distance between real and synthetic tumors in the frozen segmenter's encoder features",
        description="Tumor-centred crops (plan spacing, plan patch size but at most 64 voxels per axis, plan CT "
        "normalization) of the real tumors of DATASET's labeled training cases and of the synthetic tumors go "
        "through the encoder of the frozen baseline S of the fold; bottleneck features are averaged over space. "
        "With N <= F (few tumors, many features) the covariances are singular and the distance is biased: compare "
        "values only at equal N, or use --shrinkage.",
    )
    source_args(fid)
    fid.add_argument("-f", "--fold", default="0", help="fold of the baseline S [0]")
    fid.add_argument("--gate_checkpoint", help="checkpoint of S [the config's gate_trainer baseline of the fold]")
    fid.add_argument("--max_n", type=int, help="use at most this many tumors per set (seeded subsample)")
    fid.add_argument("--seed", type=int, default=0, help="seed of the subsample [0]")
    fid.add_argument("--shrinkage", type=float, default=0.0, help="covariance shrinkage towards identity, 0..1 [0]")
    fid.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="[cpu]")
    fid.add_argument("-o", "--output", help="also write the result as JSON to this file")
    return p


def main() -> int:
    args = build_parser().parse_args()

    def run() -> int:
        from nnunet_freetumor.utilities.files import atomic_write_text

        if args.command == "score":
            from nnunet_freetumor.realism.turing import score

            result = score(args.answers, args.key)
            out = (
                Path(args.output)
                if args.output
                else Path(args.answers).with_name(Path(args.answers).stem + "_score.json")
            )
            atomic_write_text(out, json.dumps(result, indent=2) + "\n")
            print(
                f"n = {result['n']} ({result['n_synthetic']} synthetic, {result['n_real']} real)\n"
                f"sensitivity (synthetic called synthetic) {percent(result['sensitivity'])}\n"
                f"specificity (real called real)           {percent(result['specificity'])}\n"
                f"accuracy                                 {percent(result['accuracy'])}\n"
                f"wrote {out}"
            )
            return 0

        paths = env.nnunet_folders(env.RAW, env.PREPROCESSED)
        from nnunet_freetumor.realism.lesions import resolve_export
        from nnunet_freetumor.utilities.dataset import planned_dataset

        src = planned_dataset(args.dataset, paths[env.RAW], paths[env.PREPROCESSED], args.plans, args.configuration)
        export = resolve_export(args.synthetic, paths[env.RAW])
        if args.command == "make":
            from nnunet_freetumor.realism.turing import make_kit_for

            kit = make_kit_for(
                src,
                export,
                args.output,
                n=args.n,
                seed=args.seed,
                fov_mm=args.fov_mm,
                size_px=args.size_px,
                overwrite=args.overwrite,
            )
            print(
                f"wrote {kit['n']} images ({kit['n_real']} real, {kit['n_synthetic']} synthetic) to {kit['folder']}; "
                f"the key is in {Path(kit['folder'], 'key')}: remove it before handing the folder out"
            )
            return 0

        import torch

        from nnunet_freetumor.config import FreeTumorConfigError
        from nnunet_freetumor.realism.frechet import realism_report_for
        from nnunet_freetumor.segmenter import load_segmenter

        if args.device == "cuda" and not torch.cuda.is_available():
            raise FreeTumorConfigError("--device cuda, but no CUDA GPU is available: use --device cpu")
        segmenter = load_segmenter(
            src.cfg, **src.model_key(), fold=args.fold, checkpoint=args.gate_checkpoint, device=args.device
        )
        report = realism_report_for(src, export, segmenter, args.max_n, args.seed, args.shrinkage)
        print(
            f"Frechet distance {report['frechet_distance']:.4f}  (N real {report['n_real']}, N synthetic "
            f"{report['n_synthetic']}, F {report['n_features']}; crops {report['crop_size']} at "
            f"{report['spacing_mm']} mm)"
        )
        if report["singular_covariance"]:
            print(
                "note: N <= F, the covariances are singular (regularised with a small diagonal): the value is "
                "biased and depends on N; compare only at equal N, or use --shrinkage"
            )
        if args.output:
            atomic_write_text(args.output, json.dumps(report, indent=2) + "\n")
            print(f"wrote {args.output}")
        return 0

    return run_cli(run)


if __name__ == "__main__":
    raise SystemExit(main())
