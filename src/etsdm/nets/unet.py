"""The ADM-style UNet of Table A1 on diffusers' ``UNet2DModel``, and its conditional (SR) variant.

Architecture (Dhariwal & Nichol 2021 with BigGAN residual blocks, Appendix B.1):

* levels of ``base_channels * channel_mult[i]`` channels at resolution R / 2^i; each level has
  ``layers_per_block`` residual blocks down and ``layers_per_block + 1`` up;
* BigGAN up/down sampling: the resampling is a residual block (``ResnetDownsampleBlock2D`` /
  ``ResnetUpsampleBlock2D``, ``downsample_type = upsample_type = "resnet"``; the Attn variants at
  the levels whose *pixel* resolution is listed in ``attention_resolutions``), plus a middle block
  res-attn-res;
* scale-shift timestep conditioning (``resnet_time_scale_shift="scale_shift"``: GroupNorm(h)·(1+s)+b),
  multi-head attention with ``attention_head_dim`` = 64 channels per head, GroupNorm in every
  attention block (``attn_norm_num_groups``, as ADM; diffusers drops it by default with scale-shift);
* the timestep embedding: sinusoidal features of width ``base_channels`` (cos first, max period
  10^4), then Linear-SiLU-Linear to ``time_embedding_dim`` — Table A1's "timestep channels"
  (512 normal = diffusers' default 4·128; 2048 large, set explicitly);
* ``zero_init`` (ADM): the last convolution of every residual block, the output projection of
  every attention block and the output convolution start at zero, so the net starts as a
  function of its skip paths only (its output is exactly 0 at initialisation).

The condition: ``net(x, c)`` feeds ``timestep = c · time_scale`` to UNet2DModel. c is what the
Denoiser hands over (the condition map applied to t). Discrete schedules give c in 0..T-1 and
use ``time_scale = 1``; continuous schedules give c in [0, 1], and the trainer sets
``time_scale = T`` (1000) so the sinusoidal embedding is spread as in the discrete case. The
net never reads the schedule.

Conditional variant (``cond_channels > 0``, super-resolution, Section 5.5): ``net(x, c,
lowres=y)`` concatenates y as extra input channels. y may be given at full size or at low
resolution, in which case it is upsampled here (``lowres_upsample``, bicubic by default — the
same rule as :mod:`etsdm.data.sr`).

Class-conditional variant (``num_classes > 0``, issue 10): ``net(x, c, labels=y)`` with y int64 (B,)
in 0..num_classes-1, or :data:`etsdm.guidance.NULL_LABEL` (-1) for "no label" (classifier-free
guidance's unconditional input). UNet2DModel's class embedding (``num_class_embeds = num_classes +
1``, an ``nn.Embedding`` to ``time_embedding_dim``, added to the timestep embedding as ADM does)
gets NULL_LABEL as its own last index, num_classes. ``lowres`` and ``labels`` combine (a
class-conditional SR net takes both).
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import UNet2DModel
from torch import Tensor, nn

from ..data.transforms import UPSAMPLE_MODES, upsample
from ..guidance import NULL_LABEL


class UNet(nn.Module):
    """``net(x, c, lowres=None, labels=None) -> (B, out_channels, H, W)`` around a diffusers UNet2DModel.

    Attributes:
        unet: the UNet2DModel (export it with ``unet.save_pretrained``; feed it c · time_scale and,
            class-conditional, the label index with NULL_LABEL -> num_classes).
        time_scale: multiplier of the condition before the sinusoidal embedding.
        cond_channels: channels of the low-resolution input (0 = unconditional).
        num_classes: classes of the label input (0 = no labels), read from the UNet2DModel's
            ``num_class_embeds`` (= num_classes + 1: the null label is the last embedding).
    """

    def __init__(
        self, unet: UNet2DModel, *, time_scale: float = 1.0, cond_channels: int = 0, lowres_upsample: str = "bicubic"
    ):
        super().__init__()
        if lowres_upsample not in UPSAMPLE_MODES:
            raise ValueError(f"unet: lowres_upsample must be one of {UPSAMPLE_MODES}, got {lowres_upsample!r}")
        self.unet = unet
        self.time_scale = float(time_scale)
        self.cond_channels = int(cond_channels)
        self.lowres_upsample = lowres_upsample
        self.num_classes = _num_classes(unet)

    def forward(
        self, x: Tensor, c: Tensor | float, lowres: Tensor | None = None, labels: Tensor | None = None
    ) -> Tensor:
        timestep = torch.as_tensor(c, device=x.device).to(torch.float32) * self.time_scale
        return self.unet(self._input(x, lowres), timestep, class_labels=self._class_index(x, labels)).sample

    def _class_index(self, x: Tensor, labels: Tensor | None) -> Tensor | None:
        """The embedding index of each label: the label itself, NULL_LABEL -> num_classes."""
        if self.num_classes == 0:
            if labels is not None:
                raise ValueError("unet: got labels= but this UNet takes no class labels (model.num_classes unset; "
                                 "set data.labels: true for a class-conditional run)")
            return None
        if labels is None:
            raise ValueError(f"unet: this class-conditional UNet needs labels= (B,) int64 in 0..{self.num_classes - 1} "
                             f"or {NULL_LABEL} (no label)")
        if labels.shape != (x.shape[0],) or labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ValueError(f"unet: labels must be integer class indices of shape (B={x.shape[0]},), got "
                             f"{labels.dtype} {tuple(labels.shape)}")
        labels = labels.to(device=x.device, dtype=torch.long)
        if not (labels.is_cuda and torch.cuda.is_current_stream_capturing()):  # no host sync inside a CUDA graph
            bad = (labels < NULL_LABEL) | (labels >= self.num_classes)
            if bool(bad.any()):
                raise ValueError(f"unet: label {int(labels[bad][0])} out of range; allowed 0..{self.num_classes - 1} "
                                 f"or {NULL_LABEL} (no label)")
        return torch.where(labels == NULL_LABEL, self.num_classes, labels)

    def _input(self, x: Tensor, lowres: Tensor | None) -> Tensor:
        if self.cond_channels == 0:
            if lowres is not None:
                raise ValueError("unet: got lowres= but this UNet is unconditional (cond_channels=0)")
            return x
        if lowres is None:
            raise ValueError(f"unet: this conditional UNet needs lowres= (B, {self.cond_channels}, h, w)")
        if lowres.ndim != 4 or lowres.shape[1] != self.cond_channels or lowres.shape[0] != x.shape[0]:
            raise ValueError(
                f"unet: lowres must be (B={x.shape[0]}, {self.cond_channels}, h, w), got {tuple(lowres.shape)}"
            )
        lowres = upsample(lowres.to(x.dtype), tuple(x.shape[-2:]), self.lowres_upsample)
        return torch.cat([x, lowres], dim=1)


def _num_classes(unet: UNet2DModel) -> int:
    """num_classes of a UNet2DModel: num_class_embeds - 1 (the null label is the last embedding).

    Raises:
        ValueError: class conditioning other than a plain embedding table (class_embed_type set).
    """
    if unet.class_embedding is None:
        return 0
    n = unet.config.num_class_embeds
    if unet.config.class_embed_type is not None or n is None or n < 2:
        raise ValueError(f"unet: class conditioning must be UNet2DModel's embedding table with num_class_embeds >= 2 "
                         f"(classes + the null label); got class_embed_type={unet.config.class_embed_type!r}, "
                         f"num_class_embeds={n!r}")
    return int(n) - 1


def _check_geometry(resolution: int, channels: list[int], attn_levels: list[bool], head_dim: int, groups: int) -> None:
    levels = len(channels)
    if resolution % 2 ** (levels - 1):
        raise ValueError(
            f"unet: resolution {resolution} is not divisible by 2^{levels - 1} ({levels} levels); "
            "use a preset with fewer levels or override channel_mult"
        )
    for ch in channels:
        if ch % groups:
            raise ValueError(f"unet: channels {ch} not divisible by norm_num_groups={groups}")
    for ch in [c for c, a in zip(channels, attn_levels, strict=True) if a] + [channels[-1]]:
        if ch % head_dim:
            raise ValueError(f"unet: attention_head_dim={head_dim} must divide the channels ({ch}) of attention levels")


def build_unet(
    *,
    in_channels: int,
    out_channels: int | None = None,
    resolution: int,
    cond_channels: int = 0,
    num_classes: int = 0,
    base_channels: int,
    channel_mult: tuple[int, ...],
    layers_per_block: int,
    attention_resolutions: tuple[int, ...],
    attention_head_dim: int,
    time_embedding_dim: int,
    norm_num_groups: int = 32,
    dropout: float = 0.0,
    resnet_updown: bool = True,
    scale_shift: bool = True,
    zero_init: bool = True,
    time_scale: float = 1.0,
    lowres_upsample: str = "bicubic",
) -> UNet:
    """An ADM-style UNet (see the module docstring); every argument is a preset field, but
    ``cond_channels`` (low-resolution input channels) and ``num_classes`` (class labels; 0: none)."""
    if not isinstance(num_classes, int) or num_classes < 0:
        raise ValueError(f"unet: num_classes must be an integer >= 0 (0 = no class labels), got {num_classes!r}")
    out_channels = in_channels if out_channels is None else out_channels
    channels = [base_channels * m for m in channel_mult]
    level_res = [resolution // 2**i for i in range(len(channels))]
    attn = [r in set(attention_resolutions) for r in level_res]
    _check_geometry(resolution, channels, attn, attention_head_dim, norm_num_groups)
    # BigGAN up/down (Table A1): resampling by a residual block; else diffusers' plain conv resampling.
    plain = ("ResnetDownsampleBlock2D", "ResnetUpsampleBlock2D") if resnet_updown else ("DownBlock2D", "UpBlock2D")
    unet = UNet2DModel(
        sample_size=resolution,
        in_channels=in_channels + cond_channels,
        out_channels=out_channels,
        time_embedding_type="positional",
        time_embedding_dim=time_embedding_dim,  # Table A1 "timestep channels"
        flip_sin_to_cos=True,
        freq_shift=0,
        down_block_types=tuple("AttnDownBlock2D" if a else plain[0] for a in attn),
        up_block_types=tuple("AttnUpBlock2D" if a else plain[1] for a in reversed(attn)),
        block_out_channels=tuple(channels),
        layers_per_block=layers_per_block,
        downsample_type="resnet" if resnet_updown else "conv",
        upsample_type="resnet" if resnet_updown else "conv",
        dropout=dropout,
        attention_head_dim=attention_head_dim,
        norm_num_groups=norm_num_groups,
        attn_norm_num_groups=norm_num_groups,
        resnet_time_scale_shift="scale_shift" if scale_shift else "default",  # GroupNorm(h)(1 + s) + b
        num_class_embeds=num_classes + 1 if num_classes else None,  # + the null label (guidance)
    )
    if zero_init:
        _zero_init(unet)
    return UNet(unet, time_scale=time_scale, cond_channels=cond_channels, lowres_upsample=lowres_upsample)


@torch.no_grad()
def _zero_init(unet: UNet2DModel) -> None:
    """ADM's zero_module: residual branches and the output convolution start at zero."""
    from diffusers.models.attention_processor import Attention
    from diffusers.models.resnet import ResnetBlock2D

    for m in unet.modules():
        layer: Any = None
        if isinstance(m, ResnetBlock2D):
            layer = m.conv2
        elif isinstance(m, Attention):
            layer = m.to_out[0]
        if layer is not None:
            layer.weight.zero_()
            layer.bias.zero_()
    unet.conv_out.weight.zero_()
    unet.conv_out.bias.zero_()
