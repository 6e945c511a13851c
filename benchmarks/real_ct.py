"""Real chest CT check: FreeTumor's generator and the handcrafted recipe on two real chest CT scans.

    python -m benchmarks.real_ct [--workdir DIR] [--results benchmarks/RESULTS.md] [--quick] [--data DIR]

The data are the two real chest CT scans with a real, manually drawn lesion that pyradiomics ships as test cases
(``../shared/data/real_ct``: lung1, a ~1.4 ml nodule; lung2, a ~48 ml mass). Every step uses the real command-line
tools, and steps that already finished in the workdir are skipped (an interrupted run continues where it stopped):

1. dataset   Dataset904_RealChestCT: each scan cropped in-plane to the body, resampled in-plane to 1.5 mm (slices
             stay 5 mm; Gaussian anti-aliasing, linear interpolation), lung masks derived (air below -400 HU inside
             the body, the largest air components not touching the in-plane border, small holes and vessels closed);
             labels 0 background, 1 lung, 2 lung lesion (the lesion overrides the lung). dataset.json with
             nnU-Net's generate_dataset_json. A PNG of the masks for checking.
2. plan      nnUNetv2_plan_and_preprocess -c 3d_fullres with a small GPU-memory target so that the patch is CPU-sized
             (plans name nnUNetPlansCPU, nnU-Net's advice for a changed target).
3. config    freetumor_config -d 904 --chest --gate_trainer nnUNetTrainerBaseline --write, then chest lesion size
             classes and chest-scaled handcrafted HU offsets written into the same JSON (FreeTumorConfig).
4. baseline  nnUNetv2_train 904 3d_fullres all -tr nnUNetTrainerBaseline (short schedule, CPU): the frozen segmenter S.
             Two cases make no 5-fold split: fold "all" everywhere (S is trained and validated on both scans).
5. generator freetumor_train_generator 904 -f all --lambda_cls 0.5 (the chest code's value), small networks.
6. export    freetumor_synthesize --cases all --n_per_case K for the generator, the handcrafted recipe with the chest
             offsets, and the handcrafted recipe with its default (abdominal) offsets. Both scans contain a real
             lesion: --cases all paints into their lung label only, so a synthetic lesion never overlaps the real one
             (it may touch it) and the real lesion keeps its label.
7. report    lesion HU statistics, contrast to the surrounding lung and edge sharpness for real vs synthetic lesions,
             how the frozen S sees them (the gate's P), the Fréchet distance in S's features (nnunet_freetumor.realism)
             with a within-method reference at the same N, a montage (same HU window for all), and the section
             "## Real chest CT check" of RESULTS.md (replaced on every run; --quick writes "... (quick)").

--quick runs the same pipeline at smoke-test size (3 mm in-plane, one epoch of a few iterations, a tiny generator):
minutes, numbers meaningless.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from benchmarks.common import claim_workdir, fmt, mean_sd, sh, write_section
from nnunet_freetumor.realism.measures import (  # RING_MM: "surrounding lung": lung voxels within this distance of it
    RING_MM,
    measure_all,
)

DATASET_ID = 904
NAME = "RealChestCT"
DATASET = f"Dataset{DATASET_ID}_{NAME}"
PLANS = "nnUNetPlansCPU"
CONFIGURATION = "3d_fullres"
FOLD = "all"
TITLE = "## Real chest CT check"
CASES = ("lung1", "lung2")
LABELS = {"background": 0, "lung": 1, "lung lesion": 2}
LUNG, LESION = 1, 2
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_ct"


@dataclass(frozen=True)
class Export:
    key: str  # short name for files and tables
    row: str  # table row
    method: str  # freetumor_synthesize --method
    dataset_id: int
    default_handcrafted: bool = False  # use the handcrafted defaults (abdominal offsets) instead of the chest ones


EXPORTS = (
    Export("generator", "generator", "generator", 905),
    Export("handcrafted", "handcrafted (chest offsets)", "handcrafted", 906),
    Export("handcraftedDefault", "handcrafted (default offsets)", "handcrafted", 907, default_handcrafted=True),
)

PRESETS = {
    # the real check: about 15-20 min on 2 CPU cores
    "full": dict(
        inplane_mm=1.5,
        gpu_memory_target=0.2,
        epochs=10,
        iters=10,
        val_iters=1,
        gen_epochs=30,
        gen_batch=2,
        gen_lr=5e-4,
        gen_features=(16, 32, 64, 128),
        disc_features=(8, 16, 32),
        gen_crop=(16, 48, 48),
        gen_steps=None,
        n_per_case=8,
    ),
    # smoke test: minutes, numbers meaningless
    "quick": dict(
        inplane_mm=3.0,
        gpu_memory_target=0.2,
        epochs=1,
        iters=2,
        val_iters=1,
        gen_epochs=1,
        gen_batch=2,
        gen_lr=5e-4,
        gen_features=(4, 8, 16),
        disc_features=(4, 8),
        gen_crop=(8, 32, 32),
        gen_steps=1,
        n_per_case=3,
    ),
}

# Chest lesion size classes (ellipsoid semi-axes in mm). The defaults are the abdominal ones of METHOD.md (up to 60 mm
# semi-axes, i.e. 12 cm tumors). Lung lesions are called nodules below 30 mm and masses above; the size classes follow
# the usual cut points of lung-cancer staging (10/20/30 mm diameter) and cap masses at 60 mm diameter, which still
# covers both real lesions here (~14 mm and ~60 mm longest diameter).
CHEST_SIZE_CLASSES = (
    ("tiny", (4.0, 6.0)),  # 8-12 mm nodules
    ("small", (6.0, 10.0)),  # 12-20 mm nodules
    ("medium", (10.0, 15.0)),  # 20-30 mm nodules
    ("mass", (15.0, 30.0)),  # 30-60 mm masses
)
# SyntheticTumors' HU offsets (65-145 HU) are made for liver tumors; a solid lung lesion (about -100..+100 HU) in
# aerated lung (about -850 HU) is 700-900 HU brighter. The handcrafted texture averages ~0.41 (measured on the default
# texture settings), so offsets of 1700-2200 HU give a mean lesion offset of ~700-900 HU. Chosen from these textbook
# values, not fitted to the two lesions.
CHEST_HANDCRAFTED_HU = (1700.0, 2200.0)
N_REFERENCE_SPLITS = 50


# --- small helpers -------------------------------------------------------------------------------------------------


class Timer:
    """Seconds per stage, kept in the workdir so that a resumed run still reports the time of the skipped stages."""

    def __init__(self, path: Path):
        self.path = path
        self.times: dict[str, float] = json.loads(path.read_text()) if path.is_file() else {}
        self.ran: set[str] = set()

    @contextlib.contextmanager
    def stage(self, name: str):
        t0 = time.time()
        print(f"--- {name}", flush=True)
        yield
        self.times[name] = time.time() - t0
        self.ran.add(name)
        self.path.write_text(json.dumps(self.times, indent=1) + "\n")
        print(f"--- {name}: {self.times[name]:.0f} s", flush=True)


def train_then_stop(cmd: list, env: dict, log: Path, fold: Path, poll_s: float = 2.0) -> None:
    """Run nnUNetv2_train and stop it (its own process group, by id) as soon as its training log says "Training
    done." (written after checkpoint_final.pth). What is skipped is nnU-Net's final validation: a sliding-window
    prediction of the training scans with 8-fold mirroring, which on 2 CPU cores takes longer than all other steps
    together, and with fold "all" it would only re-predict the training cases (S's view of the real lesions is
    measured in the report instead)."""
    import signal
    import subprocess

    print(f"$ {' '.join(map(str, cmd))}", flush=True)
    t_start = time.time()
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(map(str, cmd))}\n")
        f.flush()
        proc = subprocess.Popen(
            [str(c) for c in cmd], env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            while proc.poll() is None:
                time.sleep(poll_s)
                logs = [x for x in fold.glob("training_log_*.txt") if x.stat().st_mtime >= t_start - 1]
                if (fold / "checkpoint_final.pth").is_file() and any("Training done." in x.read_text() for x in logs):
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(timeout=60)
                    f.write("(stopped by real_ct.py after 'Training done.': final validation skipped)\n")
                    return
        except BaseException:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            raise
    if proc.returncode:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(map(str, cmd))}; see {log}")


def largest_components(mask: np.ndarray, n: int, structure=None) -> list[np.ndarray]:
    comps, k = ndimage.label(mask, structure=structure)
    if k == 0:
        return []
    sizes = ndimage.sum_labels(np.ones_like(comps), comps, index=np.arange(1, k + 1))
    order = np.argsort(sizes)[::-1][:n]
    return [comps == (i + 1) for i in order]


def per_slice(fn, mask: np.ndarray) -> np.ndarray:
    return np.stack([fn(s) for s in mask])


def disk(radius_px: int) -> np.ndarray:
    r = np.arange(-radius_px, radius_px + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius_px**2


# --- 1. dataset ----------------------------------------------------------------------------------------------------


def body_mask(hu: np.ndarray) -> np.ndarray:
    """The patient: above -500 HU, the largest 3-D component, holes filled slice by slice (lungs included)."""
    (body,) = largest_components(hu > -500, 1)
    return per_slice(ndimage.binary_fill_holes, body)


def lung_mask(hu: np.ndarray, body: np.ndarray, spacing: tuple[float, float, float]) -> tuple[np.ndarray, dict]:
    """Air below -400 HU inside the body; the two largest 3-D components that do not touch the in-plane image border
    (the lungs usually run through the first and last slice, so the slice axis is not a border); the second only if it
    has at least 15 % of the first's volume (otherwise the lungs are joined, e.g. through the trachea, and the second
    would be bowel gas); closed with a 3 mm disk and holes filled slice by slice (vessels and nodules inside)."""
    air = (hu < -400) & body
    comps, k = ndimage.label(air)
    border = np.zeros_like(air)
    border[:, [0, -1], :] = True
    border[:, :, [0, -1]] = True
    touching = set(np.unique(comps[border & (comps > 0)]).tolist())
    sizes = ndimage.sum_labels(np.ones_like(comps), comps, index=np.arange(1, k + 1))
    order = [int(i) + 1 for i in np.argsort(sizes)[::-1] if int(i) + 1 not in touching]
    keep = order[:1]
    if len(order) > 1 and sizes[order[1] - 1] >= 0.15 * sizes[order[0] - 1]:
        keep.append(order[1])
    lung = np.isin(comps, keep)
    radius = max(1, int(round(3.0 / spacing[1])))
    lung = per_slice(lambda s: ndimage.binary_closing(s, structure=disk(radius), border_value=0), lung)
    lung = per_slice(ndimage.binary_fill_holes, lung) & body
    voxel_ml = float(np.prod(spacing)) / 1000
    info = {
        "components_kept": len(keep),
        "component_volumes_ml": [round(float(sizes[i - 1]) * voxel_ml, 1) for i in keep],
        "lung_volume_ml": round(float(lung.sum()) * voxel_ml, 1),
    }
    return lung, info


def resample_inplane(arr: np.ndarray, spacing_in: float, spacing_out: float, n_out: tuple[int, int]) -> np.ndarray:
    """Linear resampling of a (z, y, x) float array in-plane from ``spacing_in`` to ``spacing_out`` mm: the output's
    outer pixel edges coincide with the input's first edge (pixel j's centre at (j + 0.5) * out - 0.5 * in)."""
    j = [(np.arange(n) + 0.5) * spacing_out / spacing_in - 0.5 for n in n_out]
    yy, xx = np.meshgrid(j[0], j[1], indexing="ij")
    return np.stack([ndimage.map_coordinates(s, [yy, xx], order=1, mode="nearest") for s in arr])


def prepare_case(image_path: Path, label_path: Path, inplane_mm: float):
    """Read one scan, crop to the body, resample in-plane, derive the lung; returns (hu int16, labels uint8, geometry
    dict for SimpleITK, info dict). Arrays in SimpleITK's (z, y, x) order."""
    import SimpleITK as sitk

    img, lab = sitk.ReadImage(str(image_path)), sitk.ReadImage(str(label_path))
    if img.GetSize() != lab.GetSize() or not np.allclose(img.GetSpacing(), lab.GetSpacing()):
        raise SystemExit(f"{image_path} and {label_path} differ in geometry")
    hu = sitk.GetArrayFromImage(img).astype(np.float32)
    lesion = sitk.GetArrayFromImage(lab) > 0
    sx, sy, sz = img.GetSpacing()
    if not np.isclose(sx, sy):
        raise SystemExit(f"{image_path}: expected square pixels, got {sx} x {sy} mm")
    body = body_mask(hu)
    ys, xs = np.nonzero(body.any(0))
    margin = int(np.ceil(5.0 / sx))
    y0, y1 = max(ys.min() - margin, 0), min(ys.max() + 1 + margin, hu.shape[1])
    x0, x1 = max(xs.min() - margin, 0), min(xs.max() + 1 + margin, hu.shape[2])
    hu, lesion = hu[:, y0:y1, x0:x1], lesion[:, y0:y1, x0:x1]
    n_out = (int(round((y1 - y0) * sx / inplane_mm)), int(round((x1 - x0) * sx / inplane_mm)))
    # anti-aliasing: the extra blur that turns the input pixel's width into the output pixel's (FWHM), in pixels
    sigma_px = np.sqrt(max(inplane_mm**2 - sx**2, 0.0)) / 2.3548 / sx
    smooth = np.stack([ndimage.gaussian_filter(s, sigma_px) for s in hu])
    hu_r = np.clip(np.round(resample_inplane(smooth, sx, inplane_mm, n_out)), -1024, 3071).astype(np.int16)
    lesion_r = resample_inplane(lesion.astype(np.float32), sx, inplane_mm, n_out) >= 0.5
    spacing = (sz, inplane_mm, inplane_mm)  # (z, y, x)
    body_r = body_mask(hu_r.astype(np.float32))
    lung, lung_info = lung_mask(hu_r, body_r, spacing)
    labels = np.zeros(hu_r.shape, dtype=np.uint8)
    labels[lung] = LUNG
    labels[lesion_r] = LESION
    direction = np.array(img.GetDirection()).reshape(3, 3)
    # new pixel (0, 0) centre in the old (x, y) index frame: crop start + half an output pixel - half an input pixel
    shift_xy = np.array([x0, y0]) * sx + (inplane_mm - sx) / 2
    origin = np.array(img.GetOrigin()) + direction @ np.array([shift_xy[0], shift_xy[1], 0.0])
    geometry = {
        "spacing": (inplane_mm, inplane_mm, sz),
        "origin": tuple(float(v) for v in origin),
        "direction": img.GetDirection(),
    }
    info = {
        "source_shape_zyx": list(sitk.GetArrayFromImage(img).shape),
        "source_spacing_zyx_mm": [round(sz, 3), round(sy, 4), round(sx, 4)],
        "crop_yx": [[int(y0), int(y1)], [int(x0), int(x1)]],
        "shape_zyx": list(hu_r.shape),
        "spacing_zyx_mm": list(spacing),
        "antialias_sigma_px": round(float(sigma_px), 2),
        "lesion_ml_source": round(float(lesion.sum()) * sx * sy * sz / 1000, 2),
        "lesion_ml": round(float(lesion_r.sum()) * float(np.prod(spacing)) / 1000, 2),
        "lesion_voxels": int(lesion_r.sum()),
        **lung_info,
        "lesion_outside_lung_share": round(float((lesion_r & ~lung).sum()) / max(int(lesion_r.sum()), 1), 3),
    }
    return hu_r, labels, geometry, info


