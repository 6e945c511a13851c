"""freetumor_synthesize: export synthetic-tumor cases as a new nnU-Net raw dataset (offline synthesis)."""

from __future__ import annotations

import argparse

from nnunet_freetumor import env
from nnunet_freetumor.entrypoints._common import run_cli

EPILOG = """\
Reads the raw training cases of DATASET ($nnUNet_raw/DatasetXXX_Name/imagesTr, labelsTr; HU, native spacing) whose
configured organ is present and tumor-free (--cases all: every case with the organ; real tumors keep their label),
paints one synthetic tumor per output case into that organ and writes $nnUNet_raw/Dataset<OUT>_<NAME>/:
  imagesTr/, labelsTr/       <case>_synNN: the tumor voxels carry the organ's tumor label; images are float32 for
                             integer sources; every voxel outside the soft tumor mask keeps its value exactly
  synthetic_masksTr/         which voxels are synthetic (uint8)
  synthesis_png/             axial + coronal slices through each tumor, before/after, mask outlined
  synthesis_log.json         per case: organ, size class, mask voxels, centre, gate P, accepted; rejected cases
  dataset.json               the source's, numTraining updated (nnU-Net's generate_dataset_json)
Methods: generator = the trained FreeTumor generator (Eq. 1) at the plan's spacing, the HU difference resampled
back to the native spacing; handcrafted = SyntheticTumors' textured HU offset at the native spacing.
--gate: the frozen baseline S of the fold judges each tumor on its plan-spacing crop; P >= T keeps it, otherwise up
to 5 masks are tried and the case is reported as rejected.
The dataset must be planned (nnUNetv2_plan_and_preprocess -d DATASET): the export uses the plan's axis order,
spacing and CT normalization. Next: nnUNetv2_plan_and_preprocess -d OUT --verify_dataset_integrity
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="freetumor_synthesize",
        description="Offline FreeTumor synthesis: write synthetic tumors into healthy organs of a dataset's raw "
        "training cases and save them as a new nnU-Net raw dataset (for training with any framework).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-d", "--dataset", required=True, help="source dataset name or id")
    p.add_argument("-c", "--configuration", default="3d_fullres", help="3-D configuration of the models [3d_fullres]")
    p.add_argument("-p", "--plans", default="nnUNetPlans", help="plans identifier [nnUNetPlans]")
    p.add_argument("-f", "--fold", default="0", help="fold of the generator and the gate model [0]")
    p.add_argument("--method", choices=("generator", "handcrafted"), default="generator", help="[generator]")
    p.add_argument(
        "--generator",
        help="generator_final.safetensors [$nnUNet_results/<dataset>/FreeTumorGenerator__<plans>__<config>/fold_<f>/]",
    )
    p.add_argument("--gate", action="store_true", help="keep only tumors the frozen baseline segmenter recognises")
    p.add_argument("--gate_checkpoint", help="checkpoint of S [the config's gate_trainer baseline of the fold]")
    p.add_argument("--gate_threshold", type=float, help="gate threshold T [the config's, 0.7 by default]")
    p.add_argument("--n_per_case", type=int, default=1, help="synthetic cases per source case [1]")
    p.add_argument("--seed", type=int, default=0, help="seed; the same seed gives the same dataset [0]")
    p.add_argument("-o", "--output_id", type=int, required=True, help="dataset id of the new dataset")
    p.add_argument("--name", help="name of the new dataset [<source name>_<method>]")
    p.add_argument(
        "--cases",
        choices=("healthy", "all"),
        default="healthy",
        help="source cases: healthy organs only, or every case with the organ [healthy]",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset of the same id and name")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device for the generator and S [cpu]")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    return p


def main() -> int:
    args = build_parser().parse_args()

    def run() -> int:
        paths = env.nnunet_folders(env.RAW, env.PREPROCESSED)
        from nnunet_freetumor.export.export import OfflineExport
        from nnunet_freetumor.export.request import ExportRequest

        req = ExportRequest(
            dataset=args.dataset,
            out_id=args.output_id,
            configuration=args.configuration,
            plans=args.plans,
            fold=args.fold,
            method=args.method,
            generator=args.generator,
            gate=args.gate,
            gate_checkpoint=args.gate_checkpoint,
            gate_threshold=args.gate_threshold,
            n_per_case=args.n_per_case,
            seed=args.seed,
            name=args.name,
            cases=args.cases,
            overwrite=args.overwrite,
            device=args.device,
        )
        export = OfflineExport(req, paths[env.RAW], paths[env.PREPROCESSED], env.get(env.RESULTS))
        result = export.run(progress=not args.no_progress)
        print(
            f"wrote {len(result.written)} synthetic case(s) to {result.folder} ({export.req.method}"
            f"{', gate T = ' + str(export.cfg.gate_threshold) if export.segmenter is not None else ''}; config from "
            f"{export.cfg_source})"
        )
        if result.rejected:
            print(f"rejected {len(result.rejected)}: " + ", ".join(r["case"] for r in result.rejected))
        if result.skipped_cases:
            what = "a tumor-free organ (--cases all includes them)" if args.cases == "healthy" else "the organ"
            print(f"skipped {len(result.skipped_cases)} source case(s) without {what}")
        print(f"next: nnUNetv2_plan_and_preprocess -d {args.output_id} --verify_dataset_integrity")
        return 0

    return run_cli(run)


if __name__ == "__main__":
    raise SystemExit(main())
