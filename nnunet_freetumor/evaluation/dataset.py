"""The inputs of an evaluation: the classes of a dataset.json (tumor classes marked), the case files of the
prediction and ground-truth folders paired by case id, and nnU-Net's reader for them."""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnunet_freetumor.evaluation.lesions import EvaluationError


def is_tumor_name(name: str) -> bool:
    """True for label names with a tumor word: 'liver tumor', 'Tumour', 'lung_nodule', 'cancer', 'metastasis', ..."""
    from nnunet_freetumor.labels import strip_tumor_word

    return strip_tumor_word(name) is not None


@dataclass(frozen=True)
class ClassSpec:
    """One evaluated class: nnU-Net's label id or region (tuple of ids), its key in the outputs and its name."""

    label_or_region: int | tuple[int, ...]
    key: str
    name: str
    is_tumor: bool


def dataset_classes(dataset_json: dict[str, Any], tumor_labels: Sequence[int | str] | None = None) -> list[ClassSpec]:
    """Foreground labels (or regions) that nnU-Net evaluates for this dataset.json, with the tumor classes marked.

    tumor_labels: None = every label whose name has a tumor word (see ``is_tumor_name``); else label ids (int) or
    exact label names (str). Raises EvaluationError for unknown labels or when no tumor class remains.
    """
    from nnunetv2.evaluation.evaluate_predictions import label_or_region_to_key
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    labels = dataset_json.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise EvaluationError("dataset.json has no 'labels' dictionary")
    try:
        lm = LabelManager(labels, dataset_json.get("regions_class_order"))
    except (AssertionError, RuntimeError, ValueError, TypeError) as e:
        raise EvaluationError(f"nnU-Net cannot use the labels of dataset.json: {e}") from None
    classes = lm.foreground_regions if lm.has_regions else lm.foreground_labels

    def norm(v: Any) -> int | tuple[int, ...]:
        return tuple(int(i) for i in v) if isinstance(v, (list, tuple)) else int(v)

    names = {norm(v): k for k, v in labels.items() if k != "ignore"}
    specs = [(norm(c), names.get(norm(c), str(c))) for c in classes]
    if tumor_labels is None:
        tumor = {c for c, n in specs if is_tumor_name(n)}
        if not tumor:
            raise EvaluationError(
                f"no tumor class in dataset.json labels {labels} (no name contains tumor/tumour/lesion/cancer/nodule/"
                "mass/metastasis); name them with --tumor_labels"
            )
    else:
        tumor = set()
        by_name = {n: c for c, n in specs}
        for t in tumor_labels:
            if isinstance(t, str) and not t.lstrip("-").isdigit():
                if t not in by_name:
                    raise EvaluationError(f"tumor label {t!r} is not a foreground label name of {sorted(by_name)}")
                tumor.add(by_name[t])
            elif int(t) in {c for c, _ in specs}:
                tumor.add(int(t))
            else:
                raise EvaluationError(f"tumor label {t} is not a foreground label id of dataset.json labels {labels}")
    return [ClassSpec(c, label_or_region_to_key(c), n, c in tumor) for c, n in specs]


def load_dataset_json(dataset_json: str | os.PathLike | dict[str, Any]) -> dict[str, Any]:
    """dataset.json content (a dict is returned as is); checks that 'labels' and 'file_ending' are there."""
    if isinstance(dataset_json, dict):
        dj = dataset_json
    else:
        path = Path(dataset_json)
        if not path.is_file():
            raise EvaluationError(f"dataset.json not found: {path}")
        try:
            dj = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise EvaluationError(f"cannot read {path}: {e}") from None
    if not isinstance(dj, dict) or "labels" not in dj or "file_ending" not in dj:
        raise EvaluationError("dataset.json must have 'labels' and 'file_ending'")
    return dj


def list_cases(folder: str | os.PathLike, file_ending: str) -> dict[str, Path]:
    """case id -> file for every ``<case><file_ending>`` file in ``folder`` (nnU-Net's naming of segmentations)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EvaluationError(f"folder not found: {folder}")
    return {
        p.name[: -len(file_ending)]: p
        for p in sorted(folder.iterdir())
        if p.name.endswith(file_ending) and len(p.name) > len(file_ending) and p.is_file()
    }


def _first(ids: Iterable[str], n: int = 5) -> str:
    ids = sorted(ids)
    return ", ".join(ids[:n]) + (f", ... ({len(ids) - n} more)" if len(ids) > n else "")


def pair_cases(
    pred: dict[str, Path], gt: dict[str, Path], allow_missing: bool = False
) -> tuple[list[str], list[str], list[str]]:
    """(case ids in both, GT ids without prediction, prediction ids without GT), each sorted.

    Raises EvaluationError if the lists differ and ``allow_missing`` is False, or if no case is in both.
    """
    both = sorted(set(pred) & set(gt))
    no_pred, no_gt = sorted(set(gt) - set(pred)), sorted(set(pred) - set(gt))
    if (no_pred or no_gt) and not allow_missing:
        parts = []
        if no_pred:
            parts.append(f"{len(no_pred)} ground-truth case(s) have no prediction ({_first(no_pred)})")
        if no_gt:
            parts.append(f"{len(no_gt)} prediction(s) have no ground truth ({_first(no_gt)})")
        raise EvaluationError(
            "case lists differ: " + "; ".join(parts) + f". Pass --allow_missing to evaluate the {len(both)} case(s) "
            "present in both."
        )
    if not both:
        raise EvaluationError("no case has both a prediction and a ground truth")
    return both, no_pred, no_gt


def reader_writer_for(dataset_json: dict[str, Any], example_file: str | os.PathLike):
    """nnU-Net's reader/writer instance for this dataset, chosen as nnU-Net's evaluator does (quietly)."""
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json

    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            return determine_reader_writer_from_dataset_json(dataset_json, str(example_file), verbose=False)()
    except RuntimeError:
        raise EvaluationError(f"no nnU-Net reader can open {example_file}") from None
