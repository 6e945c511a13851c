"""freetumor_evaluate: nnU-Net's per-class Dice plus lesion-wise detection metrics for tumor classes.

``lesions`` (connected components, matching, diameters, size strata, patient level: the metric definitions),
``dataset`` (dataset.json classes, case files, nnU-Net's reader), ``evaluate`` (one case, a folder, in worker
processes) and ``report`` (summary_freetumor.json / .md, the printed text, headline numbers)."""
