"""``-tr nnUNetTrainerHandcraftedTumor``: SyntheticTumors-style handcrafted tumors (a textured HU offset inside a
deformed-ellipsoid mask) painted into healthy organs by the DA workers; the comparison baseline for FreeTumor.

``-tr nnUNetTrainerHandcraftedTumor_gate``: the same tumors, made on the training device and filtered by FreeTumor's
quality gate, so that the gate's value can be measured apart from the generator.
"""

import numpy as np
import torch

from nnunet_freetumor.synthesis.handcrafted import handcrafted_synthesis, handcrafted_texture
from nnunet_freetumor.training.trainer_base import DeviceSynthesisTrainerBase, SyntheticTumorTrainerBase


class nnUNetTrainerHandcraftedTumor(SyntheticTumorTrainerBase):
    paints_in_workers = True


class nnUNetTrainerHandcraftedTumor_gate(DeviceSynthesisTrainerBase):
    def synthesize_crops(self, x, soft, organ_index):
        cfg = self.freetumor_config
        out = []
        for i in range(x.shape[0]):
            gen = torch.Generator(device=x.device).manual_seed(int(np.random.randint(0, 2**31 - 1)))
            texture = handcrafted_texture(
                x.shape[2:], self.configuration_manager.spacing, cfg.handcrafted, gen, x.device
            )
            diff = float(np.random.uniform(*cfg.handcrafted.hu_difference))
            out.append(handcrafted_synthesis(x[i], soft[i], texture, diff, self.normalizations[0], cfg.window.polarity))
        return torch.stack(out)
