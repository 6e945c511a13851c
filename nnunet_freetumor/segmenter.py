"""The frozen baseline nnU-Net S (the quality gate and the segmentation-guided loss).

S for fold f is the baseline trained on fold f's training split of the same dataset, plans and configuration (no
validation leakage): ``$nnUNet_results/<dataset>/<gate_trainer>__<plans>__<configuration>/fold_<f>/<checkpoint>``.
Its checkpoint's ``init_args`` are checked against what we expect, so a model of another fold, plans or configuration
is refused before any training starts.

S may instead come from another dataset (the config's ``gate_dataset``, e.g. the labeled dataset that
``freetumor_add_unlabeled -o NEW`` merged unlabeled scans into: the paper's S is trained on the labeled data only). Then
the two datasets must have the same labels, and none of the cases S was trained on (its dataset's split of the fold)
may be in this dataset's validation split of the fold. S sees its inputs in its own dataset's CT normalization:
``FrozenSegmenter.__call__`` maps this dataset's normalized intensities through HU to S's.

nnU-Net checkpoints are pickles. They are loaded with ``torch.load(weights_only=True)`` plus an allow-list of the
numpy scalar types nnU-Net stores in its logs, so loading cannot run code. A checkpoint that needs more (written by an
exotic trainer) is refused unless ``nnUNet_freetumor_trust_checkpoints=1`` is set: only do that for your own files.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nnunet_freetumor import env
from nnunet_freetumor.config import FreeTumorConfig, FreeTumorConfigError
from nnunet_freetumor.synthesis.intensity import CTNormalization, ct_normalizations
from nnunet_freetumor.synthesis.padding import forward_padded
from nnunet_freetumor.utilities.dataset import fold_split


def _numpy_safe_globals() -> list[Any]:
    out: list[Any] = [np.dtype]
    core = getattr(np, "_core", None) or np.core
    out.append(core.multiarray.scalar)
    out += [v for k, v in vars(np.dtypes).items() if k.endswith("DType")]
    return out


def load_nnunet_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read an nnU-Net checkpoint without executing pickled code (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FreeTumorConfigError(f"checkpoint {path} does not exist")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle.UnpicklingError, RuntimeError, ... depending on the torch version
        if env.flag(env.TRUST_CHECKPOINTS):
            return torch.load(path, map_location="cpu", weights_only=False)
        raise FreeTumorConfigError(
            f"{path} contains objects that cannot be loaded safely ({str(e).splitlines()[0][:200]}). If this is your "
            f"own nnU-Net checkpoint, set {env.TRUST_CHECKPOINTS}=1 to load it with full unpickling."
        ) from e


def baseline_folder(
    results_root: str | os.PathLike, dataset_name: str, trainer: str, plans: str, configuration: str, fold: int | str
) -> Path:
    return Path(results_root, dataset_name, f"{trainer}__{plans}__{configuration}", f"fold_{fold}")


@dataclass
class FrozenSegmenter:
    """A frozen nnU-Net network with what is needed to feed it and read its output."""

    network: nn.Module
    normalizations: tuple[CTNormalization, ...]
    num_classes: int
    patch_size: tuple[int, ...]
    # product of the network's strides per axis: inputs must be divisible by it (see ``forward_padded``)
    divisor: tuple[int, ...]
    source: Path
    trainer_name: str
    # normalization of the data S is applied to (None: S's own); differs only for an S of another dataset
    data_normalizations: tuple[CTNormalization, ...] | None = None

    def to(self, device: torch.device) -> FrozenSegmenter:
        self.network.to(device)
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """S's logits for ``x`` (B, C, *spatial) normalized as the data it is applied to, any spatial size."""
        if self.data_normalizations is not None and self.data_normalizations != self.normalizations:
            x = torch.cat(
                [
                    s.from_hu(d.to_hu(x[:, c : c + 1]), straight_through=True)  # gradients pass (Eq. 2)
                    for c, (d, s) in enumerate(zip(self.data_normalizations, self.normalizations))
                ],
                dim=1,
            )
        return forward_padded(self.network, x, self.divisor)

    @property
    def device(self) -> torch.device:
        return next(iter(self.network.parameters()), torch.empty(0)).device

    def from_hu(self, hu: torch.Tensor) -> torch.Tensor:
        """HU -> S's own (training) CT normalization, clipped as nnU-Net's preprocessing clips."""
        return self.normalizations[0].from_hu(hu)

    def segment_hu(self, hu: torch.Tensor) -> torch.Tensor:
        """S's logits for (B, 1, *spatial) HU images, normalized as S's training data, any spatial size."""
        return forward_padded(self.network, self.from_hu(hu).to(self.device), self.divisor)

    @torch.no_grad()
    def features(self, hu: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
        """Bottleneck features of S: (N, 1, X, Y, Z) HU crops (normalized as S's training data) -> (N, F) float32 on
        the CPU. The encoder of a dynamic-network-architectures U-Net returns its skips; the deepest is global-average
        pooled. Inputs are padded (replicate) to the network's stride as in ``__call__``."""
        encoder = getattr(self.network, "encoder", None)
        if encoder is None:
            raise FreeTumorConfigError(
                f"the frozen network {type(self.network).__name__} has no .encoder: feature extraction needs a "
                "dynamic-network-architectures U-Net (nnU-Net's default)"
            )

        def bottleneck(x: torch.Tensor) -> torch.Tensor:
            skips = encoder(x)
            deepest = skips[-1] if isinstance(skips, (list, tuple)) else skips
            return deepest.float().mean(dim=tuple(range(2, deepest.ndim)), keepdim=True)  # (B, F, 1, 1, 1)

        feats = [
            forward_padded(bottleneck, self.from_hu(hu[i : i + batch_size]).to(self.device), self.divisor)
            .flatten(1)
            .cpu()
            for i in range(0, len(hu), batch_size)
        ]
        return torch.cat(feats) if feats else torch.zeros((0, 0))


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode, no gradients for the parameters (activations still carry gradients to the input)."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def _load_checkpoint(
    checkpoint: str | os.PathLike,
    *,
    dataset_name: str,
    plans_name: str,
    configuration: str,
    fold: int | str,
    fix_hint: str,
    gate_dataset: str | None = None,
    preprocessed: str | os.PathLike | None = None,
) -> FrozenSegmenter:
    """Load S from ``checkpoint`` (``fold_<f>/checkpoint_final.pth`` of a trained nnU-Net) and check it matches.

    ``dataset_name`` is the dataset S is applied to; ``gate_dataset`` the one S was trained on (None: the same).
    ``preprocessed`` ($nnUNet_preprocessed) is needed for an S of another dataset: both datasets' splits and this
    dataset's plans are read from there. ``fix_hint`` is appended to the error when the checkpoint is missing.
    """
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FreeTumorConfigError(f"the frozen baseline segmenter {checkpoint} does not exist. {fix_hint}")
    model_dir = checkpoint.parent.parent
    for f in ("plans.json", "dataset.json"):
        if not (model_dir / f).is_file():
            raise FreeTumorConfigError(
                f"{model_dir / f} is missing: {model_dir} is not a complete nnU-Net model folder"
            )
    ckpt = load_nnunet_checkpoint(checkpoint)
    wanted = {
        "dataset": gate_dataset or dataset_name,
        "plans": plans_name,
        "configuration": configuration,
        "fold": fold,
    }
    _check_trained_for(checkpoint, ckpt, model_dir, wanted, fix_hint)
    plans_manager = PlansManager(_load_json(model_dir / "plans.json"))
    dataset_json = _load_json(model_dir / "dataset.json")
    data_normalizations = None
    if gate_dataset and gate_dataset != dataset_name:
        data_normalizations = check_gate_of_another_dataset(
            dataset_json, gate_dataset, dataset_name, plans_name, configuration, fold, preprocessed
        )
    cm = plans_manager.get_configuration(configuration)
    label_manager = plans_manager.get_label_manager(dataset_json)
    net = _build_network(ckpt["trainer_name"], plans_manager, cm, dataset_json, label_manager.num_segmentation_heads)
    state = {k[7:] if k.startswith("module.") else k: v for k, v in ckpt["network_weights"].items()}
    net.load_state_dict(state)
    strides = np.array(cm.pool_op_kernel_sizes).prod(axis=0)
    return FrozenSegmenter(
        network=freeze(net),
        normalizations=ct_normalizations(plans_manager.plans, configuration),
        num_classes=label_manager.num_segmentation_heads,
        patch_size=tuple(int(p) for p in cm.patch_size),
        divisor=tuple(int(s) for s in strides),
        source=checkpoint,
        trainer_name=ckpt["trainer_name"],
        data_normalizations=data_normalizations,
    )


