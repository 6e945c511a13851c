"""Training data for the generator, read straight from nnU-Net's preprocessed dataset (no extra data preparation).

- real side: crops centred on a real tumor voxel of a labeled case (tumor mask = that crop's tumor voxels);
- fake side: crops centred on an organ voxel whose organ is healthy in the crop (every case with an organ: labeled
  and unlabeled/healthy cases alike), with a synthetic tumor mask drawn by the foundation's mask sampler.
Only the training split of the chosen fold is used (the validation cases stay unseen, as for the baseline S).

Every sample is a pure function of (seed, epoch, global sample index): one process or N DDP ranks, a fresh run or a
resumed one, the same index gives the same crop and mask.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from acvl_utils.cropping_and_padding.bounding_boxes import crop_and_pad_nd
from torch.utils.data import Dataset, Sampler

from nnunet_freetumor.config import FreeTumorConfig, FreeTumorConfigError
from nnunet_freetumor.frozen import fold_split
from nnunet_freetumor.labels import healthy_organs
from nnunet_freetumor.masks import sample_tumor_mask

MAX_TRIES = 20


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


@dataclass
class CaseIndex:
    identifier: str
    organs: tuple[int, ...]  # configured organ labels present in the case
    has_tumor: bool  # any configured tumor label present


class GeneratorData(Dataset):
    """Map-style dataset: item i of the current epoch is (fake sample, real sample), both seeded by (seed, epoch, i)."""

    def __init__(
        self,
        folder: str | Path,
        identifiers: Sequence[str],
        cfg: FreeTumorConfig,
        crop_size: Sequence[int],
        spacing: Sequence[float],
        seed: int = 0,
    ):
        from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

        self.folder = str(folder)
        self.cfg = cfg
        self.crop_size = tuple(int(c) for c in crop_size)
        self.spacing = tuple(float(s) for s in spacing)
        self.seed = int(seed)
        self.epoch = 0
        self.dataset = infer_dataset_class(self.folder)(self.folder, list(identifiers))
        self.index: list[CaseIndex] = []
        self._locations: dict[str, dict[int, np.ndarray]] = {}
        for k in identifiers:
            props = self.dataset.load_case(k)[3]
            locs = {
                int(c): np.asarray(v)
                for c, v in props["class_locations"].items()
                if not isinstance(c, tuple) and len(v)
            }
            self._locations[k] = locs
            organs = tuple(o for o in cfg.organ_labels if o in locs)
            self.index.append(CaseIndex(k, organs, any(t in locs for t in cfg.tumor_labels)))
        self.fake_cases = [c for c in self.index if c.organs]
        self.healthy_cases = [c for c in self.fake_cases if not c.has_tumor]
        self.real_cases = [c for c in self.index if c.has_tumor]
        if not self.fake_cases:
            raise FreeTumorConfigError(
                f"no training case of {self.folder} contains any configured organ label {cfg.organ_labels}: the "
                "generator has no healthy organ to paint into. Add organ labels to your cases (README: 'Organ "
                "labels') or fix the label pairs with `freetumor_config`."
            )
        if not self.real_cases:
            raise FreeTumorConfigError(
                f"no training case of {self.folder} contains a tumor label {cfg.tumor_labels}: the discriminator has "
                "no real tumor to learn from. Generator training needs labeled tumor cases."
            )

    def __len__(self) -> int:
        return len(self.fake_cases)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    # --- samples ----------------------------------------------------------------------------------------------------
    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.fake_cases))
        fake = self.fake_sample(self.fake_cases[order[int(i) % len(order)]], rng)
        real = self.real_sample(rng)
        return {**{f"fake_{k}": v for k, v in fake.items()}, **{f"real_{k}": v for k, v in real.items()}}

    def _crop(self, identifier: str, centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        data, seg, _, _ = self.dataset.load_case(identifier)
        bbox = [[int(c) - s // 2, int(c) - s // 2 + s] for c, s in zip(centre, self.crop_size)]
        image = crop_and_pad_nd(data, bbox, 0, cast_cropped_to=np.float32)
        labels = crop_and_pad_nd(seg, bbox, -1, cast_cropped_to=np.int16)
        return image[:1], labels

    def fake_sample(self, case: CaseIndex, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """A healthy-organ crop of ``case`` and a synthetic tumor mask. When the case keeps giving crops with a real
        tumor (crops as large as the image always contain it), another case is drawn, tumor-free cases first."""
        for attempt in range(MAX_TRIES):
            if attempt and attempt % 3 == 0:
                pool = self.healthy_cases or self.fake_cases
                case = pool[int(rng.integers(len(pool)))]
            organ = case.organs[int(rng.integers(len(case.organs)))]
            locs = self._locations[case.identifier][organ]
            image, labels = self._crop(case.identifier, locs[int(rng.integers(len(locs)))][1:])
            if organ not in healthy_organs(labels[0], self.cfg):
                continue
            mask = sample_tumor_mask(labels[0] == organ, self.spacing, self.cfg.mask, rng)
            if mask is None:
                continue
            return {
                "image": torch.from_numpy(image),
                "labels": torch.from_numpy(labels),
                "mask": torch.from_numpy(mask[None]),
                "organ": torch.tensor(organ),
                "organ_index": torch.tensor(self.cfg.organ_labels.index(organ)),
                "edge_sigma_mm": torch.tensor(float(rng.uniform(*self.cfg.mask.edge_sigma_mm))),
            }
        raise FreeTumorConfigError(
            f"found no healthy organ crop in {MAX_TRIES} tries (last case {case.identifier}): every crop of the "
            f"configured organs {self.cfg.organ_labels} contains its tumor label or has fewer than "
            f"{self.cfg.mask.min_organ_voxels} organ voxels. The generator needs tumor-free organ regions: add "
            "healthy cases with organ labels, or lower mask.min_organ_voxels in the config."
        )

    def real_sample(self, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """A crop centred on a random real-tumor voxel; its mask is every tumor voxel of the crop."""
        case = self.real_cases[int(rng.integers(len(self.real_cases)))]
        locs = self._locations[case.identifier]
        tumors = [t for t in self.cfg.tumor_labels if t in locs]
        t = tumors[int(rng.integers(len(tumors)))]
        image, labels = self._crop(case.identifier, locs[t][int(rng.integers(len(locs[t])))][1:])
        mask = np.isin(labels, self.cfg.tumor_labels)
        return {"image": torch.from_numpy(image), "mask": torch.from_numpy(mask)}


class GlobalBatchSampler(Sampler):
    """Indices of this rank's share of every global batch of an epoch (the same for every world size).

    An epoch covers every fake case once; it is padded by wrapping around to a whole number of global batches, so no
    case is dropped however the data is split over ranks.
    """

    def __init__(self, n_items: int, global_batch: int, world_size: int = 1, rank: int = 0):
        if global_batch % world_size:
            raise FreeTumorConfigError(
                f"--batch_size {global_batch} must be divisible by the number of processes ({world_size})"
            )
        self.n_items, self.global_batch, self.world, self.rank = n_items, global_batch, world_size, rank
        self.n_batches = int(np.ceil(n_items / global_batch))

    def __len__(self) -> int:
        return self.n_batches * self.global_batch // self.world

    def __iter__(self) -> Iterator[int]:
        local = self.global_batch // self.world
        for b in range(self.n_batches):
            start = b * self.global_batch + self.rank * local
            yield from range(start, start + local)
