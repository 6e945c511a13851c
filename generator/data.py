"""Training data for the generator, read straight from nnU-Net's preprocessed dataset (no extra data preparation).

- fake side: a healthy organ region of any case with an organ (labeled and unlabeled/healthy cases alike) and a
  synthetic tumor mask drawn by the foundation's mask sampler (sizes in mm), cut to the tumor's box;
- real side: a real lesion of a labeled case (the connected component around a random tumor voxel), cut to its box.
The box is the run's :class:`~nnunet_freetumor.synthesis.boxes.CropRule`: the mask's bounding box plus a context
margin in mm (capped at the context crop), so G, C and the frozen S work on the tumor and its surroundings only, not
on a whole patch. With ``rule=None`` the whole context crop is used (the fixed crop of earlier versions).
Only the training split of the chosen fold is used (the validation cases stay unseen, as for the baseline S).

Every sample is a pure function of (seed, global sample index): sample j of optimizer step s has index s * B + j
(B = the global batch), whatever the number of processes, in a fresh run or a resumed one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from acvl_utils.cropping_and_padding.bounding_boxes import crop_and_pad_nd
from scipy import ndimage
from torch.utils.data import Dataset, Sampler

from nnunet_freetumor.config import FreeTumorConfig, FreeTumorConfigError, SizeClass
from nnunet_freetumor.labels import healthy_organs
from nnunet_freetumor.synthesis.boxes import CropRule, tumor_box
from nnunet_freetumor.synthesis.masks import choose_size_class, sample_tumor_mask
from nnunet_freetumor.utilities.dataset import fold_split

MAX_TRIES = 20
FULL_26 = np.ones((3, 3, 3), dtype=bool)


def training_cases(
    preprocessed_dataset_folder: str | Path, fold: int | str, all_identifiers: Sequence[str]
) -> list[str]:
    """The training split of ``fold`` from nnU-Net's splits_final.json ('all': every case)."""
    if str(fold) == "all":
        return sorted(all_identifiers)
    missing = (
        "nnU-Net writes it when it trains the baseline. Train the baseline of this fold first (`nnUNetv2_train DATASET "
        "CONFIGURATION FOLD`); it is also the frozen segmenter the generator needs."
    )
    return sorted(fold_split(preprocessed_dataset_folder, fold, missing)["train"])


