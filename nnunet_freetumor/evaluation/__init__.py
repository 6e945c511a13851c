"""freetumor_evaluate's metrics: nnU-Net's per-class Dice plus lesion-wise detection for tumor classes."""