def _check_trained_for(checkpoint: Path, ckpt: dict, model_dir: Path, wanted: dict[str, Any], fix_hint: str) -> None:
    """One clear error when the checkpoint was trained for another dataset, plans, configuration or fold."""
    init = ckpt.get("init_args", {})
    plans = init.get("plans") or _load_json(model_dir / "plans.json")
    found = {
        "dataset": plans.get("dataset_name"),
        "plans": plans.get("plans_name"),
        "configuration": init.get("configuration"),
        "fold": init.get("fold"),
    }
    bad = {k: (found[k], wanted[k]) for k in wanted if str(found[k]) != str(wanted[k])}
    if bad:
        what = ", ".join(f"{k} {v[0]!r} (expected {v[1]!r})" for k, v in bad.items())
        raise FreeTumorConfigError(
            f"the frozen segmenter {checkpoint} was trained for {what}. The gate/loss model must be the baseline of "
            f"the same dataset (or of the config's gate_dataset), plans, configuration and fold (no validation "
            f"leakage). {fix_hint}"
        )


def _build_network(trainer_name: str, plans_manager, cm, dataset_json: dict, num_heads: int) -> torch.nn.Module:
    """The network the checkpoint's trainer builds for this plan (nnU-Net's current or legacy signature), without
    deep supervision."""
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels

    n_in = determine_num_input_channels(plans_manager, cm, dataset_json)
    build = recursive_find_trainer_class_by_name(trainer_name).build_network_architecture
    if "plans_manager" in inspect.signature(build).parameters:
        return build(plans_manager, cm, n_in, num_heads, enable_deep_supervision=False)
    return build(  # nnU-Net's legacy signature
        cm.network_arch_class_name,
        cm.network_arch_init_kwargs,
        cm.network_arch_init_kwargs_req_import,
        n_in,
        num_heads,
        enable_deep_supervision=False,
    )


