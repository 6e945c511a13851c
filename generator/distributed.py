"""Generator training under torchrun: every process takes its share of the global batch and the gradients are averaged
(one all-reduce per network and step), which is what one process with the whole batch computes."""

from __future__ import annotations

import torch
from torch import distributed as dist


def process_group() -> tuple[int, int]:
    """(rank, world size): (0, 1) without torch.distributed (one process)."""
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


def reduce_means(means: dict[str, float], device: torch.device, world: int) -> dict[str, float]:
    """The mean over the processes of each process's means (one all-reduce)."""
    if world == 1:
        return means
    keys = sorted(means)
    t = torch.tensor([means[k] for k in keys], device=device, dtype=torch.float64)
    dist.all_reduce(t)
    return dict(zip(keys, (t / world).tolist()))
