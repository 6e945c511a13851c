"""Generator training under torchrun: every process takes its share of the global batch and the gradients are averaged
(one all-reduce per network and step), which is what one process with the whole batch computes."""

from __future__ import annotations

import os

import torch
from torch import distributed as dist

from nnunet_freetumor.config import FreeTumorConfigError


def process_group(global_batch: int = 1) -> tuple[int, int]:
    """(rank, world size): (0, 1) without torch.distributed (one process). Every process takes an equal share of
    ``global_batch`` (one clear error otherwise)."""
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
    if global_batch % world:
        raise FreeTumorConfigError(
            f"--batch_size {global_batch} must be divisible by the number of processes ({world})"
        )
    return rank, world


def process_device(device: str, world: int) -> torch.device:
    """``device``; under torchrun with CUDA, this process's GPU (``LOCAL_RANK``)."""
    if torch.device(device).type == "cuda" and world > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device(device)


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


def reduce_means(means: dict[str, float], device: torch.device, world: int) -> dict[str, float]:
    """The mean over the processes of each process's means (one all-reduce)."""
    if world == 1:
        return means
    keys = sorted(means)
    t = torch.tensor([means[k] for k in keys], device=device, dtype=torch.float64)
    dist.all_reduce(t)
    return dict(zip(keys, (t / world).tolist()))
