"""freetumor_train_generator: train the FreeTumor tumor generator on an nnU-Net preprocessed dataset."""

from __future__ import annotations

import argparse
import os

import torch

from nnunet_freetumor.entrypoints._common import require_env, run_cli

EPILOG = """\
Before: nnUNetv2_plan_and_preprocess -d DATASET  and the baseline of the same fold (the frozen segmenter S):
        nnUNetv2_train DATASET 3d_fullres FOLD
Output: $nnUNet_results/DatasetXXX_Name/FreeTumorGenerator__<plans>__<configuration>/fold_<FOLD>/
        generator_final.safetensors (+ .json): what nnUNetTrainerFreeTumor loads; checkpoint_latest.safetensors
        (resume with --c); progress.png; montage_epoch_XXXX.png; training_log.txt; freetumor_config.json
Multi-GPU / multi-node: torchrun --nproc_per_node N $(which freetumor_train_generator) DATASET ...
        (--batch_size is the global batch; it is split over the processes)
Label pairs, window and mask sizes come from the FreeTumor config (see `freetumor_config -d DATASET`).
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="freetumor_train_generator",
        description="Adversarially train the FreeTumor generator G (Eq. 1-3 of the paper) on an nnU-Net preprocessed "
        "dataset: healthy organ crops get synthetic tumors that the frozen baseline segmenter S must recognise "
        "(L_seg) and a discriminator C must not tell from real tumors (L_cls).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dataset", help="dataset name or id (as for nnUNetv2_train)")
    p.add_argument("-c", "--configuration", default="3d_fullres", help="3-D nnU-Net configuration [3d_fullres]")
    p.add_argument("-p", "--plans", default="nnUNetPlans", help="plans identifier [nnUNetPlans]")
    p.add_argument("-f", "--fold", default="0", help="fold (0-4 or 'all'): the training split used [0]")
    p.add_argument("--epochs", type=int, default=100, help="epochs, each one pass over the cases with organs [100]")
    p.add_argument("--batch_size", type=int, default=4, help="global batch size [4]")
    p.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate, cosine schedule [1e-4]")
    p.add_argument("--lambda_cls", type=float, default=0.1, help="weight of the adversarial loss (chest: 0.5) [0.1]")
    p.add_argument(
        "--losses",
        choices=("both", "seg", "cls"),
        default="both",
        help="loss ablation: L_seg + L_cls, L_seg only, L_cls only [both]",
    )
    p.add_argument(
        "--crop_size",
        type=int,
        nargs=3,
        default=None,
        help="crop size in voxels at the plan's spacing [min(96, patch size)]",
    )
    p.add_argument(
        "--gen_features",
        type=int,
        nargs="+",
        default=[32, 64, 128, 256, 320],
        help="generator U-Net features per stage [32 64 128 256 320]",
    )
    p.add_argument(
        "--disc_features",
        type=int,
        nargs="+",
        default=[16, 32, 64, 128],
        help="discriminator U-Net features per stage [16 32 64 128]",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of weights, crops and masks [0]")
    p.add_argument("--num_workers", type=int, default=2, help="data loading processes per GPU [2]")
    p.add_argument(
        "--device",
        choices=("cuda", "cpu", "mps"),
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="training device [cuda if available]",
    )
    p.add_argument("--no_amp", action="store_true", help="disable mixed precision on CUDA")
    p.add_argument(
        "--gate_checkpoint",
        default=None,
        help="frozen segmenter checkpoint [the config's gate_trainer baseline of this fold]",
    )
    p.add_argument("--max_steps_per_epoch", type=int, default=None, help="cap steps per epoch (quick looks)")
    p.add_argument(
        "--c",
        dest="continue_training",
        action="store_true",
        help="continue from checkpoint_latest.safetensors of this run",
    )
    return p


def main() -> int:
    args = build_parser().parse_args()

    def run() -> int:
        paths = require_env("nnUNet_preprocessed", "nnUNet_results")
        from nnunet_freetumor.generator.train import GeneratorTrainer, GeneratorTrainingArgs

        distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        if distributed:  # launched by torchrun
            backend = "nccl" if args.device == "cuda" else "gloo"
            if args.device == "cuda":
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
            torch.distributed.init_process_group(backend)
        try:
            targs = GeneratorTrainingArgs(
                dataset=args.dataset,
                configuration=args.configuration,
                plans=args.plans,
                fold=args.fold,
                epochs=args.epochs,
                batch_size=args.batch_size,
                lr=args.lr,
                lambda_cls=args.lambda_cls,
                losses=args.losses,
                crop_size=tuple(args.crop_size) if args.crop_size else None,
                gen_features=tuple(args.gen_features),
                disc_features=tuple(args.disc_features),
                seed=args.seed,
                num_workers=args.num_workers,
                device=args.device,
                amp=not args.no_amp,
                gate_checkpoint=args.gate_checkpoint,
                max_steps_per_epoch=args.max_steps_per_epoch,
            )
            trainer = GeneratorTrainer(targs, paths["nnUNet_results"], paths["nnUNet_preprocessed"])
            if args.continue_training and not trainer.resume():
                trainer.log("--c: no checkpoint_latest.safetensors yet, starting from scratch")
            trainer.run()
        finally:
            if distributed:
                torch.distributed.destroy_process_group()
        return 0

    return run_cli(run)


if __name__ == "__main__":
    raise SystemExit(main())
