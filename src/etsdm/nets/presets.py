"""Backbone presets and ``make_net``, the one entry point from a config's model section to a network.

``NET_PRESETS[name][preset]`` holds the fields of each preset ("unet": tiny, small, normal, large;
"mlp": tiny, small, normal). "normal" and "large" are Table A1 (256 x 256); "tiny" (8 x 8 digits)
and "small" (16 x 16) train on a CPU in minutes. Any field can be overridden by keyword
(``make_net("unet", preset="tiny", layers_per_block=1)``); an unknown keyword is an error naming
the allowed ones.

Table A1 as implemented (``normal`` / ``large``): base channels 128, multipliers (1,1,2,2,4,4) /
(1,1,2,4,6,8), 64 channels per attention head, attention at 32,16,8 / 32,64,8 pixels (the large
list as printed in the paper), timestep channels 512 / 2048, BigGAN up/down, dropout 0, 2 / 4
residual blocks per level. Built this way the nets have 138.3M / 707.1M parameters (the paper
says 131M / 692M; attention at 16 px only would give 131.7M for "normal").
"""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from .mlp import MLP
from .unet import build_unet

NETS: tuple[str, ...] = ("unet", "mlp")

_ADM = {"attention_head_dim": 64, "norm_num_groups": 32, "dropout": 0.0, "base_channels": 128}

NET_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "unet": {
        # 8 x 8 (digits): two levels 8 -> 4, attention at 4 px and in the middle; ~1.0M parameters,
        # ~38 MFLOP per image forward.
        "tiny": {
            "resolution": 8,
            "base_channels": 32,
            "channel_mult": (1, 2),
            "layers_per_block": 1,
            "attention_resolutions": (4,),
            "attention_head_dim": 32,
            "time_embedding_dim": 128,
            "norm_num_groups": 8,
            "dropout": 0.0,
        },
        # 16 x 16: three levels 16 -> 8 -> 4, attention at 8 px and in the middle.
        "small": {
            "resolution": 16,
            "base_channels": 32,
            "channel_mult": (1, 2, 2),
            "layers_per_block": 2,
            "attention_resolutions": (8,),
            "attention_head_dim": 32,
            "time_embedding_dim": 128,
            "norm_num_groups": 8,
            "dropout": 0.0,
        },
        # Table A1, normal version (256 x 256).
        "normal": {
            **_ADM,
            "resolution": 256,
            "channel_mult": (1, 1, 2, 2, 4, 4),
            "layers_per_block": 2,
            "attention_resolutions": (32, 16, 8),
            "time_embedding_dim": 512,
        },
        # Table A1, large version (256 x 256); attention resolutions as printed.
        "large": {
            **_ADM,
            "resolution": 256,
            "channel_mult": (1, 1, 2, 4, 6, 8),
            "layers_per_block": 4,
            "attention_resolutions": (32, 64, 8),
            "time_embedding_dim": 2048,
        },
    },
    "mlp": {
        "tiny": {"width": 128, "depth": 3, "emb_dim": 64},
        "small": {"width": 256, "depth": 4, "emb_dim": 128},
        "normal": {"width": 512, "depth": 6, "emb_dim": 128},
    },
}

# Keywords accepted besides the preset fields.
_EXTRA = {
    "unet": {"resnet_updown", "scale_shift", "zero_init", "time_scale", "lowres_upsample"},
    "mlp": {"time_scale"},
}


def preset_fields(name: str, preset: str) -> dict[str, Any]:
    """A copy of the fields of ``NET_PRESETS[name][preset]``; ValueError names the allowed values."""
    if name not in NET_PRESETS:
        raise ValueError(f"model.name must be one of {NETS}, got {name!r}")
    if preset not in NET_PRESETS[name]:
        raise ValueError(f"model.preset for {name!r} must be one of {tuple(NET_PRESETS[name])}, got {preset!r}")
    return copy.deepcopy(NET_PRESETS[name][preset])


def make_net(
    name: str,
    *,
    preset: str = "tiny",
    in_channels: int | None = None,
    out_channels: int | None = None,
    resolution: int | None = None,
    dim: int | None = None,
    cond_channels: int = 0,
    num_classes: int = 0,
    **overrides: Any,
) -> nn.Module:
    """Build a backbone called as ``net(x, c)`` (UNet: ``net(x, c, lowres=...)`` when cond_channels > 0,
    ``net(x, c, labels=...)`` when num_classes > 0).

    Args:
        name: "unet" or "mlp".
        preset: a key of ``NET_PRESETS[name]``.
        in_channels: image channels C (UNet, required); for the MLP, the data size D if ``dim`` is None.
        out_channels: UNet output channels (default in_channels).
        resolution: UNet image side (default: the preset's).
        dim: MLP data size D.
        cond_channels: UNet extra input channels for the low-resolution image (0 = unconditional).
        num_classes: UNet class labels 0..num_classes-1 plus the null label (0 = no labels).
        **overrides: any preset field, and for the UNet ``resnet_updown``, ``scale_shift``,
            ``zero_init``, ``time_scale``, ``lowres_upsample``; for the MLP ``time_scale``.

    Raises:
        ValueError: unknown name / preset / override, or inconsistent sizes.
    """
    fields = preset_fields(name, preset)
    unknown = sorted(set(overrides) - set(fields) - _EXTRA[name])
    if unknown:
        allowed = sorted(set(fields) | _EXTRA[name])
        raise ValueError(f"model.overrides: unknown field(s) {unknown} for {name!r}; allowed: {allowed}")
    fields.update(overrides)
    if name == "mlp":
        return _make_mlp(fields, in_channels=in_channels, out_channels=out_channels, dim=dim, cond=cond_channels,
                         num_classes=num_classes)
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"unet: in_channels must be a positive integer, got {in_channels!r}")
    if dim is not None:
        raise ValueError("unet: dim applies to the MLP only (the UNet takes in_channels and resolution)")
    if cond_channels < 0:
        raise ValueError(f"unet: cond_channels must be >= 0, got {cond_channels}")
    if not isinstance(num_classes, int) or num_classes < 0:
        raise ValueError(f"unet: num_classes (model.num_classes) must be an integer >= 0, got {num_classes!r}")
    if resolution is not None:
        fields["resolution"] = resolution
    return build_unet(in_channels=in_channels, out_channels=out_channels, cond_channels=cond_channels,
                      num_classes=num_classes, **fields)


def _make_mlp(
    fields: dict[str, Any], *, in_channels: int | None, out_channels: int | None, dim: int | None, cond: int,
    num_classes: int = 0,
) -> MLP:
    d = dim if dim is not None else in_channels
    if not isinstance(d, int) or d < 1:
        raise ValueError(f"mlp: dim (or in_channels) must be a positive integer, got {d!r}")
    if in_channels is not None and dim is not None and in_channels != dim:
        raise ValueError(f"mlp: in_channels ({in_channels}) and dim ({dim}) disagree")
    if out_channels not in (None, d):
        raise ValueError(f"mlp: the output has the input's size {d}; got out_channels={out_channels}")
    if cond:
        raise ValueError("mlp: cond_channels applies to the UNet only")
    if num_classes:
        raise ValueError("mlp: num_classes (model.num_classes, class labels) applies to the UNet only; "
                         "use model.name: unet")
    return MLP(d, **fields)


def count_parameters(net: nn.Module) -> int:
    """Number of parameters (works on the "meta" device: build under ``with torch.device("meta")``)."""
    return sum(p.numel() for p in net.parameters())
