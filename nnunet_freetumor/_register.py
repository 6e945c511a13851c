"""Make nnU-Net find this plugin's trainers (imported at interpreter start by ``nnunet_freetumor.pth``).

Appends ``<package>/trainers`` to ``nnUNet_extTrainer`` unless it is already listed. The user's own entries stay
first, so a user trainer with the same name wins. Must stay import-cheap: no torch, no numpy, no nnU-Net.
"""

import os

TRAINERS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "trainers")


def register(environ=os.environ) -> None:
    current = [p for p in environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p.strip()]
    if any(os.path.abspath(p) == TRAINERS_DIR for p in current):
        return
    environ["nnUNet_extTrainer"] = os.pathsep.join([*current, TRAINERS_DIR])


register()
