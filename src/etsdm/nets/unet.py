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
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import UNet2DModel
from torch import Tensor, nn

from ..data.transforms import UPSAMPLE_MODES, upsample


class UNet(nn.Module):
    """``net(x, c, lowres=None) -> (B, out_channels, H, W)`` around a diffusers UNet2DModel.

    Attributes:
        unet: the UNet2DModel (export it with ``unet.save_pretrained``; feed it c · time_scale).
        time_scale: multiplier of the condition before the sinusoidal embedding.
        cond_channels: channels of the low-resolution input (0 = unconditional).
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

    def forward(self, x: Tensor, c: Tensor | float, lowres: Tensor | None = None) -> Tensor:
        timestep = torch.as_tensor(c, device=x.device).to(torch.float32) * self.time_scale
        return self.unet(self._input(x, lowres), timestep).sample

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
    """An ADM-style UNet (see the module docstring); every argument is a preset field."""
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
