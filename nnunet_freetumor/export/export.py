"""Offline synthesis export (``freetumor_synthesize``): synthetic-tumor cases written as a new nnU-Net raw dataset,
for users of other frameworks (online synthesis during nnU-Net training is what the trainers do; METHOD.md: online
matters, so this is the second-best use of the method).

Per healthy training case of the source dataset (raw files, HU, native spacing):

1. a tumor mask is drawn in millimetres inside a healthy organ (``synthesis.masks.sample_tumor_mask`` at the native
   spacing) and softened (``synthesis.masks.soft_masks``, sigma ~ U(mask.edge_sigma_mm), clipped to the organ);
2. a box around it is cut out: the generator's crop rule (``synthesis.boxes.CropRule`` from its checkpoint: the mask
   plus the margin it was trained with, capped at its largest crop, all in millimetres); handcrafted: the mask plus
   ``max(gate_bbox_margin_mm, 4 sigma_max)`` on every side (clipped to the image);
3. **generator**: the box (image trilinearly, the soft mask too) is resampled to the generator's spacing (the plan's),
   normalized as the generator was trained (its metadata's CT normalization, clipping included), and Eq. 1 is applied
   (``synthesis.residual.generator_synthesis``). The HU difference it made (soft mask x residual, never clipped) is
   resampled back to the native box and added where the native soft mask is > 0.
   **handcrafted**: SyntheticTumors' textured HU offset directly at the native spacing, in HU.
   Either way every voxel where the native soft mask is 0 keeps its original value bit for bit;
4. ``--gate``: the frozen baseline S judges the tumor on the plan-spacing box, normalized with the plan's CT
   normalization, exactly as the generator produced it (handcrafted: the native result resampled to the plan spacing),
   with the hard mask resampled to the plan spacing (trilinear >= 0.5). P (Eq. 4) >= T keeps the case; otherwise a new
   mask is drawn, up to ``MAX_TRIES`` times, and the case is reported as rejected;
5. the tumor label of the organ is written on the hard-mask voxels.

Arrays are processed in the plan's axis order (``transpose_forward``, so that spacings, masks and networks see what
nnU-Net's preprocessing shows them) and written back in the file's order. Images are written as float32 when the
source is an integer type (sub-HU differences survive; the original values are exactly representable), labels with
the source's pixel type. Only datasets that nnU-Net reads with SimpleITK (.nii.gz, .nrrd, .mha, .gipl) and one input
channel are supported: the output keeps each source file's geometry (origin, direction, spacing).

The output folder is built in a hidden temporary sibling and renamed at the end: an error leaves no partial dataset.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nnunet_freetumor.config import CONFIG_FILENAME, FreeTumorConfig, FreeTumorConfigError
from nnunet_freetumor.labels import healthy_organs
from nnunet_freetumor.plots import Example, save_montage
from nnunet_freetumor.segmenter import FrozenSegmenter, load_segmenter
from nnunet_freetumor.synthesis.boxes import CropRule
from nnunet_freetumor.synthesis.handcrafted import handcrafted_synthesis, handcrafted_texture
from nnunet_freetumor.synthesis.intensity import CTNormalization
from nnunet_freetumor.synthesis.masks import choose_size_class, sample_tumor_mask, soft_masks
from nnunet_freetumor.synthesis.pipeline import judge
from nnunet_freetumor.synthesis.residual import generator_synthesis
from nnunet_freetumor.utilities.dataset import raw_training_cases, source_dataset
from nnunet_freetumor.utilities.files import new_dataset_folder, staged_folder
from nnunet_freetumor.utilities.image_io import check_same_grid, read_image, write_like

SYNTHESIS_LOG = "synthesis_log.json"
MASKS_FOLDER = "synthetic_masksTr"
PNG_FOLDER = "synthesis_png"
METHODS = ("generator", "handcrafted")
CASE_SELECTIONS = ("healthy", "all")
MAX_TRIES = 5  # masks drawn per output case when the gate rejects
GRID_FIX = "resample the label file to its image, or run nnUNetv2_plan_and_preprocess --verify_dataset_integrity"
# HU in, HU out: a CT normalization that is the identity and never clips (handcrafted synthesis works in HU)
HU_IDENTITY = CTNormalization(mean=0.0, std=1.0, lower=-np.inf, upper=np.inf)


# --- geometry ------------------------------------------------------------------------------------------------------


def size_at_spacing(shape: Sequence[int], spacing: Sequence[float], target_spacing: Sequence[float]) -> tuple[int, ...]:
    """Voxels per axis of a box of ``shape`` voxels at ``spacing`` (mm) resampled to ``target_spacing`` (rounded)."""
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target_spacing))


def resample(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Trilinear resampling of (B, C, X, Y, Z) to (B, C, *size) with ``align_corners=False``: the box's outer faces
    stay where they are (n voxels at spacing s become m voxels at spacing n*s/m, the target spacing up to rounding).
    Returns the input itself when the size does not change (bit-exact round trips at equal spacings)."""
    size = tuple(int(s) for s in size)
    if tuple(x.shape[2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="trilinear", align_corners=False)


def resample_mask(mask: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Boolean (X, Y, Z) mask -> boolean mask of ``size``: trilinear occupancy >= 0.5. A non-empty mask that would
    vanish (smaller than the new voxels) becomes the new voxels that contain its voxel centres."""
    occ = resample(mask[None, None].float(), size)[0, 0]
    out = occ >= 0.5
    if not bool(out.any()) and bool(mask.any()):
        scale = torch.tensor([t / n for t, n in zip(size, mask.shape)], dtype=torch.float64)
        idx = ((torch.nonzero(mask).cpu().double() + 0.5) * scale).long()
        idx = torch.minimum(idx, torch.tensor(list(size)) - 1)
        out[tuple(idx.T.to(out.device))] = True
    return out


def unclipped(norm: CTNormalization) -> CTNormalization:
    """The same normalization without the clip window (maps back to HU without losing what is outside it)."""
    return replace(norm, lower=-np.inf, upper=np.inf)


# --- synthesis in a box --------------------------------------------------------------------------------------------


def generator_box(
    generator: torch.nn.Module,
    hu: torch.Tensor,
    soft: torch.Tensor,
    organ_index: int,
    spacing: Sequence[float],
    generator_spacing: Sequence[float],
    norm: CTNormalization,
    cfg: FreeTumorConfig,
    divisor: Sequence[int],
    mask_input: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 1 with the generator on a native-spacing box (``mask_input``: a mask-conditioned generator).

    hu, soft: (X, Y, Z) float32 HU and soft mask at ``spacing`` (mm), on the generator's device. The box is resampled
    to ``generator_spacing``, normalized with ``norm`` (the generator's training normalization: its input is clipped
    to that window exactly as in training), synthesized, and the HU difference (never clipped) is resampled back and
    added where ``soft > 0``. Returns (synthesized box at the native spacing, equal to ``hu`` bit for bit where
    ``soft == 0``; synthesized box in HU at the generator's spacing, as the generator made it).
    """
    size = size_at_spacing(hu.shape, spacing, generator_spacing)
    hu_g = resample(hu[None, None], size)
    soft_g = resample(soft[None, None], size).clamp(0, 1)
    x = norm.from_hu(hu_g)
    wide = unclipped(norm)  # Eq. 1's result mapped back to HU without the plan's clipping
    index = torch.tensor([organ_index], device=hu.device)
    x_hat = generator_synthesis(generator, x, soft_g, index, wide, cfg.window, divisor, mask_input)
    diff_g = wide.to_hu(x_hat) - wide.to_hu(x)
    diff = resample(diff_g, hu.shape)[0, 0]
    return torch.where(soft > 0, hu + diff, hu), (hu_g + diff_g)[0, 0]


def handcrafted_box(
    hu: torch.Tensor, soft: torch.Tensor, spacing: Sequence[float], cfg: FreeTumorConfig, rng: np.random.Generator
) -> torch.Tensor:
    """SyntheticTumors' textured HU offset on a native-spacing (X, Y, Z) HU box; unchanged where ``soft == 0``."""
    gen = torch.Generator(device=hu.device).manual_seed(int(rng.integers(0, 2**31 - 1)))
    texture = handcrafted_texture(hu.shape, spacing, cfg.handcrafted, gen, hu.device)
    difference = float(rng.uniform(*cfg.handcrafted.hu_difference))
    return handcrafted_synthesis(hu, soft, texture, difference, HU_IDENTITY, cfg.window.polarity)


# --- the export ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportRequest:
    """What ``freetumor_synthesize`` was asked to do (see its --help)."""

    dataset: str
    out_id: int
    configuration: str = "3d_fullres"
    plans: str = "nnUNetPlans"
    fold: str = "0"
    method: str = "generator"
    generator: str | None = None  # default: the conventional generator_final.safetensors of dataset/plans/config/fold
    gate: bool = False
    gate_checkpoint: str | None = None  # default: the config's gate_trainer baseline of the fold
    gate_threshold: float | None = None  # default: the config's
    n_per_case: int = 1
    seed: int = 0
    name: str | None = None  # default: <source name>_<method>
    cases: str = "healthy"
    overwrite: bool = False
    device: str = "cpu"


@dataclass
class Attempt:
    """One drawn and synthesized tumor (plan axis order)."""

    organ: int
    size_class: str
    edge_sigma_mm: float
    mask: np.ndarray  # (X, Y, Z) bool, whole case
    box: tuple[slice, ...]
    hu_box: torch.Tensor  # synthesized native box (HU, float32, CPU)
    p: float | None = None
    accepted: bool = True


@dataclass
class ExportResult:
    folder: Path
    written: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    skipped_cases: list[str] = field(default_factory=list)


class OfflineExport:
    """Checks everything and loads the models in ``__init__`` (nothing is written before ``run``)."""

    def __init__(
        self,
        req: ExportRequest,
        raw_root: str | os.PathLike,
        preprocessed_root: str | os.PathLike,
        results_root: str | os.PathLike | None,
    ):
        self.req = req
        if req.method not in METHODS:
            raise FreeTumorConfigError(f"--method must be one of {METHODS}, got {req.method!r}")
        if req.cases not in CASE_SELECTIONS:
            raise FreeTumorConfigError(f"--cases must be one of {CASE_SELECTIONS}, got {req.cases!r}")
        if req.n_per_case < 1:
            raise FreeTumorConfigError(f"--n_per_case must be >= 1, got {req.n_per_case}")
        if req.device == "cuda" and not torch.cuda.is_available():
            raise FreeTumorConfigError("--device cuda, but no CUDA GPU is available: use --device cpu")
        self.device = torch.device(req.device)
        src = source_dataset(req.dataset, raw_root, preprocessed_root, req.plans, req.configuration)
        self.src = src
        self.name, self.raw, self.dataset_json = src.name, src.raw, src.dataset_json
        self.plan_spacing = src.spacing
        self.transpose_forward, self.transpose_backward = src.transpose_forward, src.transpose_backward
        cfg, self.cfg_source = src.cfg, src.cfg_source
        if req.gate_threshold is not None:
            cfg = cfg.replace(gate_threshold=float(req.gate_threshold))
            self.cfg_source += f" + --gate_threshold {req.gate_threshold}"
        self.cfg = cfg
        self.cases = raw_training_cases(self.raw, self.dataset_json)
        self.target = self._target(Path(raw_root), preprocessed_root, results_root)
        self.crop_rule = CropRule(max(cfg.gate_bbox_margin_mm, 4 * cfg.mask.edge_sigma_mm[1]))
        self.generator = None
        self.generator_path: Path | None = None
        if req.method == "generator":
            self._load_generator(results_root)
        self.seg: FrozenSegmenter | None = None
        if req.gate:
            self._load_gate(results_root)

    # --- set-up -----------------------------------------------------------------------------------------------------
    def _target(self, raw_root: Path, preprocessed_root, results_root) -> Path:
        req = self.req
        name = req.name or f"{self.name.split('_', 1)[1]}_{req.method}"
        return new_dataset_folder(
            raw_root,
            req.out_id,
            name,
            other_roots=(preprocessed_root, results_root),
            source=self.name,
            overwrite=req.overwrite,
        )

    def _load_generator(self, results_root) -> None:
        from nnunet_freetumor.generator.checkpoint import (
            find_generator,
            generator_crop_rule,
            load_compatible_generator,
        )
        from nnunet_freetumor.generator.networks import divisor, mask_input

        req = self.req
        where = {"dataset_name": self.name, "plans": req.plans, "configuration": req.configuration, "fold": req.fold}
        path = find_generator(
            results_root,
            **where,
            override=req.generator,
            alternatives=" (or pass --generator, or use --method handcrafted)",
        )
        self.generator, meta = load_compatible_generator(path, self.cfg, **where, device=self.device)
        self.generator_path = path
        self.generator_divisor = divisor(meta["generator"])
        self.generator_spacing = tuple(float(s) for s in meta["spacing"])
        self.generator_norm = CTNormalization(**meta["normalization"])
        self.generator_mask_input = mask_input(meta["generator"])
        self.crop_rule = generator_crop_rule(meta, self.cfg)

    def _load_gate(self, results_root) -> None:
        req = self.req
        self.seg = load_segmenter(
            self.cfg,
            **self.src.model_key(),
            fold=req.fold,
            checkpoint=req.gate_checkpoint,
            device=self.device,
            results=results_root,
        )

    # --- one case ---------------------------------------------------------------------------------------------------
    def candidate_organs(self, labels: np.ndarray) -> list[int]:
        """Organs that may get a tumor: healthy ones (``--cases healthy``) or every one present (``all``)."""
        if self.req.cases == "healthy":
            return healthy_organs(labels, self.cfg)
        return [o for o in self.cfg.organ_labels if int((labels == o).sum()) >= self.cfg.mask.min_organ_voxels]

    def attempt(
        self, image: np.ndarray, labels: np.ndarray, spacing: Sequence[float], organs: list[int], rng
    ) -> Attempt | None:
        """Draw one tumor and synthesize it (plan axis order; ``spacing`` is the native spacing in that order).
        None when the organ has no room for a tumor centre."""
        cfg = self.cfg
        organ = int(organs[int(rng.integers(len(organs)))])
        size_class = choose_size_class(cfg.mask, rng)
        organ_mask = labels == organ
        mask = sample_tumor_mask(organ_mask, spacing, cfg.mask, rng, size_class)
        if mask is None:
            return None
        sigma = float(rng.uniform(*cfg.mask.edge_sigma_mm))
        box = self.crop_rule.box(mask, spacing)
        hu = torch.from_numpy(image[box].astype(np.float32)).to(self.device)
        m = torch.from_numpy(mask[box]).to(self.device)
        soft = soft_masks(
            m[None, None], torch.from_numpy(organ_mask[box]).to(self.device)[None, None], [sigma], spacing
        )
        soft = soft[0, 0]
        plan_hu = None
        with torch.no_grad():
            if self.generator is not None:
                out, gen_hu = generator_box(
                    self.generator,
                    hu,
                    soft,
                    cfg.organ_labels.index(organ),
                    spacing,
                    self.generator_spacing,
                    self.generator_norm,
                    cfg,
                    self.generator_divisor,
                    self.generator_mask_input,
                )
                if np.allclose(self.generator_spacing, self.plan_spacing):
                    plan_hu = gen_hu
            else:
                out = handcrafted_box(hu, soft, spacing, cfg, rng)
        finite = bool(torch.isfinite(out).all())
        result = Attempt(organ, size_class.name, sigma, mask, box, out.cpu(), accepted=finite)
        if self.seg is not None:
            if plan_hu is None:
                plan_hu = resample(out[None, None], size_at_spacing(out.shape, spacing, self.plan_spacing))[0, 0]
            plan_mask = resample_mask(m, plan_hu.shape)
            with torch.no_grad():
                logits = self.seg.segment_hu(plan_hu[None, None])
            p, accept = judge(
                logits,
                plan_mask[None, None].to(logits.device),
                cfg.tumor_labels,
                cfg.gate_threshold,
                torch.tensor([finite], device=logits.device),
            )
            result.p, result.accepted = float(p[0]), bool(accept[0])
        return result

    def _case_rng(self, identifier: str, k: int) -> np.random.Generator:
        return np.random.default_rng([self.req.seed, zlib.crc32(identifier.encode()), k])

    # --- everything -------------------------------------------------------------------------------------------------
    def run(self, progress: bool = True) -> ExportResult:
        from tqdm import tqdm

        req = self.req
        result = ExportResult(self.target)
        for case in self.cases:  # headers only: a bad case stops the export before any synthesis
            check_same_grid(case.identifier, case.image, case.label, "label file", GRID_FIX)
        with staged_folder(self.target) as tmp:
            for sub in ("imagesTr", "labelsTr", MASKS_FOLDER, PNG_FOLDER):
                (tmp / sub).mkdir()
            for case in tqdm(self.cases, desc=f"synthesizing ({req.method})", disable=not progress):
                image_raw, spacing_raw, image_ref = read_image(case.image)
                labels_raw, _, label_ref = read_image(case.label)
                tf = self.transpose_forward
                image = image_raw.transpose(tf)
                labels = labels_raw.transpose(tf)
                spacing = [spacing_raw[i] for i in tf]
                organs = self.candidate_organs(labels)
                if not organs:
                    result.skipped_cases.append(case.identifier)
                    continue
                out_dtype = image_raw.dtype if np.issubdtype(image_raw.dtype, np.floating) else np.float32
                for k in range(req.n_per_case):
                    out_id = f"{case.identifier}_syn{k:02d}"
                    rng = self._case_rng(case.identifier, k)
                    tries: list[float | None] = []
                    chosen = None
                    for _ in range(MAX_TRIES):  # without the gate the first tumor that fits is accepted
                        a = self.attempt(image, labels, spacing, organs, rng)
                        if a is None:
                            continue
                        tries.append(a.p)
                        if a.accepted:
                            chosen = a
                            break
                    if chosen is None:
                        result.rejected.append(
                            {
                                "case": out_id,
                                "source_case": case.identifier,
                                "accepted": False,
                                "gate_p": tries,
                                "reason": "rejected by the quality gate"
                                if self.seg is not None and tries
                                else "no room for a tumor centre or a non-finite result",
                            }
                        )
                        continue
                    entry = self._write_case(tmp, out_id, case, chosen, image, labels, image_ref, label_ref, out_dtype)
                    entry["gate_p_rejected"] = tries[:-1]
                    entry["tries"] = len(tries)
                    result.written.append(entry)
            if not result.written:
                raise FreeTumorConfigError(f"{self._nothing_written(result)}. Nothing was written.")
            self._write_metadata(tmp, result)
        return result

    def _nothing_written(self, result: ExportResult) -> str:
        cfg = self.cfg
        if result.rejected and self.seg is not None:
            return (
                f"the quality gate (T = {cfg.gate_threshold}) rejected every synthetic tumor ({len(result.rejected)} "
                f"case(s), {MAX_TRIES} tries each). Train the baseline longer, lower --gate_threshold, or export "
                "without --gate"
            )
        if result.rejected:
            return f"no tumor could be placed in the organs of the {len(result.rejected)} candidate case(s)"
        healthy = self.req.cases == "healthy"
        return (
            f"no training case of {self.name} has a {'tumor-free ' if healthy else ''}organ with >= "
            f"{cfg.mask.min_organ_voxels} voxels of the configured organ labels {list(cfg.organ_labels)}"
            + (": add healthy cases or use --cases all" if healthy else "")
        )

    def _write_case(self, tmp, out_id, case, a: Attempt, image, labels, image_ref, label_ref, out_dtype) -> dict:
        cfg, tb = self.cfg, self.transpose_backward
        fe = self.dataset_json["file_ending"]
        new_image = image.astype(out_dtype)  # a copy; the original values are exact in out_dtype
        region = new_image[a.box]
        changed = a.hu_box.numpy() != region.astype(np.float32)
        region[changed] = a.hu_box.numpy()[changed].astype(out_dtype)
        tumor = cfg.tumor_of(a.organ)
        new_labels = labels.copy()
        new_labels[a.mask] = tumor
        image_out, labels_out, mask_out = (x.transpose(tb) for x in (new_image, new_labels, a.mask))
        write_like(np.ascontiguousarray(image_out), image_ref, tmp / "imagesTr" / f"{out_id}_0000{fe}")
        write_like(np.ascontiguousarray(labels_out), label_ref, tmp / "labelsTr" / f"{out_id}{fe}")
        write_like(np.ascontiguousarray(mask_out.astype(np.uint8)), label_ref, tmp / MASKS_FOLDER / f"{out_id}{fe}")
        idx = np.argwhere(mask_out)
        centre = [int(round(c)) for c in idx.mean(0)]
        bbox = [[int(lo), int(hi) + 1] for lo, hi in zip(idx.min(0), idx.max(0))]
        spacing_raw = [float(s) for s in reversed(image_ref.GetSpacing())]
        window = (cfg.window.hu_min, cfg.window.hu_max)
        title = f"{self.req.method}: {a.size_class} tumor in organ {a.organ}" + (
            "" if a.p is None else f", P = {a.p:.2f}"
        )
        montage(
            tmp / PNG_FOLDER / f"{out_id}.png", image.transpose(tb), image_out, mask_out, spacing_raw, title, window
        )
        pair = next(p for p in cfg.pairs if p.organ == a.organ)
        return {
            "case": out_id,
            "source_case": case.identifier,
            "accepted": True,
            "organ": a.organ,
            "organ_name": pair.name,
            "tumor_label": tumor,
            "size_class": a.size_class,
            "mask_voxels": int(a.mask.sum()),
            "mask_volume_ml": float(a.mask.sum() * np.prod(spacing_raw) / 1000.0),
            "edge_sigma_mm": a.edge_sigma_mm,
            "centre_voxel": centre,
            "bbox": bbox,
            "changed_voxels": int(changed.sum()),
            "gate_p": a.p,
            "image": f"imagesTr/{out_id}_0000{fe}",
            "label": f"labelsTr/{out_id}{fe}",
            "synthetic_mask": f"{MASKS_FOLDER}/{out_id}{fe}",
        }

    def _write_metadata(self, tmp: Path, result: ExportResult) -> None:
        from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

        req = self.req
        dj = {k: v for k, v in self.dataset_json.items() if k not in ("numTraining", "dataset", "name", "description")}
        provenance = {
            "source_dataset": self.name,
            "method": req.method,
            "generator": str(self.generator_path) if self.generator_path else None,
            "gate": None
            if self.seg is None
            else {"checkpoint": str(self.seg.source), "threshold": self.cfg.gate_threshold},
            "seed": req.seed,
            "n_per_case": req.n_per_case,
            "cases": req.cases,
        }
        generate_dataset_json(
            str(tmp),
            dict(dj.pop("channel_names")),
            dict(dj.pop("labels")),
            len(result.written),
            dj.pop("file_ending"),
            dataset_name=self.target.name,
            description=f"FreeTumor offline synthesis ({req.method}) from {self.name}; see {SYNTHESIS_LOG}",
            freetumor_synthesis=provenance,
            **dj,
        )
        log = {
            **provenance,
            "configuration": req.configuration,
            "plans": req.plans,
            "fold": req.fold,
            "config_source": self.cfg_source,
            "config": self.cfg.to_dict(),
            "skipped_cases": result.skipped_cases,
            "cases": result.written,
            "rejected": result.rejected,
        }
        (tmp / SYNTHESIS_LOG).write_text(json.dumps(log, indent=1) + "\n")
        self.cfg.save(tmp / CONFIG_FILENAME)


def montage(
    path: str | os.PathLike,
    before: np.ndarray,
    after: np.ndarray,
    mask: np.ndarray,
    spacing: Sequence[float],
    title: str,
    window: tuple[float, float] | None = None,
    min_fov_mm: float = 64.0,
) -> None:
    """PNG: axial and coronal slices (file axes 0 and 1 fixed; SimpleITK (z, y, x) order) through the centre of
    ``mask``, before and after synthesis, the mask outlined, cropped to the tumour's surroundings (its extent on each
    side, at least ``min_fov_mm`` in all), square pixels; HU clipped to ``window`` (the config's) when given."""
    idx = np.argwhere(mask)
    centre = np.round(idx.mean(0)).astype(int)
    extent_mm = (idx.max(0) - idx.min(0) + 1) * np.asarray(spacing)
    half = [int(np.ceil(max(min_fov_mm / 2, 1.5 * e) / s)) for e, s in zip(extent_mm, spacing)]
    view_box = tuple(slice(max(c - h, 0), c + h + 1) for c, h in zip(centre, half))
    examples = []
    for axis, view in ((0, "axial"), (1, "coronal")):
        cut = list(view_box)
        cut[axis] = int(centre[axis])
        sp = [s for i, s in enumerate(spacing) if i != axis]
        b, im, m = (_isotropic(x[tuple(cut)], sp, order) for x, order in ((before, 1), (after, 1), (mask, 0)))
        if window is not None:
            b, im = np.clip(b, *window), np.clip(im, *window)
        examples.append(Example(image=im, mask=m > 0.5, title=view, before=b))
    save_montage(examples, path, title)


def _isotropic(image2d: np.ndarray, spacing2d: Sequence[float], order: int) -> np.ndarray:
    """A 2-D slice resampled to square pixels of the finer spacing (so that montages show true proportions)."""
    from scipy.ndimage import zoom

    s = min(spacing2d)
    return zoom(np.asarray(image2d, dtype=np.float32), [sp / s for sp in spacing2d], order=order)


def read_synthesis_log(folder: str | os.PathLike) -> dict[str, Any]:
    """The ``synthesis_log.json`` of an export folder; a clear error when the folder is not an export."""
    path = Path(folder, SYNTHESIS_LOG)
    if not path.is_file():
        raise FreeTumorConfigError(f"{folder} is not a freetumor_synthesize export (no {SYNTHESIS_LOG})")
    return json.loads(path.read_text())
