"""freetumor_evaluate: per-class Dice (nnU-Net) plus lesion-wise detection metrics of a prediction folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from nnunet_freetumor import env
from nnunet_freetumor.entrypoints._common import fail

DESCRIPTION = """\
Evaluate nnU-Net predictions against ground truth: per-class Dice (nnU-Net's own metric code, as in
nnUNetv2_evaluate_folder) plus lesion-wise detection metrics for every tumor class.

Files are <case><file_ending> in both folders (file_ending from dataset.json), read with the dataset's nnU-Net
reader; the spacing (mm) comes from the files. Prediction and ground truth of a case must have the same shape and
spacing (within 1e-3 relative).\
"""

EPILOG = """\
Metrics, per tumor class (default: every dataset.json label whose name contains tumor/tumour/lesion/cancer/
carcinoma/nodule/mass/metastasis; --tumor_labels overrides):
  lesions      connected components (26-connectivity: faces, edges and corners; --connectivity 6: faces only)
               of that class, separately in the ground truth (GT) and in the prediction
  detected     a GT lesion is detected if the prediction of the same class overlaps it by
               >= --min_overlap_voxels voxels (default 1)
  TP / FP      a predicted lesion is a true positive if it overlaps the GT of that class by
               >= --min_overlap_voxels voxels, else a false positive
  sensitivity  detected GT lesions / all GT lesions (pooled over all cases)
  precision    TP predicted lesions / all predicted lesions (pooled); F1 = 2PR / (P + R)
  FP/case      false-positive predicted lesions / number of cases
  by size      sensitivity per stratum of the GT lesion's longest diameter (WHO): the largest distance in mm
               between the centres of two voxels of the lesion, with the image spacing (one voxel = 0 mm; 5
               voxels in a row at 2.5 mm spacing = 10 mm). --size_bins_mm 20 50 gives <20 mm (small),
               20-50 mm and >=50 mm (a lesion of exactly 20 mm is in 20-50 mm).
Patient level: a case is positive if its GT has any voxel of any tumor class, predicted positive if the
  prediction has one; sensitivity = TP/(TP+FN) cases, specificity = TN/(TN+FP) cases.
A metric with a zero denominator (no GT lesions, no predicted lesions, no negative cases) is null in the JSON and
"n/a" in the tables. Voxels with dataset.json's ignore label are left out of Dice (as nnU-Net does) and of the
predicted lesions.

Output: summary_freetumor.json (per case: Dice of every class; every GT/predicted lesion with diameter_mm,
volume_ml, overlap and detected/true_positive; aggregates per class, per size stratum and per patient) and
summary_freetumor.md (Markdown tables), written atomically; a short summary is printed.
Case lists must match unless --allow_missing (then the cases present in both are evaluated, and the summary
says which were skipped). Bad input: one error line, exit code 2, nothing written.

Examples:
  freetumor_evaluate $nnUNet_results/Dataset003_Liver/.../fold_0/validation $nnUNet_raw/Dataset003_Liver/labelsTr -d 3
  freetumor_evaluate preds/ labelsTs/ -djfile dataset.json --tumor_labels 2 --size_bins_mm 10 20 50 -np 4
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="freetumor_evaluate",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("pred_folder", help="folder with the predicted segmentations (<case><file_ending>)")
    p.add_argument("gt_folder", help="folder with the ground-truth segmentations (e.g. labelsTr)")
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "-d",
        "--dataset",
        help="dataset name or id; its dataset.json is read from $nnUNet_preprocessed or $nnUNet_raw",
    )
    src.add_argument(
        "-djfile",
        help="path of the dataset.json (default: PRED_FOLDER/dataset.json, which "
        "nnUNetv2_predict writes, if there is one)",
    )
    p.add_argument(
        "--tumor_labels",
        nargs="+",
        metavar="LABEL",
        help="tumor classes: label ids or exact label names (default: labels named like a tumor)",
    )
    p.add_argument(
        "--size_bins_mm",
        nargs="*",
        type=float,
        default=[20.0, 50.0],
        metavar="MM",
        help="edges of the diameter strata in mm, increasing [20 50]; none = one stratum",
    )
    p.add_argument("--connectivity", type=int, choices=(6, 26), default=26, help="lesion connectivity [26]")
    p.add_argument(
        "--min_overlap_voxels", type=int, default=1, help="voxels of overlap for detected / true positive [1]"
    )
    p.add_argument(
        "--allow_missing",
        action="store_true",
        help="evaluate the cases present in both folders instead of failing when the case lists differ",
    )
    p.add_argument(
        "-o",
        "--output",
        help="output .json file (the .md goes next to it) or folder [PRED_FOLDER/summary_freetumor.json]",
    )
    p.add_argument("-np", type=int, default=2, help="number of processes; 0 or 1 = in this process [2]")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    return p


def _dataset_json_of(dataset: str) -> Path:
    """dataset.json of an nnU-Net dataset name or id, from $nnUNet_preprocessed, else $nnUNet_raw."""
    roots = [env.get(v) for v in (env.PREPROCESSED, env.RAW)]
    if not any(roots):
        fail("-d needs $nnUNet_preprocessed or $nnUNet_raw; set one or pass -djfile dataset.json")
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    try:
        name = maybe_convert_to_dataset_name(dataset)
    except (RuntimeError, ValueError):
        fail(f"dataset {dataset!r} not found in $nnUNet_raw, $nnUNet_preprocessed or $nnUNet_results; pass -djfile")
    for root in roots:
        if root and Path(root, name, "dataset.json").is_file():
            return Path(root, name, "dataset.json")
    fail(f"no dataset.json of {name} in $nnUNet_preprocessed or $nnUNet_raw; pass -djfile")
    raise AssertionError  # unreachable


def main() -> int:
    args = build_parser().parse_args()
    from nnunet_freetumor.evaluation.evaluate import evaluate_folder
    from nnunet_freetumor.evaluation.lesions import EvaluationError
    from nnunet_freetumor.evaluation.report import SUMMARY_JSON, format_text, write_summary

    if args.dataset is not None:
        dataset_json = _dataset_json_of(args.dataset)
    elif args.djfile is not None:
        dataset_json = Path(args.djfile)
    elif Path(args.pred_folder, "dataset.json").is_file():
        dataset_json = Path(args.pred_folder, "dataset.json")
    else:
        fail("give the dataset: -d DATASET or -djfile dataset.json")
    if args.output is None:
        output = Path(args.pred_folder, SUMMARY_JSON)
    elif args.output.endswith(".json"):
        output = Path(args.output)
    else:
        output = Path(args.output, SUMMARY_JSON)
    try:
        summary = evaluate_folder(
            args.pred_folder,
            args.gt_folder,
            dataset_json,
            tumor_labels=args.tumor_labels,
            size_bins_mm=args.size_bins_mm,
            connectivity=args.connectivity,
            min_overlap_voxels=args.min_overlap_voxels,
            allow_missing=args.allow_missing,
            num_processes=args.np,
            progress=not args.no_progress,
        )
        out_json, out_md = write_summary(summary, output)
    except (EvaluationError, OSError) as e:
        fail(str(e))
    print(format_text(summary))
    print(f"Wrote {out_json} and {out_md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
