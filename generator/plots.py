"""Pictures of a generator run: the progress plot (losses and the realism monitor over steps) and the montage of the
monitor's fixed set (the same tumors at every step, one gray window, so steps compare)."""

from __future__ import annotations

import math
import os
from typing import Any

import torch

from nnunet_freetumor.plots import example_from_sample, save_montage
from nnunet_freetumor.synthesis.intensity import CTNormalization
from nnunet_freetumor.utilities.files import atomic_path

MONTAGE_COLUMNS = 8


def save_fixed_set_montage(
    monitor: Any, images: list[torch.Tensor], path: str | os.PathLike, title: str, norm: CTNormalization
) -> None:
    """The first synthetic tumors of the monitor's fixed set (before / after) and as many real lesions, in the
    plan's clip window."""
    n = MONTAGE_COLUMNS // 2
    examples = []
    for it, img in list(zip(monitor.synthetic, images))[:n]:
        ex = example_from_sample(img, torch.from_numpy(it.mask), "synthetic", before=it.image)
        if ex is not None:
            examples.append(ex)
    for it in monitor.real[:n]:
        ex = example_from_sample(it.image, torch.from_numpy(it.mask), "real")
        if ex is not None:
            examples.append(ex)
    window = (float(norm.from_hu(norm.lower)), float(norm.from_hu(norm.upper)))
    save_montage(examples, path, f"{title}: synthetic (top: before) | real lesions", vrange=window)


def save_progress_plot(history: list[dict[str, Any]], path: str | os.PathLike, threshold: float) -> None:
    """Four panels over optimizer steps: losses; median contrast to the organ ring (synthetic vs real, with the real
    lesions' interquartile band); S's acceptance at the gate threshold (synthetic vs real); Fréchet distance with the
    same-distribution reference band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(key: str) -> tuple[list[float], list[float]]:
        pts = [(h["step"], h[key]) for h in history if key in h and h[key] is not None and math.isfinite(h[key])]
        return [p[0] for p in pts], [p[1] for p in pts]

    fig, axes = plt.subplots(2, 2, figsize=(12, 7), sharex=True)
    ax = axes[0, 0]
    for k in ("loss_seg", "loss_cls", "loss_c"):
        x, y = series(k)
        if x:
            ax.plot(x, y, label=k)
    x, y = series("s_p")
    if x:
        ax.plot(x, y, label="S's tumor probability in M", linestyle="--")
    ax.set_title("training (means per log interval)")
    _legend(ax)
    ax = axes[0, 1]
    x, y = series("synthetic_contrast_hu")
    ax.plot(x, y, "o-", label="synthetic (median)")
    xr, yr = series("real_contrast_hu")
    if xr:
        _, lo = series("real_contrast_q1")
        _, hi = series("real_contrast_q3")
        ax.plot(xr, yr, color="black", label="real lesions (median)")
        if len(lo) == len(xr):
            ax.fill_between(xr, lo, hi, color="gray", alpha=0.3, label="real: interquartile range")
    ax.axhline(0, color="gray", linewidth=0.5)
    ax.set_title("contrast to the organ within 5 mm [HU]")
    _legend(ax)
    ax = axes[1, 0]
    x, y = series("synthetic_accept")
    ax.plot(x, y, "o-", label=f"synthetic: P >= {threshold:g}")
    xr, yr = series("real_accept")
    ax.plot(xr, yr, color="black", label="real lesions S trained on: P >= T")
    xh, yh = series("held_out_real_accept")
    if xh:
        ax.plot(xh, yh, color="black", linestyle="-.", label="real lesions of the validation split: P >= T")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("S labels the tumor tumor (quality gate)")
    ax.set_xlabel("optimizer step")
    _legend(ax)
    ax = axes[1, 1]
    x, y = series("fd")
    ax.plot(x, y, "o-", label="FD real vs synthetic")
    xb, lo = series("fd_ref_lo")
    _, hi = series("fd_ref_hi")
    if xb and len(hi) == len(xb):
        ax.fill_between(xb, lo, hi, color="gray", alpha=0.3, label="same-distribution band (5-95 %)")
    ax.set_title("Fréchet distance in S's features")
    ax.set_xlabel("optimizer step")
    _legend(ax)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def _legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:  # a run without the monitor, or before its first point, has no curves
        ax.legend(fontsize=8)