def write_image(array: np.ndarray, geometry: dict, path: Path) -> None:
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(array)
    img.SetSpacing(geometry["spacing"])
    img.SetOrigin(geometry["origin"])
    img.SetDirection(geometry["direction"])
    sitk.WriteImage(img, str(path), useCompression=True)


def mask_png(cases: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> None:
    """Axial slices (25/50/75 % of the slices and the lesion's centre) with the lung (blue) and lesion (red)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(cases), 4, figsize=(14, 3.4 * len(cases)), squeeze=False)
    for r, (case, (hu, labels)) in enumerate(cases.items()):
        zc = int(round(np.argwhere(labels == LESION)[:, 0].mean()))
        for c, z in enumerate([hu.shape[0] // 4, hu.shape[0] // 2, 3 * hu.shape[0] // 4, zc]):
            ax = axes[r, c]
            ax.imshow(hu[z], cmap="gray", vmin=-1000, vmax=500)
            for lab, color in ((LUNG, "tab:blue"), (LESION, "red")):
                if (labels[z] == lab).any():
                    ax.contour(labels[z] == lab, levels=[0.5], colors=color, linewidths=0.7)
            ax.set_title(f"{case} slice {z}" + (" (lesion centre)" if c == 3 else ""), fontsize=9)
            ax.axis("off")
    fig.suptitle("derived labels: lung (blue), real lesion (red); window -1000..500 HU", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def build_dataset(data: Path, raw: Path, inplane_mm: float, png: Path) -> dict:
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    from nnunet_freetumor.utilities.files import staged_folder

    infos, shown = {}, {}
    with staged_folder(raw / DATASET) as tmp:
        (tmp / "imagesTr").mkdir()
        (tmp / "labelsTr").mkdir()
        for case in CASES:
            hu, labels, geometry, info = prepare_case(
                data / f"{case}_image.nrrd", data / f"{case}_label.nrrd", inplane_mm
            )
            write_image(hu, geometry, tmp / "imagesTr" / f"{case}_0000.nii.gz")
            write_image(labels, geometry, tmp / "labelsTr" / f"{case}.nii.gz")
            infos[case] = info
            shown[case] = (hu, labels)
            print(f"{case}: {info}", flush=True)
        generate_dataset_json(
            str(tmp),
            {0: "CT"},
            LABELS,
            len(CASES),
            ".nii.gz",
            dataset_name=DATASET,
            description="Two real chest CT scans with a real lesion each (pyradiomics 3.1.0 test data lung1/lung2, "
            "BSD-3-Clause); body-cropped, resampled in-plane, lung masks derived by thresholding "
            "(benchmarks/real_ct.py)",
            reference="pyradiomics test data (data/lung1_*, data/lung2_*)",
            licence="BSD-3-Clause",
        )
        (tmp / "preparation.json").write_text(json.dumps(infos, indent=1) + "\n")
    mask_png(shown, png)
    return infos


# --- the pipeline --------------------------------------------------------------------------------------------------


class RealCT:
    def __init__(self, work: Path, p: dict, data: Path, timer: Timer):
        self.work, self.p, self.data, self.timer = work, p, data, timer
        self.raw, self.pre, self.results = work / "nnUNet_raw", work / "nnUNet_preprocessed", work / "nnUNet_results"
        self.log = work / "commands.log"
        self.env = {
            **os.environ,
            "nnUNet_raw": str(self.raw),
            "nnUNet_preprocessed": str(self.pre),
            "nnUNet_results": str(self.results),
            "nnUNet_def_n_proc": "2",
            "nnUNet_n_proc_DA": "0",
            "nnUNet_compile": "f",
            "nnUNet_freetumor_epochs": str(p["epochs"]),
            "nnUNet_freetumor_iters": str(p["iters"]),
            "nnUNet_freetumor_val_iters": str(p["val_iters"]),
            "nnUNet_freetumor_seed": "0",
        }
        for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
            os.environ[k] = self.env[k]  # for the in-process steps (nnU-Net reads them at import)

    def dataset(self, png: Path) -> None:
        if (self.raw / DATASET / "dataset.json").is_file():
            return
        with self.timer.stage("dataset"):
            build_dataset(self.data, self.raw, self.p["inplane_mm"], png)

    def plan(self) -> None:
        data = self.pre / DATASET / f"{PLANS}_{CONFIGURATION}"
        if len(list(data.glob("*.pkl"))) == len(CASES):
            return
        with self.timer.stage("plan_preprocess"):
            sh(
                [
                    "nnUNetv2_plan_and_preprocess",
                    "-d",
                    DATASET_ID,
                    "-c",
                    CONFIGURATION,
                    "-np",
                    2,
                    "-npfp",
                    2,
                    "-gpu_memory_target",
                    self.p["gpu_memory_target"],
                    "-overwrite_plans_name",
                    PLANS,
                    "--verify_dataset_integrity",
                ],
                # nnU-Net's planner calls torch.set_num_threads(nnUNet_n_proc_DA), which fails for 0
                {**self.env, "nnUNet_n_proc_DA": "2"},
                self.log,
            )

    def config(self):
        """The CLI's chest preset, then the chest size classes and handcrafted offsets (idempotent)."""
        from nnunet_freetumor.config import CONFIG_FILENAME, FreeTumorConfig, SizeClass

        sh(
            ["freetumor_config", "-d", DATASET_ID, "--chest", "--gate_trainer", "nnUNetTrainerBaseline", "--write"],
            self.env,
            self.log,
        )
        path = self.pre / DATASET / CONFIG_FILENAME
        cfg = FreeTumorConfig.load(path)
        w = 1.0 / len(CHEST_SIZE_CLASSES)
        mask = cfg.mask.__class__(
            **{
                **{f: getattr(cfg.mask, f) for f in cfg.mask.__dataclass_fields__},
                "size_classes": tuple(SizeClass(n, r, w) for n, r in CHEST_SIZE_CLASSES),
            }
        )
        hand = cfg.handcrafted.__class__(
            **{
                **{f: getattr(cfg.handcrafted, f) for f in cfg.handcrafted.__dataclass_fields__},
                "hu_difference": CHEST_HANDCRAFTED_HU,
            }
        )
        cfg = cfg.replace(mask=mask, handcrafted=hand)
        cfg.save(path)
        default_hand = cfg.replace(handcrafted=cfg.handcrafted.__class__())
        default_hand.save(self.work / "config_handcrafted_default.json")
        return cfg

    def baseline(self) -> Path:
        """nnUNetv2_train ... all -tr nnUNetTrainerBaseline, stopped once training is done (see train_then_stop)."""
        fold = self.results / DATASET / f"nnUNetTrainerBaseline__{PLANS}__{CONFIGURATION}" / f"fold_{FOLD}"
        if (fold / "checkpoint_final.pth").is_file():
            return fold
        with self.timer.stage("baseline"):
            cmd = [
                "nnUNetv2_train",
                DATASET_ID,
                CONFIGURATION,
                FOLD,
                "-tr",
                "nnUNetTrainerBaseline",
                "-p",
                PLANS,
                "-device",
                "cpu",
            ]
            if (fold / "checkpoint_latest.pth").is_file():
                cmd.append("--c")
            train_then_stop(cmd, self.env, self.log, fold)
        return fold

    def generator(self) -> Path:
        out = self.results / DATASET / f"FreeTumorGenerator__{PLANS}__{CONFIGURATION}" / f"fold_{FOLD}"
        if (out / "generator_final.safetensors").is_file():
            return out
        p = self.p
        with self.timer.stage("generator"):
            cmd = [
                "freetumor_train_generator",
                DATASET_ID,
                "-p",
                PLANS,
                "-f",
                FOLD,
                *(["--steps", p["gen_steps"]] if p["gen_steps"] else ["--epochs", p["gen_epochs"]]),
                "--batch_size",
                p["gen_batch"],
                "--lambda_cls",
                0.5,
                "--lr",
                p["gen_lr"],
                "--crop_size",
                *p["gen_crop"],
                "--gen_features",
                *p["gen_features"],
                "--disc_features",
                *p["disc_features"],
                "--seed",
                0,
                "--device",
                "cpu",
                "--num_workers",
                0,
            ]
            if (out / "checkpoint_latest.safetensors").is_file():
                cmd.append("--c")
            sh(cmd, self.env, self.log)
        return out

    def export_folder(self, e: Export) -> Path:
        return self.raw / f"Dataset{e.dataset_id:03d}_{NAME}_{e.key}"

    def export(self, e: Export) -> Path:
        folder = self.export_folder(e)
        if (folder / "synthesis_log.json").is_file():
            return folder
        env = dict(self.env)
        if e.default_handcrafted:
            env["nnUNet_freetumor_config"] = str(self.work / "config_handcrafted_default.json")
        with self.timer.stage(f"export_{e.key}"):
            sh(
                [
                    "freetumor_synthesize",
                    "-d",
                    DATASET_ID,
                    "-p",
                    PLANS,
                    "-f",
                    FOLD,
                    "--method",
                    e.method,
                    "--cases",
                    "all",
                    "--n_per_case",
                    self.p["n_per_case"],
                    "--seed",
                    0,
                    "-o",
                    e.dataset_id,
                    "--name",
                    f"{NAME}_{e.key}",
                    "--device",
                    "cpu",
                    "--no_progress",
                ],
                env,
                self.log,
            )
        return folder


# --- 7. measurements -----------------------------------------------------------------------------------------------


def frechet(exports: dict[str, Path], src, segmenter) -> dict:
    """realism_report_for (what `freetumor_turing fid` computes) per export (key -> folder), plus a within-method
    reference: the FD between N_real randomly drawn lesions of the same method and the rest of that method's lesions
    (same N_real, same F): what the number looks like when both sets come from one distribution."""
    from nnunet_freetumor.config import FreeTumorConfigError
    from nnunet_freetumor.realism.frechet import realism_report_for, same_distribution_fds
    from nnunet_freetumor.realism.lesions import crop_size, lesion_crops, synthetic_lesions

    out = {}
    rng = np.random.default_rng(0)
    size = crop_size(src.patch_size)
    for key, folder in exports.items():
        les = synthetic_lesions(folder)
        try:
            rep = realism_report_for(src, folder, segmenter)
        except FreeTumorConfigError as err:  # fewer than 2 lesions of >= 10 voxels (--quick's coarse grid)
            out[key] = {"error": str(err), "n_synthetic": len(les), "reference_fd": []}
            continue
        feats = segmenter.features(lesion_crops(les, src.transpose_forward, src.spacing, size)).numpy()
        rep["reference_fd"] = same_distribution_fds(feats, rep["n_real"], N_REFERENCE_SPLITS, rng)
        out[key] = rep
    return out


# --- montage -------------------------------------------------------------------------------------------------------


def montage(rc: RealCT, measures: dict, cfg, path: Path, n_show: int = 6) -> None:
    """Real lesions (top row), then for the same synthetic masks (one column each): the scan before synthesis, the
    generator, the handcrafted recipe with chest and with default offsets. Axial slice through each lesion's centre,
    window = the config's (-1000..500 HU), square pixels, field of view 2.5 x the lesion's longest diameter (at least
    48 mm); the red ticks point at the lesion centre (no outline, so that the edge stays visible)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nnunet_freetumor.realism.turing import axial_crop
    from nnunet_freetumor.utilities.image_io import read_image

    window = (cfg.window.hu_min, cfg.window.hu_max)
    size_px = 128
    cache: dict[Path, tuple[np.ndarray, tuple]] = {}

    def panel(image: Path, centre, fov: float) -> np.ndarray:
        if image not in cache:
            cache.clear()
            arr, sp, _ = read_image(image)
            cache[image] = (arr, sp)
        arr, sp = cache[image]
        return axial_crop(arr, sp, centre, fov, size_px, fill=window[0])

    def fov_for(rec: dict) -> float:
        return float(max(48.0, 2.5 * rec["diameter_mm"]))

    # synthetic columns: alternate source cases, the same output case (= the same mask) in every method's row
    gen = measures["generator"]
    by_case = {c: [r for r in gen if r["source_case"] == c] for c in CASES}
    cols = []
    for k in range(n_show):
        pool = by_case[CASES[k % 2]]
        if k // 2 < len(pool):
            cols.append(pool[k // 2]["case"])
    rows = [("before", None)] + [(e.row, e) for e in EXPORTS]
    ncol = max(len(cols), len(measures["real"]))
    fig, axes = plt.subplots(1 + len(rows), ncol, figsize=(2.2 * ncol, 2.4 * (1 + len(rows))), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")

    def show(ax, img, title):
        ax.imshow(img, cmap="gray", vmin=window[0], vmax=window[1])
        for x, y, mk in ((size_px / 2, -1.5, "v"), (size_px / 2, size_px + 0.5, "^")):
            ax.plot([x], [y], marker=mk, color="red", ms=4, clip_on=False)
        for x, y, mk in ((-1.5, size_px / 2, ">"), (size_px + 0.5, size_px / 2, "<")):
            ax.plot([x], [y], marker=mk, color="red", ms=4, clip_on=False)
        ax.set_xlim(-0.5, size_px - 0.5)
        ax.set_ylim(size_px - 0.5, -0.5)
        ax.set_title(title, fontsize=7)

    raw_images = {c: rc.raw / DATASET / "imagesTr" / f"{c}_0000.nii.gz" for c in CASES}
    for j, rec in enumerate(measures["real"]):
        img = panel(raw_images[rec["case"]], rec["centre"], fov_for(rec))
        show(axes[0, j], img, f"REAL {rec['case']}\n{rec['volume_ml']:.1f} ml, {rec['mean_hu']:.0f} HU")
    for j, case in enumerate(cols):
        for i, (label, e) in enumerate(rows, start=1):
            ref = next(r for r in gen if r["case"] == case)
            fov = fov_for(ref)
            if e is None:
                img = panel(raw_images[ref["source_case"]], ref["centre"], fov)
                show(axes[i, j], img, f"before ({ref['source_case']})\n{ref['size_class']}, {fov:.0f} mm")
                continue
            recs = [r for r in measures[e.key] if r["case"] == case]
            if not recs:
                continue
            rec = recs[0]
            img = panel(rc.export_folder(e) / "imagesTr" / f"{case}_0000.nii.gz", rec["centre"], fov)
            show(axes[i, j], img, f"{label}\n{rec['volume_ml']:.1f} ml, {rec['mean_hu']:.0f} HU")
    fig.suptitle(
        f"real vs synthetic lung lesions, axial, window {window[0]:g}..{window[1]:g} HU; columns 2+ below: the same "
        "mask painted by each method",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# --- report --------------------------------------------------------------------------------------------------------


MEASURE_COLUMNS = (
    ("volume_ml", "volume ml", 1),
    ("diameter_mm", "diameter mm", 0),
    ("mean_hu", "mean HU", 0),
    ("sd_hu", "sd HU", 0),
    ("p5_hu", "p5 HU", 0),
    ("p95_hu", "p95 HU", 0),
    ("ring_organ_hu", f"lung ≤{RING_MM:g} mm HU", 0),
    ("contrast_hu", "contrast HU", 0),
    ("edge_gradient_hu_per_mm", "edge gradient HU/mm", 0),
    ("edge_width_mm", "edge width mm", 1),
    ("gate_p", "S: P", 2),
)


def fd_reading(fd: dict) -> list[str]:
    """One sentence per run that says whether the FDs stand out from their within-method references."""
    inside = [
        e.row
        for e in EXPORTS
        if "error" not in fd[e.key]
        and fd[e.key]["reference_fd"]
        and fd[e.key]["frechet_distance"] <= np.percentile(fd[e.key]["reference_fd"], 95)
    ]
    if not inside:
        return []
    return [
        "",
        f"Here the FD of {', '.join(inside)} against the real lesions lies within the 5th-95th percentile range of the "
        "method's own reference (two of its lesions against the rest): in S's features the real lesions are not "
        "farther from these synthetic ones than synthetic lesions are from each other, so the FD does not separate "
        "the methods on these data (the crops are mostly lung around the lesion, and see the next paragraph on S).",
    ]


def s_reading(measures: dict, gen_history: list, threshold: float = 0.7) -> list[str]:
    """What the frozen S's recognition of the real lesions means for the gate, L_seg and the FD."""
    real_p = [r["gate_p"] for r in measures["real"]]
    if all(p >= threshold for p in real_p):
        return []
    text = (
        f"S labels {', '.join(f'{p:.2f}' for p in real_p)} of the two real lesions (its own training lesions) as "
        f"lesion, below the gate's T = {threshold}: after this short CPU schedule S has learned the lung but not the "
        "lesions. So on these data the quality gate would reject real lesions too, "
    )
    if gen_history:
        first, last = gen_history[0]["loss_seg"], gen_history[-1]["loss_seg"]
        text += f"the segmentation-guided loss went from {first:.2f} to {last:.2f} during generator training (1 = S "
        text += (
            "sees no lesion in the synthetic one: G got little signal from S, what it learned came mostly from the "
            "discriminator), "
            if last > 0.9
            else "sees no lesion in the synthetic one), "
        )
    text += "and the FD is computed in the features of a network that does not yet respond to lesions."
    return ["", text]


def data_paragraph(p: dict, infos: dict, mask_png_path: Path) -> str:
    """The **Data** paragraph: how the two scans were cropped, resampled and labelled."""
    return (
        "**Data.** The two real chest CT scans of `../shared/data/real_ct` (pyradiomics' test cases, each with one "
        "manually drawn lesion). Each scan was cropped in-plane to the body (threshold -500 HU, largest component, "
        "+5 mm), Gaussian anti-aliased and linearly resampled in-plane to "
        f"{p['inplane_mm']:g} mm (slices stay 5 mm): "
        + "; ".join(
            f"{c} {i['source_shape_zyx'][2]}×{i['source_shape_zyx'][1]}×{i['source_shape_zyx'][0]} at "
            f"{i['source_spacing_zyx_mm'][2]}×{i['source_spacing_zyx_mm'][1]}×{i['source_spacing_zyx_mm'][0]} mm → "
            f"{i['shape_zyx'][2]}×{i['shape_zyx'][1]}×{i['shape_zyx'][0]} (x×y×z), lesion {i['lesion_ml_source']} ml → "
            f"{i['lesion_ml']} ml, lung {i['lung_volume_ml']:.0f} ml from {i['components_kept']} component(s)"
            for c, i in infos.items()
        )
        + ". Lungs: air below -400 HU inside the body, the largest 3-D components not touching the in-plane border "
        "(the second one only if ≥ 15 % of the first), closed with a 3 mm disk and holes filled slice by slice. "
        f"Labels 0 background, 1 lung, 2 lung lesion (lesion overrides lung). Masks: [{mask_png_path.name}]"
        f"({mask_png_path.name})."
    )


def models_paragraphs(p: dict, plan: dict, pseudo_dice: list, gen_history: list, n_written: dict) -> list[str]:
    """The **Models**, **Synthetic lesions** and **What S and G learned** paragraphs."""
    cm = plan["configurations"][CONFIGURATION]
    return [
        f"**Models.** `nnUNetv2_plan_and_preprocess -gpu_memory_target {p['gpu_memory_target']:g} "
        f"-overwrite_plans_name {PLANS}` (nnU-Net's default planner and network, a CPU-sized patch): "
        f"spacing {cm['spacing']} mm, patch {cm['patch_size']}, "
        f"batch {cm['batch_size']}. Fold `all` everywhere (two cases make no 5-fold split). Baseline = frozen "
        f"segmenter S: `nnUNetTrainerBaseline`, {p['epochs']} epochs × {p['iters']} iterations on CPU. Generator: "
        f"`freetumor_train_generator -f all --lambda_cls 0.5 --lr {p['gen_lr']:g}`, {p['gen_epochs']} epochs of batch "
        f"{p['gen_batch']} "
        f"(every epoch = one batch: one healthy-lung crop and one real-lesion crop per sample), crops "
        f"{list(p['gen_crop'])}, G {list(p['gen_features'])}, C {list(p['disc_features'])}. Config: "
        "`freetumor_config --chest` (window -1000..500 HU, lesions brighter), plus chest size classes (ellipsoid "
        "semi-axes " + ", ".join(f"{n} {r[0]:g}-{r[1]:g} mm" for n, r in CHEST_SIZE_CLASSES) + ", 0.25 each; the "
        "default classes reach 60 mm semi-axes, 12 cm abdominal tumors, larger than a lung lesion and than the real "
        "mass here) and, for the handcrafted recipe, HU offsets "
        f"{CHEST_HANDCRAFTED_HU[0]:g}-{CHEST_HANDCRAFTED_HU[1]:g} (× a texture averaging ~0.4: a mean offset of "
        "~700-900 HU, solid lesion vs aerated lung from textbook values, not fitted to these lesions). The "
        "handcrafted recipe with its default offsets (65-145 HU, made for darker liver tumors) is shown as well: it "
        "is what `--chest` alone gives.",
        "",
        f"**Synthetic lesions.** `freetumor_synthesize --cases all --n_per_case {p['n_per_case']}` per method, same "
        "seed, no gate: both scans hold a real lesion, and `--cases all` paints into their lung label only, so a "
        "synthetic lesion never overlaps the real one (it can touch it) and the real lesion keeps its label. With "
        "the same seed every method gets the same masks. Written: "
        + ", ".join(f"{e.row} {n_written[e.key]}" for e in EXPORTS)
        + ".",
        "",
        "**What S and G learned.** "
        + (
            "The baseline's last pseudo Dice (nnU-Net's estimate on a few patches of the same two scans): "
            + ", ".join(f"{n} {v:.2f}" for n, v in zip(("lung", "lesion"), pseudo_dice))
            + "; its view of each lesion is the column S: P below. "
            if pseudo_dice
            else ""
        )
        + "nnU-Net's final validation (a sliding-window prediction of the two training scans with 8-fold mirroring, "
        "longer on 2 CPU cores than all other steps together) is skipped: the script stops `nnUNetv2_train` after "
        "`checkpoint_final.pth` is written. "
        + (
            f"Generator, last epoch: L_seg {gen_history[-1]['loss_seg']:.3f}, L_cls {gen_history[-1]['loss_cls']:.3f}, "
            f"share of its training tumors the gate would accept {gen_history[-1]['gate_accept']:.2f} "
            f"(mean over the last 5 epochs {np.mean([h['gate_accept'] for h in gen_history[-5:]]):.2f}; "
            f"first epoch {gen_history[0]['gate_accept']:.2f})."
            if gen_history
            else ""
        ),
    ]


def measures_table(measures: dict) -> list[str]:
    """Per-lesion measures: the real lesions one by one, each method's nodules and masses as mean ± sd."""
    real = measures["real"]
    lines = [
        f"Per lesion: HU inside the lesion (hard mask), the lung within {RING_MM:g} mm around it (lung label, other "
        "lesions excluded), contrast = lesion mean − that ring's mean, mean in-plane gradient magnitude on both sides "
        "of the lesion contour (HU/mm, the 5 mm slice axis left out) and edge width ≈ |contrast| / edge gradient "
        "(smaller = sharper); S: P = share of the lesion the frozen S labels as lesion on a lesion-centred box (the "
        "quality gate's Eq. 4; T = 0.7). Real lesions one by one; synthetic: mean ± sd over lesions, split at 30 mm "
        "longest diameter (nodule / mass).",
        "",
        "| lesions | N | " + " | ".join(c[1] for c in MEASURE_COLUMNS) + " |",
        "|---|---|" + "---|" * len(MEASURE_COLUMNS),
    ]
    for r in real:
        lines.append(f"| real {r['case']} | 1 | " + " | ".join(fmt(r[k], d) for k, _, d in MEASURE_COLUMNS) + " |")
    for e in EXPORTS:
        recs = measures[e.key]
        for label, sel in (
            ("nodules < 30 mm", [r for r in recs if r["diameter_mm"] < 30]),
            ("masses ≥ 30 mm", [r for r in recs if r["diameter_mm"] >= 30]),
        ):
            if sel:
                lines.append(
                    f"| {e.row}, {label} | {len(sel)} | "
                    + " | ".join(mean_sd([r[k] for r in sel], d) for k, _, d in MEASURE_COLUMNS)
                    + " |"
                )
    touching = {
        e.key: sum(1 for r in measures[e.key] if (r.get("distance_to_real_lesion_mm") or np.inf) <= RING_MM)
        for e in EXPORTS
    }
    lines += [
        "",
        f"Synthetic lesions within {RING_MM:g} mm of the scan's real lesion: "
        + ", ".join(f"{e.row} {touching[e.key]}/{len(measures[e.key])}" for e in EXPORTS)
        + ".",
    ]
    return lines


def fd_table(fd: dict) -> list[str]:
    """The Fréchet distances real vs synthetic with each method's same-distribution reference."""
    lines = [
        "Fréchet distance between real and synthetic lesions in S's bottleneck features (`realism_report_for`, what "
        "`freetumor_turing fid` computes: lesion-centred crops at the plan spacing, global-average-pooled deepest "
        "encoder stage). Reference: the FD between N_real lesions drawn at random from the same method and the rest "
        f"of that method's lesions ({N_REFERENCE_SPLITS} draws; median [5th-95th percentile]), i.e. the value two "
        "sets from one distribution give at this N and F.",
        "",
        "| synthetic | N real | N synthetic | F | crop (voxels) | FD real vs synthetic | reference FD, same method |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in EXPORTS:
        r = fd[e.key]
        if "error" in r:
            lines.append(f"| {e.row} | | {r['n_synthetic']} | | | n/a: {r['error']} | |")
            continue
        ref = r["reference_fd"]
        ref_s = f"{np.median(ref):.3g} [{np.percentile(ref, 5):.3g}-{np.percentile(ref, 95):.3g}]" if ref else "n/a"
        lines.append(
            f"| {e.row} | {r['n_real']} | {r['n_synthetic']} | {r['n_features']} | {r['crop_size']} | "
            f"{r['frechet_distance']:.3g} | {ref_s} |"
        )
    any_fd = next((r for r in fd.values() if "error" not in r), {"n_real": 2, "n_features": "F"})
    lines += [
        "",
        f"With N_real = {any_fd['n_real']} and F = {any_fd['n_features']} the real lesions' covariance has rank "
        f"{any_fd['n_real'] - 1}: it is singular (regularised with a small diagonal), the FD is dominated by the "
        "two real lesions' own spread and their mean, and it changes with N. It can rank the methods on these data, "
        "no more; it is not comparable with published FIDs.",
    ]
    return lines


def limits_and_times(elapsed: dict, ran: set) -> list[str]:
    """What two scans can show, and the stage times."""
    total = sum(elapsed.values())
    lines = [
        "**What two scans can and cannot show.** They show that the pipeline runs end to end on real CT with real "
        "lesions (real HU, real noise and anatomy, 5 mm slices, a chest window and polarity +1), what the synthetic "
        "lesions look like next to real ones in the same window, and whether their intensity, contrast and edges "
        "fall in the range of the two real lesions. They cannot show realism in any statistical sense: there are two "
        "real lesions (one small nodule, one large mass), so the 'real' rows are two single measurements, not a "
        "distribution; the segmenter S and the generator were both trained on the same two scans (fold all: S's "
        "P and Dice on the real lesions are training-set numbers, and S's features, the FD's feature space, were "
        "shaped by exactly these two lesions); the schedules are minutes on a CPU, so S is a weak gate and the "
        "generator is far from converged; the FD with N_real = 2 is a rough number whose reference row shows how "
        "large it is even between two samples of one method. No segmentation benefit can be measured with two "
        "cases (nothing is left to test on). The derived lung masks are threshold masks (airways may be included, "
        "hilar vessels excluded), good enough to place lesions, not an anatomical reference.",
        "",
        "| stage | time |",
        "|---|---|",
    ]
    for k, v in elapsed.items():
        lines.append(f"| {k} | {v / 60:.1f} min{'' if k in ran else ' (earlier run)'} |")
    lines.append(f"| total | {total / 60:.1f} min |")
    lines.append("")
    return lines


def report(
    rc: RealCT,
    p: dict,
    preset: str,
    infos: dict,
    plan: dict,
    measures: dict,
    fd: dict,
    pseudo_dice: list,
    gen_history: list,
    png: Path,
    mask_png_path: Path,
    elapsed: dict,
    ran: set,
    n_written: dict,
) -> str:
    """The RESULTS.md section: data, models, per-lesion measures, Fréchet distances, what they can show, times."""
    title = TITLE + (" (quick)" if preset == "quick" else "")
    total = sum(elapsed.values())
    return "\n".join(
        [
            title,
            "",
            f"Generated by `python -m benchmarks.real_ct{' --quick' if preset == 'quick' else ''}` on "
            f"{platform.machine()}, {os.cpu_count()} CPU threads, device cpu; stage times in the last table "
            f"({total / 60:.1f} min in all).",
            "",
            data_paragraph(p, infos, mask_png_path),
            "",
            *models_paragraphs(p, plan, pseudo_dice, gen_history, n_written),
            "",
            *measures_table(measures),
            "",
            *fd_table(fd),
            *fd_reading(fd),
            *s_reading(measures, gen_history),
            "",
            f"![real vs synthetic lesions]({png.name})",
            "",
            *limits_and_times(elapsed, ran),
        ]
    )


def baseline_pseudo_dice(fold: Path) -> list[float]:
    """The last "Pseudo dice [...]" of the baseline's training logs (nnU-Net's per-epoch estimate on a few
    validation patches; with fold all these are patches of the same two training scans), one value per label."""
    import re

    values: list[float] = []
    for log in sorted(fold.glob("training_log_*.txt")):
        for line in log.read_text().splitlines():
            if "Pseudo dice" in line:
                inner = line.split("Pseudo dice", 1)[1]
                values = [float(v) for v in re.findall(r"-?\d+\.\d*(?:e-?\d+)?|nan", inner)]
    return values


def mask_png_of_dataset(rc: RealCT, path: Path) -> None:
    """The masks figure drawn from the written dataset (``build_dataset`` draws it while it writes)."""
    from nnunet_freetumor.utilities.image_io import read_image

    mask_png(
        {
            c: (
                read_image(rc.raw / DATASET / "imagesTr" / f"{c}_0000.nii.gz")[0],
                read_image(rc.raw / DATASET / "labelsTr" / f"{c}.nii.gz")[0],
            )
            for c in CASES
        },
        path,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke-test size (minutes; numbers meaningless)")
    ap.add_argument("--workdir", default=None, help="[benchmarks/work_real_ct, or work_real_ct_quick]")
    ap.add_argument("--results", default=str(Path(__file__).with_name("RESULTS.md")))
    ap.add_argument(
        "--data", default=str(DEFAULT_DATA), help=f"folder with lung{{1,2}}_{{image,label}}.nrrd [{DEFAULT_DATA}]"
    )
    a = ap.parse_args()
    preset = "quick" if a.quick else "full"
    p = PRESETS[preset]
    data = Path(a.data)
    missing = [f"{c}_{k}.nrrd" for c in CASES for k in ("image", "label") if not (data / f"{c}_{k}.nrrd").is_file()]
    if missing:
        raise SystemExit(f"error: {data} lacks {', '.join(missing)} (see --data)")
    work = Path(a.workdir or Path(__file__).with_name("work_real_ct" + ("_quick" if a.quick else ""))).resolve()
    claim_workdir(work, p, "cpu")
    results_md = Path(a.results)
    suffix = "_quick" if a.quick else ""
    png = results_md.with_name(f"real_ct{suffix}_montage.png")
    mask_png_path = results_md.with_name(f"real_ct{suffix}_masks.png")
    timer = Timer(work / "timings.json")
    rc = RealCT(work, p, data, timer)

    rc.dataset(mask_png_path)
    if not mask_png_path.is_file():  # e.g. another --results than the run that built the dataset
        mask_png_of_dataset(rc, mask_png_path)
    rc.plan()
    cfg = rc.config()
    fold = rc.baseline()
    gen_folder = rc.generator()
    for e in EXPORTS:
        rc.export(e)

    with timer.stage("analysis"):
        from nnunet_freetumor.export.log import read_synthesis_log
        from nnunet_freetumor.segmenter import load_segmenter
        from nnunet_freetumor.utilities.dataset import planned_dataset

        src = planned_dataset(str(DATASET_ID), rc.raw, rc.pre, PLANS, CONFIGURATION)
        assert src.cfg == cfg, "the config on disk is not the one this script wrote"
        segmenter = load_segmenter(src.cfg, **src.model_key(), fold=FOLD, results=rc.results)
        exports = {e.key: rc.export_folder(e) for e in EXPORTS}
        measures = measure_all(exports, src, segmenter, organ=LUNG, lesion=LESION)
        fd = frechet(exports, src, segmenter)
        montage(rc, measures, src.cfg, png)
        infos = json.loads((rc.raw / DATASET / "preparation.json").read_text())
        plan = json.loads((rc.pre / DATASET / f"{PLANS}.json").read_text())
        history = (
            json.loads((gen_folder / "progress.json").read_text()) if (gen_folder / "progress.json").is_file() else []
        )
        n_written = {e.key: len(read_synthesis_log(rc.export_folder(e))["cases"]) for e in EXPORTS}
        (work / "real_ct.json").write_text(
            json.dumps({"preset": preset, "params": p, "measures": measures, "frechet": fd}, indent=1, default=str)
            + "\n"
        )
    section = report(
        rc,
        p,
        preset,
        infos,
        plan,
        measures,
        fd,
        baseline_pseudo_dice(fold),
        history,
        png,
        mask_png_path,
        timer.times,
        timer.ran,
        n_written,
    )
    title = TITLE + (" (quick)" if a.quick else "")
    # "\n": the full run's title must not match the start of the quick run's section title
    write_section(results_md, section, title + "\n")
    print(section)


if __name__ == "__main__":
    sys.exit(main())
