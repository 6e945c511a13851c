"""Adversarial training of the FreeTumor generator G on an nnU-Net preprocessed dataset (METHOD.md Eq. 1-3).

Per optimizer step, on B healthy-organ regions with synthetic masks M and B real lesions in tumor-centred boxes (the
mask's bounding box + a context margin in mm, ``synthesis.boxes.CropRule``; one box size per global batch, the largest
asked for):
    x_hat = Eq. 1 with G                               (residual.generator_synthesis; G may also see the soft mask)
    L_seg = segmentation-guided loss through S          (S = frozen baseline nnU-Net of the fold, on the same box)
            "nonsat": mean_M -log p_tumor (default)      "paper": Eq. 2, 1 - mean_M p_tumor
    L_cls = -log C_real(x_hat) over M                   (non-saturating GAN loss, C voxel-wise bg/real/fake)
    L_G   = lambda_cls * L_cls + L_seg                  (Eq. 3; L_seg alone during --seg_warmup_steps); G step
    L_C   = CE(C(x_real) -> real on tumor) + CE(C(x_hat) -> fake on M), background elsewhere; C step
Under torchrun every process takes its share of the global batch and the gradients are averaged (one all-reduce per
network and step), which is what one process with the whole batch computes. Every ``monitor_every`` steps the realism
monitor (``monitor.py``) measures G on a fixed held-out set.

Outputs (rank 0) in ``$nnUNet_results/<dataset>/FreeTumorGenerator__<plans>__<configuration>/fold_<f>/``:
``generator_final.safetensors`` (+ .json: config, network spec, crop rule, window, label map, ...),
``checkpoint_latest.safetensors`` (everything needed to resume exactly), ``progress.json`` and ``progress.png``
(losses and the monitor over steps), ``montage_step_XXXXXX.png`` (the fixed set before / after, and real lesions),
``training_log.txt``, ``freetumor_config.json``.
"""

from __future__ import annotations

import os
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from nnunet_freetumor import __version__
from nnunet_freetumor.config import CONFIG_FILENAME
from nnunet_freetumor.generator import checkpoint, networks
from nnunet_freetumor.generator.adversaries import Adversaries
from nnunet_freetumor.generator.args import GeneratorTrainingArgs
from nnunet_freetumor.generator.checkpoint import FINAL, LATEST
from nnunet_freetumor.generator.data import StepSampler, as_list, collate_step
from nnunet_freetumor.generator.distributed import process_device, process_group, reduce_means
from nnunet_freetumor.generator.logbook import Logbook
from nnunet_freetumor.generator.losses import (
    discriminator_loss,
    generator_adversarial_loss,
    masked_mean,
    seg_guided_loss,
)
from nnunet_freetumor.generator.monitor import RealismMonitor
from nnunet_freetumor.generator.setup import RunSetup
from nnunet_freetumor.synthesis.gate import tumor_probability
from nnunet_freetumor.synthesis.intensity import normalized_to_window
from nnunet_freetumor.synthesis.padding import forward_padded
from nnunet_freetumor.synthesis.pipeline import Gated, synthesize_and_gate
from nnunet_freetumor.synthesis.residual import generator_synthesis


