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

import json
import math
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import distributed as dist
from torch.utils.data import DataLoader
from tqdm import tqdm

from nnunet_freetumor import __version__
from nnunet_freetumor.config import CONFIG_FILENAME, FreeTumorConfig, FreeTumorConfigError
from nnunet_freetumor.generator import checkpoint, networks
from nnunet_freetumor.generator.checkpoint import FINAL, LATEST, generator_folder
from nnunet_freetumor.generator.data import (
    CaseStore,
    GeneratorData,
    StepSampler,
    as_list,
    cut_boxes,
    training_cases,
)
from nnunet_freetumor.generator.losses import (
    SEG_LOSSES,
    discriminator_loss,
    generator_adversarial_loss,
    masked_mean,
    seg_guided_loss,
)
from nnunet_freetumor.generator.monitor import RealismMonitor
from nnunet_freetumor.generator.plots import save_fixed_set_montage, save_progress_plot
from nnunet_freetumor.labels import config_for_dataset
from nnunet_freetumor.segmenter import FrozenSegmenter, load_segmenter
from nnunet_freetumor.synthesis.boxes import CropRule
from nnunet_freetumor.synthesis.gate import tumor_probability
from nnunet_freetumor.synthesis.intensity import ct_normalizations, normalized_to_window
from nnunet_freetumor.synthesis.padding import forward_padded
from nnunet_freetumor.synthesis.pipeline import Gated, synthesize_and_gate
from nnunet_freetumor.synthesis.residual import generator_synthesis
from nnunet_freetumor.utilities.dataset import dataset_name, fold_split, planned_configuration
from nnunet_freetumor.utilities.files import atomic_write_text

LOSSES = ("both", "seg", "cls")
CROPS = ("tumor", "patch")
INITS = ("zero", "random")


@dataclass
class GeneratorTrainingArgs:
    """Everything that defines a generator run (saved in every checkpoint). See ``freetumor_train_generator -h``."""

    dataset: str  # name (DatasetXXX_Name) or id
    configuration: str = "3d_fullres"
    plans: str = "nnUNetPlans"
    fold: str = "0"
    steps: int = 2000  # optimizer steps
    epochs: int | None = None  # alias: steps = epochs * ceil(cases with an organ / batch_size)
    batch_size: int = 4
    lr: float = 1e-3
    lr_c: float | None = None  # discriminator learning rate [lr]
    lambda_cls: float = 0.1
    losses: str = "both"  # both | seg (L_seg only) | cls (L_cls only): the paper's loss ablation
    seg_loss: str = "nonsat"  # nonsat (-log p) | paper (Eq. 2, 1 - p)
    seg_warmup_steps: int = 0  # L_G = L_seg alone for this many steps (C trains meanwhile)
    init: str = "zero"  # zero: G's last layer starts at 0 (no change at step 0) | random
    mask_input: bool = True  # G also sees the soft tumor mask
    crop: str = "tumor"  # tumor: the mask's box + crop_margin_mm | patch: the whole crop_size (earlier versions)
    crop_margin_mm: float | None = None  # default: the config's gate_bbox_margin_mm (S sees what the gate sees)
    crop_size: tuple[int, ...] | None = None  # the largest crop (context), voxels: default min(96, patch size)
    gen_features: tuple[int, ...] = (16, 32, 64, 128)
    disc_features: tuple[int, ...] = (8, 16, 32)
    grad_clip: float = 12.0
    seed: int = 0
    num_workers: int = 0
    device: str = "cuda"
    amp: bool = True  # CUDA only
    monitor_every: int = 100  # steps between log lines, monitor evaluations and checkpoints
    monitor_n: int = 32  # synthetic tumors in the monitor's fixed set
    gate_checkpoint: str | None = None  # default: the config's gate_trainer baseline of this fold
    cache_mb: float = 1024  # hold the training cases decompressed in memory when they fit
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("--losses", self.losses, LOSSES),
            ("--seg_loss", self.seg_loss, SEG_LOSSES),
            ("--crop", self.crop, CROPS),
            ("--init", self.init, INITS),
        ):
            if value not in allowed:
                raise FreeTumorConfigError(f"{name} must be one of {allowed}, got {value!r}")
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0 or (self.epochs is not None and self.epochs < 1):
            raise FreeTumorConfigError("--steps, --epochs and --batch_size must be >= 1 and --lr > 0")
        if self.monitor_every < 1 or self.seg_warmup_steps < 0:
            raise FreeTumorConfigError("--monitor_every must be >= 1 and --seg_warmup_steps >= 0")


