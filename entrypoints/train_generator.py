"""freetumor_train_generator: train the FreeTumor tumor generator on an nnU-Net preprocessed dataset."""

from __future__ import annotations

import argparse
import os

import torch

from nnunet_freetumor import env
from nnunet_freetumor.entrypoints._common import run_cli
from nnunet_freetumor.generator.args import CROPS, INITS, LOSSES, GeneratorTrainingArgs
from nnunet_freetumor.generator.losses import SEG_LOSSES

EPILOG = """\
Before: nnUNetv2_plan_and_preprocess -d DATASET  and the baseline of the same fold (the frozen segmenter S):
        nnUNetv2_train DATASET 3d_fullres FOLD
Output: $nnUNet_results/DatasetXXX_Name/FreeTumorGenerator__<plans>__<configuration>/fold_<FOLD>/
        generator_final.safetensors (+ .json): what nnUNetTrainerFreeTumor loads; checkpoint_latest.safetensors
        (resume with --c); progress.json / progress.png (losses and the realism monitor over steps);
        montage_step_XXXXXX.png (the monitor's fixed tumors); training_log.txt; freetumor_config.json
Reading the monitor (every --monitor_every steps, on fixed synthetic tumors in held-out validation cases): the
        synthetic tumors' median contrast to the organ around them should approach the real lesions' (same sign,
        similar size); the share S labels tumor at the gate threshold should approach that of the validation
        split's real lesions (held_out_real_accept; S's own training lesions, real_accept, are an upper reference); the
        Frechet distance in S's features should fall into the same-distribution band. A warning in the log says
        when S recognises none of G's tumors, and what to try.
Defaults (see README 'Generator'): tumor-centred boxes, small G and C, L_seg = -log p (--seg_loss paper for Eq. 2),
        G starting from no change (--init zero), G sees the soft mask (--no_mask_input for the paper's image-only G).
Multi-GPU / multi-node: torchrun --nproc_per_node N $(which freetumor_train_generator) DATASET ...
        (--batch_size is the global batch; it is split over the processes)
Label pairs, window and mask sizes come from the FreeTumor config (see `freetumor_config -d DATASET`).
"""


def build_parser() -> argparse.ArgumentParser:
    d = GeneratorTrainingArgs.__dataclass_fields__
    p = argparse.ArgumentParser(
        prog="freetumor_train_generator",
        description="Adversarially train the FreeTumor generator G (Eq. 1-3 of the paper) on an nnU-Net preprocessed "
        "dataset: healthy organ regions get synthetic tumors that the frozen baseline segmenter S must recognise "
        "(L_seg) and a discriminator C must not tell from real tumors (L_cls).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dataset", help="dataset name or id (as for nnUNetv2_train)")
    p.add_argument("-c", "--configuration", default="3d_fullres", help="3-D nnU-Net configuration [3d_fullres]")
    p.add_argument("-p", "--plans", default="nnUNetPlans", help="plans identifier [nnUNetPlans]")
    p.add_argument("-f", "--fold", default="0", help="fold (0-4 or 'all'): the training split used [0]")
    _schedule_options(p.add_argument_group("schedule"), d)
    _loss_options(p.add_argument_group("losses"), d)
    _network_options(p.add_argument_group("networks and crops"), d)
    _run_options(p.add_argument_group("run"), d)
    return p


def _schedule_options(g, d) -> None:
    g.add_argument("--steps", type=int, default=d["steps"].default, help="optimizer steps [%(default)s]")
    g.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="instead of --steps: passes over the training cases with an organ (steps = epochs x ceil(cases / "
        "batch size))",
    )
    g.add_argument("--batch_size", type=int, default=d["batch_size"].default, help="global batch [%(default)s]")
    g.add_argument("--lr", type=float, default=d["lr"].default, help="AdamW learning rate of G, cosine [%(default)s]")
    g.add_argument("--lr_c", type=float, default=None, help="learning rate of the discriminator C [--lr]")
    g.add_argument("--seed", type=int, default=0, help="seed of weights, crops and masks [0]")


def _loss_options(g, d) -> None:
    g.add_argument(
        "--lambda_cls", type=float, default=d["lambda_cls"].default, help="weight of L_cls (chest: 0.5) [%(default)s]"
    )
    g.add_argument(
        "--losses", choices=LOSSES, default="both", help="loss ablation: L_seg + L_cls, L_seg only, L_cls only [both]"
    )
    g.add_argument(
        "--seg_loss",
        choices=SEG_LOSSES,
        default=d["seg_loss"].default,
        help="L_seg: nonsat = mean -log p (keeps a gradient where S sees no tumor), paper = Eq. 2, 1 - mean p "
        "[%(default)s]",
    )
    g.add_argument("--seg_warmup_steps", type=int, default=0, help="train G with L_seg alone for the first N steps [0]")