class GeneratorTrainer:
    def __init__(self, args: GeneratorTrainingArgs, results: str | os.PathLike, preprocessed: str | os.PathLike):
        self.args = args
        self.rank, self.world = process_group(args.batch_size)
        self.device = process_device(args.device, self.world)
        self.setup = RunSetup.build(args, results, preprocessed, self.device)
        self.cuda = self.device.type == "cuda"
        use_amp = self.cuda and args.amp
        self.nets = Adversaries(args, len(self.setup.cfg.pairs), self.setup.steps, self.device, use_amp)
        self.G, self.C = self.nets.G, self.nets.C
        divisors = [
            self.setup.segmenter.divisor,
            networks.divisor(self.nets.g_spec),
            networks.divisor(self.nets.c_spec),
        ]
        self.box_divisor = tuple(int(np.lcm.reduce([d[ax] for d in divisors])) for ax in range(3))
        if self.cuda:  # channels-last convolutions are faster on recent GPUs
            for m in (self.G, self.C, self.setup.segmenter.network):
                m.to(memory_format=torch.channels_last_3d)
        self.autocast = (lambda: torch.autocast("cuda", dtype=torch.float16)) if use_amp else nullcontext
        self.step_count = 0
        self.history: list[dict[str, float]] = []
        self.monitor: RealismMonitor | None = None
        self.logbook = Logbook(self.setup.out, self.rank)

    def log(self, msg: str) -> None:
        self.logbook.log(msg)

    # --- one step ---------------------------------------------------------------------------------------------------
    def _to(self, t: torch.Tensor) -> torch.Tensor:
        t = t.to(self.device, non_blocking=True)
        return t.contiguous(memory_format=torch.channels_last_3d) if self.cuda and t.ndim == 5 else t

    def synthesize_box(self, x: torch.Tensor, soft: torch.Tensor, organ_index: torch.Tensor) -> torch.Tensor:
        """Eq. 1 with the current G on (N, 1, *box) normalized crops and soft masks."""
        s = self.setup
        options = networks.synthesis_options(self.nets.g_spec)
        return generator_synthesis(self.G, x, soft, organ_index, s.norm, s.cfg.window, **options)

    def collate(self, samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """This process's samples of a step as one batch (``data.collate_step``)."""
        return collate_step(samples, self.box_divisor, self.setup.crop_size, self.world, self.device)

    def synthesize(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, Gated]:
        """A collated batch's fake side through G and S: (the hard masks, the step), each (B, 1, *box)."""
        mask = batch["fake_mask"].to(self.device)
        organ = (batch["fake_labels"] == batch["fake_organ"].view(-1, 1, 1, 1))[:, None].to(self.device)
        gated = synthesize_and_gate(
            self.synthesize_box,
            self._to(batch["fake_image"]),
            mask,
            organ,
            batch["fake_organ_index"].to(self.device),
            batch["fake_edge_sigma_mm"].tolist(),
            self.setup.spacing,
            self.setup.segmenter,
            tumor_labels=self.setup.cfg.tumor_labels,
            threshold=self.setup.cfg.gate_threshold,
            autocast=self.autocast,
        )
        return mask, gated

    def _c_logits(self, x_norm: torch.Tensor) -> torch.Tensor:
        window = normalized_to_window(x_norm, self.setup.norm, self.setup.cfg.window)
        return forward_padded(self.C, window, networks.divisor(self.nets.c_spec))

    def step(self, samples: list[dict[str, torch.Tensor]]) -> dict[str, float]:
        """One optimizer step of G and of C on this process's share of the global batch (a list of samples)."""
        a = self.args
        batch = self.collate(samples)
        trains_c = a.losses in ("both", "cls")
        mask, gated, out = self._generator_step(batch, trains_c)
        if trains_c:
            out["loss_c"] = self._discriminator_step(batch, mask, gated.x_hat.detach())
        self.nets.schedule_step(trains_c)
        self.step_count += 1
        return out

    def _generator_step(self, batch, trains_c: bool) -> tuple[torch.Tensor, Gated, dict[str, float]]:
        """L_G = L_seg + lambda_cls L_cls (Eq. 3; L_seg alone during the warm-up; one of them for --losses seg/cls),
        C frozen for this backward."""
        a, out = self.args, {}
        use_seg = a.losses in ("both", "seg")
        use_cls = trains_c and (a.losses == "cls" or self.step_count >= a.seg_warmup_steps)
        self.C.requires_grad_(False)
        mask, gated = self.synthesize(batch)
        with self.autocast():
            loss_seg = seg_guided_loss(gated.logits, self.setup.cfg.tumor_labels, mask, a.seg_loss)
            loss_g = loss_seg if use_seg else torch.zeros_like(loss_seg)
            if trains_c:
                loss_cls = generator_adversarial_loss(self._c_logits(gated.x_hat), mask)
                out["loss_cls"] = float(loss_cls.detach().mean())
                if use_cls:
                    loss_g = loss_g + a.lambda_cls * loss_cls
        self.nets.step_g(loss_g.mean(), self.world)
        self.C.requires_grad_(True)
        with torch.no_grad():
            s_p = masked_mean(tumor_probability(gated.logits.detach(), self.setup.cfg.tumor_labels), mask)
        out.update(
            loss_g=float(loss_g.detach().mean()),
            loss_seg=float(loss_seg.detach().mean()),
            s_p=float(s_p.mean()),
            gate_p=float(gated.p.mean()),
            gate_accept=float(gated.accept.float().mean()),
        )
        return mask, gated, out

    def _discriminator_step(self, batch, mask: torch.Tensor, x_hat: torch.Tensor) -> float:
        """L_C: real tumors -> real, G's tumors -> fake, background elsewhere."""
        with self.autocast():
            c_real = self._c_logits(self._to(batch["real_image"]))
            c_fake = self._c_logits(x_hat)
            real = discriminator_loss(c_real, batch["real_mask"].to(self.device), networks.C_REAL)
            loss_c = 0.5 * (real + discriminator_loss(c_fake, mask, networks.C_FAKE)).mean()
        self.nets.step_c(loss_c, self.world)
        return float(loss_c.detach())

    # --- the run ----------------------------------------------------------------------------------------------------
    def loader(self) -> DataLoader:
        """This process's samples from the current step to the end of the run, a list of samples per step."""
        sampler = StepSampler(self.step_count, self.setup.steps, self.args.batch_size, self.world, self.rank)
        return DataLoader(
            self.setup.data,
            batch_size=self.args.batch_size // self.world,
            sampler=sampler,
            num_workers=self.args.num_workers,
            collate_fn=as_list,
            pin_memory=False,
            persistent_workers=False,
        )

    def build_monitor(self) -> RealismMonitor:
        s = self.setup
        return RealismMonitor.build(s.data, s.held_out_data, s.segmenter, s.norm, n=self.args.monitor_n)

    def run(self) -> Path:
        a = self.args
        if self.rank == 0:
            self.setup.out.mkdir(parents=True, exist_ok=True)
            self.setup.cfg.save(self.setup.out / CONFIG_FILENAME)
            self.monitor = self.build_monitor()
        n = networks.n_parameters
        self.log(self.setup.describe(self.args, self.world, self.device, n(self.G), n(self.C)))
        if self.monitor is not None:
            self.log(self.monitor.describe(a.monitor_every))
        if self.monitor is not None and not self.history:
            self.record({}, 0.0)  # step 0: where G starts
        sums: dict[str, float] = {}
        count, t0 = 0, time.time()
        bar = tqdm(total=self.setup.steps, initial=self.step_count, desc="generator", disable=self.rank != 0)
        for samples in self.loader():
            out = self.step(samples)
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            bar.update(1)
            bar.set_postfix({k: f"{v:.3f}" for k, v in out.items() if k in ("loss_seg", "s_p", "gate_accept")})
            if self.step_count % a.monitor_every == 0 or self.step_count == self.setup.steps:
                means = reduce_means({k: v / count for k, v in sums.items()}, self.device, self.world)
                self.record(means, time.time() - t0)
                sums, count, t0 = {}, 0, time.time()
        bar.close()
        if self.rank == 0:
            checkpoint.save(self.setup.out / FINAL, {"generator": self.G.state_dict()}, self.meta())
            self.log(f"done: {self.setup.out / FINAL}")
        return self.setup.out / FINAL

    def record(self, means: dict[str, float], seconds: float) -> None:
        """A log point: training means since the last one, the monitor (rank 0), progress files and checkpoint."""
        entry: dict[str, float] = {
            "step": self.step_count,
            "samples": self.step_count * self.args.batch_size,
            "lr": self.nets.lr,
            "time_s": seconds,
            **means,
        }
        if self.monitor is not None:
            path = self.setup.out / f"montage_step_{self.step_count:06d}.png"
            title = f"{self.setup.dataset_name} generator, step {self.step_count}"
            entry.update(self.monitor.measure(self.G, self.synthesize_box, self.autocast, path, title))
        self.history.append(entry)
        if self.rank != 0:
            return
        uses_seg = bool(means) and self.args.losses != "cls"
        self.logbook.point(self.history, self.setup.cfg.gate_threshold, self.args.seg_loss if uses_seg else None)
        if means:
            checkpoint.save(self.setup.out / LATEST, self.nets.state_dict(), {**self.meta(), "history": self.history})

    # --- checkpoints ------------------------------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        return {
            "kind": "freetumor-generator",
            "version": __version__,
            **self.setup.meta(self.args),
            **self.nets.specs(),
            "args": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.args).items()},
            "steps": self.nets.steps,  # the run's length: its learning-rate schedule
            "steps_done": self.step_count,
            "frozen_segmenter": str(self.setup.segmenter.source),
        }

    def resume(self) -> bool:
        """Continue from checkpoint_latest (exactly: weights, optimizers, schedules, step). False if none exists."""
        path = self.setup.out / LATEST
        if not path.is_file():
            return False
        state, meta = checkpoint.load(path, device=self.device)
        self.setup.check_resumable(meta, path, self.args)
        self.nets.load_state_dict(state, meta, path)
        self.step_count = int(meta["steps_done"])
        self.history = list(meta.get("history", []))
        self.log(f"resumed from {path} at step {self.step_count}")
        return True
