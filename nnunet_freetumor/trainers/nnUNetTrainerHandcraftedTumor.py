"""``-tr nnUNetTrainerHandcraftedTumor``: SyntheticTumors-style handcrafted tumors (a textured HU offset inside a
deformed-ellipsoid mask) painted into healthy organs by the DA workers; the comparison baseline for FreeTumor."""

from nnunet_freetumor.trainer_base import SyntheticTumorTrainerBase


class nnUNetTrainerHandcraftedTumor(SyntheticTumorTrainerBase):
    synthesis_mode = "handcrafted"
