"""The export's record: ``synthesis_log.json`` (provenance, config, every written and rejected case) and the new
dataset's dataset.json (nnU-Net's generator, with the provenance under ``freetumor_synthesis``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from nnunet_freetumor.config import CONFIG_FILENAME, FreeTumorConfig, FreeTumorConfigError

SYNTHESIS_LOG = "synthesis_log.json"


def write_metadata(
    folder: Path,
    dataset_json: dict[str, Any],
    dataset_name: str,
    description: str,
    provenance: dict[str, Any],
    log: dict[str, Any],
    cfg: FreeTumorConfig,
    n_cases: int,
) -> None:
    """dataset.json (the source's, with the new name, case count and ``freetumor_synthesis`` = ``provenance``),
    ``synthesis_log.json`` (``provenance`` + ``log``) and the FreeTumor config, in ``folder``."""
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    dj = {k: v for k, v in dataset_json.items() if k not in ("numTraining", "dataset", "name", "description")}
    generate_dataset_json(
        str(folder),
        dict(dj.pop("channel_names")),
        dict(dj.pop("labels")),
        n_cases,
        dj.pop("file_ending"),
        dataset_name=dataset_name,
        description=description,
        freetumor_synthesis=provenance,
        **dj,
    )
    (folder / SYNTHESIS_LOG).write_text(json.dumps({**provenance, **log}, indent=1) + "\n")
    cfg.save(folder / CONFIG_FILENAME)


def read_synthesis_log(folder: str | os.PathLike) -> dict[str, Any]:
    """The ``synthesis_log.json`` of an export folder; a clear error when the folder is not an export."""
    path = Path(folder, SYNTHESIS_LOG)
    if not path.is_file():
        raise FreeTumorConfigError(f"{folder} is not a freetumor_synthesize export (no {SYNTHESIS_LOG})")
    return json.loads(path.read_text())
