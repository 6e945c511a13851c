"""The data-augmentation glue: a batchgeneratorsv2 transform that draws synthetic tumor masks in the DA workers.

Placed right after nnU-Net's SpatialTransform (so the mask follows the crop's final geometry and every later spatial
transform, mirroring included, moves it with the labels). Per sample it

1. finds the healthy organs of the crop (organ present, none of its tumor label: real tumors are never touched);
2. with probability ``p_synthesis`` picks one and draws a tumor mask in millimetres (``masks.sample_tumor_mask``);
3. appends one channel to the segmentation: the organ id at the synthetic-tumor voxels, 0 elsewhere. nnU-Net's
   DownsampleSegForDSTransform downsamples it with the labels, so every deep-supervision scale carries its own mask;
4. with ``handcrafted=True`` also paints the tumor into the image (SyntheticTumors recipe, in HU) and writes the tumor
   label, before nnU-Net's intensity augmentations run on the result. Otherwise the image is left alone (masks only):
   the trainer synthesizes on the training device (the generator is far too slow for CPU workers).

The trainer strips the extra channel before the loss (``split_mask_channel``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.pseudo2d import Convert2DTo3DTransform

from nnunet_freetumor.config import FreeTumorConfig
from nnunet_freetumor.labels import healthy_organs
from nnunet_freetumor.synthesis.handcrafted import handcrafted_synthesis, handcrafted_texture
from nnunet_freetumor.synthesis.intensity import CTNormalization
from nnunet_freetumor.synthesis.masks import bbox, sample_tumor_mask, soft_masks


class TumorSynthesisTransform(BasicTransform):
    def __init__(
        self,
        cfg: FreeTumorConfig,
        spacing: Sequence[float],
        handcrafted: bool = False,
        normalizations: Sequence[CTNormalization] | None = None,
    ):
        """``handcrafted``: paint the recipe here (needs the CT ``normalizations`` of every image channel); False:
        draw the masks only."""
        super().__init__()
        if handcrafted and not normalizations:
            raise ValueError("painting handcrafted tumors needs the CT normalization of every image channel")
        self.cfg = cfg
        self.spacing = tuple(float(s) for s in spacing)
        self.handcrafted = bool(handcrafted)
        self.normalizations = tuple(normalizations or ())

    def get_parameters(self, **data_dict) -> dict:
        """All randomness is drawn here, from numpy's global state (seeded per DA worker by nnU-Net)."""
        seg = data_dict["segmentation"][0].numpy()
        organs = healthy_organs(seg, self.cfg)
        if not organs or np.random.uniform() >= self.cfg.p_synthesis:
            return {"organ": 0, "mask": None}
        organ = int(organs[np.random.randint(len(organs))])
        rng = np.random.default_rng(np.random.randint(0, 2**31 - 1))
        mask = sample_tumor_mask(seg == organ, self.spacing, self.cfg.mask, rng)
        params = {"organ": organ if mask is not None else 0, "mask": mask}
        if mask is not None and self.handcrafted:
            params["edge_sigma_mm"] = float(rng.uniform(*self.cfg.mask.edge_sigma_mm))
            params["difference_hu"] = float(rng.uniform(*self.cfg.handcrafted.hu_difference))
            params["texture_seed"] = int(rng.integers(0, 2**31 - 1))
        return params

    def apply(self, data_dict: dict, **params) -> dict:
        seg = data_dict["segmentation"]
        mask_channel = torch.zeros_like(seg[:1])
        mask = params["mask"]
        if mask is not None:
            m = torch.from_numpy(mask)
            mask_channel[0][m] = params["organ"]
            if self.handcrafted:
                data_dict["image"] = self._paint(data_dict["image"], seg[0].numpy() == params["organ"], mask, params)
                seg = seg.clone()
                seg[0][m] = self.cfg.tumor_of(params["organ"])
        data_dict["segmentation"] = torch.cat([seg, mask_channel])
        return data_dict

    def _paint(self, image: torch.Tensor, organ: np.ndarray, mask: np.ndarray, params: dict) -> torch.Tensor:
        """Handcrafted tumor on every (CT-normalized) channel, computed on the mask's bounding box only."""
        sigma = params["edge_sigma_mm"]
        box = bbox(mask, pad=int(np.ceil(4 * sigma / min(self.spacing))) + 1)
        m, o = (torch.from_numpy(a[box])[None, None] for a in (mask, organ))
        soft = soft_masks(m, o, [sigma], self.spacing)[0, 0]
        gen = torch.Generator().manual_seed(params["texture_seed"])
        texture = handcrafted_texture(soft.shape, self.spacing, self.cfg.handcrafted, gen)
        image = image.clone()
        for c, norm in enumerate(self.normalizations):
            image[c][box] = handcrafted_synthesis(
                image[c][box], soft, texture, params["difference_hu"], norm, self.cfg.window.polarity
            )
        return image


def split_mask_channel(
    target: torch.Tensor | list[torch.Tensor],
) -> tuple[torch.Tensor | list[torch.Tensor], torch.Tensor | list[torch.Tensor]]:
    """Split the appended mask channel off nnU-Net targets (a tensor or the deep-supervision list of (B, C+1, ...)).

    Returns (targets as nnU-Net expects them, masks with the same structure, each (B, 1, ...))."""
    if isinstance(target, (list, tuple)):
        return [t[:, :-1] for t in target], [t[:, -1:] for t in target]
    return target[:, :-1], target[:, -1:]


def insert_after_spatial(transforms: list[BasicTransform], new: BasicTransform) -> None:
    """Insert ``new`` right after nnU-Net's SpatialTransform (and the Convert2DTo3DTransform that may follow it)."""
    idx = next((i for i, t in enumerate(transforms) if isinstance(t, SpatialTransform)), None)
    if idx is None:
        raise RuntimeError("no SpatialTransform in the training transforms: cannot place the tumor synthesis")
    idx += 1
    if idx < len(transforms) and isinstance(transforms[idx], Convert2DTo3DTransform):
        idx += 1
    transforms.insert(idx, new)