def no_seg_signal(
    history: list[dict[str, float]], seg_loss: str, intervals: int = 2, level: float = 0.01
) -> str | None:
    """A warning when the frozen S has labeled (almost) none of G's tumors as tumor for the last ``intervals`` log
    intervals (mean tumor probability in M below ``level`` and no tumor passing the gate). None while S responds."""
    last = history[-intervals:]
    if len(last) < intervals or any(h["s_p"] > level or h["gate_accept"] > 0 for h in last):
        return None
    head = (
        f"warning: for {intervals} log intervals the frozen S labeled almost none of the synthetic tumors as tumor "
        f"(mean tumor probability in the mask {last[-1]['s_p']:.4f}, none passes the gate)."
    )
    if seg_loss == "paper":
        return (
            f"{head} The paper's L_seg (1 - p) gives G no gradient there (d(1-p)/dlogit = -p(1-p)): restart with "
            "--seg_loss nonsat (-log p keeps a gradient where S is sure), or with --init zero so G starts from no "
            "change. Also check that the config's window and tumor polarity fit the data (freetumor_config --chest "
            "for lesions brighter than the organ) and that the baseline S segments tumors."
        )
    return (
        f"{head} L_seg still has a gradient (-log p), but G has not found tumors S recognises: check that the "
        "baseline S segments the real tumors (the monitor's real_accept), that the config's window and polarity fit "
        "the data, try --seg_warmup_steps (L_seg alone first) or a larger --lr; or train with "
        "nnUNetTrainerHandcraftedTumor."
    )


