"""freetumor_config: show, adjust and save the FreeTumor config of a dataset."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from nnunet_freetumor import env
from nnunet_freetumor.config import (
    CHEST_WINDOW,
    CONFIG_FILENAME,
    OrganTumorPair,
    SizeClass,
    WindowConfig,
)
from nnunet_freetumor.entrypoints._common import fail, run_cli
from nnunet_freetumor.labels import check_pairs_against_dataset, config_for_dataset

EPILOG = f"""\
Where trainers and freetumor_train_generator look for the config (first found wins):
  1. the file in the environment variable {env.CONFIG}
  2. $nnUNet_preprocessed/DatasetXXX_Name/{CONFIG_FILENAME}   (what --write creates)
  3. inferred from dataset.json label names ("liver" + "liver tumor", "kidney" + "tumor", ...)
Examples:
  freetumor_config -d 3                                   # show what would be used
  freetumor_config -d 3 --pair 1:2 --write                # liver 1 -> tumor 2, saved for every later run
  freetumor_config -d 10 --chest --write                  # chest CT window, lesions brighter than lung
  freetumor_config -d 3 --size_class small:3-8 --size_class large:10-25:0.5 --write   # mask radii in mm
  freetumor_config -d 3 --gate_trainer nnUNetTrainerBaseline --write
  freetumor_config -d 4 --gate_dataset 3 --write          # dataset 4 = 3 + unlabeled scans: S is 3's baseline
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="freetumor_config",
        description="Show the FreeTumor config of a dataset (organ->tumor label pairs, HU window, mask sizes, "
        "synthesis probability, quality gate), change fields, and save it where the trainers find it.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-d", "--dataset", required=True, help="dataset name or id")
    p.add_argument(
        "--pair",
        action="append",
        metavar="ORGAN:TUMOR",
        help="organ label id -> tumor label id (repeat for several organs); replaces the pairs",
    )
    p.add_argument("--window", type=float, nargs=2, metavar=("HU_MIN", "HU_MAX"), help="generator HU window")
    p.add_argument("--polarity", type=int, choices=(-1, 1), help="-1: tumors darker than parenchyma, +1: brighter")
    p.add_argument(
        "--chest",
        action="store_true",
        help=f"chest preset: window {CHEST_WINDOW.hu_min:g}..{CHEST_WINDOW.hu_max:g} HU, lesions brighter (+1)",
    )
    p.add_argument(
        "--size_class",
        action="append",
        metavar="NAME:RMIN-RMAX[:WEIGHT]",
        help="a synthetic tumor size class, ellipsoid semi-axes in mm (repeat for several; replaces the classes; "
        "weight 1 by default). Size the masks like your lesions, e.g. --size_class small:5-10 --size_class large:20-30",
    )
    p.add_argument("--p_synthesis", type=float, help="probability that a healthy-organ crop gets a tumor")
    p.add_argument("--gate_threshold", type=float, help="quality gate threshold T")
    p.add_argument("--gate_trainer", help="trainer name of the frozen baseline used as gate [nnUNetTrainer]")
    p.add_argument(
        "--gate_dataset",
        help="dataset (name or id) whose baseline is the gate/loss model S [this dataset]; for a dataset made by "
        "freetumor_add_unlabeled -o, the labeled dataset it came from (same labels; its split's training cases must "
        "not be in this dataset's validation split: --make_split ensures that)",
    )
    p.add_argument("--write", action="store_true", help=f"save to $nnUNet_preprocessed/<dataset>/{CONFIG_FILENAME}")
    p.add_argument("-o", "--output", help="save to this file instead (use it through " + env.CONFIG + ")")
    return p


def parse_size_class(text: str) -> SizeClass:
    """``NAME:RMIN-RMAX[:WEIGHT]`` (mm) -> SizeClass; one clear error for anything else."""
    parts = text.split(":")
    try:
        if len(parts) not in (2, 3) or not parts[0]:
            raise ValueError
        lo, hi = (float(v) for v in parts[1].split("-"))
        weight = float(parts[2]) if len(parts) == 3 else 1.0
    except ValueError:
        fail(f"--size_class expects NAME:RMIN-RMAX[:WEIGHT] (radii in mm), got {text!r}")
    return SizeClass(parts[0], (lo, hi), weight)


def main() -> int:
    args = build_parser().parse_args()

    def run() -> int:
        from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

        pre = env.nnunet_folders(env.PREPROCESSED)[env.PREPROCESSED]
        try:
            name = maybe_convert_to_dataset_name(args.dataset)
        except RuntimeError as e:
            fail(f"{e}. Run nnUNetv2_plan_and_preprocess -d {args.dataset} first.")
        folder = Path(pre, name)
        if not (folder / "dataset.json").is_file():
            fail(
                f"{name} is not preprocessed yet ({folder / 'dataset.json'} is missing; the config is read and saved "
                f"there). Run nnUNetv2_plan_and_preprocess -d {args.dataset} first."
            )
        dataset_json = json.loads((folder / "dataset.json").read_text())
        cfg, source = config_for_dataset(dataset_json, folder, environ={} if args.pair else None)
        changes: dict = {}
        if args.pair:
            pairs = []
            for item in args.pair:
                try:
                    organ, tumor = (int(v) for v in item.split(":"))
                except ValueError:
                    fail(f"--pair expects ORGAN_ID:TUMOR_ID, got {item!r}")
                names = {v: k for k, v in dataset_json["labels"].items() if isinstance(v, int)}
                pairs.append(OrganTumorPair(organ, tumor, names.get(organ, "")))
            changes["pairs"] = tuple(pairs)
        window = CHEST_WINDOW if args.chest else cfg.window
        if args.window:
            window = WindowConfig(args.window[0], args.window[1], window.polarity)
        if args.polarity:
            window = WindowConfig(window.hu_min, window.hu_max, args.polarity)
        if window != cfg.window:
            changes["window"] = window
        if args.size_class:
            changes["mask"] = replace(cfg.mask, size_classes=tuple(parse_size_class(v) for v in args.size_class))
        for field in ("p_synthesis", "gate_threshold", "gate_trainer"):
            if getattr(args, field) is not None:
                changes[field] = getattr(args, field)
        if args.gate_dataset is not None:
            try:
                gate = maybe_convert_to_dataset_name(args.gate_dataset)
            except RuntimeError as e:
                fail(f"--gate_dataset: {e}")
            changes["gate_dataset"] = None if gate == name else gate
        if changes:
            cfg = cfg.replace(**changes)
            source += " + command-line changes"
        check_pairs_against_dataset(cfg, dataset_json)
        print(f"# FreeTumor config of {name} ({source})")
        print(json.dumps(cfg.to_dict(), indent=2))
        target = Path(args.output) if args.output else (folder / CONFIG_FILENAME if args.write else None)
        if target is not None:
            cfg.save(target)
            print(f"# saved to {target}")
        elif changes:
            print("# not saved: add --write (or -o FILE)")
        return 0

    return run_cli(run)


if __name__ == "__main__":
    raise SystemExit(main())
