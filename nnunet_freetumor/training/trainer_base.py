"""Shared trainer machinery for every synthesis method (not a -tr name itself; see ``nnunet_freetumor/trainers``).

``SyntheticTumorTrainerBase`` is nnU-Net's trainer plus:
- the FreeTumor config (``nnunet_freetumor.config``), resolved and checked in ``initialize`` before training starts;
- ``TumorSynthesisTransform`` inserted after SpatialTransform in the DA workers;
- ``train_step`` that takes the mask channel off the targets (``synthesize_batch`` is the hook subclasses replace);
- per-epoch counts (candidates / synthesized, plus whatever subclasses count) in the training log and in
  ``freetumor_stats.json``, a PNG of synthesized crops every ``png_every`` epochs, the config saved beside the
  checkpoints, and atomic checkpoint writes.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_freetumor import env
from nnunet_freetumor.config import CONFIG_FILENAME, FreeTumorConfigError
from nnunet_freetumor.labels import apply_tumor_labels, config_for_dataset, has_healthy_organ, tumor_label_lut
from nnunet_freetumor.segmenter import FrozenSegmenter, load_segmenter
from nnunet_freetumor.synthesis.boxes import CropRule, tumor_box
from nnunet_freetumor.synthesis.intensity import ct_normalizations
from nnunet_freetumor.synthesis.pipeline import synthesize_and_gate
from nnunet_freetumor.training.preflight import check_organs_present, check_single_channel, check_trainable
from nnunet_freetumor.training.statistics import EpochStatistics, log_line
from nnunet_freetumor.training.transform import TumorSynthesisTransform, insert_after_spatial, split_mask_channel
from nnunet_freetumor.utilities.files import atomic_save


def seed_from_env(trainer: nnUNetTrainer, environ=None) -> None:
    """Seed python, numpy and torch from ``nnUNet_freetumor_seed`` (repeated runs for benchmarks). Deterministic with
    ``nnUNet_n_proc_DA=0`` on the CPU; nnU-Net's DA worker processes and cuDNN autotuning are not seeded."""
    seed = env.seed(environ)
    if seed is None:
        return
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    trainer.print_to_log_file(f"seeded from {env.SEED}={seed}")


def apply_schedule_overrides(trainer: nnUNetTrainer, overrides: dict[str, int]) -> None:
    for attr, value in overrides.items():
        setattr(trainer, attr, value)
    if overrides:
        trainer.print_to_log_file(
            "schedule overridden by environment: " + ", ".join(f"{k}={v}" for k, v in overrides.items())
        )