def _distributed() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def average_gradients(module: torch.nn.Module, world: int) -> None:
    """Mean of every parameter's gradient over the processes (one all-reduce of the flattened gradients)."""
    if world == 1:
        return
    params = [p for p in module.parameters() if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.flatten() for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


class GeneratorTrainer:
    def __init__(self, args: GeneratorTrainingArgs, results: str | os.PathLike, preprocessed: str | os.PathLike):
        from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

        self.args = args
        self.rank, self.world = _distributed()
        if args.batch_size % self.world:
            raise FreeTumorConfigError(
                f"--batch_size {args.batch_size} must be divisible by the number of processes ({self.world})"
            )
        self.device = torch.device(args.device)
        if self.device.type == "cuda" and self.world > 1:
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        self.dataset_name = dataset_name(args.dataset)
        pre = Path(preprocessed, self.dataset_name)
        plans, self.cm = planned_configuration(pre, args.plans, args.configuration, args.dataset)
        self.cfg, self.cfg_source = config_for_dataset(json.loads((pre / "dataset.json").read_text()), pre)
        self.out = generator_folder(results, self.dataset_name, args.plans, args.configuration, args.fold)
        self.spacing = tuple(float(s) for s in self.cm.spacing)
        self.crop_size = tuple(args.crop_size or (min(96, int(p)) for p in self.cm.patch_size))
        margin = self.cfg.gate_bbox_margin_mm if args.crop_margin_mm is None else float(args.crop_margin_mm)
        max_mm = tuple(c * s for c, s in zip(self.crop_size, self.spacing))
        self.rule = CropRule(margin, max_size_mm=max_mm) if args.crop == "tumor" else None

        self.seg: FrozenSegmenter = load_segmenter(
            self.cfg,
            results=results,
            preprocessed=preprocessed,
            dataset_name=self.dataset_name,
            plans_name=args.plans,
            configuration=args.configuration,
            fold=args.fold,
            checkpoint=args.gate_checkpoint,
            device=self.device,
        )
        self.norm = ct_normalizations(plans, args.configuration)[0]  # the data's (S maps it to its own)

        data_folder = pre / self.cm.data_identifier
        ids = infer_dataset_class(str(data_folder)).get_identifiers(str(data_folder))
        train_ids = training_cases(pre, args.fold, ids)
        self.data = GeneratorData(
            CaseStore(data_folder, train_ids, args.cache_mb),
            self.cfg,
            self.crop_size,
            self.spacing,
            self.rule,
            seed=args.seed,
            batch_size=args.batch_size,
        )
        self.data[0]  # one sample in this process: "no healthy organ crop" fails here as one clear error, not later
        # inside a DataLoader worker (pure function of (seed, index): nothing of the run's randomness is used)
        held_out = None
        if str(args.fold) != "all":
            val = [k for k in fold_split(pre, args.fold, "")["val"] if k in ids]
            if val:
                held_out = GeneratorData(
                    CaseStore(data_folder, val, args.cache_mb),
                    self.cfg,
                    self.crop_size,
                    self.spacing,
                    self.rule,
                    require_real=False,
                )
        self.held_out_data = held_out
        self.steps = args.steps
        if args.epochs is not None:  # --epochs: passes over the cases with an organ
            self.steps = args.epochs * math.ceil(len(self.data.fake_cases) / args.batch_size)

        torch.manual_seed(args.seed)  # identical initial weights on every rank
        self.g_spec = networks.unet_spec(args.gen_features, 2 if args.mask_input else 1, len(self.cfg.pairs))
        self.c_spec = networks.unet_spec(args.disc_features, 1, 3)
        self.G = networks.build(self.g_spec)
        if args.init == "zero":
            networks.zero_output_layer(self.G)
        self.G.to(self.device)
        self.C = networks.build(self.c_spec).to(self.device)
        divisors = [self.seg.divisor, networks.divisor(self.g_spec), networks.divisor(self.c_spec)]
        self.box_divisor = tuple(int(np.lcm.reduce([d[ax] for d in divisors])) for ax in range(3))
        self.cuda = self.device.type == "cuda"
        if self.cuda:  # channels-last convolutions are faster on recent GPUs
            for m in (self.G, self.C, self.seg.network):
                m.to(memory_format=torch.channels_last_3d)
        betas = (0.0, 0.999)  # the authors' Adam betas; AdamW as in the paper
        lr_c = args.lr if args.lr_c is None else args.lr_c
        self.opt_g = torch.optim.AdamW(self.G.parameters(), lr=args.lr, betas=betas, weight_decay=1e-4)
        self.opt_c = torch.optim.AdamW(self.C.parameters(), lr=lr_c, betas=betas, weight_decay=1e-4)
        self.sched_g = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt_g, T_max=self.steps)
        self.sched_c = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt_c, T_max=self.steps)
        use_amp = self.cuda and args.amp
        self.autocast = (lambda: torch.autocast("cuda", dtype=torch.float16)) if use_amp else nullcontext
        self.scaler_g = torch.amp.GradScaler("cuda", enabled=use_amp)
        self.scaler_c = torch.amp.GradScaler("cuda", enabled=use_amp)
        self.step_count = 0
        self.history: list[dict[str, float]] = []
        self.monitor: RealismMonitor | None = None
        self.warned = False

    # --- logging ----------------------------------------------------------------------------------------------------
    def log(self, msg: str) -> None:
        if self.rank != 0:
            return
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')}: {msg}"
        tqdm.write(line)
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "training_log.txt", "a") as f:
            f.write(line + "\n")

    # --- one step ---------------------------------------------------------------------------------------------------
    def _to(self, t: torch.Tensor) -> torch.Tensor:
        t = t.to(self.device, non_blocking=True)
        return t.contiguous(memory_format=torch.channels_last_3d) if self.cuda and t.ndim == 5 else t

    def synthesize_box(self, x: torch.Tensor, soft: torch.Tensor, organ_index: torch.Tensor) -> torch.Tensor:
        """Eq. 1 with the current G on (N, 1, *box) normalized crops and soft masks."""
        return generator_synthesis(
            self.G,
            x,
            soft,
            organ_index,
            self.norm,
            self.cfg.window,
            networks.divisor(self.g_spec),
            mask_input=networks.mask_input(self.g_spec),
        )

    def collate(self, samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """This process's samples of a step as one batch: every fake sample cut to one box size (the largest the crop
        rule asks for in the *global* batch, so that N processes cut what one process would), the real ones alike."""
        sizes = torch.stack([torch.stack([s["fake_box_size"], s["real_box_size"]]) for s in samples]).amax(
            0
        )  # (2, 3): fake, real
        if self.world > 1:
            sizes = sizes.to(self.device)
            dist.all_reduce(sizes, op=dist.ReduceOp.MAX)
            sizes = sizes.cpu()
        # whole multiples of the networks' strides where the context allows: S, G and C see real surroundings instead
        # of the replicate padding ``forward_padded`` would add to reach them
        fake_size, real_size = (
            [min(c, -(-v // d) * d) for v, d, c in zip(row, self.box_divisor, self.crop_size)] for row in sizes.tolist()
        )
        batch = {f"fake_{k}": v for k, v in cut_boxes(samples, "fake_", "mask", fake_size).items()}
        batch.update({f"real_{k}": v for k, v in cut_boxes(samples, "real_", "lesion", real_size).items()})
        for k in ("fake_organ", "fake_organ_index", "fake_edge_sigma_mm"):
            batch[k] = torch.stack([s[k] for s in samples])
        return batch

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
            self.spacing,
            self.seg,
            tumor_labels=self.cfg.tumor_labels,
            threshold=self.cfg.gate_threshold,
            autocast=self.autocast,
        )
        return mask, gated

    def _c_logits(self, x_norm: torch.Tensor) -> torch.Tensor:
        window = normalized_to_window(x_norm, self.norm, self.cfg.window)
        return forward_padded(self.C, window, networks.divisor(self.c_spec))

    def _optimizer_step(self, net, opt, scaler) -> None:
        average_gradients(net, self.world)
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(net.parameters(), self.args.grad_clip)
        scaler.step(opt)
        scaler.update()

    def step(self, samples: list[dict[str, torch.Tensor]]) -> dict[str, float]:
        """One optimizer step of G and of C on this process's share of the global batch (a list of samples)."""
        a = self.args
        batch = self.collate(samples)
        use_seg, trains_c = a.losses in ("both", "seg"), a.losses in ("both", "cls")
        use_cls = trains_c and (a.losses == "cls" or self.step_count >= a.seg_warmup_steps)
        out: dict[str, float] = {}

        # --- generator step (C frozen for this backward) ------------------------------------------------------------
        self.C.requires_grad_(False)
        mask, gated = self.synthesize(batch)
        x_hat = gated.x_hat
        with self.autocast():
            loss_seg = seg_guided_loss(gated.logits, self.cfg.tumor_labels, mask, a.seg_loss)
            loss_g = loss_seg if use_seg else torch.zeros_like(loss_seg)
            if trains_c:
                loss_cls = generator_adversarial_loss(self._c_logits(x_hat), mask)
                out["loss_cls"] = float(loss_cls.detach().mean())
                if use_cls:
                    loss_g = loss_g + a.lambda_cls * loss_cls
        self.opt_g.zero_grad(set_to_none=True)
        self.scaler_g.scale(loss_g.mean()).backward()
        self._optimizer_step(self.G, self.opt_g, self.scaler_g)
        self.C.requires_grad_(True)
        with torch.no_grad():
            s_p = masked_mean(tumor_probability(gated.logits.detach(), self.cfg.tumor_labels), mask)
            out.update(
                loss_g=float(loss_g.detach().mean()),
                loss_seg=float(loss_seg.detach().mean()),
                s_p=float(s_p.mean()),
                gate_p=float(gated.p.mean()),
                gate_accept=float(gated.accept.float().mean()),
            )

        # --- discriminator step -------------------------------------------------------------------------------------
        if trains_c:
            with self.autocast():
                c_real = self._c_logits(self._to(batch["real_image"]))
                c_fake = self._c_logits(x_hat.detach())
                loss_c = (
                    0.5
                    * (
                        discriminator_loss(c_real, batch["real_mask"].to(self.device), networks.C_REAL)
                        + discriminator_loss(c_fake, mask, networks.C_FAKE)
                    ).mean()
                )
            self.opt_c.zero_grad(set_to_none=True)
            self.scaler_c.scale(loss_c).backward()
            self._optimizer_step(self.C, self.opt_c, self.scaler_c)
            out["loss_c"] = float(loss_c.detach())
        self.sched_g.step()
        if trains_c:
            self.sched_c.step()
        self.step_count += 1
        return out

    # --- the run ----------------------------------------------------------------------------------------------------
    def loader(self) -> DataLoader:
        """This process's samples from the current step to the end of the run, a list of samples per step."""
        sampler = StepSampler(self.step_count, self.steps, self.args.batch_size, self.world, self.rank)
        return DataLoader(
            self.data,
            batch_size=self.args.batch_size // self.world,
            sampler=sampler,
            num_workers=self.args.num_workers,
            collate_fn=as_list,
            pin_memory=False,
            persistent_workers=False,
        )

    def _reduce(self, means: dict[str, float]) -> dict[str, float]:
        if self.world == 1:
            return means
        keys = sorted(means)
        t = torch.tensor([means[k] for k in keys], device=self.device, dtype=torch.float64)
        dist.all_reduce(t)
        return dict(zip(keys, (t / self.world).tolist()))

    def build_monitor(self) -> RealismMonitor:
        return RealismMonitor.build(self.data, self.held_out_data, self.seg, self.norm, n=self.args.monitor_n)

    def run(self) -> Path:
        a = self.args
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            self.cfg.save(self.out / CONFIG_FILENAME)
            self.monitor = self.build_monitor()
        crop = (
            f"tumor boxes (mask + {self.rule.margin_mm:g} mm, at most {self.crop_size})"
            if self.rule
            else f"fixed crop {self.crop_size}"
        )
        self.log(
            f"generator training: {self.dataset_name} {a.configuration} fold {a.fold}, {self.world} process(es), "
            f"device {self.device}, config from {self.cfg_source}; G {networks.n_parameters(self.G) / 1e6:.2f} M "
            f"params ({'image + mask' if a.mask_input else 'image'} input, init {a.init}), C "
            f"{networks.n_parameters(self.C) / 1e6:.2f} M; {crop} at {self.spacing} mm; {self.steps} steps of "
            f"{a.batch_size}; L_seg {a.seg_loss}; {len(self.data.fake_cases)} cases with organs, "
            f"{len(self.data.real_cases)} with tumors; frozen segmenter {self.seg.source}"
        )
        if self.monitor is not None:
            m = self.monitor
            self.log(
                f"monitor: {len(m.synthetic)} fixed synthetic tumors in "
                f"{'held-out validation' if m.held_out else 'training (no healthy validation region)'} cases, "
                f"{len(m.real)} real lesions of the training split; every {a.monitor_every} steps"
            )
            if not self.history:
                self.record({}, 0.0)  # step 0: where G starts
        sums: dict[str, float] = {}
        count, t0 = 0, time.time()
        bar = tqdm(total=self.steps, initial=self.step_count, desc="generator", disable=self.rank != 0)
        for samples in self.loader():
            out = self.step(samples)
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            bar.update(1)
            bar.set_postfix({k: f"{v:.3f}" for k, v in out.items() if k in ("loss_seg", "s_p", "gate_accept")})
            if self.step_count % a.monitor_every == 0 or self.step_count == self.steps:
                self.record(self._reduce({k: v / count for k, v in sums.items()}), time.time() - t0)
                sums, count, t0 = {}, 0, time.time()
        bar.close()
        if self.rank == 0:
            self.save_final()
            self.log(f"done: {self.out / FINAL}")
        return self.out / FINAL

    def record(self, means: dict[str, float], seconds: float) -> None:
        """A log point: training means since the last one, the monitor (rank 0), progress files and checkpoint."""
        entry: dict[str, float] = {
            "step": self.step_count,
            "samples": self.step_count * self.args.batch_size,
            "lr": self.opt_g.param_groups[0]["lr"],
            "time_s": seconds,
            **means,
        }
        if self.monitor is not None:
            t = time.time()
            self.G.eval()
            numbers, images = self.monitor.evaluate(self.synthesize_box, self.autocast)
            self.G.train()
            entry.update(numbers)
            entry["monitor_s"] = time.time() - t
            save_fixed_set_montage(
                self.monitor,
                images,
                self.out / f"montage_step_{self.step_count:06d}.png",
                f"{self.dataset_name} generator, step {self.step_count}",
                self.norm,
            )
        self.history.append(entry)
        if self.rank != 0:
            return
        self.log(f"step {self.step_count}: " + ", ".join(_fmt(k, v) for k, v in entry.items() if k != "step"))
        if means and self.args.losses != "cls" and not self.warned:
            warning = no_seg_signal([h for h in self.history if "s_p" in h], self.args.seg_loss)
            if warning:
                self.log(warning)
                self.warned = True
        atomic_write_text(self.out / "progress.json", json.dumps(self.history, indent=1) + "\n")
        save_progress_plot(self.history, self.out / "progress.png", self.cfg.gate_threshold)
        if means:
            self.save_latest()

    # --- outputs ----------------------------------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        return {
            "kind": "freetumor-generator",
            "version": __version__,
            "dataset": self.dataset_name,
            "plans": self.args.plans,
            "configuration": self.args.configuration,
            "fold": self.args.fold,
            "spacing": list(self.spacing),
            "crop_size": list(self.crop_size),
            "crop_rule": self.rule.to_dict() if self.rule else None,
            "normalization": asdict(self.norm),
            "config": self.cfg.to_dict(),
            "generator": self.g_spec,
            "discriminator": self.c_spec,
            "args": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.args).items()},
            "steps": int(self.sched_g.T_max),  # the run's length: its learning-rate schedule
            "steps_done": self.step_count,
            "frozen_segmenter": str(self.seg.source),
        }

    def save_final(self) -> None:
        checkpoint.save(self.out / FINAL, {"generator": self.G.state_dict()}, self.meta())

    def save_latest(self) -> None:
        state = {
            "generator": self.G.state_dict(),
            "discriminator": self.C.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_c": self.opt_c.state_dict(),
            "sched_g": self.sched_g.state_dict(),
            "sched_c": self.sched_c.state_dict(),
            "scaler_g": self.scaler_g.state_dict(),
            "scaler_c": self.scaler_c.state_dict(),
        }
        checkpoint.save(self.out / LATEST, state, {**self.meta(), "history": self.history})

    def resume(self) -> bool:
        """Continue from checkpoint_latest (exactly: weights, optimizers, schedules, step). False if none exists."""
        path = self.out / LATEST
        if not path.is_file():
            return False
        state, meta = checkpoint.load(path, device=self.device)
        expected = {
            "dataset": self.dataset_name,
            "plans": self.args.plans,
            "configuration": self.args.configuration,
            "fold": str(self.args.fold),
        }
        for key, value in expected.items():
            if str(meta.get(key)) != value:
                raise FreeTumorConfigError(f"{path} belongs to {key} {meta.get(key)!r}, not {value!r}")
        if FreeTumorConfig.from_dict(meta["config"]) != self.cfg:
            raise FreeTumorConfigError(
                f"{path} was trained with another FreeTumor config than the current one "
                f"({self.cfg_source}): restore that config or start a new run without --c"
            )
        if meta["generator"] != self.g_spec or meta["discriminator"] != self.c_spec:
            raise FreeTumorConfigError(
                f"{path} has other network sizes or inputs than this run: resume with the same --gen_features, "
                "--disc_features and --mask_input"
            )
        if meta.get("steps") != self.sched_g.T_max:
            raise FreeTumorConfigError(
                f"{path} was started for {meta.get('steps')} steps, this run asks for {self.steps}: the learning-rate "
                "schedule spans the whole run, so resume with the same --steps (or --epochs)"
            )
        self.G.load_state_dict(state["generator"])
        self.C.load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_c.load_state_dict(state["opt_c"])
        self.sched_g.load_state_dict(state["sched_g"])
        self.sched_c.load_state_dict(state["sched_c"])
        self.scaler_g.load_state_dict(state["scaler_g"])
        self.scaler_c.load_state_dict(state["scaler_c"])
        self.step_count = int(meta["steps_done"])
        self.history = list(meta.get("history", []))
        self.log(f"resumed from {path} at step {self.step_count}")
        return True


def _fmt(key: str, value: float) -> str:
    if isinstance(value, int):
        return f"{key} {value}"
    return f"{key} {value:.3g}" if key in ("lr", "time_s", "monitor_s") or "fd" in key else f"{key} {value:.4f}"
