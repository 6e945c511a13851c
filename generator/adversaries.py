"""The two networks a generator run trains, with their optimizers, learning-rate schedules and AMP scalers: G (the
residual of Eq. 1; zero-initialised last layer by default, so it starts from "no change") and C (voxel-wise
background / real tumor / fake tumor). Everything here is what checkpoint_latest holds to resume exactly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from nnunet_freetumor.config import FreeTumorConfigError
from nnunet_freetumor.generator import networks
from nnunet_freetumor.generator.args import GeneratorTrainingArgs
from nnunet_freetumor.generator.distributed import average_gradients

BETAS = (0.0, 0.999)  # the authors' Adam betas; AdamW as in the paper
WEIGHT_DECAY = 1e-4
PARTS = ("opt_g", "opt_c", "sched_g", "sched_c", "scaler_g", "scaler_c")


class Adversaries:
    def __init__(self, args: GeneratorTrainingArgs, n_organs: int, steps: int, device: torch.device, amp: bool):
        torch.manual_seed(args.seed)  # identical initial weights on every rank
        in_channels = 1 + int(args.mask_input) + int(args.depth_input)
        self.g_spec = networks.unet_spec(args.gen_features, in_channels, n_organs)
        self.g_spec["residual_blur_sigma"] = float(args.residual_blur)
        self.g_spec["depth_input"] = bool(args.depth_input)
        self.c_spec = networks.unet_spec(args.disc_features, 1, 3)
        self.G = networks.build(self.g_spec)
        if args.init == "zero":
            networks.zero_output_layer(self.G)
        self.G.to(device)
        self.C = networks.build(self.c_spec).to(device)
        lr_c = args.lr if args.lr_c is None else args.lr_c
        self.opt_g = torch.optim.AdamW(self.G.parameters(), lr=args.lr, betas=BETAS, weight_decay=WEIGHT_DECAY)
        self.opt_c = torch.optim.AdamW(self.C.parameters(), lr=lr_c, betas=BETAS, weight_decay=WEIGHT_DECAY)
        self.sched_g = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt_g, T_max=steps)
        self.sched_c = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt_c, T_max=steps)
        self.scaler_g = torch.amp.GradScaler("cuda", enabled=amp)
        self.scaler_c = torch.amp.GradScaler("cuda", enabled=amp)
        self.grad_clip = args.grad_clip

    @property
    def steps(self) -> int:
        """The run's length: its learning-rate schedule."""
        return int(self.sched_g.T_max)

    @property
    def lr(self) -> float:
        return self.opt_g.param_groups[0]["lr"]

    def step_g(self, loss: torch.Tensor, world: int) -> None:
        self.opt_g.zero_grad(set_to_none=True)
        self.scaler_g.scale(loss).backward()
        self._optimizer_step(self.G, self.opt_g, self.scaler_g, world)

    def step_c(self, loss: torch.Tensor, world: int) -> None:
        self.opt_c.zero_grad(set_to_none=True)
        self.scaler_c.scale(loss).backward()
        self._optimizer_step(self.C, self.opt_c, self.scaler_c, world)

    def _optimizer_step(self, net, opt, scaler, world: int) -> None:
        average_gradients(net, world)
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(net.parameters(), self.grad_clip)
        scaler.step(opt)
        scaler.update()

    def schedule_step(self, trains_c: bool) -> None:
        self.sched_g.step()
        if trains_c:
            self.sched_c.step()

    # --- checkpoints ------------------------------------------------------------------------------------------------
    def specs(self) -> dict[str, Any]:
        return {"generator": self.g_spec, "discriminator": self.c_spec}

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.G.state_dict(),
            "discriminator": self.C.state_dict(),
            **{k: getattr(self, k).state_dict() for k in PARTS},
        }

    def load_state_dict(self, state: dict[str, Any], meta: dict[str, Any], path: Path) -> None:
        """Resume from a checkpoint of a run with the same networks and length (one clear error otherwise)."""
        if networks.with_defaults(meta["generator"]) != self.g_spec or meta["discriminator"] != self.c_spec:
            raise FreeTumorConfigError(
                f"{path} has other network sizes or inputs than this run: resume with the same --gen_features, "
                "--disc_features, --no_mask_input, --depth_input and --residual_blur"
            )
        if meta.get("steps") != self.steps:
            raise FreeTumorConfigError(
                f"{path} was started for {meta.get('steps')} steps, this run asks for {self.steps}: the learning-rate "
                "schedule spans the whole run, so resume with the same --steps (or --epochs)"
            )
        self.G.load_state_dict(state["generator"])
        self.C.load_state_dict(state["discriminator"])
        for k in PARTS:
            getattr(self, k).load_state_dict(state[k])
