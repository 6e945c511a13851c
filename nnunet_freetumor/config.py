"""The one configuration of the method: frozen dataclasses, saved as JSON beside every checkpoint and results folder.

Units: lengths in millimetres, intensities in Hounsfield units (HU). Label ids are the dataset's own (dataset.json).

Where the configuration comes from (first found wins):
1. the file named by the environment variable ``nnUNet_freetumor_config``;
2. ``$nnUNet_preprocessed/DatasetXXX_Name/freetumor_config.json`` (write one with ``freetumor_config -d XXX --write``);
3. inferred from dataset.json label names ("liver" + "liver tumor", ...) with the defaults below.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnunet_freetumor.errors import FreeTumorConfigError  # raised here, and imported from here by most modules

CONFIG_FILENAME = "freetumor_config.json"


@dataclass(frozen=True)
class OrganTumorPair:
    """One organ label and the tumor label its synthetic tumors get (e.g. liver 1 -> liver tumor 2)."""

    organ: int
    tumor: int
    name: str = ""


@dataclass(frozen=True)
class SizeClass:
    """A tumor size class: ellipsoid semi-axes drawn uniformly from ``radius_mm`` (per axis), chosen with ``weight``."""

    name: str
    radius_mm: tuple[float, float]
    weight: float


# METHOD.md: radii 3-5 / 6-10 / 12-20 / 24-40 voxels at 1.5 mm, p = 0.25 each, converted to millimetres.
DEFAULT_SIZE_CLASSES = (
    SizeClass("tiny", (4.5, 7.5), 0.25),
    SizeClass("small", (9.0, 15.0), 0.25),
    SizeClass("medium", (18.0, 30.0), 0.25),
    SizeClass("large", (36.0, 60.0), 0.25),
)


@dataclass(frozen=True)
class MaskConfig:
    """How synthetic tumor masks are drawn inside a healthy organ (all lengths in mm)."""

    size_classes: tuple[SizeClass, ...] = DEFAULT_SIZE_CLASSES
    # smooth random displacement of the ellipsoid surface, as a fraction of its mean radius (SyntheticTumors: ~0.1-0.3)
    deform_fraction: tuple[float, float] = (0.1, 0.25)
    # the centre is drawn from the organ eroded by this margin (falls back to the whole organ if erosion empties it)
    erosion_mm: float = 3.0
    # and, along the first (slice) axis, from this central fraction of the organ's extent in the crop (code: 0.3-0.7)
    center_extent: tuple[float, float] = (0.3, 0.7)
    # a crop is a candidate only if its organ has at least this many voxels (and no tumor voxels)
    min_organ_voxels: int = 64
    # Eq. 1 blurs the mask with sigma ~ U(1, 2) voxels at 1.5 mm: soft edges
    edge_sigma_mm: tuple[float, float] = (1.5, 3.0)


@dataclass(frozen=True)
class WindowConfig:
    """The fixed HU window the generator works in ([lo, hi] -> [0, 1]) and the sign of the tumor contrast.

    ``polarity = -1``: tumors darker than parenchyma (abdomen, METHOD.md); ``+1``: brighter (chest lesions).
    """

    hu_min: float = -175.0
    hu_max: float = 250.0
    polarity: int = -1


CHEST_WINDOW = WindowConfig(hu_min=-1000.0, hu_max=500.0, polarity=1)


@dataclass(frozen=True)
class HandcraftedConfig:
    """SyntheticTumors-style handcrafted tumors: a textured HU offset in the tumor's direction (polarity)."""

    hu_difference: tuple[float, float] = (65.0, 145.0)
    # texture: thresholded, blurred noise (SyntheticTumors' get_predefined_texture), sigmas in mm
    texture_sigma_a_mm: tuple[float, float] = (4.5, 22.5)
    texture_sigma_b_mm: tuple[float, float] = (4.5, 12.0)


