"""Image operations shared by the datasets (PIL + numpy + torch only; no torchvision).

Conventions: an image tensor is float32 (C, H, W) in [-1, 1] (pixel value p in 0..255 maps to
p / 127.5 - 1); a batch is (B, C, H, W). ``denormalize`` maps [-1, 1] back to [0, 1].
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

UpsampleMode = Literal["bicubic", "bilinear", "nearest"]
UPSAMPLE_MODES: tuple[str, ...] = ("bicubic", "bilinear", "nearest")


def denormalize(x: Tensor) -> Tensor:
    """[-1, 1] -> [0, 1] (clamped), for images saved or shown to a person."""
    return ((x + 1.0) * 0.5).clamp(0.0, 1.0)


def pil_to_tensor(img: Image.Image) -> Tensor:
    """An 8-bit PIL image (mode L or RGB) -> float32 (C, H, W) in [-1, 1]."""
    arr = np.asarray(img, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.transpose(2, 0, 1).copy()).div_(127.5).sub_(1.0)


def resize_center_crop(img: Image.Image, resolution: int) -> Image.Image:
    """Resize so that the shorter side is ``resolution`` (bicubic, antialiased), then centre-crop a square.

    PIL's resize filters with a support scaled to the reduction factor, so large reductions are
    antialiased (no separate box pre-reduction needed).
    """
    w, h = img.size
    scale = resolution / min(w, h)
    new_w = max(resolution, round(w * scale))
    new_h = max(resolution, round(h * scale))
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = (new_w - resolution) // 2, (new_h - resolution) // 2
    return img.crop((left, top, left + resolution, top + resolution))


def resize_tensor(x: Tensor, resolution: int) -> Tensor:
    """Resize a (C, H, W) or (B, C, H, W) image to ``resolution`` x ``resolution`` (bilinear, antialiased), clamped."""
    batch = x if x.ndim == 4 else x[None]
    if batch.shape[-2:] == (resolution, resolution):
        return x
    out = F.interpolate(batch, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True)
    out = out.clamp(-1.0, 1.0)
    return out if x.ndim == 4 else out[0]


def area_downsample(x: Tensor, factor: int) -> Tensor:
    """Area (box) downsampling by an integer factor: each low-res pixel is the mean of a factor x factor block."""
    if factor < 1 or x.shape[-1] % factor or x.shape[-2] % factor:
        raise ValueError(f"area_downsample: image size {tuple(x.shape[-2:])} is not divisible by factor {factor}")
    batch = x if x.ndim == 4 else x[None]
    out = F.avg_pool2d(batch, factor)
    return out if x.ndim == 4 else out[0]


def upsample(x: Tensor, size: tuple[int, int], mode: UpsampleMode = "bicubic") -> Tensor:
    """Upsample a (C, h, w) or (B, C, h, w) image to ``size``; bicubic overshoot is clamped to [-1, 1]."""
    if mode not in UPSAMPLE_MODES:
        raise ValueError(f"upsample: mode must be one of {UPSAMPLE_MODES}, got {mode!r}")
    batch = x if x.ndim == 4 else x[None]
    if tuple(batch.shape[-2:]) == tuple(size):
        return x
    kwargs = {} if mode == "nearest" else {"align_corners": False}
    out = F.interpolate(batch, size=tuple(size), mode=mode, **kwargs)
    if mode == "bicubic":
        out = out.clamp(-1.0, 1.0)
    return out if x.ndim == 4 else out[0]


def random_hflip(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Flip a (C, H, W) image left-right with probability 1/2.

    The coin comes from ``generator`` or torch's default generator, so a DataLoader's per-worker
    seeding and a trainer's saved RNG state make the flips reproducible.
    """
    if bool(torch.rand((), generator=generator) < 0.5):
        return x.flip(-1)
    return x
