"""Fully convolutional networks on inputs of any size (S, G and C all go through here)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def forward_padded(net: nn.Module, x: torch.Tensor, divisor: tuple[int, ...]) -> torch.Tensor:
    """Run a fully convolutional net on ``x`` (B, C, *spatial) of any size: pad (replicate) each spatial axis up to a
    multiple of ``divisor``, run, crop the output back."""
    spatial = x.shape[2:]
    target = [int(np.ceil(s / d) * d) for s, d in zip(spatial, divisor)]
    if list(spatial) == target:
        return net(x)
    pad = []
    for s, t in reversed(list(zip(spatial, target))):
        pad += [0, t - s]
    out = net(torch.nn.functional.pad(x, pad, mode="replicate"))
    return out[(slice(None), slice(None), *(slice(0, s) for s in spatial))]
