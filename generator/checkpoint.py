"""Safe checkpoint IO: one safetensors file per checkpoint, never unpickled.

Everything that is not a tensor (config, network specs, optimizer hyper-parameters, epoch counters, RNG seeds) lives
in the safetensors header's metadata as JSON, so a checkpoint is a single file written atomically: a killed run leaves
the previous checkpoint or the new one, never a mix. A readable copy of the metadata is written beside it (.json).

Nested state (optimizer ``state_dict()``s) is flattened: tensors go to the tensor table under path-like keys, the
structure goes to the JSON with ``{"__tensor__": key}`` placeholders; dicts keep their key types (optimizer states are
keyed by int), tuples come back as lists. Tensors that are views of the same memory (dynamic-network-architectures
registers some modules twice) are stored once and come back as one tensor.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from nnunet_freetumor import env
from nnunet_freetumor.config import FreeTumorConfigError
from nnunet_freetumor.synthesis.boxes import CropRule
from nnunet_freetumor.utilities.files import atomic_save, atomic_write_text

META_KEY = "freetumor"
FORMAT_VERSION = 1
GENERATOR_TRAINER = "FreeTumorGenerator"
FINAL = "generator_final.safetensors"
LATEST = "checkpoint_latest.safetensors"


def generator_folder(results: str | os.PathLike, dataset_name: str, plans: str, configuration: str, fold) -> Path:
    """Where freetumor_train_generator writes: <results>/<dataset>/FreeTumorGenerator__<plans>__<config>/fold_<f>"""
    return Path(results, dataset_name, f"{GENERATOR_TRAINER}__{plans}__{configuration}", f"fold_{fold}")


def flatten(obj: Any, prefix: str, tensors: dict[str, torch.Tensor], _seen: dict | None = None) -> Any:
    """Move tensors of a nested dict/list structure into ``tensors``; return the JSON-able skeleton."""
    seen = {} if _seen is None else _seen
    if isinstance(obj, torch.Tensor):
        alias = (obj.data_ptr(), tuple(obj.shape), tuple(obj.stride()), obj.dtype, obj.device) if obj.numel() else None
        if alias is not None and alias in seen:
            return {"__tensor__": seen[alias]}
        tensors[prefix] = obj.detach().cpu().contiguous()
        if alias is not None:
            seen[alias] = prefix
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        return {"__dict__": [[k, flatten(v, f"{prefix}/{k}", tensors, seen)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [flatten(v, f"{prefix}/{i}", tensors, seen) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {prefix} in a checkpoint")


def unflatten(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        return {k: unflatten(v, tensors) for k, v in skeleton["__dict__"]}
    if isinstance(skeleton, list):
        return [unflatten(v, tensors) for v in skeleton]
    return skeleton


def save(path: str | os.PathLike, state: dict[str, Any], meta: dict[str, Any]) -> None:
    """Write ``state`` (nested, with tensors) and ``meta`` (JSON-able) as one safetensors file + a .json copy."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = flatten(state, "state", tensors)
    header = {"format_version": FORMAT_VERSION, "meta": meta, "state": skeleton}
    text = json.dumps(header)
    atomic_save(path, lambda tmp: save_file(tensors, str(tmp), metadata={META_KEY: text}))
    atomic_write_text(
        Path(path).with_suffix(".json"), json.dumps({"format_version": FORMAT_VERSION, **meta}, indent=2) + "\n"
    )


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a checkpoint written by ``save``: returns (state, meta). Never executes code from the file."""
    path = Path(path)
    if not path.is_file():
        raise FreeTumorConfigError(f"generator checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            header = json.loads((f.metadata() or {})[META_KEY])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (KeyError, json.JSONDecodeError) as e:
        raise FreeTumorConfigError(f"{path} is not a nnunet-freetumor checkpoint (no '{META_KEY}' metadata)") from e
    except Exception as e:  # safetensors raises its own error types for truncated/corrupt files
        raise FreeTumorConfigError(f"cannot read {path}: {e}. The file is corrupt or truncated.") from e
    if header.get("format_version") != FORMAT_VERSION:
        raise FreeTumorConfigError(
            f"{path} has checkpoint format {header.get('format_version')}, expected "
            f"{FORMAT_VERSION}: it was written by another nnunet-freetumor version"
        )
    return unflatten(header["state"], tensors), header["meta"]


def load_generator(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild a trained generator from ``generator_final.safetensors``: (frozen network on ``device``, metadata)."""
    from nnunet_freetumor.generator.networks import build
    from nnunet_freetumor.segmenter import freeze

    state, meta = load(path)
    if meta.get("kind") != "freetumor-generator" or "generator" not in state:
        raise FreeTumorConfigError(f"{path} is not a FreeTumor generator checkpoint (kind {meta.get('kind')!r})")
    net = build(meta["generator"])
    net.load_state_dict(state["generator"])
    return freeze(net).to(device), meta


