"""Generator G and discriminator C, built with dynamic-network-architectures from a JSON-able spec.

A spec is what nnU-Net's plans store for a network: class path + kwargs (+ which kwargs are import paths). It goes
into every checkpoint, so a checkpoint rebuilds its own network without this code guessing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from nnunet_freetumor.synthesis.residual import BLUR_SIGMA

PLAIN_UNET = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
# discriminator output classes (voxel-wise, as in the authors' code): background / real tumor / fake tumor
C_BACKGROUND, C_REAL, C_FAKE = 0, 1, 2


def unet_spec(features: Sequence[int], in_channels: int, out_channels: int, n_conv: int = 2) -> dict[str, Any]:
    """An isotropic 3-D PlainConvUNet: 3x3x3 convolutions, stride 2 between stages, instance norm, leaky ReLU."""
    n = len(features)
    if n < 2:
        raise ValueError("a U-Net needs at least two stages (two feature sizes)")
    return {
        "network_class": PLAIN_UNET,
        "input_channels": int(in_channels),
        "output_channels": int(out_channels),
        "kwargs": {
            "n_stages": n,
            "features_per_stage": [int(f) for f in features],
            "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": [[3, 3, 3]] * n,
            "strides": [[1, 1, 1]] + [[2, 2, 2]] * (n - 1),
            "n_conv_per_stage": [n_conv] * n,
            "n_conv_per_stage_decoder": [n_conv] * (n - 1),
            "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def divisor(spec: dict[str, Any]) -> tuple[int, ...]:
    """Product of the strides per axis: inputs must be divisible by it (``synthesis.padding.forward_padded`` pads to
    it)."""
    out = [1, 1, 1]
    for s in spec["kwargs"]["strides"]:
        out = [a * b for a, b in zip(out, s)]
    return tuple(out)


def build(spec: dict[str, Any]) -> nn.Module:
    """Instantiate a spec with nnU-Net's own network factory (no deep supervision)."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    return get_network_from_plans(
        spec["network_class"],
        spec["kwargs"],
        spec["kw_requires_import"],
        spec["input_channels"],
        spec["output_channels"],
        allow_init=True,
        deep_supervision=False,
    )


def depth_input(spec: dict[str, Any]) -> bool:
    """True for a generator that also sees the relative depth inside the tumor (``synthesis.masks.relative_depth``) as
    its last input channel (older checkpoints: False)."""
    return bool(spec.get("depth_input", False))


def mask_input(spec: dict[str, Any]) -> bool:
    """True for a mask-conditioned generator: it sees the soft tumor mask as its second input channel."""
    return int(spec["input_channels"]) - int(depth_input(spec)) == 2


def residual_blur(spec: dict[str, Any]) -> float:
    """Sigma (voxels) of the Gaussian that smooths a generator's residual (0: none)."""
    return float(spec.get("residual_blur_sigma", BLUR_SIGMA))


def with_defaults(spec: dict[str, Any]) -> dict[str, Any]:
    """A generator spec with the keys that older checkpoints lack filled in (for comparing specs)."""
    return {**spec, "residual_blur_sigma": residual_blur(spec), "depth_input": depth_input(spec)}


def synthesis_options(spec: dict[str, Any]) -> dict[str, Any]:
    """What ``synthesis.residual.generator_synthesis`` needs to know about a generator besides its weights."""
    return {
        "divisor": divisor(spec),
        "mask_input": mask_input(spec),
        "depth_input": depth_input(spec),
        "blur_sigma": residual_blur(spec),
    }


def zero_output_layer(net: nn.Module) -> nn.Module:
    """Set the last 1x1 convolution of a dynamic-network-architectures U-Net to zero: a generator built this way
    starts with tanh(G(x)) = 0, i.e. Eq. 1 changes nothing, and learns its residual from there (instead of starting
    from a random contrast that can sit where the frozen S is sure there is no tumor)."""
    last = net.decoder.seg_layers[-1]
    nn.init.zeros_(last.weight)
    if last.bias is not None:
        nn.init.zeros_(last.bias)
    return net


def n_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
