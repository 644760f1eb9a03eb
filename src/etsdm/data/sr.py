"""Super-resolution pairs derived from any image data set (Section 5.5: 64x64 -> 256x256 on FFHQ).

Item i of ``SuperResolutionDataset(base, factor)`` is a dict (the convention of
:mod:`etsdm.data.items`)

* ``"x0"``: the high-resolution target, ``base[i]`` (C, H, W) in [-1, 1] (random flips of the
  base apply before downsampling, so the pair always matches);
* ``"cond"``: the network's inputs, ``{"lowres": ...}`` (plus the base's ``"labels"`` when the base
  is labelled), where ``"lowres"`` is ``lowres_small`` upsampled back to (C, H, W) — bicubic by
  default (clamped to [-1, 1]; "bilinear" and "nearest" on request) — the form the conditional
  UNet concatenates to its input as extra channels (``net(x, c, lowres=...)``; the UNet also
  accepts the small form and upsamples it the same way);
* ``"lowres_small"``: the low-resolution input (C, H/f, W/f), by *area* downsampling (the mean of
  each f x f block; H and W must be divisible by f); outside ``cond``, it never reaches the network.

The default collate of a DataLoader batches the dict key by key.
"""

from __future__ import annotations

from torch.utils.data import Dataset

from .items import split_batch
from .transforms import UPSAMPLE_MODES, UpsampleMode, area_downsample, upsample

DEFAULT_SR_FACTOR = 4  # the paper's 64 -> 256 (Section 5.5)


class SuperResolutionDataset(Dataset):
    """(low-res, high-res) pairs from an image data set whose items are (C, H, W) tensors.

    Args:
        base: the high-resolution image data set.
        factor: downsampling factor f >= 2 (the paper: 4, 64 -> 256).
        upsample_mode: how ``"lowres"`` is brought back to full size: bicubic | bilinear | nearest.
    """

    def __init__(self, base: Dataset, factor: int = DEFAULT_SR_FACTOR, *, upsample_mode: UpsampleMode = "bicubic"):
        if not isinstance(factor, int) or factor < 2:
            raise ValueError(f"sr: sr_factor must be an integer >= 2, got {factor!r}")
        if upsample_mode not in UPSAMPLE_MODES:
            raise ValueError(f"sr: sr_upsample must be one of {UPSAMPLE_MODES}, got {upsample_mode!r}")
        shape = tuple(getattr(base, "shape", None) or split_batch(base[0])[0].shape)
        if len(shape) != 3:
            raise ValueError(f"sr: the base data set must hold images (C, H, W), got items of shape {shape}")
        if shape[1] % factor or shape[2] % factor:
            raise ValueError(f"sr: image size {shape[1]}x{shape[2]} is not divisible by sr_factor={factor}")
        self.base, self.factor, self.upsample_mode = base, factor, upsample_mode
        self.shape: tuple[int, ...] = shape
        self.lowres_shape: tuple[int, ...] = (shape[0], shape[1] // factor, shape[2] // factor)
        if hasattr(base, "labels"):
            self.labels = base.labels
        for name in ("num_classes", "class_names", "labelled"):  # a labelled base: its labels go into cond
            if hasattr(base, name):
                setattr(self, name, getattr(base, name))

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        hr, cond = split_batch(self.base[i])
        lr = area_downsample(hr, self.factor)
        cond["lowres"] = upsample(lr, hr.shape[-2:], self.upsample_mode)
        return {"x0": hr, "cond": cond, "lowres_small": lr}