def check_generator_compatible(
    meta: dict,
    cfg,
    *,
    dataset_name: str,
    plans: str,
    configuration: str,
    fold,
    path: str | os.PathLike,
    environ=None,
) -> None:
    """Refuse a generator trained for another label map or window (always), or for another dataset, plans,
    configuration or fold (unless ``nnUNet_freetumor_allow_foreign_generator=1``)."""
    from nnunet_freetumor.config import FreeTumorConfig

    theirs = FreeTumorConfig.from_dict(meta["config"])
    if [(p.organ, p.tumor) for p in theirs.pairs] != [(p.organ, p.tumor) for p in cfg.pairs]:
        raise FreeTumorConfigError(
            f"the generator {path} was trained for organ->tumor labels {[(p.organ, p.tumor) for p in theirs.pairs]}, "
            f"this training uses {[(p.organ, p.tumor) for p in cfg.pairs]}."
            f" Retrain it with the current config: `freetumor_train_generator {dataset_name} -c {configuration} -p "
            f"{plans} -f {fold}`."
        )
    if theirs.window != cfg.window:
        raise FreeTumorConfigError(
            f"the generator {path} works in the HU window {theirs.window}, the current config says {cfg.window}. "
            "Use the config it was trained with, or retrain it."
        )
    found = {
        "dataset": meta.get("dataset"),
        "plans": meta.get("plans"),
        "configuration": meta.get("configuration"),
        "fold": str(meta.get("fold")),
    }
    wanted = {"dataset": dataset_name, "plans": plans, "configuration": configuration, "fold": str(fold)}
    bad = [f"{k} {found[k]!r} (expected {wanted[k]!r})" for k in wanted if found[k] != wanted[k]]
    if bad and not env.flag(env.ALLOW_FOREIGN_GENERATOR, environ):
        raise FreeTumorConfigError(
            f"the generator {path} was trained for {', '.join(bad)}. Train one for this run with "
            f"`freetumor_train_generator {dataset_name} -c {configuration} -p {plans} -f {fold}`, or set "
            f"{env.ALLOW_FOREIGN_GENERATOR}=1 to use it anyway (only if its training cases are not this fold's "
            "validation cases)."
        )


def find_generator(
    results: str | os.PathLike | None,
    dataset_name: str,
    plans: str,
    configuration: str,
    fold,
    override: str | os.PathLike | None = None,
    alternatives: str = "",
) -> Path:
    """The generator of a run: ``override`` or the conventional file, or a clear error naming the command that makes
    it (``alternatives`` adds other ways out, e.g. a flag)."""
    if override:
        path = Path(override)
    elif results is None:
        raise FreeTumorConfigError("set nnUNet_results (where the trained generator is)" + alternatives)
    else:
        path = generator_folder(results, dataset_name, plans, configuration, fold) / FINAL
    if not path.is_file():
        raise FreeTumorConfigError(
            f"no trained generator at {path}. Train it first: `freetumor_train_generator {dataset_name} -c "
            f"{configuration} -p {plans} -f {fold}`{alternatives}."
        )
    return path


def load_compatible_generator(
    path: str | os.PathLike,
    cfg,
    *,
    dataset_name: str,
    plans: str,
    configuration: str,
    fold,
    device: str | torch.device = "cpu",
) -> tuple[torch.nn.Module, dict]:
    """``load_generator`` + ``check_generator_compatible``: a frozen generator that fits this run, and its metadata."""
    net, meta = load_generator(path, device)
    check_generator_compatible(
        meta, cfg, dataset_name=dataset_name, plans=plans, configuration=configuration, fold=fold, path=path
    )
    return net, meta


def generator_crop_rule(meta: dict, cfg) -> CropRule:
    """The box a generator was trained to paint in (``synthesis.boxes.CropRule``), from its metadata. Generators of
    earlier versions were trained on a fixed crop (``crop_size`` voxels at ``spacing``): at least that, plus the gate's
    margin."""
    if meta.get("crop_rule"):
        return CropRule.from_dict(meta["crop_rule"])
    min_mm = tuple(float(c) * float(s) for c, s in zip(meta["crop_size"], meta["spacing"]))
    return CropRule(max(cfg.gate_bbox_margin_mm, 4 * cfg.mask.edge_sigma_mm[1]), min_size_mm=min_mm)
