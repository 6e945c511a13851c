"""What a generator run tells its user: the training log (console and training_log.txt), a log point per
``monitor_every`` steps (progress.json, progress.png) and, once, what to try when S recognises none of G's tumors."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from nnunet_freetumor.generator.plots import save_progress_plot
from nnunet_freetumor.utilities.files import atomic_write_text


class Logbook:
    """Rank 0 writes; the other processes stay silent."""

    def __init__(self, out: Path, rank: int):
        self.out, self.rank = out, rank
        self.warned = False

    def log(self, msg: str) -> None:
        if self.rank != 0:
            return
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')}: {msg}"
        tqdm.write(line)
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "training_log.txt", "a") as f:
            f.write(line + "\n")

    def point(self, history: list[dict[str, Any]], threshold: float, seg_loss: str | None) -> None:
        """The newest log point: a log line, the saturation warning (once; ``seg_loss`` None: L_seg is not used),
        progress.json and progress.png."""
        entry = history[-1]
        self.log(f"step {entry['step']}: " + ", ".join(_log_value(k, v) for k, v in entry.items() if k != "step"))
        if seg_loss is not None and not self.warned:
            warning = no_seg_signal([h for h in history if "s_p" in h], seg_loss)
            if warning:
                self.log(warning)
                self.warned = True
        atomic_write_text(self.out / "progress.json", json.dumps(history, indent=1) + "\n")
        save_progress_plot(history, self.out / "progress.png", threshold)


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


def _log_value(key: str, value: float) -> str:
    if isinstance(value, int):
        return f"{key} {value}"
    return f"{key} {value:.3g}" if key in ("lr", "time_s", "monitor_s") or "fd" in key else f"{key} {value:.4f}"