@dataclass(frozen=True)
class FreeTumorConfig:
    """Everything that defines a synthesis run. Saved as ``freetumor_config.json`` next to every output."""

    pairs: tuple[OrganTumorPair, ...]
    mask: MaskConfig = field(default_factory=MaskConfig)
    window: WindowConfig = field(default_factory=WindowConfig)
    handcrafted: HandcraftedConfig = field(default_factory=HandcraftedConfig)
    # probability that a candidate crop (healthy organ in the crop) gets a synthetic tumor
    p_synthesis: float = 0.5
    # quality gate (Eq. 4-5): accept when the frozen segmenter labels at least this share of the mask as tumor
    gate_threshold: float = 0.7
    # the frozen baseline used as gate: nnUNet_results/<dataset>/<gate_trainer>__<plans>__<config>/fold_<f>/
    gate_trainer: str = "nnUNetTrainer"
    gate_checkpoint: str = "checkpoint_final.pth"
    # the dataset S was trained on (DatasetXXX_Name); None: this dataset. Set it to the labeled dataset a merged one was
    # made from (freetumor_add_unlabeled -o NEW), as in the paper (S from labeled data only); see segmenter.py's checks
    gate_dataset: str | None = None
    # True: run the gate on a tumor-centred crop instead of the whole patch (cheaper, see README)
    gate_bbox_crop: bool = True
    gate_bbox_margin_mm: float = 24.0
    # a PNG of synthesized crops every N epochs (0: never)
    png_every: int = 10

    def __post_init__(self) -> None:
        validate(self)

    # --- label helpers ----------------------------------------------------------------------------------------------
    @property
    def organ_labels(self) -> tuple[int, ...]:
        return tuple(p.organ for p in self.pairs)

    @property
    def tumor_labels(self) -> tuple[int, ...]:
        return tuple(sorted({p.tumor for p in self.pairs}))

    def tumor_of(self, organ: int) -> int:
        for p in self.pairs:
            if p.organ == organ:
                return p.tumor
        raise KeyError(organ)

    # --- (de)serialisation ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FreeTumorConfig:
        return _from_dict(cls, d)

    def save(self, path: str | os.PathLike) -> None:
        from nnunet_freetumor.utilities.files import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> FreeTumorConfig:
        try:
            d = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise FreeTumorConfigError(f"cannot read the FreeTumor config {path}: {e}") from e
        return cls.from_dict(d)

    def replace(self, **changes: Any) -> FreeTumorConfig:
        return dataclasses.replace(self, **changes)


def validate(cfg: FreeTumorConfig) -> None:
    if not cfg.pairs:
        raise FreeTumorConfigError("the FreeTumor config names no organ/tumor label pair")
    organs = [p.organ for p in cfg.pairs]
    if len(set(organs)) != len(organs):
        raise FreeTumorConfigError(f"an organ label appears twice in the FreeTumor config: {organs}")
    for p in cfg.pairs:
        if p.organ <= 0 or p.tumor <= 0 or p.organ == p.tumor:
            raise FreeTumorConfigError(f"invalid organ/tumor label pair {p}: labels must be > 0 and differ")
        if p.tumor in organs:
            raise FreeTumorConfigError(f"tumor label {p.tumor} is also configured as an organ label")
    if not 0.0 <= cfg.p_synthesis <= 1.0:
        raise FreeTumorConfigError(f"p_synthesis must be in [0, 1], got {cfg.p_synthesis}")
    if not 0.0 <= cfg.gate_threshold <= 1.0:
        raise FreeTumorConfigError(f"gate_threshold must be in [0, 1], got {cfg.gate_threshold}")
    w = cfg.window
    if not w.hu_max > w.hu_min:
        raise FreeTumorConfigError(f"window.hu_max ({w.hu_max}) must be larger than window.hu_min ({w.hu_min})")
    if w.polarity not in (-1, 1):
        raise FreeTumorConfigError(f"window.polarity must be -1 (darker tumors) or +1 (brighter), got {w.polarity}")
    m = cfg.mask
    if not m.size_classes or any(c.weight < 0 for c in m.size_classes) or sum(c.weight for c in m.size_classes) <= 0:
        raise FreeTumorConfigError("mask.size_classes needs at least one class with a positive weight")
    for c in m.size_classes:
        if not 0 < c.radius_mm[0] <= c.radius_mm[1]:
            raise FreeTumorConfigError(f"size class {c.name}: radius_mm must satisfy 0 < min <= max, got {c.radius_mm}")


def _from_dict(cls: type, d: Any) -> Any:
    """Rebuild nested frozen dataclasses from ``dataclasses.asdict`` output (lists back to tuples)."""
    if not dataclasses.is_dataclass(cls):
        return d
    if not isinstance(d, dict):
        raise FreeTumorConfigError(f"expected a JSON object for {cls.__name__}, got {type(d).__name__}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(d) - set(names)
    if unknown:
        raise FreeTumorConfigError(f"unknown key(s) in the FreeTumor config for {cls.__name__}: {sorted(unknown)}")
    kwargs = {}
    for k, v in d.items():
        kwargs[k] = _convert(_FIELD_TYPES.get((cls.__name__, k)), v)
    return cls(**kwargs)


def _convert(kind: Any, v: Any) -> Any:
    if kind is None:
        return tuple(v) if isinstance(v, list) else v
    if isinstance(kind, tuple):  # ("tuple", element dataclass)
        return tuple(_from_dict(kind[1], x) for x in v)
    return _from_dict(kind, v)


# nested dataclass fields (kept explicit: no typing introspection magic)
_FIELD_TYPES: dict[tuple[str, str], Any] = {
    ("FreeTumorConfig", "pairs"): ("tuple", OrganTumorPair),
    ("FreeTumorConfig", "mask"): MaskConfig,
    ("FreeTumorConfig", "window"): WindowConfig,
    ("FreeTumorConfig", "handcrafted"): HandcraftedConfig,
    ("MaskConfig", "size_classes"): ("tuple", SizeClass),
}
