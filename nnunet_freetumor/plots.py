"""PNG montages of synthesized tumors (image + mask outline), for people who would rather look than read logs."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from nnunet_freetumor.utilities.files import atomic_path


@dataclass
class Example:
    """One synthesized tumor for the montage: 2-D slices through the tumor centre."""

    image: np.ndarray  # (H, W) after synthesis, nnU-Net normalized
    mask: np.ndarray  # (H, W) bool, the synthetic tumor mask
    title: str
    before: np.ndarray | None = None  # (H, W) the same slice before synthesis, when known


def example_from_sample(
    image: torch.Tensor, mask: torch.Tensor, title: str, before: torch.Tensor | None = None
) -> Example | None:
    """Slice (C, X, Y, Z) image / (X, Y, Z) mask tensors through the mask centre along axis 0 (the plan's slowest,
    usually out-of-plane, axis). Returns None for an empty mask."""
    m = mask.detach().cpu().bool()
    if not bool(m.any()):
        return None
    z = int(torch.nonzero(m)[:, 0].float().mean().round())

    def cut(t: torch.Tensor) -> np.ndarray:
        return t.detach().cpu().float()[0, z].numpy()

    return Example(image=cut(image), mask=m[z].numpy(), title=title, before=None if before is None else cut(before))


def save_montage(
    examples: list[Example], path: str | os.PathLike, suptitle: str = "", vrange: tuple[float, float] | None = None
) -> None:
    """Write a grid of examples (one column each; a 'before' row when available) with the mask outlined in red.
    ``vrange``: one gray window for every panel (image units), so montages of different runs or steps compare;
    default: each example's 1st-99th percentile."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not examples:
        return
    has_before = any(e.before is not None for e in examples)
    rows = 2 if has_before else 1
    fig, axes = plt.subplots(rows, len(examples), figsize=(3 * len(examples), 3.2 * rows), squeeze=False)
    for j, e in enumerate(examples):
        panels = [(e.before, "before"), (e.image, e.title)] if has_before else [(e.image, e.title)]
        for i, (img, label) in enumerate(panels):
            ax = axes[i, j]
            ax.axis("off")
            if img is None:
                continue
            lo, hi = vrange if vrange is not None else np.percentile(e.image, [1, 99])
            ax.imshow(img, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1)
            if e.mask.any():
                ax.contour(e.mask.astype(float), levels=[0.5], colors="red", linewidths=0.8)
            ax.set_title(label, fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def save_gray_png(image: np.ndarray, path: str | os.PathLike, vmin: float, vmax: float) -> None:
    """Write a 2-D array as a plain grayscale PNG, one pixel per array element, ``[vmin, vmax]`` mapped to black..white
    (no axes, no title, no outline: what a reader of a blinded test should see)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if image.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {image.shape}")
    with atomic_path(path) as tmp:
        plt.imsave(tmp, np.asarray(image, dtype=np.float32), cmap="gray", vmin=vmin, vmax=vmax, format="png")