def load_segmenter(
    cfg: FreeTumorConfig,
    *,
    dataset_name: str,
    plans_name: str,
    configuration: str,
    fold: int | str,
    checkpoint: str | os.PathLike | None = None,
    override: str = "--gate_checkpoint",
    device: torch.device | str = "cpu",
    results: str | os.PathLike | None = None,
    preprocessed: str | os.PathLike | None = None,
) -> FrozenSegmenter:
    """The one way to S: ``checkpoint`` if given, else the ``cfg.gate_trainer`` baseline of the fold of
    ``cfg.gate_dataset`` (default ``dataset_name``) in ``results``, checked against the dataset, plans, configuration
    and fold it is used for, frozen, on ``device``. ``override`` names the user's way to pass another checkpoint (for
    the error that says how to fix a missing one). ``results`` / ``preprocessed`` default to ``$nnUNet_results`` /
    ``$nnUNet_preprocessed``."""
    results = results or env.get(env.RESULTS)
    preprocessed = preprocessed or env.get(env.PREPROCESSED)
    gate_dataset = cfg.gate_dataset or dataset_name
    if not checkpoint:
        if results is None:
            raise FreeTumorConfigError(f"set nnUNet_results (where the baseline is) or pass {override}")
        checkpoint = baseline_folder(results, gate_dataset, cfg.gate_trainer, plans_name, configuration, fold)
        checkpoint = checkpoint / cfg.gate_checkpoint
    return _load_checkpoint(
        checkpoint,
        dataset_name=dataset_name,
        plans_name=plans_name,
        configuration=configuration,
        fold=fold,
        fix_hint=f"Train the baseline first: `nnUNetv2_train {gate_dataset} {configuration} {fold} -tr "
        f"{cfg.gate_trainer} -p {plans_name}` (or use {override}).",
        gate_dataset=gate_dataset,
        preprocessed=preprocessed,
    ).to(torch.device(device))


def check_gate_of_another_dataset(
    gate_dataset_json: dict,
    gate_dataset: str,
    dataset_name: str,
    plans_name: str,
    configuration: str,
    fold: int | str,
    preprocessed: str | os.PathLike | None,
) -> tuple[CTNormalization, ...]:
    """Refuse an S of ``gate_dataset`` for ``dataset_name`` unless the labels match and S never saw a validation case
    of the fold; returns ``dataset_name``'s CT normalization (what S's inputs must be mapped from)."""
    if preprocessed is None:
        raise FreeTumorConfigError("nnUNet_preprocessed is not set: it is needed to check a gate of another dataset")
    here = Path(preprocessed, dataset_name)
    labels = _load_json(here / "dataset.json")["labels"]
    if labels != gate_dataset_json["labels"]:
        raise FreeTumorConfigError(
            f"the gate dataset {gate_dataset} has labels {gate_dataset_json['labels']}, {dataset_name} has {labels}: "
            f"S must segment the same labels. Train the baseline of {dataset_name} instead, or fix the config with "
            f"`freetumor_config -d {dataset_name} --gate_dataset {dataset_name} --write`."
        )
    if str(fold) != "all":

        def missing(name: str) -> str:
            return (
                "with S from another dataset, both datasets' splits are needed to rule out validation leakage. Train "
                f"a fold of {name} once (nnU-Net writes its split), or use `freetumor_add_unlabeled ... --make_split` "
                "for a merged dataset."
            )

        val = set(fold_split(here, fold, missing(dataset_name))["val"])
        seen = set(fold_split(Path(preprocessed, gate_dataset), fold, missing(gate_dataset))["train"])
        leaked = sorted(val & seen)
        if leaked:
            raise FreeTumorConfigError(
                f"S of {gate_dataset} fold {fold} was trained on {len(leaked)} case(s) that are in the validation "
                f"split of {dataset_name} fold {fold} ({', '.join(leaked[:5])}{', ...' if len(leaked) > 5 else ''}): "
                f"its gate would leak validation data. Give {dataset_name} a split whose fold {fold} validation cases "
                f"are the gate dataset's (`freetumor_add_unlabeled ... --make_split` writes one)."
            )
    plans_file = here / f"{plans_name}.json"
    if not plans_file.is_file():
        raise FreeTumorConfigError(
            f"{plans_file} does not exist. Run `nnUNetv2_plan_and_preprocess -d {dataset_name}`."
        )
    return ct_normalizations(_load_json(plans_file), configuration)


def _load_json(path: Path) -> dict:
    import json

    return json.loads(Path(path).read_text())
