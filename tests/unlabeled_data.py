"""The unlabeled-scan tests' data: a labeled dataset 980 in nnU-Net's three folders (the ``roots`` fixture of
conftest.py), synthetic CT cases, and the workflow run the way the command runs it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_freetumor.config import FreeTumorConfig, OrganTumorPair
from nnunet_freetumor.unlabeled.report import UnlabeledResult
from nnunet_freetumor.unlabeled.request import UnlabeledRequest
from nnunet_freetumor.unlabeled.workflow import UnlabeledPlan, add_unlabeled, plan_unlabeled

SRC = "Dataset980_Unl"
SHAPE = (12, 32, 32)  # z, y, x
SPACING = (3.0, 1.5, 1.5)  # z, y, x (mm): 6.75 mm^3 = 0.00675 ml per voxel
VOXEL_ML = 0.00675
LIVER = (slice(2, 10), slice(8, 24), slice(6, 22))  # 8 * 16 * 16 = 2048 voxels = 13.824 ml
CFG = FreeTumorConfig(pairs=(OrganTumorPair(1, 2, "liver"),))


def ct_case(seed: int, tumor: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(image int16 HU, labels uint8), (z, y, x): air around a soft-tissue body, a 110 HU liver, a darker tumor."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in SHAPE], indexing="ij")
    image = np.where(y**2 + x**2 <= 0.9, 40.0, -1000.0)
    labels = np.zeros(SHAPE, np.uint8)
    labels[LIVER] = 1
    image[LIVER] = 110.0
    if tumor:
        labels[5:8, 14:18, 10:14] = 2
        image[5:8, 14:18, 10:14] = 60.0
    return np.round(image + rng.normal(0, 8, SHAPE)).astype(np.int16), labels


def write(path: Path, array: np.ndarray, spacing=SPACING, origin=(1.0, 2.0, 3.0)) -> None:
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(tuple(float(s) for s in reversed(spacing)))
    img.SetOrigin(origin)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path), useCompression=True)


def read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def make_roots(tmp_path, monkeypatch) -> dict[str, Path]:
    """nnU-Net's three folders with the labeled dataset 980 (5 training cases, 1 test case); env set for nnU-Net."""
    out = {k: tmp_path / k for k in ("raw", "pre", "results")}
    for v in out.values():
        v.mkdir()
    for k, v in zip(("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"), out.values()):
        monkeypatch.setenv(k, str(v))
    monkeypatch.delenv("nnUNet_freetumor_config", raising=False)
    folder = out["raw"] / SRC
    for i in range(5):
        image, labels = ct_case(i, tumor=i % 2 == 1)
        write(folder / "imagesTr" / f"case_{i}_0000.nii.gz", image)
        write(folder / "labelsTr" / f"case_{i}.nii.gz", labels)
    image, labels = ct_case(99, tumor=True)
    write(folder / "imagesTs" / "test_0_0000.nii.gz", image)
    write(folder / "labelsTs" / "test_0.nii.gz", labels)
    dj = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "liver": 1, "liver tumor": 2},
        "numTraining": 5,
        "file_ending": ".nii.gz",
        "name": SRC,
        "licence": "test",
    }
    (folder / "dataset.json").write_text(json.dumps(dj, indent=4))
    (out["pre"] / SRC).mkdir()
    return out


def unlabeled(folder: Path, cases: dict[str, tuple[np.ndarray, np.ndarray]], masks: Path | None = None, **kw) -> Path:
    """Write ``{case}_0000.nii.gz`` images (and ``{case}.nii.gz`` masks into ``masks``)."""
    for case, (image, labels) in cases.items():
        write(folder / f"{case}_0000.nii.gz", image)
        if masks is not None:
            write(masks / f"{case}.nii.gz", labels, **kw)
    return folder


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``folder`` (hidden ones included)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def plan(roots, **kw) -> UnlabeledPlan:
    """The checked request (raises what the command would print)."""
    return plan_unlabeled(UnlabeledRequest(dataset=SRC, **kw), roots["raw"], roots["pre"], roots["results"])


def add(roots, **kw) -> UnlabeledResult:
    """Check and run the request."""
    return add_unlabeled(plan(roots, **kw), progress=False)