class SyntheticTumorTrainerBase(nnUNetTrainer):
    """Base of the plugin's trainers. Subclasses set ``paints_in_workers`` and may override ``synthesize_batch``."""

    # True: the DA workers paint the handcrafted recipe; False: they draw the masks only and train_step synthesizes
    # on the training device
    paints_in_workers = False
    config_overrides: dict = {}  # ablation subclasses change config fields here (e.g. {"gate_threshold": 0.5})

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),
    ):
        self.statistics = EpochStatistics()
        try:  # every check that can fail runs before nnU-Net creates the output folder: no partial outputs
            self.preflight(PlansManager(plans), configuration, fold, dataset_json)
        except FreeTumorConfigError as e:
            raise SystemExit(f"error: {e}") from None
        super().__init__(plans, configuration, fold, dataset_json, device)
        apply_schedule_overrides(self, self._schedule)

    # --- set-up -----------------------------------------------------------------------------------------------------
    def preflight(self, plans_manager: PlansManager, configuration: str, fold: int | str, dataset_json: dict) -> None:
        """Resolve and check the FreeTumor config (subclasses also load their frozen models, on the CPU)."""
        check_trainable(plans_manager, configuration, dataset_json)
        pre = env.get(env.PREPROCESSED)
        cfg, source = config_for_dataset(dataset_json, Path(pre, plans_manager.dataset_name) if pre else None)
        if self.config_overrides:
            cfg = cfg.replace(**self.config_overrides)
            source += f" + {type(self).__name__} overrides {self.config_overrides}"
        self.freetumor_config, self.freetumor_config_source = cfg, source
        self.normalizations = ct_normalizations(plans_manager.plans, configuration)
        self._schedule = env.schedule_overrides()
        if pre:
            check_organs_present(
                Path(pre, plans_manager.dataset_name, plans_manager.get_configuration(configuration).data_identifier),
                cfg,
            )

    def initialize(self):
        cfg = self.freetumor_config
        pairs = ", ".join(f"{p.name or p.organ} {p.organ}->{p.tumor}" for p in cfg.pairs)
        self.print_to_log_file(
            f"FreeTumor: {type(self).__name__}, config from {self.freetumor_config_source}; organ->tumor: {pairs}; "
            f"p_synthesis={cfg.p_synthesis}"
        )
        seed_from_env(self)
        super().initialize()

    def on_train_start(self):
        super().on_train_start()
        if self.local_rank == 0:
            self.freetumor_config.save(Path(self.output_folder, CONFIG_FILENAME))

    # --- DA pipeline ------------------------------------------------------------------------------------------------
    def get_training_transforms(
        self,
        patch_size,
        rotation_for_DA,
        deep_supervision_scales,
        mirror_axes,
        do_dummy_2d_data_aug,
        use_mask_for_norm=None,
        is_cascaded=False,
        foreground_labels=None,
        regions=None,
        ignore_label=None,
    ):
        # nnU-Net declares this a staticmethod but calls it through self, so an instance method can see the config
        tr = super().get_training_transforms(
            patch_size,
            rotation_for_DA,
            deep_supervision_scales,
            mirror_axes,
            do_dummy_2d_data_aug,
            use_mask_for_norm,
            is_cascaded,
            foreground_labels,
            regions,
            ignore_label,
        )
        insert_after_spatial(tr.transforms, self.make_synthesis_transform())
        return tr

    def make_synthesis_transform(self) -> TumorSynthesisTransform:
        return TumorSynthesisTransform(
            self.freetumor_config,
            self.configuration_manager.spacing,
            handcrafted=self.paints_in_workers,
            normalizations=self.normalizations,
        )

    # --- training step ----------------------------------------------------------------------------------------------
    def train_step(self, batch: dict) -> dict:
        return super().train_step(self.synthesize_batch(batch))

    def synthesize_batch(self, batch: dict) -> dict:
        """Take the mask channel off the targets and count; the handcrafted tumors are already in the batch."""
        target, masks = split_mask_channel(batch["target"])
        labels, mask = _full_res(target), _full_res(masks)
        synthesized = mask.flatten(1).any(1)
        self.count(candidates=self.count_candidates(labels, mask), synthesized=int(synthesized.sum()))
        for b in torch.nonzero(synthesized).flatten().tolist():
            self.remember_example(batch["data"][b], mask[b, 0] > 0, "synthesized")
        return {**batch, "target": target}

    def count_candidates(self, labels: torch.Tensor, mask: torch.Tensor) -> int:
        """Samples whose crop had a healthy organ before synthesis (labels with the synthetic tumors undone)."""
        original = torch.where(mask > 0, mask.to(labels.dtype), labels)
        return int(has_healthy_organ(original, self.freetumor_config).sum())

    # --- bookkeeping ------------------------------------------------------------------------------------------------
    def count(self, **counts: float) -> None:
        self.statistics.count(**counts)

    def remember_example(
        self, image: torch.Tensor, mask: torch.Tensor, title: str, before: torch.Tensor | None = None
    ) -> None:
        if self.local_rank == 0 and self._png_due():
            self.statistics.add_example(image, mask, title, before)

    def _png_due(self) -> bool:
        every = self.freetumor_config.png_every if self.freetumor_config else 0
        last = self.current_epoch == self.num_epochs - 1
        return every > 0 and (self.current_epoch % every == 0 or last)

    def on_train_epoch_start(self):
        self.statistics.start(candidates=0, synthesized=0)
        super().on_train_epoch_start()

    def on_train_epoch_end(self, train_outputs):
        super().on_train_epoch_end(train_outputs)
        counts = self.epoch_counts(self.statistics.reduced(self.device, self.is_ddp))
        self.print_to_log_file(log_line(counts))
        if self.local_rank == 0:
            self.statistics.save(self.output_folder, self.current_epoch, counts, type(self).__name__)

    def epoch_counts(self, counts: dict[str, float]) -> dict[str, float]:
        """The epoch's counts as logged (subclasses derive rates here)."""
        return counts

    # --- checkpoints ------------------------------------------------------------------------------------------------
    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint, written to a temporary file and renamed: a killed run never leaves half a file."""
        if self.local_rank != 0 or self.disable_checkpointing:
            return super().save_checkpoint(filename)
        parent_save = super().save_checkpoint
        atomic_save(filename, lambda tmp: parent_save(str(tmp)))


def _full_res(t: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    return t[0] if isinstance(t, (list, tuple)) else t


class DeviceSynthesisTrainerBase(SyntheticTumorTrainerBase):
    """Synthesis on the training device in ``train_step``, then the quality gate (Eq. 4-5), then the label update.

    The DA workers only draw the masks (cheap). Here, per batch: tumor-centred crops of every sample with a mask go
    through ``synthesize_crops`` (no_grad, AMP on CUDA), the frozen segmenter S judges the result on the same crop
    (``gate_bbox_crop``) or on the whole patch, accepted crops are pasted back and their voxels get the tumor label at
    every deep-supervision scale; rejected samples keep their original crop and labels.
    """

    paints_in_workers = False
    use_gate = True

    def preflight(self, plans_manager: PlansManager, configuration: str, fold: int | str, dataset_json: dict) -> None:
        super().preflight(plans_manager, configuration, fold, dataset_json)
        check_single_channel(plans_manager, configuration, dataset_json, type(self).__name__)
        results = env.get(env.RESULTS)
        if not results:
            raise FreeTumorConfigError("nnUNet_results is not set: it is needed to find the frozen models")
        self.gate_model = self.load_gate(Path(results), plans_manager, configuration, fold) if self.use_gate else None
        self.setup_synthesizer(Path(results), plans_manager, configuration, fold)

    def initialize(self):
        super().initialize()
        self.lut = torch.from_numpy(tumor_label_lut(self.freetumor_config)).to(self.device)
        if self.gate_model is not None:
            self.gate_model.to(self.device)
            self.print_to_log_file(
                f"FreeTumor: quality gate S = {self.gate_model.source} (T = {self.freetumor_config.gate_threshold}, "
                f"{'tumor-centred crop' if self.freetumor_config.gate_bbox_crop else 'whole patch'})"
            )
        self.move_synthesizer_to_device()

    def load_gate(self, results: Path, pm: PlansManager, configuration: str, fold: int | str) -> FrozenSegmenter:
        return load_segmenter(
            self.freetumor_config,
            results=results,
            dataset_name=pm.dataset_name,
            plans_name=pm.plans_name,
            configuration=configuration,
            fold=fold,
            checkpoint=env.get(env.GATE_CHECKPOINT),
            override=env.GATE_CHECKPOINT,
        )

    def setup_synthesizer(self, results: Path, pm: PlansManager, configuration: str, fold: int | str) -> None:
        """Load and check what ``synthesize_crops`` needs, on the CPU (subclasses)."""

    def move_synthesizer_to_device(self) -> None:
        """Move it to ``self.device`` (subclasses)."""

    def synthesize_crops(self, x: torch.Tensor, soft: torch.Tensor, organ_index: torch.Tensor) -> torch.Tensor:
        """(N, 1, *crop) normalized crops and soft masks -> synthetic crops (normalized)."""
        raise NotImplementedError

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.float16) if self.device.type == "cuda" else nullcontext()

    @torch.no_grad()
    def synthesize_batch(self, batch: dict) -> dict:
        cfg = self.freetumor_config
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        target = (
            [t.to(self.device, non_blocking=True) for t in target]
            if isinstance(target, list)
            else target.to(self.device, non_blocking=True)
        )
        target, masks = split_mask_channel(target)
        labels, mask = _full_res(target), _full_res(masks)
        has = mask.flatten(1).any(1)
        self.count(candidates=self.count_candidates(labels, mask), synthesized=int(has.sum()))
        idx = torch.nonzero(has).flatten()
        if len(idx) == 0:
            return {**batch, "data": data, "target": target}

        m = mask[idx, 0] > 0
        organ_id = mask[idx].flatten(1).amax(1).long()
        organ = labels[idx] == organ_id.view(-1, 1, 1, 1, 1)
        organ_index = torch.tensor([cfg.organ_labels.index(int(o)) for o in organ_id], device=self.device)
        lo, hi = cfg.mask.edge_sigma_mm
        sigmas = [float(np.random.uniform(lo, hi)) for _ in range(len(idx))]
        # one box size for the batch: the largest the synthesizer's crop rule asks for (what it was trained with)
        size = self.crop_rule().batch_size(m, self.configuration_manager.spacing)
        boxes = [(slice(None), *tumor_box(m[i], size)) for i in range(len(idx))]
        x = torch.stack([data[b][box] for b, box in zip(idx.tolist(), boxes)])
        crop_mask = torch.stack([m[i][box[1:]] for i, box in enumerate(boxes)])[:, None]
        crop_organ = torch.stack([organ[i][box] for i, box in enumerate(boxes)])

        def whole_patches(x_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return pasted(data[idx], boxes, x_hat), m[:, None]

        gated = synthesize_and_gate(
            self.synthesize_crops,
            x,
            crop_mask,
            crop_organ,
            organ_index,
            sigmas,
            self.configuration_manager.spacing,
            self.gate_model,
            tumor_labels=cfg.tumor_labels,
            threshold=cfg.gate_threshold,
            context=None if cfg.gate_bbox_crop else whole_patches,
            autocast=self._autocast,
        )
        x_hat, p, accept, finite = gated.x_hat, gated.p, gated.accept, gated.finite
        accept_all = torch.zeros_like(has)
        accept_all[idx] = accept
        for i, (b, box) in enumerate(zip(idx.tolist(), boxes)):
            before = data[b].clone() if self._png_due() else None
            if accept[i]:
                data[b][box] = x_hat[i].to(data.dtype)
            if before is not None:
                verdict = "accepted" if accept[i] else "rejected"
                self.remember_example(
                    data[b] if accept[i] else pasted(before[None], [box], x_hat[i : i + 1])[0],
                    m[i],
                    f"{verdict} P={float(p[i]):.2f}",
                    before=before,
                )
        target = (
            [apply_tumor_labels(t, mk, self.lut, accept_all) for t, mk in zip(target, masks)]
            if isinstance(target, list)
            else apply_tumor_labels(target, masks, self.lut, accept_all)
        )
        n_acc = int(accept.sum())
        self.count(
            accepted=n_acc,
            rejected=len(idx) - n_acc,
            nonfinite=int((~finite).sum()),
            p_sum=float(torch.nan_to_num(p, nan=0.0).sum()),
            p_n=int(torch.isfinite(p).sum()),
        )
        return {**batch, "data": data, "target": target}

    def crop_rule(self) -> CropRule:
        """The box a tumor is synthesized and gated in (subclasses: the one their synthesizer was trained with)."""
        cfg = self.freetumor_config
        return CropRule(max(cfg.gate_bbox_margin_mm, 4 * cfg.mask.edge_sigma_mm[1]))

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        self.statistics.count(accepted=0, rejected=0, nonfinite=0, p_sum=0.0, p_n=0)

    def epoch_counts(self, counts: dict[str, float]) -> dict[str, float]:
        counts = super().epoch_counts(counts)
        p_sum, p_n = counts.pop("p_sum", 0.0), counts.pop("p_n", 0)
        counts["mean_P"] = p_sum / p_n if p_n else float("nan")
        return counts


def pasted(images: torch.Tensor, boxes: list[tuple[slice, ...]], crops: torch.Tensor) -> torch.Tensor:
    """Copies of ``images`` (N, C, ...) with ``crops`` (N, C, *box) pasted at ``boxes`` (each (channels, *spatial))."""
    out = images.clone()
    for i, box in enumerate(boxes):
        out[i][box] = crops[i].to(out.dtype)
    return out
