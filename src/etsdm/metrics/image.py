"""PSNR and SSIM for super-resolution (Section 5.5, Fig. A12), via torchmetrics' functional API.

Images are (N, C, H, W) in [-1, 1] (etsdm's data scale); they are mapped to [0, 1] first, so
PSNR = 10 log10(1 / MSE) per image on the usual [0, 1] scale. Both metrics are computed per
image and reported as mean ± std over images (the paper's SR PSNR is a per-image mean).
SSIM uses an 11x11 Gaussian window (σ = 1.5), shrunk to the largest odd size that fits.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _unit(x: Tensor) -> Tensor:
    return ((x.to(torch.float64) + 1.0) / 2.0).clamp(0.0, 1.0)


def _check(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape or pred.ndim != 4:
        raise ValueError(
            f"PSNR/SSIM need two (N, C, H, W) sets of equal shape, got {tuple(pred.shape)} and {tuple(target.shape)}"
        )


def psnr(pred: Tensor, target: Tensor) -> Tensor:
    """Per-image PSNR in dB (N,), images in [-1, 1]."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    _check(pred, target)
    return peak_signal_noise_ratio(_unit(pred), _unit(target), data_range=1.0, reduction="none", dim=(1, 2, 3))


def ssim(pred: Tensor, target: Tensor) -> Tensor:
    """Per-image SSIM (N,), images in [-1, 1]."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    _check(pred, target)
    size = min(11, min(pred.shape[-2:]))
    size = size if size % 2 == 1 else size - 1
    return structural_similarity_index_measure(
        _unit(pred), _unit(target), data_range=1.0, kernel_size=size, sigma=1.5 * size / 11, reduction="none"
    )
