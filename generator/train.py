"""Adversarial training of the FreeTumor generator G on an nnU-Net preprocessed dataset (METHOD.md Eq. 1-3).

Per step, on a batch of healthy-organ crops with synthetic masks M and a batch of real-tumor crops:
    x_hat = Eq. 1 with G                                    (synthesis.generator_synthesis)
    L_seg = 1 - mean_M S(x_hat)_tumor                        (Eq. 2, S = frozen baseline nnU-Net of the fold)
    L_cls = -log C_real(x_hat) over M                        (non-saturating GAN loss, C voxel-wise bg/real/fake)
    L_G   = lambda_cls * L_cls + L_seg                       (Eq. 3); G step
    L_C   = CE(C(x_real) -> real on tumor) + CE(C(x_hat) -> fake on M), background elsewhere; C step
Also logged: the share of synthetic tumors the quality gate would accept (P >= T, Eq. 4-5).

Outputs (rank 0) in ``$nnUNet_results/<dataset>/FreeTumorGenerator__<plans>__<configuration>/fold_<f>/``:
``generator_final.safetensors`` (+ .json: config, network spec, window, label map, ...), ``checkpoint_latest
.safetensors`` (everything needed to resume exactly), ``progress.png``, ``progress.json``, ``montage_epoch_XXXX.png``,
``training_log.txt``, ``freetumor_config.json``.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from tqdm import tqdm

from nnunet_freetumor import __version__
from nnunet_freetumor.config import CONFIG_FILENAME, FreeTumorConfig, FreeTumorConfigError
from nnunet_freetumor.frozen import FrozenSegmenter, forward_padded, load_gate_of_config
from nnunet_freetumor.gate import gate_accept, gate_proportion
from nnunet_freetumor.generator import checkpoint, networks
from nnunet_freetumor.generator.checkpoint import FINAL, LATEST, generator_folder
from nnunet_freetumor.generator.data import GeneratorData, GlobalBatchSampler, training_cases
from nnunet_freetumor.generator.losses import discriminator_loss, generator_adversarial_loss, seg_guided_loss
from nnunet_freetumor.intensity import ct_normalizations, normalized_to_window
from nnunet_freetumor.io import atomic_path, atomic_write_text
from nnunet_freetumor.labels import config_for_dataset
from nnunet_freetumor.plots import example_from_sample, save_montage
from nnunet_freetumor.synthesis import generator_synthesis, soft_masks

LOSSES = ("both", "seg", "cls")


@dataclass
class GeneratorTrainingArgs:
    """Everything that defines a generator run (saved in every checkpoint)."""

    dataset: str  # name (DatasetXXX_Name) or id
    configuration: str = "3d_fullres"
    plans: str = "nnUNetPlans"
    fold: str = "0"
    epochs: int = 100
    batch_size: int = 4
    lr: float = 1e-4
    lambda_cls: float = 0.1
    losses: str = "both"  # both | seg (L_seg only) | cls (L_cls only): the paper's loss ablation
    crop_size: tuple[int, ...] | None = None  # default: min(96, patch size) per axis
    gen_features: tuple[int, ...] = (32, 64, 128, 256, 320)
    disc_features: tuple[int, ...] = (16, 32, 64, 128)
    grad_clip: float = 12.0
    seed: int = 0
    num_workers: int = 2
    device: str = "cuda"
    amp: bool = True  # CUDA only
    save_every: int = 1
    gate_checkpoint: str | None = None  # default: the config's gate_trainer baseline of this fold
    max_steps_per_epoch: int | None = None  # cap for smoke tests / quick looks
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.losses not in LOSSES:
            raise FreeTumorConfigError(f"--losses must be one of {LOSSES}, got {self.losses!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise FreeTumorConfigError("--epochs and --batch_size must be >= 1 and --lr > 0")


def no_seg_signal(history: list[dict[str, float]], epochs: int = 2, level: float = 0.99) -> str | None:
    """A warning when the frozen S has labeled (almost) none of G's tumors as tumor for the last ``epochs`` epochs.

    L_seg (Eq. 2) is 1 - p with p = S's tumor probability, and d(1 - p)/d(logit) = -p (1 - p): where S is sure that a
    synthetic tumor is not tumor, L_seg gives G no gradient, and G learns from L_cls alone (seen on the phantom: a
    generator at L_seg 1.000 in all its epochs ended up painting tumors brighter than the organ, the opposite of the
    real ones, and the gate rejected all of them; benchmarks/RESULTS.md). None while S still responds.
    """
    last = history[-epochs:]
    if len(last) < epochs or any(h["loss_seg"] < level or h["gate_accept"] > 0 for h in last):
        return None
    return (
        f"warning: for {epochs} epochs the frozen S labeled almost none of the synthetic tumors as tumor (L_seg "
        f"{last[-1]['loss_seg']:.3f}, none passes the gate): L_seg gives G no gradient then (d(1-p)/dlogit = "
        "-p(1-p)), G learns from L_cls alone and the quality gate will reject its tumors. Check that the config's "
        "window and tumor polarity fit the data (freetumor_config --chest for lesions brighter than the organ) and "
        "that the baseline S segments tumors; a larger --lambda_cls lets the discriminator pull G towards the real "
        "tumors' appearance; or train with nnUNetTrainerHandcraftedTumor."
    )


def _distributed() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class GeneratorTrainer:
    def __init__(self, args: GeneratorTrainingArgs, results: str | os.PathLike, preprocessed: str | os.PathLike):
        from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        self.args = args
        self.rank, self.world = _distributed()
        self.device = torch.device(args.device)
        if self.device.type == "cuda" and self.world > 1:
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        self.dataset_name = maybe_convert_to_dataset_name(args.dataset)
        pre = Path(preprocessed, self.dataset_name)
        plans_file = pre / f"{args.plans}.json"
        if not plans_file.is_file():
            raise FreeTumorConfigError(
                f"{plans_file} does not exist. Run `nnUNetv2_plan_and_preprocess -d "
                f"{args.dataset}` (with -pl for other planners) first."
            )
        plans = PlansManager(str(plans_file))
        if args.configuration not in plans.available_configurations:
            raise FreeTumorConfigError(
                f"configuration {args.configuration!r} is not in {plans_file} "
                f"(available: {plans.available_configurations})"
            )
        self.cm = plans.get_configuration(args.configuration)
        self.cfg, self.cfg_source = config_for_dataset(json.loads((pre / "dataset.json").read_text()), pre)
        self.out = generator_folder(results, self.dataset_name, args.plans, args.configuration, args.fold)
        self.spacing = tuple(float(s) for s in self.cm.spacing)
        patch = self.cm.patch_size
        self.crop_size = tuple(args.crop_size or (min(96, int(p)) for p in patch))
        if len(self.crop_size) != 3:
            raise FreeTumorConfigError(f"configuration {args.configuration!r} is not 3-D")

        self.seg: FrozenSegmenter = load_gate_of_config(
            self.cfg,
            results=results,
            preprocessed=preprocessed,
            dataset_name=self.dataset_name,
            plans_name=args.plans,
            configuration=args.configuration,
            fold=args.fold,
            checkpoint=args.gate_checkpoint,
        ).to(self.device)
        self.norm = ct_normalizations(plans.plans, args.configuration)[0]  # the data's (S maps it to its own)

        data_folder = pre / self.cm.data_identifier
        from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

        ids = infer_dataset_class(str(data_folder)).get_identifiers(str(data_folder))
        self.data = GeneratorData(
            data_folder, training_cases(pre, args.fold, ids), self.cfg, self.crop_size, self.spacing, seed=args.seed
        )
        self.data[0]  # one sample in this process: "no healthy organ crop" fails here as one clear error, not later
        # inside a DataLoader worker (pure function of (seed, epoch, index): nothing of the run's randomness is used)

        torch.manual_seed(args.seed)  # identical initial weights on every rank
        self.g_spec = networks.unet_spec(args.gen_features, 1, len(self.cfg.pairs))
        self.c_spec = networks.unet_spec(args.disc_features, 1, 3)
        self.G = networks.build(self.g_spec).to(self.device)
        self.C = networks.build(self.c_spec).to(self.device)
        self.cuda = self.device.type == "cuda"
        if self.cuda:  # channels-last convolutions are faster on recent GPUs
            for m in (self.G, self.C, self.seg.network):
                m.to(memory_format=torch.channels_last_3d)
        betas = (0.0, 0.999)  # the authors' Adam betas; AdamW as in the paper
        self.opt_g = torch.optim.AdamW(self.G.parameters(), lr=args.lr, betas=betas, weight_decay=1e-4)
        self.opt_c = torch.optim.AdamW(self.C.parameters(), lr=args.lr, betas=betas, weight_decay=1e-4)
        self.sched_g = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt_g, T_max=args.epochs)
        self.sched_c = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt_c, T_max=args.epochs)
        use_amp = self.cuda and args.amp
        self.autocast = (lambda: torch.autocast("cuda", dtype=torch.float16)) if use_amp else nullcontext
        self.scaler_g = torch.amp.GradScaler("cuda", enabled=use_amp)
        self.scaler_c = torch.amp.GradScaler("cuda", enabled=use_amp)
        self.G_train, self.C_train = self.G, self.C
        if self.world > 1:
            ids = [self.device.index] if self.cuda else None
            self.G_train = DDP(self.G, device_ids=ids, find_unused_parameters=True)
            self.C_train = DDP(self.C, device_ids=ids, find_unused_parameters=True)
        self.epoch = 0
        self.history: list[dict[str, float]] = []

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

    def synthesize(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self._to(batch["fake_image"])
        mask = batch["fake_mask"].to(self.device)
        organ = batch["fake_labels"].to(self.device) == batch["fake_organ"].to(self.device).view(-1, 1, 1, 1, 1)
        soft = soft_masks(mask, organ, batch["fake_edge_sigma_mm"].tolist(), self.spacing)
        with self.autocast():
            x_hat = generator_synthesis(
                self.G_train,
                x,
                soft,
                batch["fake_organ_index"].to(self.device),
                self.norm,
                self.cfg.window,
                networks.divisor(self.g_spec),
            )
        return x, x_hat, mask

    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        a = self.args
        use_seg, use_cls = a.losses in ("both", "seg"), a.losses in ("both", "cls")
        window = self.cfg.window

        # --- generator step (C frozen for this backward) ------------------------------------------------------------
        self.C.requires_grad_(False)
        x, x_hat, mask = self.synthesize(batch)
        with self.autocast():
            seg_logits = self.seg(x_hat)
            loss_seg = seg_guided_loss(seg_logits, self.cfg.tumor_labels, mask)
            c_fake = forward_padded(
                self.C, normalized_to_window(x_hat, self.norm, window), networks.divisor(self.c_spec)
            )
            loss_cls = generator_adversarial_loss(c_fake, mask)
        loss_g = (a.lambda_cls * loss_cls if use_cls else 0) + (loss_seg if use_seg else 0)
        loss_g = loss_g.mean()
        self.opt_g.zero_grad(set_to_none=True)
        self.scaler_g.scale(loss_g).backward()
        self.scaler_g.unscale_(self.opt_g)
        torch.nn.utils.clip_grad_norm_(self.G.parameters(), a.grad_clip)
        self.scaler_g.step(self.opt_g)
        self.scaler_g.update()
        self.C.requires_grad_(True)

        # --- gate statistics (Eq. 4-5) on this batch ----------------------------------------------------------------
        with torch.no_grad():
            p = gate_proportion(seg_logits.detach(), mask, self.cfg.tumor_labels)
            accept = gate_accept(p, self.cfg.gate_threshold).float()

        # --- discriminator step -------------------------------------------------------------------------------------
        loss_c = torch.zeros((), device=self.device)
        if use_cls:
            x_real = self._to(batch["real_image"])
            real_mask = batch["real_mask"].to(self.device)
            with self.autocast():
                div = networks.divisor(self.c_spec)
                c_real = forward_padded(self.C_train, normalized_to_window(x_real, self.norm, window), div)
                c_fake = forward_padded(self.C_train, normalized_to_window(x_hat.detach(), self.norm, window), div)
                loss_c = (
                    0.5
                    * (
                        discriminator_loss(c_real, real_mask, networks.C_REAL)
                        + discriminator_loss(c_fake, mask, networks.C_FAKE)
                    ).mean()
                )
            self.opt_c.zero_grad(set_to_none=True)
            self.scaler_c.scale(loss_c).backward()
            self.scaler_c.unscale_(self.opt_c)
            torch.nn.utils.clip_grad_norm_(self.C.parameters(), a.grad_clip)
            self.scaler_c.step(self.opt_c)
            self.scaler_c.update()
        return {
            "loss_g": float(loss_g.detach()),
            "loss_seg": float(loss_seg.detach().mean()),
            "loss_cls": float(loss_cls.detach().mean()),
            "loss_c": float(loss_c.detach()),
            "gate_p": float(p.mean()),
            "gate_accept": float(accept.mean()),
        }

    # --- epochs -----------------------------------------------------------------------------------------------------
    def loader(self) -> DataLoader:
        self.data.set_epoch(self.epoch)
        sampler = GlobalBatchSampler(len(self.data), self.args.batch_size, self.world, self.rank)
        return DataLoader(
            self.data,
            batch_size=self.args.batch_size // self.world,
            sampler=sampler,
            num_workers=self.args.num_workers,
            pin_memory=self.cuda,
            drop_last=False,
            persistent_workers=False,
        )

    def train_epoch(self) -> dict[str, float]:
        self.G.train()
        self.C.train()
        sums: dict[str, float] = {}
        n = 0
        loader = self.loader()
        total = (
            len(loader) if self.args.max_steps_per_epoch is None else min(len(loader), self.args.max_steps_per_epoch)
        )
        bar = tqdm(loader, total=total, desc=f"epoch {self.epoch}", disable=self.rank != 0, leave=False)
        first = None
        for i, batch in enumerate(bar):
            if i >= total:
                break
            out = self.step(batch)
            if first is None:
                first = batch
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + v
            n += 1
            bar.set_postfix({k: f"{v:.3f}" for k, v in out.items() if k in ("loss_seg", "loss_cls", "gate_accept")})
        means = {k: v / max(n, 1) for k, v in sums.items()}
        if self.world > 1:
            keys = sorted(means)
            t = torch.tensor([means[k] for k in keys], device=self.device, dtype=torch.float64)
            dist.all_reduce(t)
            means = dict(zip(keys, (t / self.world).tolist()))
        means["steps"] = n  # optimizer steps of this epoch (every rank takes the same ones)
        self.sched_g.step()
        self.sched_c.step()
        if self.rank == 0 and first is not None:
            self.save_montage(first)
        return means

    def run(self) -> Path:
        a = self.args
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            self.cfg.save(self.out / CONFIG_FILENAME)
        self.log(
            f"generator training: {self.dataset_name} {a.configuration} fold {a.fold}, {self.world} process(es), "
            f"device {self.device}, config from {self.cfg_source}; G {networks.n_parameters(self.G) / 1e6:.2f} M "
            f"params, C {networks.n_parameters(self.C) / 1e6:.2f} M; crop {self.crop_size} at {self.spacing} mm; "
            f"{len(self.data.fake_cases)} cases with organs, {len(self.data.real_cases)} with tumors; "
            f"frozen segmenter {self.seg.source}"
        )
        warned = False
        while self.epoch < a.epochs:
            t0 = time.time()
            means = self.train_epoch()
            means["epoch"], means["lr"] = self.epoch, self.opt_g.param_groups[0]["lr"]
            means["time_s"] = time.time() - t0
            self.history.append(means)
            self.log(
                f"epoch {self.epoch}: "
                + ", ".join(
                    f"{k} {v}" if isinstance(v, int) else f"{k} {v:.3g}" if k == "lr" else f"{k} {v:.4f}"
                    for k, v in means.items()
                    if k != "epoch"
                )
            )
            warning = no_seg_signal(self.history) if a.losses != "cls" and not warned else None
            if warning:
                self.log(warning)
                warned = True
            self.epoch += 1
            if self.rank == 0:
                self.save_progress()
                if self.epoch % a.save_every == 0 or self.epoch == a.epochs:
                    self.save_latest()
        if self.rank == 0:
            self.save_final()
            self.log(f"done: {self.out / FINAL}")
        return self.out / FINAL

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
            "normalization": asdict(self.norm),
            "config": self.cfg.to_dict(),
            "generator": self.g_spec,
            "discriminator": self.c_spec,
            "args": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.args).items()},
            "epochs_done": self.epoch,
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
        """Continue from checkpoint_latest (exactly: weights, optimizers, schedules, epoch). False if none exists."""
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
                f"{path} has other network sizes than this run: resume with the same --gen_features/--disc_features"
            )
        self.G.load_state_dict(state["generator"])
        self.C.load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_c.load_state_dict(state["opt_c"])
        self.sched_g.load_state_dict(state["sched_g"])
        self.sched_c.load_state_dict(state["sched_c"])
        self.scaler_g.load_state_dict(state["scaler_g"])
        self.scaler_c.load_state_dict(state["scaler_c"])
        self.epoch = int(meta["epochs_done"])
        self.history = list(meta.get("history", []))
        self.log(f"resumed from {path} at epoch {self.epoch}")
        return True

    def save_progress(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        atomic_write_text(self.out / "progress.json", json.dumps(self.history, indent=1) + "\n")
        ep = [h["epoch"] for h in self.history]
        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
        for k in ("loss_g", "loss_seg", "loss_cls", "loss_c"):
            ax1.plot(ep, [h[k] for h in self.history], label=k)
        ax1.set_ylabel("loss")
        ax1.legend()
        ax2.plot(ep, [h["gate_accept"] for h in self.history], label=f"gate accept (P >= {self.cfg.gate_threshold})")
        ax2.plot(ep, [h["gate_p"] for h in self.history], label="mean P")
        ax2.set_ylim(0, 1)
        ax2.set_xlabel("epoch")
        ax2.legend()
        fig.tight_layout()
        with atomic_path(self.out / "progress.png") as tmp:
            fig.savefig(tmp, format="png", dpi=90)
        plt.close(fig)

    @torch.no_grad()
    def save_montage(self, batch: dict[str, torch.Tensor], n: int = 4) -> None:
        self.G.eval()
        x, x_hat, mask = self.synthesize(batch)
        self.G.train()
        examples = []
        for b in range(min(n, x.shape[0])):
            ex = example_from_sample(x_hat[b].float(), mask[b, 0], f"synthetic #{b}", before=x[b].float())
            if ex is not None:
                examples.append(ex)
        for b in range(min(n, batch["real_image"].shape[0])):
            ex = example_from_sample(batch["real_image"][b], batch["real_mask"][b, 0], f"real #{b}")
            if ex is not None:
                examples.append(ex)
        save_montage(
            examples,
            self.out / f"montage_epoch_{self.epoch:04d}.png",
            f"{self.dataset_name} generator, epoch {self.epoch}: synthetic (top: before) vs real tumors",
        )
