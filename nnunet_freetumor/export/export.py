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

import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nnunet_freetumor.config import FreeTumorConfigError
from nnunet_freetumor.export.attempt import MAX_TRIES, CaseSynthesizer
from nnunet_freetumor.export.box import load_box_generator
from nnunet_freetumor.export.case_io import MASKS_FOLDER, PNG_FOLDER, SourceCase, write_case
from nnunet_freetumor.export.log import SYNTHESIS_LOG, write_metadata
from nnunet_freetumor.export.request import ExportRequest
from nnunet_freetumor.segmenter import load_segmenter
from nnunet_freetumor.synthesis.boxes import CropRule
from nnunet_freetumor.utilities.dataset import planned_dataset, raw_training_cases
from nnunet_freetumor.utilities.files import new_dataset_folder, staged_folder
from nnunet_freetumor.utilities.image_io import check_same_grid

GRID_FIX = "resample the label file to its image, or run nnUNetv2_plan_and_preprocess --verify_dataset_integrity"


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
        req.check()
        self.req = req
        self.device = torch.device(req.device)
        self.src = src = planned_dataset(req.dataset, raw_root, preprocessed_root, req.plans, req.configuration)
        self.name, self.dataset_json = src.name, src.dataset_json
        cfg, self.cfg_source = src.cfg, src.cfg_source
        if req.gate_threshold is not None:
            cfg = cfg.replace(gate_threshold=float(req.gate_threshold))
            self.cfg_source += f" + --gate_threshold {req.gate_threshold}"
        self.cfg = cfg
        self.cases = raw_training_cases(src.raw, self.dataset_json)
        name = req.name or f"{self.name.split('_', 1)[1]}_{req.method}"
        self.target = new_dataset_folder(
            Path(raw_root),
            req.out_id,
            name,
            other_roots=(preprocessed_root, results_root),
            source=self.name,
            overwrite=req.overwrite,
        )
        generator, crop_rule = None, CropRule(max(cfg.gate_bbox_margin_mm, 4 * cfg.mask.edge_sigma_mm[1]))
        if req.method == "generator":
            generator, crop_rule = load_box_generator(src, cfg, req.fold, req.generator, results_root, self.device)
        segmenter = None
        if req.gate:
            segmenter = load_segmenter(
                cfg,
                **src.model_key(),
                fold=req.fold,
                checkpoint=req.gate_checkpoint,
                device=self.device,
                results=results_root,
            )
        self.synthesizer = CaseSynthesizer(
            cfg, crop_rule, src.spacing, self.device, generator, segmenter, healthy_only=req.cases == "healthy"
        )

    @property
    def segmenter(self):
        """The gate's frozen S (None without ``--gate``)."""
        return self.synthesizer.segmenter

    def run(self, progress: bool = True) -> ExportResult:
        from tqdm import tqdm

        result = ExportResult(self.target)
        for case in self.cases:  # headers only: a bad case stops the export before any synthesis
            check_same_grid(case.identifier, case.image, case.label, "label file", GRID_FIX)
        with staged_folder(self.target) as tmp:
            for sub in ("imagesTr", "labelsTr", MASKS_FOLDER, PNG_FOLDER):
                (tmp / sub).mkdir()
            for case in tqdm(self.cases, desc=f"synthesizing ({self.req.method})", disable=not progress):
                self._export_case(tmp, SourceCase.read(case, self.src.transpose_forward), result)
            if not result.written:
                raise FreeTumorConfigError(f"{self._nothing_written(result)}. Nothing was written.")
            self._write_metadata(tmp, result)
        return result

    def _export_case(self, tmp: Path, src: SourceCase, result: ExportResult) -> None:
        """``n_per_case`` synthetic cases from ``src`` (each from its own seeded draws), or why not."""
        organs = self.synthesizer.candidate_organs(src.labels)
        if not organs:
            result.skipped_cases.append(src.identifier)
            return
        for k in range(self.req.n_per_case):
            out_id = f"{src.identifier}_syn{k:02d}"
            rng = np.random.default_rng([self.req.seed, zlib.crc32(src.identifier.encode()), k])
            chosen, tries = self.synthesizer.first_accepted(src.image, src.labels, src.spacing, organs, rng)
            if chosen is None:
                gated = self.segmenter is not None and tries
                reason = (
                    "rejected by the quality gate" if gated else "no room for a tumor centre or a non-finite result"
                )
                result.rejected.append(
                    {
                        "case": out_id,
                        "source_case": src.identifier,
                        "accepted": False,
                        "gate_p": tries,
                        "reason": reason,
                    }
                )
                continue
            fe = self.dataset_json["file_ending"]
            entry = write_case(tmp, out_id, src, chosen, self.cfg, self.src.transpose_backward, fe, self.req.method)
            entry["gate_p_rejected"] = tries[:-1]
            entry["tries"] = len(tries)
            result.written.append(entry)

    def _nothing_written(self, result: ExportResult) -> str:
        cfg = self.cfg
        if result.rejected and self.segmenter is not None:
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

    def _write_metadata(self, tmp: Path, result: ExportResult) -> None:
        req, generator = self.req, self.synthesizer.generator
        provenance = {
            "source_dataset": self.name,
            "method": req.method,
            "generator": str(generator.path) if generator is not None and generator.path else None,
            "gate": None
            if self.segmenter is None
            else {"checkpoint": str(self.segmenter.source), "threshold": self.cfg.gate_threshold},
            "seed": req.seed,
            "n_per_case": req.n_per_case,
            "cases": req.cases,
        }
        log = {
            "configuration": req.configuration,
            "plans": req.plans,
            "fold": req.fold,
            "config_source": self.cfg_source,
            "config": self.cfg.to_dict(),
            "skipped_cases": result.skipped_cases,
            "cases": result.written,
            "rejected": result.rejected,
        }
        description = f"FreeTumor offline synthesis ({req.method}) from {self.name}; see {SYNTHESIS_LOG}"
        write_metadata(
            tmp, self.dataset_json, self.target.name, description, provenance, log, self.cfg, len(result.written)
        )
