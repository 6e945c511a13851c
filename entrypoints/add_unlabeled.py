"""freetumor_add_unlabeled: add unlabeled CT (with supplied or predicted organ masks) to a FreeTumor dataset."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from nnunet_freetumor import env
from nnunet_freetumor.entrypoints._common import run_cli

EPILOG = """\
Images: UNLABELED_FOLDER/{case}_0000<file_ending> (one file per channel, as in imagesTr; the channels and the file
ending of DATASET's dataset.json). Each case becomes the training case {prefix}_{case} with an organ-only label.

Organ masks:
  --organ-masks FOLDER   supplied masks {case}<file_ending> on the image's voxel grid; any label ids, mapped with
                         --label_map SRC:DST ... (source id -> dataset id; ids not named become background 0 and
                         are counted in the report); without --label_map the ids are taken as the dataset's
  (default)              predicted with nnU-Net's predictor by the dataset's baseline
                         $nnUNet_results/<dataset>/<gate_trainer>__<plans>__<configuration> (the FreeTumor config's
                         gate_trainer), folds -f, checkpoint -chk
  --organ-model FOLDER   any other nnU-Net model folder. A dedicated organ model (trained on a public multi-organ
                         dataset) is better than the tumor baseline: pass its ids with --label_map, e.g. 6:1
Predicted tumors: a case with any voxel of a configured tumor label is skipped (--tumors exclude) or added with the
tumor label (--tumors keep); never turned into healthy organ.
Quality filters, each with its reason in the report: every configured organ <= --max_organ_ml and at least one
>= --min_organ_ml; the largest connected component of each such organ holds >= --min_largest_component of it;
CT in HU: 1st percentile < -500 HU and the organs' median HU in --organ_hu (default -200 400; -1000 400 with a
chest config).
Writing: in place (default; imagesTs/labelsTs untouched) or, with -o, into a copy of the whole raw dataset. New files
are staged first, dataset.json is written last; on any error nothing is left behind; existing cases are never
overwritten. Where splits_final.json exists (nnUNet_preprocessed, and the raw folder), the new cases join the train
list of every fold, never a validation list (-o: written to $nnUNet_preprocessed/<new dataset>/). --make_split writes
nnU-Net's default split of the existing cases first when there is none.
Report: unlabeled_report.json and unlabeled_report.md in the dataset folder (or --report FOLDER|FILE.json).
Next: nnUNetv2_plan_and_preprocess -d DATASET --verify_dataset_integrity (re-plans; `nnUNetv2_preprocess -d DATASET
-c 3d_fullres` keeps the plans an existing baseline was trained with).
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="freetumor_add_unlabeled",
        description="Bring unlabeled CT into a FreeTumor dataset: organ masks (supplied or predicted by an nnU-Net "
        "model), quality filters, and the cases added as organ-only training cases (in place or as a new dataset).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-d", "--dataset", required=True, help="dataset name or id (nnU-Net raw format)")
    p.add_argument("-i", "--input", required=True, metavar="UNLABELED_FOLDER", help="folder of {case}_0000 images")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--organ-masks", "--organ_masks", dest="organ_masks", metavar="MASK_FOLDER", help="supplied masks")
    src.add_argument(
        "--organ-model", "--organ_model", dest="organ_model", metavar="MODEL_FOLDER", help="nnU-Net model folder"
    )
    p.add_argument("--label_map", "--label-map", nargs="+", metavar="SRC:DST", help="mask/model id -> dataset id")
    p.add_argument("-p", "--plans", default="nnUNetPlans", help="plans of the default baseline [nnUNetPlans]")
    p.add_argument("-c", "--configuration", default="3d_fullres", help="configuration of the default baseline")
    p.add_argument("-f", "--folds", nargs="+", default=["0"], help="model fold(s) to predict with [0]")
    p.add_argument("-chk", "--checkpoint", default="checkpoint_final.pth", help="[checkpoint_final.pth]")
    p.add_argument("--tumors", choices=("exclude", "keep"), default="exclude", help="cases with predicted tumor")
    p.add_argument("-o", "--output_id", type=int, help="write a new dataset with this (free) id instead of in place")
    p.add_argument("--name", help="name of the new dataset [<source name>_<prefix>]")
    p.add_argument("--prefix", default="unlabeled", help="new case ids are {prefix}_{case} [unlabeled]")
    p.add_argument("--min_organ_ml", type=float, default=10.0, help="[10]")
    p.add_argument("--max_organ_ml", type=float, default=None, help="[no limit]")
    p.add_argument("--min_largest_component", type=float, default=0.9, help="[0.9]")
    p.add_argument("--organ_hu", type=float, nargs=2, metavar=("LOW", "HIGH"), help="organ median HU range")
    p.add_argument("--make_split", action="store_true", help="without splits_final.json: write nnU-Net's split first")
    p.add_argument("--report", help="report folder or .json path [the dataset folder]")
    p.add_argument("--dry_run", action="store_true", help="assess and report only; write nothing")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="prediction device [cpu]")
    p.add_argument("--disable_tta", action="store_true", help="no mirroring at prediction (faster)")
    p.add_argument("-npp", type=int, default=3, help="nnU-Net preprocessing processes (-npp 0 -nps 0: sequential)")
    p.add_argument("-nps", type=int, default=3, help="nnU-Net export processes [3]")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def run() -> int:
        paths = env.nnunet_folders(env.RAW, env.PREPROCESSED)
        from nnunet_freetumor.unlabeled.label_map import parse_label_map
        from nnunet_freetumor.unlabeled.report import report_markdown
        from nnunet_freetumor.unlabeled.request import QualityFilters, UnlabeledRequest
        from nnunet_freetumor.unlabeled.workflow import add_unlabeled, plan_unlabeled

        req = UnlabeledRequest(
            dataset=args.dataset,
            input_folder=args.input,
            organ_masks=args.organ_masks,
            label_map=parse_label_map(args.label_map) if args.label_map else None,
            organ_model=args.organ_model,
            plans=args.plans,
            configuration=args.configuration,
            folds=tuple(args.folds),
            checkpoint=args.checkpoint,
            tumors=args.tumors,
            output_id=args.output_id,
            name=args.name,
            prefix=args.prefix,
            filters=QualityFilters(
                min_organ_ml=args.min_organ_ml,
                max_organ_ml=args.max_organ_ml,
                min_largest_component=args.min_largest_component,
                organ_hu=tuple(args.organ_hu) if args.organ_hu else None,
            ),
            make_split=args.make_split,
            report=args.report,
            dry_run=args.dry_run,
            device=args.device,
            disable_tta=args.disable_tta,
            npp=args.npp,
            nps=args.nps,
        )
        plan = plan_unlabeled(req, paths[env.RAW], paths[env.PREPROCESSED], env.get(env.RESULTS))
        if plan.model_folder is not None:
            print(
                f"predicting the organ masks of {len(plan.cases)} case(s) with {plan.model_folder} "
                f"(fold {' '.join(args.folds)})"
            )
        result = add_unlabeled(plan, progress=not args.no_progress)
        c = result.counts
        verb = "would add" if result.dry_run else "added"
        name = plan.dataset.name
        where = name if args.output_id is None else f"{result.target.name} (a copy of {name})"
        lines = [
            f"{verb} {c['added'] + c['added_with_tumor']} of {c['cases']} unlabeled case(s) to {where}: "
            f"{c['added_with_tumor']} with a predicted tumor kept, {c['skipped_tumor']} skipped for a predicted "
            f"tumor, {c['rejected']} rejected"
            + (" (" + ", ".join(f"{k}: {n}" for k, n in c["rejected_by"].items()) + ")" if c["rejected_by"] else ""),
            f"split{' (dry run: not written)' if result.dry_run else ''}: {result.split_note}",
        ]
        lines += [f"  updated {p}" for p in result.split_files]
        if result.report_files:
            lines.append(f"report: {result.report_files[0]} (+ .md)")
        if result.dry_run:
            lines.append("dry run: nothing was written")
            if not result.report_files:  # the per-case table
                md = report_markdown(result.report)
                lines.append(md[md.index("| case |") :].rstrip())
        else:
            lines.append(f"next: {result.next_command}")
        print("\n".join(lines))
        return 0

    return run_cli(run)


if __name__ == "__main__":
    raise SystemExit(main())
