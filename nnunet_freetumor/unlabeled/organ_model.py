"""Predicted organ masks: the organ model's checks and its inference through nnU-Net's own ``nnUNetPredictor``.

The model is the dataset's baseline ``$nnUNet_results/<dataset>/<gate_trainer>__<plans>__<configuration>`` by
default, or any other nnU-Net model folder (with a label map from its label ids to the dataset's, see ``label_map``).
Checkpoints are first read with ``segmenter.load_nnunet_checkpoint`` (no pickled code runs) before nnU-Net loads them.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from nnunet_freetumor.config import FreeTumorConfigError
from nnunet_freetumor.unlabeled.dataset import RawDataset, int_labels
from nnunet_freetumor.unlabeled.discovery import UnlabeledCase
from nnunet_freetumor.unlabeled.request import UnlabeledRequest


@dataclass(frozen=True)
class OrganModel:
    """An nnU-Net model folder that passed ``find_organ_model``'s checks."""

    folder: Path
    dataset_json: dict[str, Any]
    labels: dict[str, int]
    n_channels: int  # 1 (it gets the dataset's CT channel) or the dataset's number of channels


def find_organ_model(req: UnlabeledRequest, dataset: RawDataset, results_root: str | os.PathLike | None) -> OrganModel:
    """The organ model of ``req`` (``--organ-model`` or the dataset's baseline): its files, the checkpoint of every
    fold (read safely), integer labels and a channel count the dataset can feed."""
    from nnunet_freetumor.segmenter import load_nnunet_checkpoint

    if req.organ_model:
        folder = Path(req.organ_model)
        hint = "pass the nnU-Net model folder that holds fold_X/, plans.json and dataset.json"
    else:
        if not results_root:
            raise FreeTumorConfigError(
                "set nnUNet_results (where the baseline is), or pass --organ-model or --organ-masks"
            )
        folder = Path(results_root) / dataset.name / f"{dataset.cfg.gate_trainer}__{req.plans}__{req.configuration}"
        hint = (
            f"train the baseline first (`nnUNetv2_train {dataset.name} {req.configuration} {req.folds[0]} -tr "
            f"{dataset.cfg.gate_trainer} -p {req.plans}`), or pass --organ-model (a dedicated organ model is better) "
            "or --organ-masks"
        )
    for f in ("dataset.json", "plans.json"):
        if not (folder / f).is_file():
            raise FreeTumorConfigError(f"no nnU-Net model at {folder} ({f} is missing): {hint}")
    for fold in req.folds:
        ckpt = folder / f"fold_{fold}" / req.checkpoint
        if not ckpt.is_file():
            raise FreeTumorConfigError(f"the organ model has no {ckpt}: {hint}")
        load_nnunet_checkpoint(ckpt)  # refuses pickled code before nnU-Net's predictor unpickles it
    mdj = json.loads((folder / "dataset.json").read_text())
    model_labels = int_labels(mdj, f"the organ model's ({folder})")
    n_in = len(mdj.get("channel_names", {}))
    if n_in not in (1, dataset.n_channels):
        raise FreeTumorConfigError(
            f"the organ model {folder} takes {n_in} input channels, the dataset has {dataset.n_channels}"
        )
    return OrganModel(folder, mdj, model_labels, n_in)


def load_predictor(req: UnlabeledRequest, model: OrganModel):
    """nnU-Net's ``nnUNetPredictor`` for the folds and checkpoint of ``req``; any failure is one clear error."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    if req.device == "cuda" and not torch.cuda.is_available():
        raise FreeTumorConfigError("--device cuda, but no CUDA GPU is available: use --device cpu")
    device = torch.device(req.device)
    folds = tuple(f if f == "all" else int(f) for f in req.folds)
    try:
        with contextlib.redirect_stdout(_Sink()):  # nnU-Net prints its settings
            predictor = nnUNetPredictor(
                use_mirroring=not req.disable_tta,
                perform_everything_on_device=device.type == "cuda",
                device=device,
                verbose=False,
                verbose_preprocessing=False,
                allow_tqdm=False,
            )
            predictor.initialize_from_trained_model_folder(str(model.folder), folds, req.checkpoint)
    except Exception as e:  # a trainer class nnU-Net cannot find, a checkpoint without network weights, ...
        what = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}" if str(e).strip() else repr(e)
        raise FreeTumorConfigError(f"cannot load the organ model {model.folder} ({what})") from None
    return predictor


def predict_masks(
    predictor,
    model: OrganModel,
    cases: Sequence[UnlabeledCase],
    ct_channel: int,
    out_folder: Path,
    *,
    npp: int,
    nps: int,
) -> list[UnlabeledCase]:
    """Organ masks of ``cases`` with nnU-Net's predictor, written to ``out_folder``; cases with ``mask`` set.
    ``npp`` / ``nps``: nnU-Net's processes (both 0: sequential prediction in this process)."""
    out_folder.mkdir(parents=True, exist_ok=True)
    inputs = [[str(c.images[ct_channel])] if model.n_channels == 1 else [str(p) for p in c.images] for c in cases]
    outputs = [str(out_folder / c.identifier) for c in cases]
    with contextlib.redirect_stdout(_Sink()):  # nnU-Net prints a few lines per case; our tqdm says enough
        if npp == 0 and nps == 0:
            predictor.predict_from_files_sequential(inputs, outputs, save_probabilities=False, overwrite=True)
        else:
            predictor.predict_from_files(
                inputs,
                outputs,
                save_probabilities=False,
                overwrite=True,
                num_processes_preprocessing=max(1, npp),
                num_processes_segmentation_export=max(1, nps),
            )
    fe = model.dataset_json["file_ending"]
    out = []
    for c, o in zip(cases, outputs):
        path = Path(o + fe)
        if not path.is_file():
            raise FreeTumorConfigError(f"nnU-Net's predictor wrote no {path} for case {c.identifier}")
        out.append(replace(c, mask=path))
    return out


class _Sink:
    """A write-only text stream that drops everything (for nnU-Net's progress prints)."""

    def write(self, s: str) -> int:
        return len(s)

    def flush(self) -> None:
        pass
