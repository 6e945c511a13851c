"""The dataset the unlabeled cases join (nnunet_freetumor.unlabeled.dataset): new ids and dataset ids."""

from __future__ import annotations

import pytest
from unlabeled_data import SRC, ct_case, plan, snapshot, unlabeled

from nnunet_freetumor.config import FreeTumorConfigError


def test_an_id_clash_is_refused_before_anything_is_written(roots, tmp_path):
    raw = roots["raw"] / SRC
    before = snapshot(raw)
    folder = unlabeled(tmp_path / "in", {"0": ct_case(10)}, masks=tmp_path / "masks")  # case_ + 0 = case_0
    with pytest.raises(FreeTumorConfigError, match="would become case_0, which .* already has"):
        plan(roots, input_folder=str(folder), organ_masks=str(tmp_path / "masks"), prefix="case")
    (roots["results"] / "Dataset981_Other").mkdir()
    with pytest.raises(FreeTumorConfigError, match="already uses dataset id 981"):
        plan(roots, input_folder=str(folder), organ_masks=str(tmp_path / "masks"), output_id=981)
    with pytest.raises(FreeTumorConfigError, match="is the source dataset's id"):
        plan(roots, input_folder=str(folder), organ_masks=str(tmp_path / "masks"), output_id=980)
    assert snapshot(raw) == before
