"""Bring unlabeled CT into a FreeTumor dataset (``freetumor_add_unlabeled``).

FreeTumor's point: tumor-free *unlabeled* CT is abundant and becomes training data once it has organ masks. This
workflow adds such scans to an nnU-Net raw dataset as organ-only training cases, in two steps:

``plan_unlabeled`` checks everything and writes nothing: the request (``request``), the dataset (``dataset``), the
scans and their supplied masks (``discovery``), the label map (``label_map``), or else the organ model that predicts
the masks (``organ_model``), and the existing fold split (``splits``). ``add_unlabeled`` then predicts the masks where
needed, measures and decides every case (``qc``), stages the accepted ones, and writes the merged dataset, its split
and the report (``report``) all or nothing (``transaction``); a dry run stops before writing (the report only where
``--report`` says).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnunet_freetumor.config import FreeTumorConfigError
from nnunet_freetumor.unlabeled.dataset import (
    RawDataset,
    check_clashes,
    load_raw_dataset,
    output_folder,
    updated_dataset_json,
)
from nnunet_freetumor.unlabeled.discovery import UnlabeledCase, attach_masks, find_unlabeled_cases
from nnunet_freetumor.unlabeled.label_map import dataset_label_map, model_label_map
from nnunet_freetumor.unlabeled.organ_model import OrganModel, find_organ_model, load_predictor, predict_masks
from nnunet_freetumor.unlabeled.qc import assess_file
from nnunet_freetumor.unlabeled.report import UnlabeledResult, build_report, report_paths, report_texts
from nnunet_freetumor.unlabeled.request import UnlabeledRequest
from nnunet_freetumor.unlabeled.splits import read_splits, split_note, split_texts
from nnunet_freetumor.unlabeled.transaction import (
    DatasetUpdate,
    commit_in_place,
    commit_new_dataset,
    stage_case,
    staging,
)
from nnunet_freetumor.utilities.files import atomic_write_text


@dataclass(frozen=True)
class UnlabeledPlan:
    """A checked request (``plan_unlabeled``): what will be read, predicted and written. Nothing is written yet."""

    req: UnlabeledRequest
    dataset: RawDataset
    cases: list[UnlabeledCase]  # with their masks where supplied
    new_ids: dict[str, str]  # case -> new case id ({prefix}_{case})
    target: Path  # the raw folder of the merged dataset (the dataset itself in place)
    label_map: dict[int, int]  # mask / model id -> dataset id
    splits: dict[str, Any]  # see splits.read_splits
    model: OrganModel | None = None  # None: supplied masks
    predictor: Any = None  # nnU-Net's nnUNetPredictor for the model

    @property
    def model_folder(self) -> Path | None:
        return None if self.model is None else self.model.folder


def plan_unlabeled(
    req: UnlabeledRequest,
    raw_root: str | os.PathLike,
    preprocessed_root: str | os.PathLike,
    results_root: str | os.PathLike | None = None,
) -> UnlabeledPlan:
    """Check everything (arguments, dataset, inputs, names, masks' geometry, the organ model, splits) and load the
    organ model's predictor; raise ``FreeTumorConfigError`` on the first problem."""
    req.validate()
    dataset = load_raw_dataset(req.dataset, raw_root, preprocessed_root)
    cases = find_unlabeled_cases(req.input_folder, dataset.file_ending, dataset.n_channels)
    new_ids = {c.identifier: f"{req.prefix}_{c.identifier}" for c in cases}
    check_clashes(dataset, new_ids)
    target = output_folder(req, dataset, results_root)
    model = None
    if req.organ_masks:
        label_map = dataset_label_map(req.label_map, dataset)
        cases = attach_masks(cases, Path(req.organ_masks), dataset.file_ending)
    else:
        model = find_organ_model(req, dataset, results_root)
        label_map = model_label_map(req.label_map, model.labels, model.folder, dataset)
    splits = read_splits(dataset, req.make_split)
    predictor = None if model is None else load_predictor(req, model)
    return UnlabeledPlan(req, dataset, cases, new_ids, target, label_map, splits, model, predictor)


def add_unlabeled(plan: UnlabeledPlan, progress: bool = True) -> UnlabeledResult:
    """Predict the masks (where not supplied), assess every case, and write the accepted ones with the split and the
    report (nothing with ``dry_run``, but the report where ``--report`` says). Nothing passing is an error."""
    req, dataset, target = plan.req, plan.dataset, plan.target
    result = UnlabeledResult(target, target.name, dry_run=req.dry_run)
    result.next_command = f"nnUNetv2_plan_and_preprocess -d {int(target.name[7:10])} --verify_dataset_integrity"
    in_place = req.output_id is None
    work_parent = None if req.dry_run else dataset.raw if in_place else dataset.raw.parent  # see staging
    with staging(work_parent, dataset.name) as stage:
        _assess_and_stage(plan, stage, result, progress)
        if not result.accepted and not req.dry_run:
            why = ", ".join(f"{k}: {n}" for k, n in Counter(a.category for a in result.cases).most_common())
            raise FreeTumorConfigError(
                f"none of the {len(result.cases)} unlabeled case(s) passed ({why}); nothing was written. See each "
                "case with --dry_run --report FOLDER, then loosen the filters or fix the masks"
            )
        new_ids = [a.new_id for a in result.accepted]
        texts = split_texts(plan.splits, new_ids)
        result.split_note = split_note(dataset, req.make_split, texts)
        result.report = build_report(req, dataset, plan.model_folder, plan.label_map, result)
        if req.dry_run:
            if req.report:
                result.report_files = list(report_paths(req.report, dataset.raw))
                for p, text in zip(result.report_files, report_texts(result.report)):
                    atomic_write_text(p, text)
            return result
        dataset_json = updated_dataset_json(dataset, req, new_ids, plan.model_folder, None if in_place else target.name)
        update = DatasetUpdate(stage, texts, report_texts(result.report), req.report, dataset_json)
        if in_place:
            result.split_files, result.report_files = commit_in_place(update, dataset)
        else:
            result.split_files, result.report_files = commit_new_dataset(update, dataset, target)
    return result


def _assess_and_stage(plan: UnlabeledPlan, stage: Path, result: UnlabeledResult, progress: bool) -> None:
    """Predict the masks where needed, assess every case into ``result``, and stage the accepted cases (not in a dry
    run) in ``stage``."""
    from tqdm import tqdm

    req, dataset = plan.req, plan.dataset
    cases = plan.cases
    if plan.predictor is not None:
        plan.predictor.allow_tqdm = progress  # nnU-Net's sliding-window bar per case
        cases = predict_masks(
            plan.predictor, plan.model, cases, dataset.ct_channel, stage / "predicted", npp=req.npp, nps=req.nps
        )
    (stage / "imagesTr").mkdir()
    (stage / "labelsTr").mkdir()
    for case in tqdm(cases, desc="unlabeled cases", unit="case", disable=not progress):
        a, labels, ref = assess_file(
            case, plan.new_ids[case.identifier], dataset, plan.label_map, req.filters, req.tumors
        )
        result.cases.append(a)
        if a.accepted and not req.dry_run:
            stage_case(stage, a.new_id, case.images, labels, ref, dataset.file_ending)
