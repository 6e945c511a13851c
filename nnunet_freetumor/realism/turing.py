"""Visual Turing test kit: blinded PNG crops of real and synthetic tumors, an answer key, and a scorer.

``make_kit`` writes, into a new folder: ``case_000.png ...`` (real and synthetic tumors shuffled; one axial slice
through each lesion's centre of mass, every image with the same HU window (the config's), the same pixel size and no
outline or title), ``answers_template.csv`` (id, answer: to fill with real/synthetic), ``README.txt`` and, in the
subfolder ``key/``, ``answer_key.csv`` (id, truth, source case): remove ``key/`` before handing the folder to a reader.

``score`` compares a filled answer sheet with the key. As in the paper, *sensitivity* is the share of synthetic tumors
called synthetic, *specificity* the share of real tumors called real; readers at chance level score ~50 % on both.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.ndimage import map_coordinates

from nnunet_freetumor.config import FreeTumorConfigError
from nnunet_freetumor.evaluation.lesions import safe_div
from nnunet_freetumor.plots import save_gray_png
from nnunet_freetumor.realism.lesions import Lesion, real_lesions, synthetic_lesions
from nnunet_freetumor.utilities.dataset import PlannedDataset, raw_training_cases
from nnunet_freetumor.utilities.files import staged_folder
from nnunet_freetumor.utilities.image_io import read_image

KEY_FOLDER = "key"
ANSWER_KEY = "answer_key.csv"
TEMPLATE = "answers_template.csv"
TRUTHS = ("real", "synthetic")
ANSWERS = {"real": "real", "r": "real", "synthetic": "synthetic", "s": "synthetic", "syn": "synthetic"}
README = """\
Visual Turing test: {n} tumor images, some real, some synthetic (FreeTumor).
For every case_XXX.png decide whether the tumor in the centre of the image is real or synthetic, and write
"real" or "synthetic" into the answer column of answers_template.csv (save it under a new name).
All images use the same window ({lo:g}..{hi:g} HU) and pixel size ({mm:g} mm per pixel at {px} pixels).
Organiser: the key is in key/{key}; remove key/ before handing this folder out, then score with
  freetumor_turing score ANSWERS.csv --key key/{key}
"""


def axial_crop(
    image: np.ndarray,
    spacing: Sequence[float],
    centre: Sequence[int],
    fov_mm: float,
    size_px: int,
    fill: float = -1000.0,
) -> np.ndarray:
    """A ``size_px`` x ``size_px`` square of ``fov_mm`` millimetres from the axial slice through ``centre``.

    image, spacing, centre: SimpleITK (z, y, x) order. Bilinear, ``fill`` outside the image. Returns float32 HU."""
    z = int(np.clip(centre[0], 0, image.shape[0] - 1))
    offsets = ((np.arange(size_px) + 0.5) / size_px - 0.5) * fov_mm
    yy, xx = np.meshgrid(centre[1] + offsets / spacing[1], centre[2] + offsets / spacing[2], indexing="ij")
    sl = np.asarray(image[z], dtype=np.float32)
    return map_coordinates(sl, [yy, xx], order=1, mode="constant", cval=fill).astype(np.float32)


def make_kit(
    real: Sequence[Lesion],
    synthetic: Sequence[Lesion],
    folder: str | os.PathLike,
    window: tuple[float, float],
    n: int = 20,
    seed: int = 0,
    fov_mm: float = 96.0,
    size_px: int = 256,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the kit (see the module docstring) with ``n`` real and ``n`` synthetic tumors (fewer if fewer exist),
    drawn and shuffled with ``seed``. Built in a temporary folder and renamed: no partial kits."""
    folder = Path(folder)
    if n < 1:
        raise FreeTumorConfigError(f"--n must be >= 1, got {n}")
    if not real:
        raise FreeTumorConfigError("no real tumor found in the dataset's labeled training cases: nothing to compare")
    if not synthetic:
        raise FreeTumorConfigError("the synthetic dataset has no accepted synthetic tumor: nothing to compare")
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise FreeTumorConfigError(f"{folder} already exists and is not empty: choose another -o or pass --overwrite")
    rng = np.random.default_rng(seed)
    chosen = [
        lesions[int(i)]
        for lesions in (real, synthetic)
        for i in sorted(rng.choice(len(lesions), size=min(n, len(lesions)), replace=False))
    ]
    order = rng.permutation(len(chosen))
    key_rows = []
    with staged_folder(folder) as tmp:
        (tmp / KEY_FOLDER).mkdir()
        cache: dict[Path, tuple[np.ndarray, tuple[float, ...]]] = {}
        for j, i in enumerate(order):
            les = chosen[int(i)]
            if les.image not in cache:
                cache.clear()
                arr, sp, _ = read_image(les.image)
                cache[les.image] = (arr, sp)
            arr, sp = cache[les.image]
            crop = axial_crop(arr, sp, les.centre, fov_mm, size_px, fill=window[0])
            ident = f"case_{j:03d}"
            save_gray_png(crop, tmp / f"{ident}.png", *window)
            key_rows.append({"id": ident, "truth": les.kind, "source_case": les.case})
        _write_csv(tmp / KEY_FOLDER / ANSWER_KEY, ["id", "truth", "source_case"], key_rows)
        _write_csv(tmp / TEMPLATE, ["id", "answer"], [{"id": r["id"], "answer": ""} for r in key_rows])
        (tmp / "README.txt").write_text(
            README.format(n=len(key_rows), lo=window[0], hi=window[1], mm=fov_mm / size_px, px=size_px, key=ANSWER_KEY)
        )
    n_real = sum(r["truth"] == "real" for r in key_rows)
    return {"folder": str(folder), "n": len(key_rows), "n_real": n_real, "n_synthetic": len(key_rows) - n_real}