def _network_options(g, d) -> None:
    g.add_argument(
        "--init",
        choices=INITS,
        default=d["init"].default,
        help="G's last layer: zero = start from no change, random = the default initialisation [%(default)s]",
    )
    g.add_argument("--no_mask_input", action="store_true", help="G sees the image only (the paper's G)")
    g.add_argument(
        "--depth_input",
        action="store_true",
        help="G also sees each voxel's depth inside the tumor relative to the tumor's deepest voxel (an extra input "
        "channel), so it can paint a core and a rim at any tumor size",
    )
    g.add_argument(
        "--residual_blur",
        type=float,
        default=d["residual_blur"].default,
        help="sigma in voxels of the Gaussian (7 taps) that smooths tanh(G(x)), the authors' choice; 0 = none: G can "
        "then also flatten the organ's texture inside the tumor [%(default)s]",
    )
    g.add_argument(
        "--crop",
        choices=CROPS,
        default=d["crop"].default,
        help="tumor = each tumor's bounding box + --crop_margin_mm; patch = the whole --crop_size [%(default)s]",
    )
    g.add_argument(
        "--crop_margin_mm",
        type=float,
        default=None,
        help="context around each tumor, mm [the config's gate_bbox_margin_mm: S sees what the quality gate sees]",
    )
    g.add_argument(
        "--crop_size",
        type=int,
        nargs=3,
        default=None,
        help="the largest crop in voxels at the plan's spacing [min(96, patch size)]",
    )
    g.add_argument(
        "--gen_features",
        type=int,
        nargs="+",
        default=list(d["gen_features"].default),
        help="generator U-Net features per stage [%(default)s]",
    )
    g.add_argument(
        "--disc_features",
        type=int,
        nargs="+",
        default=list(d["disc_features"].default),
        help="discriminator U-Net features per stage [%(default)s]",
    )


def _run_options(g, d) -> None:
    g.add_argument(
        "--monitor_every",
        type=int,
        default=d["monitor_every"].default,
        help="steps between log lines, realism monitor and checkpoints [%(default)s]",
    )
    g.add_argument(
        "--monitor_n",
        type=int,
        default=d["monitor_n"].default,
        help="synthetic tumors in the monitor's fixed set [%(default)s]",
    )
    g.add_argument("--num_workers", type=int, default=0, help="data loading processes per process [0]")
    g.add_argument(
        "--device",
        choices=("cuda", "cpu", "mps"),
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="training device [cuda if available]",
    )
    g.add_argument("--no_amp", action="store_true", help="disable mixed precision on CUDA")
    g.add_argument(
        "--gate_checkpoint",
        default=None,
        help="frozen segmenter checkpoint [the config's gate_trainer baseline of this fold]",
    )
    g.add_argument(
        "--c",
        dest="continue_training",
        action="store_true",
        help="continue from checkpoint_latest.safetensors of this run (same --steps)",
    )


def main() -> int:
    args = build_parser().parse_args()

    def run() -> int:
        paths = env.nnunet_folders(env.PREPROCESSED, env.RESULTS)
        from nnunet_freetumor.generator.train import GeneratorTrainer

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
                steps=args.steps,
                epochs=args.epochs,
                batch_size=args.batch_size,
                lr=args.lr,
                lr_c=args.lr_c,
                lambda_cls=args.lambda_cls,
                losses=args.losses,
                seg_loss=args.seg_loss,
                seg_warmup_steps=args.seg_warmup_steps,
                init=args.init,
                mask_input=not args.no_mask_input,
                depth_input=args.depth_input,
                residual_blur=args.residual_blur,
                crop=args.crop,
                crop_margin_mm=args.crop_margin_mm,
                crop_size=tuple(args.crop_size) if args.crop_size else None,
                gen_features=tuple(args.gen_features),
                disc_features=tuple(args.disc_features),
                seed=args.seed,
                num_workers=args.num_workers,
                device=args.device,
                amp=not args.no_amp,
                monitor_every=args.monitor_every,
                monitor_n=args.monitor_n,
                gate_checkpoint=args.gate_checkpoint,
            )
            trainer = GeneratorTrainer(targs, paths[env.RESULTS], paths[env.PREPROCESSED])
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
