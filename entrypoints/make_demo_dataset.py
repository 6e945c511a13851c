"""freetumor_make_demo_dataset: write the deterministic CT-like phantom as an nnU-Net v2 raw dataset."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from nnunet_freetumor import env
from nnunet_freetumor.dataset_conversion.phantom import LESION_APPEARANCES
from nnunet_freetumor.entrypoints._common import fail

DESCRIPTION = "Write the FreeTumor demo dataset: a deterministic CT-like abdominal phantom in nnU-Net v2 raw format."

_APPEARANCES = "\n".join(
    textwrap.fill(f"{k}: {v}", width=114, initial_indent="    ", subsequent_indent="      ")
    for k, v in LESION_APPEARANCES.items()
)

EPILOG = f"""\
the dataset:
  CT-like abdomen in Hounsfield units (air, body with fat and muscle, spine, a liver with texture and
  contrast-enhanced vessels, optionally two kidneys, correlated noise), anisotropic spacing, one channel "CT".
  labels: 0 background, 1 liver, 2 liver tumor (with --kidney also 3 kidney, 4 kidney tumor).
  lesions are irregular, inside their organ, in four size classes by longest diameter: tiny 5-10 mm,
  small 10-20 mm, medium 20-40 mm, large 40-60 mm. Their appearance (--lesions) is one of:
{_APPEARANCES}
  training cases (imagesTr/labelsTr): a share --healthy_fraction is healthy (organ labels only: the "unlabeled"
  data FreeTumor paints tumors into); the others carry 1-3 labeled lesions.
  test cases (imagesTs/labelsTs): rich in small lesions (2-4 per case), one in six (at least one) healthy when
  --n_test >= 4, for patient-level specificity.
  phantom_cases.json lists every lesion (size class, diameter in mm, volume, appearance, contrast in HU, pattern).
  The same arguments give the same files.

next:
  nnUNetv2_plan_and_preprocess -d 901 -c 3d_fullres --verify_dataset_integrity
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="freetumor_make_demo_dataset",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-d", "--dataset_id", type=int, default=901, help="nnU-Net dataset id, 1..999 [901]")
    p.add_argument("--name", default="FreeTumorDemo", help="dataset name: folder Dataset{ID}_{NAME} [FreeTumorDemo]")
    p.add_argument("--n_train", type=int, default=20, help="training cases, >= 2 [20]")
    p.add_argument("--n_test", type=int, default=6, help="test cases [6]")
    p.add_argument(
        "--healthy_fraction", type=float, default=0.5, help="share of healthy (lesion-free) training cases [0.5]"
    )
    p.add_argument(
        "--shape", type=int, nargs=3, default=[32, 64, 64], metavar=("Z", "Y", "X"), help="voxels [32 64 64]"
    )
    p.add_argument(
        "--spacing",
        type=float,
        nargs=3,
        default=[4.0, 2.5, 2.5],
        metavar=("Z", "Y", "X"),
        help="voxel size in mm [4 2.5 2.5]",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed, >= 0 [0]")
    p.add_argument("--kidney", action="store_true", help="add two kidneys (labels 3, 4) and some kidney lesions")
    p.add_argument(
        "--lesions",
        default="hypodense",
        metavar="{" + ",".join(LESION_APPEARANCES) + "}",
        help="appearance of the lesions, see below [hypodense]",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing dataset of this id and name (once the new one is done)",
    )
    p.add_argument("-o", "--output", metavar="RAW_ROOT", default=None, help="nnU-Net raw data folder [$nnUNet_raw]")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    raw = a.output or env.get(env.RAW)
    if not raw:
        fail(
            "no output folder: set the nnUNet_raw environment variable (nnU-Net's raw data folder) or pass -o RAW_ROOT"
        )
    from tqdm import tqdm

    from nnunet_freetumor.dataset_conversion.phantom import make_demo_dataset, summarize_cases

    def progress(cases):
        return tqdm(cases, desc="phantom cases", unit="case", disable=True if a.no_progress else None)

    try:
        folder = make_demo_dataset(
            raw,
            dataset_id=a.dataset_id,
            name=a.name,
            n_train=a.n_train,
            n_test=a.n_test,
            healthy_fraction=a.healthy_fraction,
            shape=a.shape,
            spacing=a.spacing,
            seed=a.seed,
            organs=("liver", "kidney") if a.kidney else ("liver",),
            overwrite=a.overwrite,
            progress=progress,
            lesions=a.lesions,
        )
    except (ValueError, OSError) as e:  # bad arguments, existing dataset, unwritable folder: one line, no traceback
        fail(str(e))
    except KeyboardInterrupt:
        fail("interrupted: nothing was written", code=130)
    counts = summarize_cases(json.loads((folder / "phantom_cases.json").read_text()))
    lines = [
        f"wrote {folder}",
        f"  training cases: {counts['train_healthy'] + counts['train_labeled']} "
        f"({counts['train_healthy']} healthy, {counts['train_labeled']} with lesions)",
        f"  test cases: {counts['test']} ({counts['test_healthy']} healthy); {counts['lesions']} lesions in all "
        "(see phantom_cases.json)",
    ]
    preprocessed = env.get(env.PREPROCESSED)
    if a.overwrite and preprocessed and (Path(preprocessed) / folder.name).exists():
        lines.append(
            f"  note: {Path(preprocessed) / folder.name} belongs to the replaced dataset: plan and preprocess again"
        )
    env_raw = env.get(env.RAW)
    if not env_raw or Path(env_raw).resolve() != Path(raw).resolve():
        lines.append(f"  note: nnU-Net finds the dataset only with nnUNet_raw={Path(raw).resolve()}")
    lines.append(f"next: nnUNetv2_plan_and_preprocess -d {a.dataset_id} -c 3d_fullres --verify_dataset_integrity")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
