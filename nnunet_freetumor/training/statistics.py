"""Per-epoch statistics of a synthesis trainer: counts summed over the epoch's batches (and over DDP ranks), one line
in the training log, one entry in ``freetumor_stats.json``, and a PNG montage of a few synthesized crops."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import distributed as dist

from nnunet_freetumor.plots import Example, example_from_sample, save_montage
from nnunet_freetumor.utilities.files import atomic_write_text

STATS_FILENAME = "freetumor_stats.json"
MAX_EXAMPLES = 6


class EpochStatistics:
    """The counts and example crops of one epoch (``start`` begins the next)."""

    def __init__(self) -> None:
        self.counts: dict[str, float] = {}
        self.examples: list[Example] = []

    def start(self, **initial: float) -> None:
        self.counts = dict(initial)
        self.examples = []

    def count(self, **counts: float) -> None:
        for k, v in counts.items():
            self.counts[k] = self.counts.get(k, 0) + v

    def add_example(
        self, image: torch.Tensor, mask: torch.Tensor, title: str, before: torch.Tensor | None = None
    ) -> None:
        """Keep a slice through the mask for the montage (at most ``MAX_EXAMPLES`` per epoch)."""
        if len(self.examples) >= MAX_EXAMPLES:
            return
        ex = example_from_sample(image, mask, title, before)
        if ex is not None:
            self.examples.append(ex)

    def reduced(self, device: torch.device, ddp: bool) -> dict[str, float]:
        """The counts summed over the DDP ranks (every rank must call this)."""
        if not ddp:
            return dict(self.counts)
        keys = sorted(self.counts)
        t = torch.tensor([float(self.counts[k]) for k in keys], device=device, dtype=torch.float64)
        dist.all_reduce(t)
        return dict(zip(keys, t.tolist()))

    def save(self, folder: str | Path, epoch: int, counts: dict[str, float], title: str) -> None:
        """Append ``counts`` to ``freetumor_stats.json`` (a resumed run rewrites its epochs) and write the montage."""
        path = Path(folder, STATS_FILENAME)
        history = json.loads(path.read_text()) if path.is_file() else []
        history = [h for h in history if h.get("epoch", -1) < epoch]
        history.append({"epoch": epoch, **{k: _jsonable(v) for k, v in counts.items()}})
        atomic_write_text(path, json.dumps(history, indent=1) + "\n")
        if self.examples:
            save_montage(self.examples, Path(folder, f"synthesis_epoch_{epoch:04d}.png"), f"{title} epoch {epoch}")


def log_line(counts: dict[str, float]) -> str:
    return "FreeTumor: " + ", ".join(f"{k} {_count(v)}" for k, v in counts.items())


def _count(v: float) -> str:
    return f"{v:.3f}" if isinstance(v, float) and not float(v).is_integer() else str(int(v))


def _jsonable(v: float) -> float | int | None:
    v = float(v)
    return int(v) if v.is_integer() else (None if np.isnan(v) else v)