def make_kit_for(
    src: PlannedDataset, export_folder: str | os.PathLike, folder: str | os.PathLike, **kwargs: Any
) -> dict[str, Any]:
    """``make_kit`` with the real tumors of ``src``'s raw training cases, the synthetic ones of an export
    (``freetumor_synthesize``) and the config's HU window; ``kwargs`` go to ``make_kit``."""
    real = real_lesions(raw_training_cases(src.raw, src.dataset_json), src.cfg.tumor_labels)
    synthetic = synthetic_lesions(export_folder)
    window = (src.cfg.window.hu_min, src.cfg.window.hu_max)
    return make_kit(real, synthetic, folder, window, **kwargs)


def _write_csv(path: Path, fields: list[str], rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def _read_csv(path: str | os.PathLike, columns: Sequence[str]) -> list[dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise FreeTumorConfigError(f"{path} does not exist")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields = [c.strip().lower() for c in (reader.fieldnames or [])]
        missing = [c for c in columns if c not in fields]
        if missing:
            raise FreeTumorConfigError(f"{path} needs the column(s) {missing} (found {reader.fieldnames})")
        rows = [{k.strip().lower(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    ids = [r["id"] for r in rows]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise FreeTumorConfigError(f"{path} lists these id(s) more than once: {', '.join(dup)}")
    return rows


def score(answers_csv: str | os.PathLike, key_csv: str | os.PathLike) -> dict[str, Any]:
    """Score an answer sheet (columns id, answer: real|synthetic, also r|s) against the key (id, truth).

    Returns n, n_synthetic, n_real, the confusion counts, sensitivity (synthetic called synthetic / synthetic),
    specificity (real called real / real) and accuracy; a rate with no case to count is None. Every id of the key
    must be answered exactly once and no other id may appear (FreeTumorConfigError names the offending ids)."""
    key = {r["id"]: r["truth"].lower() for r in _read_csv(key_csv, ("id", "truth"))}
    bad_truth = sorted(i for i, t in key.items() if t not in TRUTHS)
    if bad_truth:
        raise FreeTumorConfigError(f"{key_csv}: truth must be real or synthetic; check id(s) {', '.join(bad_truth)}")
    answers = {r["id"]: r["answer"].lower() for r in _read_csv(answers_csv, ("id", "answer"))}
    missing = sorted(i for i in key if not answers.get(i))
    unknown_ids = sorted(set(answers) - set(key))
    unknown = sorted(f"{i}={a!r}" for i, a in answers.items() if a and a not in ANSWERS)
    problems = []
    if missing:
        problems.append(f"no answer for {len(missing)} id(s): {', '.join(missing)}")
    if unknown_ids:
        problems.append(f"id(s) not in the key: {', '.join(unknown_ids)}")
    if unknown:
        problems.append(f"answers must be 'real' or 'synthetic' (or r/s), got {', '.join(unknown)}")
    if problems:
        raise FreeTumorConfigError(f"{answers_csv}: " + "; ".join(problems))
    calls = {i: ANSWERS[answers[i]] for i in key}
    tp = sum(key[i] == "synthetic" and calls[i] == "synthetic" for i in key)
    fn = sum(key[i] == "synthetic" and calls[i] == "real" for i in key)
    tn = sum(key[i] == "real" and calls[i] == "real" for i in key)
    fp = sum(key[i] == "real" and calls[i] == "synthetic" for i in key)

    return {
        "n": len(key),
        "n_synthetic": tp + fn,
        "n_real": tn + fp,
        "synthetic_called_synthetic": tp,
        "synthetic_called_real": fn,
        "real_called_real": tn,
        "real_called_synthetic": fp,
        "sensitivity": safe_div(tp, tp + fn),
        "specificity": safe_div(tn, tn + fp),
        "accuracy": safe_div(tp + tn, len(key)),
    }
