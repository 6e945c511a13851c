"""Bring unlabeled CT into a FreeTumor dataset (``freetumor_add_unlabeled``).

FreeTumor's point: tumor-free *unlabeled* CT is abundant and becomes training data once it has organ masks. This
module adds such scans to an nnU-Net raw dataset as organ-only training cases.

Inputs: a folder of ``{case}_{CCCC}{file_ending}`` images (nnU-Net naming; the channels and file ending of the
dataset's dataset.json) and, per case, an organ mask that is either

* **supplied** (``{case}{file_ending}`` in a mask folder, any label ids, remapped with ``label_map`` source id ->
  dataset id; without a map the ids are taken as the dataset's), with the image's geometry (shape; spacing, origin
  and direction within ``io.GEOMETRY_ATOL``), or
* **predicted** with an nnU-Net model through nnU-Net's own ``nnUNetPredictor`` (default: the dataset's baseline
  ``$nnUNet_results/<dataset>/<gate_trainer>__<plans>__<configuration>``; any other model folder with a label map
  from its label ids to the dataset's). Checkpoints are first read with ``segmenter.load_nnunet_checkpoint`` (no pickled
  code runs) before nnU-Net loads them.

Label ids that the map does not name become background (0), and the report counts them per case.

Decision per case (all reasons are reported; the first one names the decision):

1. **tumor**: a voxel of a configured tumor label (``FreeTumorConfig.tumor_labels``) is never silently turned into
   healthy organ: ``tumors="exclude"`` skips the case, ``"keep"`` adds it with the predicted tumor label;
2. **organ volume** (ml = voxels x voxel volume / 1000) per configured organ: an organ above ``max_organ_ml`` rejects
   the case (a leaking segmentation); at least one organ must be within [``min_organ_ml``, ``max_organ_ml``] (organs
   below the minimum are absent or cut by the field of view: allowed, they just do not count);
3. **largest connected component** (26-connectivity) of every organ within the volume range must hold at least
   ``min_largest_component`` of its voxels (a fragmented mask is a failed segmentation);
4. **CT in HU**: the image's 1st percentile below ``max_p1_hu`` (air in the field of view) and the median HU of the
   voxels of the organs within the volume range inside ``organ_hu`` (abdomen default -200..400 HU; a chest config,
   ``window.polarity = +1``, widens it to -1000..400 HU for lungs).

Writing: new case ids are ``{prefix}_{case}``; images are copied byte for byte, labels written with the image's
geometry (uint8). Everything is built in a hidden staging folder first, then moved in (in place) or the whole dataset
is copied into a staged new dataset (``output_id``, renamed into place at the end); dataset.json is written last and
atomically. Any error removes what was moved in and restores the files that were replaced: nothing is left behind.
An existing case is never overwritten (a clash is refused before anything is written).

nnU-Net's 5-fold split: where ``splits_final.json`` exists (``$nnUNet_preprocessed/<dataset>/``, and also in the raw
folder, which nnU-Net's planner compares with it), the new cases are appended to the *train* list of every fold and
never to a validation list: the folds, and the baseline S trained on each, stay valid. Without a split nnU-Net creates
a random one at the first training, with unlabeled cases in validation folds; ``make_split`` writes nnU-Net's own
default split of the existing cases (``generate_crossval_split``, seed 12345: the split nnU-Net would make) and adds
the new cases to every training list.

Report: ``unlabeled_report.json`` and ``unlabeled_report.md`` (per case: organ volumes, largest-component shares, HU
checks, tumor voxels, decision and reason) in the dataset folder, or where ``report`` says. ``dry_run`` writes
nothing (the report only where ``report`` says).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nnunet_freetumor.config import FreeTumorConfig, FreeTumorConfigError
from nnunet_freetumor.io import atomic_write_text, check_same_grid, new_dataset_folder, staged_folder

REPORT_JSON = "unlabeled_report.json"
REPORT_MD = "unlabeled_report.md"
SPLITS = "splits_final.json"
TUMOR_MODES = ("exclude", "keep")
ABDOMEN_ORGAN_HU = (-200.0, 400.0)
CHEST_ORGAN_HU = (-1000.0, 400.0)
NNUNET_SPLIT_SEED = 12345  # nnUNetTrainer.do_split
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")

# decision of a case
ADDED, ADDED_WITH_TUMOR, SKIPPED_TUMOR, REJECTED = "added", "added_with_tumor", "skipped_tumor", "rejected"


# --- settings ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QualityFilters:
    """Per-case quality filters (volumes in ml, HU in Hounsfield units, shares in [0, 1])."""

    min_organ_ml: float = 10.0
    max_organ_ml: float | None = None
    min_largest_component: float = 0.9
    max_p1_hu: float = -500.0
    organ_hu: tuple[float, float] | None = None  # None: ABDOMEN_ORGAN_HU, or CHEST_ORGAN_HU with a chest config

    def validate(self) -> None:
        if self.min_organ_ml < 0:
            raise FreeTumorConfigError(f"--min_organ_ml must be >= 0, got {self.min_organ_ml}")
        if self.max_organ_ml is not None and self.max_organ_ml < self.min_organ_ml:
            raise FreeTumorConfigError(
                f"--max_organ_ml ({self.max_organ_ml}) must be >= --min_organ_ml ({self.min_organ_ml})"
            )
        if not 0.0 <= self.min_largest_component <= 1.0:
            raise FreeTumorConfigError(f"--min_largest_component must be in [0, 1], got {self.min_largest_component}")
        if self.organ_hu is not None and not self.organ_hu[0] < self.organ_hu[1]:
            raise FreeTumorConfigError(f"--organ_hu needs LOW < HIGH, got {list(self.organ_hu)}")

    def organ_hu_for(self, cfg: FreeTumorConfig) -> tuple[float, float]:
        if self.organ_hu is not None:
            return (float(self.organ_hu[0]), float(self.organ_hu[1]))
        return CHEST_ORGAN_HU if cfg.window.polarity > 0 else ABDOMEN_ORGAN_HU


@dataclass(frozen=True)
class UnlabeledRequest:
    """What ``freetumor_add_unlabeled`` was asked to do (see its --help)."""

    dataset: str
    input_folder: str
    organ_masks: str | None = None  # folder of supplied masks; None: predict them
    label_map: Mapping[int, int] | None = None  # source id -> dataset id; None: identity / model labels by name
    organ_model: str | None = None  # nnU-Net model folder; None: the dataset's baseline (config's gate_trainer)
    plans: str = "nnUNetPlans"
    configuration: str = "3d_fullres"
    folds: tuple[str, ...] = ("0",)
    checkpoint: str = "checkpoint_final.pth"
    tumors: str = "exclude"
    output_id: int | None = None  # None: add in place
    name: str | None = None  # name of the new dataset [<source name>_<prefix>]
    prefix: str = "unlabeled"
    filters: QualityFilters = field(default_factory=QualityFilters)
    make_split: bool = False
    report: str | None = None  # a folder, or a .json path (the .md goes beside it)
    dry_run: bool = False
    device: str = "cpu"
    disable_tta: bool = False
    npp: int = 3  # nnU-Net's -npp / -nps; both 0: sequential prediction in this process
    nps: int = 3


# --- pure helpers --------------------------------------------------------------------------------------------------


def parse_label_map(items: Sequence[str]) -> dict[int, int]:
    """``["5:1", "6:3"]`` -> ``{5: 1, 6: 3}`` (source label id -> dataset label id)."""
    out: dict[int, int] = {}
    for item in items:
        m = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", item)
        if not m:
            raise FreeTumorConfigError(f"--label_map entries are SRC:DST label ids (e.g. 5:1), got {item!r}")
        src, dst = int(m.group(1)), int(m.group(2))
        if src in out and out[src] != dst:
            raise FreeTumorConfigError(f"--label_map maps source id {src} twice ({out[src]} and {dst})")
        out[src] = dst
    return out


def remap_labels(labels: np.ndarray, label_map: Mapping[int, int]) -> tuple[np.ndarray, dict[int, int]]:
    """Map source label ids to dataset ids with a lookup table; ids the map does not name become 0.

    labels: integer array (any shape, non-negative). Returns (uint8/uint16 array of the same shape, {unmapped non-zero
    source id: voxel count}).
    """
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or not np.array_equal(labels, np.round(labels))):
        raise FreeTumorConfigError("organ masks must hold non-negative integer label ids")
    lab = labels.astype(np.int64)
    ids, counts = np.unique(lab, return_counts=True)
    n = int(max(ids.max() if ids.size else 0, max(label_map, default=0))) + 1
    lut = np.zeros(n, dtype=np.int64)
    for src, dst in label_map.items():
        lut[src] = dst
    unmapped = {int(i): int(c) for i, c in zip(ids, counts) if i != 0 and int(i) not in label_map}
    dtype = np.uint8 if max(label_map.values(), default=0) < 256 else np.uint16
    return lut[lab].astype(dtype), unmapped


def largest_component_share(mask: np.ndarray) -> float | None:
    """Share of the voxels of a boolean mask in its largest 26-connected component; None for an empty mask."""
    from scipy import ndimage

    from nnunet_freetumor.evaluation import connectivity_structure

    mask = np.asarray(mask, dtype=bool)
    boxes = ndimage.find_objects(mask.astype(np.uint8))
    if not boxes or boxes[0] is None:
        return None
    crop = mask[boxes[0]]
    comp, n = ndimage.label(crop, structure=connectivity_structure(crop.ndim, 26))
    sizes = np.bincount(comp.ravel())[1:]
    return float(sizes.max() / sizes.sum())


@dataclass
class CaseAssessment:
    """The measurements and the decision for one unlabeled case (volumes in ml, HU)."""

    case: str
    new_id: str
    organ_ml: dict[str, float]
    largest_component: dict[str, float | None]
    p1_hu: float
    organ_median_hu: float | None
    tumor_voxels: dict[str, int]
    unmapped_voxels: dict[str, int]
    decision: str = ADDED
    reasons: list[str] = field(default_factory=list)
    category: str | None = None  # tumor | organ_volume | largest_component | hu (the first failing check)

    @property
    def accepted(self) -> bool:
        return self.decision in (ADDED, ADDED_WITH_TUMOR)


def assess_case(
    case: str,
    new_id: str,
    image_hu: np.ndarray,
    labels: np.ndarray,
    spacing: Sequence[float],
    cfg: FreeTumorConfig,
    filters: QualityFilters,
    tumors: str = "exclude",
    organ_names: Mapping[int, str] | None = None,
    tumor_names: Mapping[int, str] | None = None,
    unmapped: Mapping[int, int] | None = None,
) -> CaseAssessment:
    """Measure one case and decide (see the module docstring for the rules).

    image_hu: (z, y, x) CT in HU; labels: same shape, dataset label ids (already remapped); spacing: mm per axis.
    """
    organ_names = organ_names or {p.organ: p.name or str(p.organ) for p in cfg.pairs}
    tumor_names = tumor_names or {t: str(t) for t in cfg.tumor_labels}
    voxel_ml = float(np.prod(spacing)) / 1000.0
    max_ml = np.inf if filters.max_organ_ml is None else float(filters.max_organ_ml)
    organ_ml: dict[str, float] = {}
    lcc: dict[str, float | None] = {}
    in_range: list[int] = []
    too_large: list[str] = []
    for p in cfg.pairs:
        name = organ_names.get(p.organ, str(p.organ))
        m = labels == p.organ
        ml = float(m.sum()) * voxel_ml
        organ_ml[name] = round(ml, 3)
        lcc[name] = None if ml == 0 else round(largest_component_share(m), 4)
        if ml > max_ml:
            too_large.append(f"{name} {ml:.1f} ml > --max_organ_ml {filters.max_organ_ml:g}")
        elif ml >= filters.min_organ_ml and ml > 0:
            in_range.append(p.organ)
    tumor_voxels = {tumor_names.get(t, str(t)): int((labels == t).sum()) for t in cfg.tumor_labels}
    p1 = float(np.percentile(image_hu, 1))
    organ_union = np.isin(labels, in_range) if in_range else np.isin(labels, list(cfg.organ_labels))
    median = float(np.median(image_hu[organ_union])) if organ_union.any() else None
    a = CaseAssessment(
        case=case,
        new_id=new_id,
        organ_ml=organ_ml,
        largest_component=lcc,
        p1_hu=round(p1, 1),
        organ_median_hu=None if median is None else round(median, 1),
        tumor_voxels=tumor_voxels,
        unmapped_voxels={str(k): int(v) for k, v in (unmapped or {}).items()},
    )

    def fail(category: str, reason: str) -> None:
        a.reasons.append(reason)
        if a.category is None:
            a.category = category

    n_tumor = sum(tumor_voxels.values())
    if n_tumor:
        where = ", ".join(f"{n} voxels of {k}" for k, n in tumor_voxels.items() if n)
        if tumors == "exclude":
            fail("tumor", f"tumor in the organ mask ({where}); --tumors keep adds such cases with that label")
        else:
            a.decision = ADDED_WITH_TUMOR
    for reason in too_large:
        fail("organ_volume", reason)
    if not in_range:
        vols = ", ".join(f"{k} {v:.1f} ml" for k, v in organ_ml.items())
        hi = "inf" if filters.max_organ_ml is None else f"{filters.max_organ_ml:g}"
        fail("organ_volume", f"no configured organ within [{filters.min_organ_ml:g}, {hi}] ml ({vols})")
    for organ in in_range:
        name = organ_names.get(organ, str(organ))
        share = lcc[name]
        if share is not None and share < filters.min_largest_component:
            fail(
                "largest_component",
                f"{name}: largest component holds {share:.2f} < --min_largest_component "
                f"{filters.min_largest_component:g}",
            )
    if p1 >= filters.max_p1_hu:
        fail("hu", f"1st percentile {p1:.0f} HU >= {filters.max_p1_hu:g} HU: not CT in HU (no air in the image?)")
    lo, hi_hu = filters.organ_hu_for(cfg)
    if median is not None and not lo <= median <= hi_hu:
        fail("hu", f"organ median {median:.0f} HU outside [{lo:g}, {hi_hu:g}] HU")
    if a.reasons:
        a.decision = SKIPPED_TUMOR if a.category == "tumor" else REJECTED
    return a


def add_to_splits(splits: Any, new_ids: Sequence[str], where: str = SPLITS) -> list[dict[str, list[str]]]:
    """nnU-Net splits (a list of {"train": [...], "val": [...]}) with ``new_ids`` appended to every fold's train list;
    validation lists unchanged. A new id that is already in a fold is refused."""
    if not isinstance(splits, list) or not all(
        isinstance(s, dict) and isinstance(s.get("train"), list) and isinstance(s.get("val"), list) for s in splits
    ):
        raise FreeTumorConfigError(f"{where} is not an nnU-Net split (a list of {{'train': [...], 'val': [...]}})")
    out = []
    for i, s in enumerate(splits):
        present = set(s["train"]) | set(s["val"])
        dup = [c for c in new_ids if c in present]
        if dup:
            raise FreeTumorConfigError(f"{where}: fold {i} already lists {dup[:3]}: choose another --prefix")
        out.append({**s, "train": list(s["train"]) + list(new_ids), "val": list(s["val"])})
    return out


def nnunet_default_split(identifiers: Sequence[str]) -> list[dict[str, list[str]]]:
    """The 5-fold split nnU-Net creates on first training (``nnUNetTrainer.do_split``: sorted ids, seed 12345)."""
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    ids = sorted(identifiers)
    if len(ids) < 5:
        raise FreeTumorConfigError(
            f"--make_split needs at least 5 existing training cases for 5 folds, found {len(ids)}"
        )
    return [
        {"train": [str(x) for x in s["train"]], "val": [str(x) for x in s["val"]]}
        for s in generate_crossval_split(ids, seed=NNUNET_SPLIT_SEED, n_splits=5)
    ]


# --- input discovery and checks ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnlabeledCase:
    identifier: str
    images: tuple[Path, ...]  # one per channel, _0000 first
    mask: Path | None = None  # supplied organ mask


def find_unlabeled_cases(folder: str | os.PathLike, file_ending: str, n_channels: int) -> list[UnlabeledCase]:
    """``{case}_{CCCC}{file_ending}`` files of ``folder`` grouped by case; every case must have exactly the channels
    0..n_channels-1. Clear errors for a missing folder, no matching files or a channel mismatch."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FreeTumorConfigError(f"the unlabeled image folder {folder} does not exist")
    pattern = re.compile(r"^(.+)_(\d{4})" + re.escape(file_ending) + "$")
    channels: dict[str, dict[int, Path]] = {}
    bad_names = []
    for f in sorted(folder.iterdir()):
        if f.name.startswith(".") or not f.is_file():
            continue
        m = pattern.match(f.name)
        if m:
            channels.setdefault(m.group(1), {})[int(m.group(2))] = f
        elif f.name.endswith(file_ending):
            bad_names.append(f.name)
    if bad_names:
        raise FreeTumorConfigError(
            f"{folder / bad_names[0]} does not follow nnU-Net's naming: rename the images to "
            f"{{case}}_0000{file_ending} (one file per channel)"
        )
    if not channels:
        others = sorted({"".join(f.suffixes) for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")})
        raise FreeTumorConfigError(
            f"{folder} has no {{case}}_0000{file_ending} images (the dataset's file_ending)"
            + (f"; found files ending {others}: convert them to {file_ending}" if others else "")
        )
    cases = []
    for case, ch in sorted(channels.items()):
        if sorted(ch) != list(range(n_channels)):
            found = ", ".join(f"_{c:04d}" for c in sorted(ch))
            raise FreeTumorConfigError(
                f"case {case} in {folder} has channel file(s) {found}, but the dataset has {n_channels} input "
                f"channel(s) (dataset.json channel_names): provide exactly _0000..._{n_channels - 1:04d}"
            )
        cases.append(UnlabeledCase(case, tuple(ch[c] for c in range(n_channels))))
    return cases


def _norm_name(name: str) -> str:
    return " ".join(re.sub(r"[_\-/]+", " ", str(name).lower()).split())


def _int_labels(dataset_json: dict[str, Any], what: str) -> dict[str, int]:
    labels = dataset_json.get("labels")
    if not isinstance(labels, dict) or any(not isinstance(v, int) for v in labels.values()):
        raise FreeTumorConfigError(
            f"{what} dataset.json must have integer labels (region-based labels are not supported)"
        )
    return labels


# --- the operation -------------------------------------------------------------------------------------------------


@dataclass
class UnlabeledResult:
    """What happened: the assessments, where things went, what to run next."""

    target: Path
    dataset_name: str
    cases: list[CaseAssessment] = field(default_factory=list)
    report_files: list[Path] = field(default_factory=list)
    split_files: list[Path] = field(default_factory=list)
    split_note: str = ""
    dry_run: bool = False
    next_command: str = ""

    @property
    def counts(self) -> dict[str, Any]:
        c = Counter(a.decision for a in self.cases)
        return {
            "cases": len(self.cases),
            ADDED: c[ADDED],
            ADDED_WITH_TUMOR: c[ADDED_WITH_TUMOR],
            SKIPPED_TUMOR: c[SKIPPED_TUMOR],
            REJECTED: c[REJECTED],
            "rejected_by": dict(Counter(a.category for a in self.cases if a.decision == REJECTED)),
        }

    @property
    def accepted(self) -> list[CaseAssessment]:
        return [a for a in self.cases if a.accepted]


class AddUnlabeled:
    """Checks everything (inputs, names, masks' geometry, the organ model) in ``__init__``; ``run`` writes."""

    def __init__(
        self,
        req: UnlabeledRequest,
        raw_root: str | os.PathLike,
        preprocessed_root: str | os.PathLike,
        results_root: str | os.PathLike | None = None,
    ):
        self.req = req
        req.filters.validate()
        if req.tumors not in TUMOR_MODES:
            raise FreeTumorConfigError(f"--tumors must be one of {TUMOR_MODES}, got {req.tumors!r}")
        if not _ID.match(req.prefix):
            raise FreeTumorConfigError(f"--prefix must be letters, digits, '_' or '-', got {req.prefix!r}")
        if req.organ_masks and req.organ_model:
            raise FreeTumorConfigError(
                "pass either --organ-masks (supplied masks) or --organ-model (predict), not both"
            )
        self.raw_root, self.preprocessed_root = Path(raw_root), Path(preprocessed_root)
        self.results_root = Path(results_root) if results_root else None
        self._load_dataset()
        self.cases = find_unlabeled_cases(req.input_folder, self.file_ending, self.n_channels)
        self.new_ids = {c.identifier: f"{req.prefix}_{c.identifier}" for c in self.cases}
        self._check_clashes()
        self.target = self._target()
        self.model_folder: Path | None = None
        self.model_dataset_json: dict[str, Any] | None = None
        if req.organ_masks:
            self.label_map = self._supplied_label_map()
            self.cases = self._attach_masks(Path(req.organ_masks))
        else:
            self._prepare_model()
        self.splits = self._split_sources()
        self.predictor = None if req.organ_masks else self._load_predictor()

    # --- checks -----------------------------------------------------------------------------------------------------
    def _load_dataset(self) -> None:
        """The raw dataset: name, dataset.json, labels, channels, FreeTumor config and existing training cases."""
        from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
        from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
        from nnunetv2.utilities.utils import get_identifiers_from_splitted_dataset_folder

        from nnunet_freetumor.labels import config_for_dataset

        try:
            self.name = maybe_convert_to_dataset_name(self.req.dataset)
        except (RuntimeError, ValueError) as e:
            raise FreeTumorConfigError(f"{str(e).splitlines()[0]} Is nnUNet_raw set and the dataset in it?") from None
        self.raw = self.raw_root / self.name
        if not (self.raw / "dataset.json").is_file():
            raise FreeTumorConfigError(
                f"{self.raw / 'dataset.json'} does not exist: the dataset must be in $nnUNet_raw"
            )
        dj = self.dataset_json = json.loads((self.raw / "dataset.json").read_text())
        self.file_ending = fe = dj.get("file_ending", "")
        reader = dj.get("overwrite_image_reader_writer")
        if fe not in SimpleITKIO.supported_file_endings or reader not in (None, "SimpleITKIO"):
            raise FreeTumorConfigError(
                f"{self.raw}: only datasets read with SimpleITK ({', '.join(SimpleITKIO.supported_file_endings)}) are "
                f"supported (file_ending {fe!r}). Convert the dataset to .nii.gz first."
            )
        self.labels = _int_labels(dj, "the dataset's")
        self.label_ids = set(self.labels.values())
        channel_names = dj.get("channel_names", {})
        self.n_channels = len(channel_names)
        if self.n_channels < 1:
            raise FreeTumorConfigError(f"{self.raw / 'dataset.json'} has no channel_names")
        ordered = [str(v).lower() for _, v in sorted(channel_names.items(), key=lambda kv: int(kv[0]))]
        self.ct_channel = ordered.index("ct") if "ct" in ordered else 0  # the channel the HU checks look at
        self.cfg, self.cfg_source = config_for_dataset(dj, self.preprocessed_root / self.name)
        id_to_name = {v: k for k, v in self.labels.items()}
        self.organ_names = {p.organ: id_to_name.get(p.organ, p.name or str(p.organ)) for p in self.cfg.pairs}
        self.tumor_names = {t: id_to_name.get(t, str(t)) for t in self.cfg.tumor_labels}
        if "dataset" in dj:
            self.existing = sorted(dj["dataset"])
        elif (self.raw / "imagesTr").is_dir():
            self.existing = sorted(
                str(i) for i in get_identifiers_from_splitted_dataset_folder(str(self.raw / "imagesTr"), fe)
            )
        else:
            self.existing = []

    def _check_clashes(self) -> None:
        existing = set(self.existing)
        fe = self.file_ending
        for case, new in self.new_ids.items():
            files = [self.raw / "labelsTr" / f"{new}{fe}", self.raw / "imagesTr" / f"{new}_0000{fe}"]
            if new in existing or any(f.exists() for f in files):
                raise FreeTumorConfigError(
                    f"unlabeled case {case} would become {new}, which {self.name} already has: nothing was written. "
                    "Choose another --prefix (existing cases are never overwritten)"
                )

    def _target(self) -> Path:
        req = self.req
        if req.output_id is None:
            if req.name:
                raise FreeTumorConfigError("--name names a new dataset: use it with -o NEW_DATASET_ID")
            return self.raw
        name = req.name or f"{self.name.split('_', 1)[1]}_{req.prefix}"
        return new_dataset_folder(
            self.raw_root,
            req.output_id,
            name,
            other_roots=(self.preprocessed_root, self.results_root),
            source=self.name,
        )

    def _supplied_label_map(self) -> dict[int, int]:
        lm = self.req.label_map
        if lm is None:  # the masks already use the dataset's ids
            return {i: i for i in self.label_ids if i != 0}
        self._check_destinations(lm)
        return {int(s): int(d) for s, d in lm.items() if int(d) != 0}

    def _check_destinations(self, lm: Mapping[int, int]) -> None:
        bad = sorted({int(d) for d in lm.values() if int(d) not in self.label_ids})
        if bad:
            raise FreeTumorConfigError(
                f"--label_map target id(s) {bad} are not labels of {self.name} ({self.labels}): DST must be a "
                "dataset label id (0 drops a source id)"
            )

    def _attach_masks(self, folder: Path) -> list[UnlabeledCase]:
        if not folder.is_dir():
            raise FreeTumorConfigError(f"the organ mask folder {folder} does not exist")
        out = []
        for c in self.cases:
            mask = folder / f"{c.identifier}{self.file_ending}"
            if not mask.is_file():
                raise FreeTumorConfigError(
                    f"case {c.identifier}: no organ mask {mask} (supplied masks are named {{case}}{self.file_ending})"
                )
            check_same_grid(
                c.identifier, c.images[0], mask, "organ mask", "resample the mask to the image, nearest neighbour"
            )
            out.append(UnlabeledCase(c.identifier, c.images, mask))
        return out

    def _prepare_model(self) -> None:
        """Find the organ model, check its folds, labels and channels; build the label map."""
        from nnunet_freetumor.segmenter import load_nnunet_checkpoint

        req = self.req
        if req.organ_model:
            folder = Path(req.organ_model)
            hint = "pass the nnU-Net model folder that holds fold_X/, plans.json and dataset.json"
        else:
            if self.results_root is None:
                raise FreeTumorConfigError(
                    "set nnUNet_results (where the baseline is), or pass --organ-model or --organ-masks"
                )
            folder = self.results_root / self.name / f"{self.cfg.gate_trainer}__{req.plans}__{req.configuration}"
            hint = (
                f"train the baseline first (`nnUNetv2_train {self.name} {req.configuration} {req.folds[0]} -tr "
                f"{self.cfg.gate_trainer} -p {req.plans}`), or pass --organ-model (a dedicated organ model is better) "
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
        model_labels = _int_labels(mdj, f"the organ model's ({folder})")
        n_in = len(mdj.get("channel_names", {}))
        if n_in not in (1, self.n_channels):
            raise FreeTumorConfigError(
                f"the organ model {folder} takes {n_in} input channels, the dataset has {self.n_channels}"
            )
        self.model_folder, self.model_dataset_json, self.model_channels = folder, mdj, n_in
        lm = req.label_map
        if lm is None:
            if model_labels != self.labels:
                matches = {
                    v: self.labels[k2]
                    for k, v in model_labels.items()
                    for k2 in self.labels
                    if v != 0 and _norm_name(k) == _norm_name(k2)
                }
                suggestion = " ".join(f"{s}:{d}" for s, d in sorted(matches.items())) or "SRC:DST ..."
                raise FreeTumorConfigError(
                    f"the organ model's labels {model_labels} differ from {self.name}'s {self.labels}: pass "
                    f"--label_map {suggestion} (model id -> dataset id; unmapped ids become background)"
                )
            self.label_map = {i: i for i in self.label_ids if i != 0}
        else:
            src_ids = set(model_labels.values())
            bad = sorted(int(s) for s in lm if int(s) not in src_ids)
            if bad:
                raise FreeTumorConfigError(
                    f"--label_map source id(s) {bad} are not labels of the organ model {folder} ({model_labels})"
                )
            self._check_destinations(lm)
            self.label_map = {int(s): int(d) for s, d in lm.items() if int(d) != 0}

    def _split_sources(self) -> dict[str, Any]:
        """Which splits_final.json files exist and what becomes of them."""
        pre = self.preprocessed_root / self.name / SPLITS
        raw = self.raw / SPLITS
        found = {k: p for k, p in (("preprocessed", pre), ("raw", raw)) if p.is_file()}
        splits = {}
        for k, p in found.items():
            try:
                splits[k] = json.loads(p.read_text())
            except json.JSONDecodeError as e:
                raise FreeTumorConfigError(f"{p} is not valid JSON ({e})") from None
            add_to_splits(splits[k], [], str(p))  # validates the format
        if not splits and self.req.make_split:
            splits["preprocessed"] = nnunet_default_split(self.existing)
        return splits

    # --- prediction -------------------------------------------------------------------------------------------------
    def _load_predictor(self):
        import torch
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        req = self.req
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
                predictor.initialize_from_trained_model_folder(str(self.model_folder), folds, req.checkpoint)
        except Exception as e:  # a trainer class nnU-Net cannot find, a checkpoint without network weights, ...
            what = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}" if str(e).strip() else repr(e)
            raise FreeTumorConfigError(f"cannot load the organ model {self.model_folder} ({what})") from None
        return predictor

    def predict(self, cases: Sequence[UnlabeledCase], out_folder: Path) -> list[UnlabeledCase]:
        """Organ masks of ``cases`` with nnU-Net's predictor, written to ``out_folder``; cases with ``mask`` set."""
        req = self.req
        out_folder.mkdir(parents=True, exist_ok=True)
        inputs = [
            [str(c.images[self.ct_channel])] if self.model_channels == 1 else [str(p) for p in c.images] for c in cases
        ]
        outputs = [str(out_folder / c.identifier) for c in cases]
        with contextlib.redirect_stdout(_Sink()):  # nnU-Net prints a few lines per case; our tqdm says enough
            if req.npp == 0 and req.nps == 0:
                self.predictor.predict_from_files_sequential(inputs, outputs, save_probabilities=False, overwrite=True)
            else:
                self.predictor.predict_from_files(
                    inputs,
                    outputs,
                    save_probabilities=False,
                    overwrite=True,
                    num_processes_preprocessing=max(1, req.npp),
                    num_processes_segmentation_export=max(1, req.nps),
                )
        fe = self.model_dataset_json["file_ending"]
        out = []
        for c, o in zip(cases, outputs):
            path = Path(o + fe)
            if not path.is_file():
                raise FreeTumorConfigError(f"nnU-Net's predictor wrote no {path} for case {c.identifier}")
            out.append(UnlabeledCase(c.identifier, c.images, path))
        return out

    # --- one case ---------------------------------------------------------------------------------------------------
    def assess(self, case: UnlabeledCase) -> tuple[CaseAssessment, np.ndarray, Any]:
        """(assessment, remapped labels (z, y, x), the SimpleITK image whose geometry the label gets)."""
        from nnunet_freetumor.offline import read_image

        image, spacing, ref = read_image(case.images[self.ct_channel])
        mask, _, _ = read_image(case.mask)
        if mask.shape != image.shape:
            raise FreeTumorConfigError(
                f"case {case.identifier}: the organ mask {case.mask} has shape {mask.shape}, the image {image.shape}"
            )
        labels, unmapped = remap_labels(mask, self.label_map)
        a = assess_case(
            case.identifier,
            self.new_ids[case.identifier],
            image,
            labels,
            spacing,
            self.cfg,
            self.req.filters,
            self.req.tumors,
            self.organ_names,
            self.tumor_names,
            unmapped,
        )
        return a, labels, ref

    # --- everything -------------------------------------------------------------------------------------------------
    def run(self, progress: bool = True) -> UnlabeledResult:
        from tqdm import tqdm

        from nnunet_freetumor.offline import write_like

        req = self.req
        result = UnlabeledResult(self.target, self.target.name, dry_run=req.dry_run)
        target_id = int(self.target.name[7:10])
        result.next_command = f"nnUNetv2_plan_and_preprocess -d {target_id} --verify_dataset_integrity"
        fe = self.file_ending
        with self._staging() as stage:
            cases = self.cases
            if self.predictor is not None:
                self.predictor.allow_tqdm = progress  # nnU-Net's sliding-window bar per case
                cases = self.predict(cases, stage / "predicted")
            (stage / "imagesTr").mkdir()
            (stage / "labelsTr").mkdir()
            for case in tqdm(cases, desc="unlabeled cases", unit="case", disable=not progress):
                a, labels, ref = self.assess(case)
                result.cases.append(a)
                if a.accepted and not req.dry_run:
                    for c, src in enumerate(case.images):
                        shutil.copyfile(src, stage / "imagesTr" / f"{a.new_id}_{c:04d}{fe}")
                    write_like(labels, ref, stage / "labelsTr" / f"{a.new_id}{fe}")
            if not result.accepted and not req.dry_run:
                raise FreeTumorConfigError(
                    f"none of the {len(result.cases)} unlabeled case(s) passed ({self._why(result)}); nothing was "
                    "written. See each case with --dry_run --report FOLDER, then loosen the filters or fix the masks"
                )
            new_ids = [a.new_id for a in result.accepted]
            split_texts = {k: json.dumps(add_to_splits(s, new_ids), indent=4) + "\n" for k, s in self.splits.items()}
            result.split_note = self._split_note(split_texts)
            report = self.report(result)
            if req.dry_run:
                result.report_files = self._write_reports_dry(report, result)
                return result
            if req.output_id is None:
                self._commit_in_place(stage, new_ids, split_texts, report, result)
            else:
                self._commit_new_dataset(stage, new_ids, split_texts, report, result)
        return result

    @contextlib.contextmanager
    def _staging(self) -> Iterator[Path]:
        """A hidden working folder: inside the dataset (same file system as imagesTr) in place, beside it for -o,
        in the system's temp folder for a dry run. Always removed."""
        if self.req.dry_run:
            parent = None
        elif self.req.output_id is None:
            parent = self.raw
        else:
            parent = self.raw_root
        path = Path(tempfile.mkdtemp(prefix=f".{self.name}.unlabeled.", dir=parent))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def _why(self, result: UnlabeledResult) -> str:
        c = Counter(a.category for a in result.cases)
        return ", ".join(f"{k}: {n}" for k, n in c.most_common())

    def _split_note(self, split_texts: Mapping[str, str]) -> str:
        if split_texts:
            made = self.req.make_split and not any(
                p.is_file() for p in (self.preprocessed_root / self.name / SPLITS, self.raw / SPLITS)
            )
            return (
                "wrote nnU-Net's default 5-fold split of the existing cases (seed 12345); " if made else ""
            ) + "the new cases are in the training list of every fold and in no validation list"
        return (
            "no splits_final.json: at the first training nnU-Net creates a random 5-fold split that puts the new "
            "unlabeled cases into validation folds too (their Dice says nothing about tumors). To avoid it, rerun "
            "with --make_split (nnU-Net's own split of the existing cases + the new ones in training), or add the "
            "unlabeled cases after the baseline has created its split"
        )

    def report(self, result: UnlabeledResult) -> dict[str, Any]:
        req = self.req
        if req.organ_masks:
            source = {"supplied": str(Path(req.organ_masks).resolve())}
        else:
            source = {
                "predicted": str(self.model_folder.resolve()),
                "folds": list(req.folds),
                "checkpoint": req.checkpoint,
                "tta": not req.disable_tta,
            }
        unmapped = Counter()
        for a in result.cases:
            unmapped.update({k: 1 for k in a.unmapped_voxels})
        return {
            "dataset": self.name,
            "target": self.target.name,
            "in_place": req.output_id is None,
            "dry_run": req.dry_run,
            "input_folder": str(Path(req.input_folder).resolve()),
            "organ_masks": source,
            "label_map": {str(k): v for k, v in sorted(self.label_map.items())},
            "unmapped_label_ids": {
                "note": "non-zero ids the label map does not name were set to background (0)",
                "cases_per_id": dict(unmapped),
            },
            "config_source": self.cfg_source,
            "organs": {str(k): v for k, v in self.organ_names.items()},
            "tumor_labels": {str(k): v for k, v in self.tumor_names.items()},
            "tumors": req.tumors,
            "prefix": req.prefix,
            "filters": {**asdict(req.filters), "organ_hu": list(req.filters.organ_hu_for(self.cfg))},
            "counts": result.counts,
            "split": result.split_note,
            "next": result.next_command,
            "cases": [asdict(a) for a in result.cases],
        }

    def _report_paths(self, folder_default: Path) -> tuple[Path, Path]:
        if self.req.report:
            p = Path(self.req.report)
            if p.suffix == ".json":
                return p, p.with_suffix(".md")
            return p / REPORT_JSON, p / REPORT_MD
        return folder_default / REPORT_JSON, folder_default / REPORT_MD

    def _write_reports_dry(self, report: dict[str, Any], result: UnlabeledResult) -> list[Path]:
        if not self.req.report:
            return []
        paths = self._report_paths(self.raw)
        for p, text in zip(paths, (json.dumps(report, indent=1) + "\n", report_markdown(report))):
            atomic_write_text(p, text)
        return list(paths)

    def _updated_dataset_json(self, n_new: int, new_ids: Sequence[str], name: str | None) -> str:
        dj = json.loads(json.dumps(self.dataset_json))
        dj["numTraining"] = len(self.existing) + n_new
        if "dataset" in dj:
            fe, n = self.file_ending, self.n_channels
            for new in new_ids:
                dj["dataset"][new] = {
                    "images": [f"imagesTr/{new}_{c:04d}{fe}" for c in range(n)],
                    "label": f"labelsTr/{new}{fe}",
                }
        if name is not None:
            dj["name"] = name
        history = dj.get("freetumor_unlabeled")
        history = history if isinstance(history, list) else []
        history.append(
            {
                "prefix": self.req.prefix,
                "cases_added": n_new,
                "input_folder": str(Path(self.req.input_folder).resolve()),
                "organ_masks": "supplied" if self.req.organ_masks else f"predicted by {self.model_folder}",
                "source_dataset": self.name,
            }
        )
        dj["freetumor_unlabeled"] = history
        return json.dumps(dj, indent=4) + "\n"

    def _commit_in_place(self, stage, new_ids, split_texts, report, result) -> None:
        """Move the staged files in, then splits and reports, dataset.json last; undo everything on any error."""
        moved: list[Path] = []
        replaced: dict[Path, str | None] = {}
        pre_folder = self.preprocessed_root / self.name
        pre_existed = pre_folder.is_dir()

        def write(path: Path, text: str) -> None:
            if path not in replaced:
                replaced[path] = path.read_text() if path.is_file() else None
            atomic_write_text(path, text)

        try:
            for sub in ("imagesTr", "labelsTr"):
                (self.raw / sub).mkdir(exist_ok=True)
                for f in sorted((stage / sub).iterdir()):
                    dst = self.raw / sub / f.name
                    if dst.exists():
                        raise FreeTumorConfigError(f"{dst} appeared while this command ran: nothing was written")
                    os.replace(f, dst)
                    moved.append(dst)
            for k, text in split_texts.items():
                path = self.preprocessed_root / self.name / SPLITS if k == "preprocessed" else self.raw / SPLITS
                write(path, text)
                result.split_files.append(path)
            paths = self._report_paths(self.raw)
            for p, text in zip(paths, (json.dumps(report, indent=1) + "\n", report_markdown(report))):
                write(p, text)
            result.report_files = list(paths)
            write(self.raw / "dataset.json", self._updated_dataset_json(len(new_ids), new_ids, None))
        except BaseException:
            for dst in moved:
                with contextlib.suppress(OSError):
                    dst.unlink()
            for path, old in replaced.items():
                with contextlib.suppress(OSError):
                    if old is None:
                        path.unlink(missing_ok=True)
                    else:
                        atomic_write_text(path, old)
            if not pre_existed:
                with contextlib.suppress(OSError):
                    pre_folder.rmdir()  # only if empty: created for --make_split's split
            result.split_files, result.report_files = [], []
            raise

    def _commit_new_dataset(self, stage, new_ids, split_texts, report, result) -> None:
        """Copy the raw dataset into a staged new dataset, add the new cases, splits, reports, dataset.json; the
        preprocessed folder of the new dataset gets the split (and the FreeTumor config) the same way."""
        from nnunet_freetumor.config import CONFIG_FILENAME

        pre_target = self.preprocessed_root / self.target.name
        pre_files: dict[str, str] = {}
        if "preprocessed" in split_texts:
            pre_files[SPLITS] = split_texts["preprocessed"]
        src_cfg = self.preprocessed_root / self.name / CONFIG_FILENAME
        if src_cfg.is_file() and self.cfg_source == str(src_cfg):
            pre_files[CONFIG_FILENAME] = src_cfg.read_text()
        committed_pre = False
        try:
            with staged_folder(self.target) as tmp:
                shutil.copytree(self.raw, tmp, dirs_exist_ok=True, ignore=_ignore_hidden)
                for sub in ("imagesTr", "labelsTr"):
                    (tmp / sub).mkdir(exist_ok=True)
                    for f in sorted((stage / sub).iterdir()):
                        os.replace(f, tmp / sub / f.name)
                if "raw" in split_texts:
                    (tmp / SPLITS).write_text(split_texts["raw"])
                    result.split_files.append(self.target / SPLITS)
                if self.req.report:
                    paths = self._report_paths(self.target)
                else:
                    paths = (tmp / REPORT_JSON, tmp / REPORT_MD)
                for p, text in zip(paths, (json.dumps(report, indent=1) + "\n", report_markdown(report))):
                    atomic_write_text(p, text)
                result.report_files = [self.target / p.name if p.parent == tmp else p for p in paths]
                (tmp / "dataset.json").write_text(self._updated_dataset_json(len(new_ids), new_ids, self.target.name))
                if pre_files:
                    with staged_folder(pre_target) as ptmp:
                        for fname, text in pre_files.items():
                            (ptmp / fname).write_text(text)
                    committed_pre = True
                    if SPLITS in pre_files:
                        result.split_files.append(pre_target / SPLITS)
        except BaseException:
            if committed_pre:
                shutil.rmtree(pre_target, ignore_errors=True)
            if self.req.report:
                for p in self._report_paths(self.target):
                    p.unlink(missing_ok=True)
            result.split_files, result.report_files = [], []
            raise


def _ignore_hidden(folder: str, names: list[str]) -> list[str]:
    """copytree filter: leave out hidden entries (staging folders of running commands)."""
    return [n for n in names if n.startswith(".")]


class _Sink:
    """A write-only text stream that drops everything (for nnU-Net's progress prints)."""

    def write(self, s: str) -> int:
        return len(s)

    def flush(self) -> None:
        pass


# --- report --------------------------------------------------------------------------------------------------------


def report_markdown(report: Mapping[str, Any]) -> str:
    """The report as Markdown: settings, counts and one table row per case."""
    c = report["counts"]
    f = report["filters"]
    max_ml = "inf" if f["max_organ_ml"] is None else f"{f['max_organ_ml']:g}"
    lines = [
        f"# Unlabeled cases for {report['target']}" + (" (dry run: nothing written)" if report["dry_run"] else ""),
        "",
        f"- source: {report['dataset']}" + (", in place" if report["in_place"] else f", copied to {report['target']}"),
        f"- images: {report['input_folder']}",
        f"- organ masks: {', '.join(f'{k} {v}' for k, v in report['organ_masks'].items())}",
        f"- label map (source -> dataset): {report['label_map']}; ids not in it became background "
        f"(cases per id: {report['unmapped_label_ids']['cases_per_id'] or 'none'})",
        f"- filters: organ volume [{f['min_organ_ml']:g}, {max_ml}] ml, largest component >= "
        f"{f['min_largest_component']:g}, 1st percentile < {f['max_p1_hu']:g} HU, organ median in "
        f"[{f['organ_hu'][0]:g}, {f['organ_hu'][1]:g}] HU; predicted tumors: {report['tumors']}",
        f"- cases: {c['cases']}; added {c[ADDED]}, added with tumor {c[ADDED_WITH_TUMOR]}, skipped for a tumor "
        f"{c[SKIPPED_TUMOR]}, rejected {c[REJECTED]}" + (f" ({c['rejected_by']})" if c["rejected_by"] else ""),
        f"- split: {report['split']}",
        f"- next: `{report['next']}`",
        "",
        "| case | new id | organ volume (ml) | largest component | 1st pct HU | organ median HU | tumor voxels | "
        "decision | reason |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def fmt(d: Mapping[str, Any], spec: str) -> str:
        return ", ".join(f"{k} {'-' if v is None else format(v, spec)}" for k, v in d.items())

    for a in report["cases"]:
        median = "-" if a["organ_median_hu"] is None else f"{a['organ_median_hu']:.0f}"
        lines.append(
            f"| {a['case']} | {a['new_id']} | {fmt(a['organ_ml'], '.1f')} | {fmt(a['largest_component'], '.2f')} | "
            f"{a['p1_hu']:.0f} | {median} | {fmt(a['tumor_voxels'], 'd')} | {a['decision']} | "
            f"{'; '.join(a['reasons']) or 'ok'} |"
        )
    return "\n".join(lines) + "\n"