class CaseStore:
    """Crops of nnU-Net preprocessed cases without re-reading a case per sample.

    Each case is opened once per process (nnU-Net's blosc2 / numpy memory maps: a crop decompresses only the chunks it
    touches) and its properties (class locations) are read once. When all cases together are at most ``cache_mb``
    decompressed, they are held in memory instead (small datasets: a crop is a numpy slice).
    """

    def __init__(self, folder: str | Path, identifiers: Sequence[str], cache_mb: float = 1024):
        from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

        self.folder = str(folder)
        self.identifiers = list(identifiers)
        self._dataset = infer_dataset_class(self.folder)(self.folder, self.identifiers)
        self.locations: dict[str, dict[int, np.ndarray]] = {}
        nbytes = 0
        for k in self.identifiers:
            data, seg, _, props = self._dataset.load_case(k)
            self.locations[k] = {
                int(c): np.asarray(v)
                for c, v in props["class_locations"].items()
                if not isinstance(c, tuple) and len(v)
            }
            nbytes += int(np.prod(data.shape)) * 4 + int(np.prod(seg.shape)) * 2
        self.in_memory = nbytes <= cache_mb * 2**20
        self._arrays: dict[str, tuple[Any, Any]] = {}
        self._pid = os.getpid()

    def _case(self, identifier: str) -> tuple[Any, Any]:
        if self._pid != os.getpid():  # a forked DataLoader worker opens its own handles
            self._arrays, self._pid = {}, os.getpid()
        if identifier not in self._arrays:
            data, seg, _, _ = self._dataset.load_case(identifier)
            if self.in_memory:
                data, seg = np.asarray(data[:1], dtype=np.float32), np.asarray(seg[:], dtype=np.int16)
            self._arrays[identifier] = (data, seg)
        return self._arrays[identifier]

    def labels(self, identifier: str) -> np.ndarray:
        """The whole (X, Y, Z) label map of a case (decompressed)."""
        return np.asarray(self._case(identifier)[1][0])

    def crop(self, identifier: str, centre: Sequence[int], size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(1, *size) float32 image (0 outside the case) and (*size) int16 labels (-1 outside) around ``centre``."""
        data, seg = self._case(identifier)
        bbox = [[int(c) - s // 2, int(c) - s // 2 + s] for c, s in zip(centre, size)]
        image = crop_and_pad_nd(data, bbox, 0, cast_cropped_to=np.float32)
        labels = crop_and_pad_nd(seg, bbox, -1, cast_cropped_to=np.int16)
        return np.ascontiguousarray(image[:1]), np.ascontiguousarray(labels[0])


@dataclass
class CaseIndex:
    identifier: str
    organs: tuple[int, ...]  # configured organ labels present in the case
    has_tumor: bool  # any configured tumor label present


def lesion_at(tumor: np.ndarray, voxel: Sequence[int]) -> np.ndarray:
    """The 26-connected component of the boolean ``tumor`` map that contains ``voxel`` (empty if it is no tumor)."""
    comps, _ = ndimage.label(tumor, structure=FULL_26)
    label = comps[tuple(int(v) for v in voxel)]
    return comps == label if label else np.zeros_like(tumor)


class GeneratorData(Dataset):
    """Map-style dataset: item g is (fake sample, real sample), both drawn with ``default_rng([seed, g])``.

    Context-sized tensors (the step cuts the boxes, ``cut_boxes``): fake_image (1, *context) float32 normalized,
    fake_labels (*context) int16, fake_mask (1, *context) bool, fake_organ / fake_organ_index / fake_edge_sigma_mm
    scalars; real_image (1, *context), real_mask (1, *context) bool (every tumor voxel), real_lesion (1, *context) bool
    (the lesion the box is centred on); fake_box_size / real_box_size (3,): the box the crop rule asks for.
    """

    def __init__(
        self,
        store: CaseStore,
        cfg: FreeTumorConfig,
        context: Sequence[int],
        spacing: Sequence[float],
        rule: CropRule | None,
        seed: int = 0,
        require_real: bool = True,
        batch_size: int = 1,
    ):
        self.store, self.cfg, self.rule = store, cfg, rule
        self.context = tuple(int(c) for c in context)
        self.spacing = tuple(float(s) for s in spacing)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.index = []
        for k in store.identifiers:
            locs = store.locations[k]
            organs = tuple(o for o in cfg.organ_labels if o in locs)
            self.index.append(CaseIndex(k, organs, any(t in locs for t in cfg.tumor_labels)))
        self.fake_cases = [c for c in self.index if c.organs]
        self.healthy_cases = [c for c in self.fake_cases if not c.has_tumor]
        self.real_cases = [c for c in self.index if c.has_tumor]
        if not self.fake_cases:
            raise FreeTumorConfigError(
                f"no training case of {store.folder} contains any configured organ label {cfg.organ_labels}: the "
                "generator has no healthy organ to paint into. Add organ labels to your cases (README: 'Organ "
                "labels') or fix the label pairs with `freetumor_config`."
            )
        if require_real and not self.real_cases:
            raise FreeTumorConfigError(
                f"no training case of {store.folder} contains a tumor label {cfg.tumor_labels}: the discriminator has "
                "no real tumor to learn from. Generator training needs labeled tumor cases."
            )
        self._order: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:  # one pass over the cases with organs (the sampler decides how many are drawn)
        return len(self.fake_cases)

    def _case_of(self, g: int) -> CaseIndex:
        """Cases are drawn in passes: every case with an organ once per pass, in a seeded order."""
        n = len(self.fake_cases)
        p = g // n
        if self._order is None or self._order[0] != p:
            self._order = (p, np.random.default_rng([self.seed, p, 1]).permutation(n))
        return self.fake_cases[int(self._order[1][g % n])]

    def size_class_of_step(self, step: int) -> SizeClass:
        """The tumor size class of every synthetic mask of an optimizer step (drawn with the config's weights): one
        class per step keeps a batch's boxes alike in size, so that no small tumor is cut to the box of a large one."""
        return choose_size_class(self.cfg.mask, np.random.default_rng([self.seed, int(step), 2]))

    def __getitem__(self, g: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, int(g)])
        size_class = self.size_class_of_step(int(g) // self.batch_size)
        fake = self.fake_sample(self._case_of(int(g)), rng, size_class)
        real = self.real_sample(rng)
        return {**{f"fake_{k}": v for k, v in fake.items()}, **{f"real_{k}": v for k, v in real.items()}}

    def box_size(self, mask: np.ndarray) -> tuple[int, ...]:
        """The box the crop rule asks for around ``mask`` (the whole context without a rule)."""
        return self.context if self.rule is None else self.rule.size(mask, self.spacing)

    def fake_region(
        self, case: CaseIndex, rng: np.random.Generator, size_class: SizeClass | None = None
    ) -> dict[str, Any]:
        """A synthetic tumor mask in a healthy organ region of ``case``: the context crop (image (1, *context), labels,
        mask), the organ, the mask's box in the context and the soft edge's sigma (mm). When the case keeps giving
        regions with a real tumor (contexts as large as the image always contain it), another case is drawn,
        tumor-free cases first."""
        for attempt in range(MAX_TRIES):
            if attempt and attempt % 3 == 0:
                pool = self.healthy_cases or self.fake_cases
                case = pool[int(rng.integers(len(pool)))]
            organ = case.organs[int(rng.integers(len(case.organs)))]
            locs = self.store.locations[case.identifier][organ]
            image, labels = self.store.crop(case.identifier, locs[int(rng.integers(len(locs)))][1:], self.context)
            if organ not in healthy_organs(labels, self.cfg):  # no tumor of the organ anywhere in the context
                continue
            mask = sample_tumor_mask(labels == organ, self.spacing, self.cfg.mask, rng, size_class)
            if mask is None:
                continue
            return {
                "case": case.identifier,
                "image": image,
                "labels": labels,
                "mask": mask,
                "organ": organ,
                "box_size": self.box_size(mask),
                "edge_sigma_mm": float(rng.uniform(*self.cfg.mask.edge_sigma_mm)),
            }
        raise FreeTumorConfigError(
            f"found no healthy organ crop in {MAX_TRIES} tries (last case {case.identifier}): every crop of the "
            f"configured organs {self.cfg.organ_labels} contains its tumor label or has fewer than "
            f"{self.cfg.mask.min_organ_voxels} organ voxels. The generator needs tumor-free organ regions: add "
            "healthy cases with organ labels, or lower mask.min_organ_voxels in the config."
        )

    def fake_sample(
        self, case: CaseIndex, rng: np.random.Generator, size_class: SizeClass | None = None
    ) -> dict[str, torch.Tensor]:
        """``fake_region`` as tensors (context-sized; ``box_size`` says how much of it the rule wants around the
        mask: the training step cuts one box size per batch, see ``cut_boxes``)."""
        r = self.fake_region(case, rng, size_class)
        return {
            "image": torch.from_numpy(r["image"]),
            "labels": torch.from_numpy(r["labels"]),
            "mask": torch.from_numpy(r["mask"][None]),
            "organ": torch.tensor(r["organ"]),
            "organ_index": torch.tensor(self.cfg.organ_labels.index(r["organ"])),
            "edge_sigma_mm": torch.tensor(r["edge_sigma_mm"]),
            "box_size": torch.tensor(r["box_size"]),
        }

    def real_region(self, rng: np.random.Generator) -> dict[str, Any]:
        """The lesion around a random real-tumor voxel of a labeled case: context crop (image, labels), the lesion's
        component and every tumor voxel (context-sized bool), and the lesion's box in the context."""
        case = self.real_cases[int(rng.integers(len(self.real_cases)))]
        locs = self.store.locations[case.identifier]
        tumors = [t for t in self.cfg.tumor_labels if t in locs]
        t = tumors[int(rng.integers(len(tumors)))]
        centre = locs[t][int(rng.integers(len(locs[t])))][1:]
        return self.real_region_at(case.identifier, centre)

    def real_region_at(self, identifier: str, centre: Sequence[int]) -> dict[str, Any]:
        """``real_region`` of the lesion through voxel ``centre`` (a tumor voxel) of case ``identifier``."""
        image, labels = self.store.crop(identifier, centre, self.context)
        tumor = np.isin(labels, self.cfg.tumor_labels)
        lesion = lesion_at(tumor, [c // 2 for c in self.context])
        return {
            "case": identifier,
            "image": image,
            "labels": labels,
            "tumor": tumor,
            "lesion": lesion,
            "box_size": self.box_size(lesion),
        }

    def real_sample(self, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """``real_region`` as tensors (context-sized, as ``fake_sample``); the mask is every tumor voxel."""
        r = self.real_region(rng)
        return {
            "image": torch.from_numpy(r["image"]),
            "mask": torch.from_numpy(r["tumor"][None]),
            "lesion": torch.from_numpy(r["lesion"][None]),
            "box_size": torch.tensor(r["box_size"]),
        }


def cut_boxes(
    samples: Sequence[dict[str, torch.Tensor]], prefix: str, centre_on: str, size: Sequence[int]
) -> dict[str, torch.Tensor]:
    """Stack one box of ``size`` per sample, centred on the sample's ``{prefix}{centre_on}`` mask (the synthetic mask,
    or the real lesion) and shifted to stay inside its context: every key of ``prefix`` with the context's spatial
    shape is cut, (B, ...) each."""
    out: dict[str, list[torch.Tensor]] = {}
    for smp in samples:
        box = tumor_box(smp[prefix + centre_on][0], size)
        for k, v in smp.items():
            if k.startswith(prefix) and v.ndim >= 3:
                out.setdefault(k[len(prefix) :], []).append(v[(Ellipsis, *box)])
    return {k: torch.stack(v) for k, v in out.items()}


def collate_step(
    samples: list[dict[str, torch.Tensor]],
    box_divisor: Sequence[int],
    crop_size: Sequence[int],
    world: int = 1,
    device: torch.device | None = None,
) -> dict[str, torch.Tensor]:
    """This process's samples of a step as one batch: every fake sample cut to one box size (the largest the crop
    rule asks for in the *global* batch, so that N processes cut what one process would), the real ones alike.
    Box sizes are whole multiples of ``box_divisor`` (the networks' strides) where the context (``crop_size``)
    allows: S, G and C then see real surroundings instead of the replicate padding ``forward_padded`` would add."""
    sizes = torch.stack([torch.stack([s["fake_box_size"], s["real_box_size"]]) for s in samples]).amax(0)
    if world > 1:  # (2, 3): fake, real; the maximum over the processes (torch.distributed)
        from torch import distributed as dist

        sizes = sizes.to(device)
        dist.all_reduce(sizes, op=dist.ReduceOp.MAX)
        sizes = sizes.cpu()
    fake_size, real_size = (
        [min(c, -(-v // d) * d) for v, d, c in zip(row, box_divisor, crop_size)] for row in sizes.tolist()
    )
    batch = {f"fake_{k}": v for k, v in cut_boxes(samples, "fake_", "mask", fake_size).items()}
    batch.update({f"real_{k}": v for k, v in cut_boxes(samples, "real_", "lesion", real_size).items()})
    for k in ("fake_organ", "fake_organ_index", "fake_edge_sigma_mm"):
        batch[k] = torch.stack([s[k] for s in samples])
    return batch


def as_list(samples: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    """DataLoader collate: a batch is the list of samples (the step cuts one box size for the whole global batch)."""
    return samples


class StepSampler(Sampler):
    """Global sample indices of this rank for optimizer steps ``start`` .. ``steps - 1``: step s covers indices
    s * B .. s * B + B - 1 (B = the global batch), rank r takes its contiguous share of every step."""

    def __init__(self, start: int, steps: int, global_batch: int, world_size: int = 1, rank: int = 0):
        if global_batch % world_size:
            raise FreeTumorConfigError(
                f"--batch_size {global_batch} must be divisible by the number of processes ({world_size})"
            )
        self.start, self.steps, self.global_batch, self.world, self.rank = start, steps, global_batch, world_size, rank

    def __len__(self) -> int:
        return max(self.steps - self.start, 0) * (self.global_batch // self.world)

    def __iter__(self) -> Iterator[int]:
        local = self.global_batch // self.world
        for s in range(self.start, self.steps):
            first = s * self.global_batch + self.rank * local
            yield from range(first, first + local)
