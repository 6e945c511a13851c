"""freetumor_make_demo_dataset: write the embedded phantom dataset in nnU-Net raw format."""

from __future__ import annotations

import argparse
import json
import os

from nnunet_freetumor.entrypoints._common import fail

EPILOG = """\
The dataset: a deterministic CT-like abdominal phantom in HU (air, body with fat and muscle, spine, a liver with
texture and enhanced vessels, optionally kidneys, correlated noise), anisotropic spacing. Labels: 0 background,
1 liver, 2 liver tumor (with --kidney: 3 kidney, 4 kidney tumor). Lesions are darker than parenchyma, irregular, in
four size classes by longest diameter: tiny 5-10 mm, small 10-20 mm, medium 20-40 mm, large 40-60 mm.
A share of the training cases (--healthy_fraction) has organ labels only: the healthy, "unlabeled" data FreeTumor
paints tumors into. Test cases (imagesTs/labelsTs) are rich in small lesions; one is healthy (patient specificity).
Per-case lesion lists are in phantom_cases.json. The same arguments always give the same files.

Next: nnUNetv2_plan_and_preprocess -d ID -c 3d_fullres --verify_dataset_integrity
"""


def main() -> int:
    p = argparse.ArgumentParser(
        prog="freetumor_make_demo_dataset",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write the FreeTumor phantom dataset (nnU-Net raw format).",
    )
    p.add_argument("-d", "--dataset_id", type=int, default=901, help="nnU-Net dataset id [901]")
    p.add_argument("--name", default="FreeTumorDemo", help="dataset name [FreeTumorDemo]")
    p.add_argument("--n_train", type=int, default=20, help="training cases [20]")
    p.add_argument("--n_test", type=int, default=6, help="test cases [6]")
    p.add_argument("--healthy_fraction", type=float, default=0.5, help="share of healthy training cases [0.5]")
    p.add_argument(
        "--shape",
        type=int,
        nargs=3,
        default=[32, 64, 64],
        metavar=("Z", "Y", "X"),
        help="image size in voxels [32 64 64]",
    )
    p.add_argument(
        "--spacing",
        type=float,
        nargs=3,
        default=[4.0, 2.5, 2.5],
        metavar=("Z", "Y", "X"),
        help="voxel size in mm [4 2.5 2.5]",
    )
    p.add_argument("--seed", type=int, default=0, help="seed [0]")
    p.add_argument("--kidney", action="store_true", help="add kidneys (labels 3, 4) with some kidney lesions")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset of the same id and name")
    p.add_argument("-o", "--output", default=None, help="nnU-Net raw folder [$nnUNet_raw]")
    a = p.parse_args()
    raw = a.output or os.environ.get("nnUNet_raw")
    if not raw:
        p.error("set nnUNet_raw (nnU-Net's raw data folder) or pass -o RAW_FOLDER")
    from nnunet_freetumor.phantom import make_demo_dataset

    try:
        folder = make_demo_dataset(
            raw,
            a.dataset_id,
            a.name,
            a.n_train,
            a.n_test,
            a.healthy_fraction,
            a.shape,
            a.spacing,
            a.seed,
            ("liver", "kidney") if a.kidney else ("liver",),
            a.overwrite,
            progress=True,
        )
    except (ValueError, FileExistsError) as e:
        fail(str(e))
    cases = json.loads((folder / "phantom_cases.json").read_text())
    train = [c for c in cases.values() if c["split"] == "train"]
    n_les = sum(len(c["lesions"]) for c in cases.values())
    print(
        f"wrote {folder}\n  training: {sum(c['healthy'] for c in train)} healthy + "
        f"{sum(not c['healthy'] for c in train)} with lesions; test: {len(cases) - len(train)}; {n_les} lesions\n"
        f"next: nnUNetv2_plan_and_preprocess -d {a.dataset_id} -c 3d_fullres --verify_dataset_integrity"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
