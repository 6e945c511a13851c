"""What a generator run trains on, resolved from its arguments before any network is built: the planned dataset and
its FreeTumor config, the output folder, the crop rule (tumor-centred boxes in mm, capped at the largest crop), the
frozen S of the fold, the training split's data (one clear error when it has no healthy organ region) and the
held-out validation cases for the realism monitor."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from nnunet_freetumor.config import FreeTumorConfig, FreeTumorConfigError
from nnunet_freetumor.generator.args import GeneratorTrainingArgs
from nnunet_freetumor.generator.checkpoint import generator_folder
from nnunet_freetumor.generator.data import CaseStore, GeneratorData, training_cases
from nnunet_freetumor.labels import config_for_dataset
from nnunet_freetumor.segmenter import FrozenSegmenter, load_segmenter
from nnunet_freetumor.synthesis.boxes import CropRule
from nnunet_freetumor.synthesis.intensity import CTNormalization, ct_normalizations
from nnunet_freetumor.utilities.dataset import dataset_name, fold_split, planned_configuration


@dataclass
class RunSetup:
    dataset_name: str
    cfg: FreeTumorConfig
    cfg_source: str
    out: Path
    spacing: tuple[float, ...]
    crop_size: tuple[int, ...]  # the largest crop (context), voxels
    rule: CropRule | None  # None: --crop patch (the whole crop_size)
    norm: CTNormalization  # the data's (S maps it to its own)
    segmenter: FrozenSegmenter
    data: GeneratorData
    held_out_data: GeneratorData | None
    steps: int

    @classmethod
    def build(
        cls,
        args: GeneratorTrainingArgs,
        results: str | os.PathLike,
        preprocessed: str | os.PathLike,
        device: torch.device,
    ) -> RunSetup:
        from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

        name = dataset_name(args.dataset)
        pre = Path(preprocessed, name)
        plans, cm = planned_configuration(pre, args.plans, args.configuration, args.dataset)
        cfg, cfg_source = config_for_dataset(json.loads((pre / "dataset.json").read_text()), pre)
        spacing = tuple(float(s) for s in cm.spacing)
        crop_size = tuple(args.crop_size or (min(96, int(p)) for p in cm.patch_size))
        margin = cfg.gate_bbox_margin_mm if args.crop_margin_mm is None else float(args.crop_margin_mm)
        max_mm = tuple(c * s for c, s in zip(crop_size, spacing))
        rule = CropRule(margin, max_size_mm=max_mm) if args.crop == "tumor" else None
        segmenter = load_segmenter(
            cfg,
            results=results,
            preprocessed=preprocessed,
            dataset_name=name,
            plans_name=args.plans,
            configuration=args.configuration,
            fold=args.fold,
            checkpoint=args.gate_checkpoint,
            device=device,
        )
        data_folder = pre / cm.data_identifier
        ids = infer_dataset_class(str(data_folder)).get_identifiers(str(data_folder))

        def split_data(cases: list[str], **kw) -> GeneratorData:
            return GeneratorData(CaseStore(data_folder, cases, args.cache_mb), cfg, crop_size, spacing, rule, **kw)

        data = split_data(training_cases(pre, args.fold, ids), seed=args.seed, batch_size=args.batch_size)
        data[0]  # one sample in this process: "no healthy organ crop" fails here as one clear error, not later
        # inside a DataLoader worker (pure function of (seed, index): nothing of the run's randomness is used)
        val = [k for k in fold_split(pre, args.fold, "")["val"] if k in ids] if str(args.fold) != "all" else []
        steps = args.steps
        if args.epochs is not None:  # --epochs: passes over the cases with an organ
            steps = args.epochs * math.ceil(len(data.fake_cases) / args.batch_size)
        return cls(
            dataset_name=name,
            cfg=cfg,
            cfg_source=cfg_source,
            out=generator_folder(results, name, args.plans, args.configuration, args.fold),
            spacing=spacing,
            crop_size=crop_size,
            rule=rule,
            norm=ct_normalizations(plans, args.configuration)[0],
            segmenter=segmenter,
            data=data,
            held_out_data=split_data(val, require_real=False) if val else None,
            steps=steps,
        )

    def describe(
        self, args: GeneratorTrainingArgs, world: int, device: torch.device, g_params: int, c_params: int
    ) -> str:
        """The run's first log line: what trains on what."""
        crop = f"tumor boxes (mask + {self.rule.margin_mm:g} mm, at most {self.crop_size})" if self.rule else None
        return (
            f"generator training: {self.dataset_name} {args.configuration} fold {args.fold}, {world} process(es), "
            f"device {device}, config from {self.cfg_source}; G {g_params / 1e6:.2f} M params "
            f"({'image + mask' if args.mask_input else 'image'}{' + depth' if args.depth_input else ''} input, "
            f"init {args.init}, residual blur "
            f"{args.residual_blur:g}), C {c_params / 1e6:.2f} M; "
            f"{crop or f'fixed crop {self.crop_size}'} at {self.spacing} mm; {self.steps} steps of {args.batch_size}; "
            f"L_seg {args.seg_loss}; {len(self.data.fake_cases)} cases with organs, {len(self.data.real_cases)} with "
            f"tumors; frozen segmenter {self.segmenter.source}"
        )

    def meta(self, args: GeneratorTrainingArgs) -> dict[str, Any]:
        """What a checkpoint records of the data it was trained on (the export and the trainers apply G with it)."""
        return {
            "dataset": self.dataset_name,
            "plans": args.plans,
            "configuration": args.configuration,
            "fold": args.fold,
            "spacing": list(self.spacing),
            "crop_size": list(self.crop_size),
            "crop_rule": self.rule.to_dict() if self.rule else None,
            "normalization": asdict(self.norm),
            "config": self.cfg.to_dict(),
        }

    def check_resumable(self, meta: dict[str, Any], path: Path, args: GeneratorTrainingArgs) -> None:
        """One clear error when checkpoint ``path`` was trained on other data or with another config."""
        mine = self.meta(args)
        for key in ("dataset", "plans", "configuration", "fold"):
            value = str(mine[key])
            if str(meta.get(key)) != value:
                raise FreeTumorConfigError(f"{path} belongs to {key} {meta.get(key)!r}, not {value!r}")
        if FreeTumorConfig.from_dict(meta["config"]) != self.cfg:
            raise FreeTumorConfigError(
                f"{path} was trained with another FreeTumor config than the current one "
                f"({self.cfg_source}): restore that config or start a new run without --c"
            )
