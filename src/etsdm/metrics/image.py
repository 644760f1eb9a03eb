"""PSNR and SSIM for super-resolution (Section 5.5, Fig. A12), via torchmetrics' functional API.

Images are (N, C, H, W) in [-1, 1] (etsdm's data scale); they are mapped to [0, 1] first, so
PSNR = 10 log10(1 / MSE) per image on the usual [0, 1] scale. Both metrics are computed per
image and reported as mean ± std over images (the paper's SR PSNR is a per-image mean).
SSIM uses an 11x11 Gaussian window (σ = 1.5), shrunk to the largest odd size that fits.
Identical images have PSNR = inf (MSE = 0).

The image sets those metrics compare live on disk as PNG folders (``00000.png``, ... in row
order) or .npz arrays: :func:`write_png_folder`, :func:`read_png_folder`, :func:`read_image_set`
(``etsdm sr-pairs`` writes ``lowres/``, ``highres/`` and :data:`PAIRS_FILE`).
"""

from __future__ import annotations

from pathlib import Path

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


# ------------------------------------------------------------------------------------------------
# Image sets on disk: the PNG folders and .npz files of super-resolution inputs, outputs and targets
# ------------------------------------------------------------------------------------------------
PAIRS_FILE = "pairs.npz"  # `etsdm sr-pairs`: arrays "lowres" and "highres" in [-1, 1]
PNG_NAME = "{:05d}.png"  # one image per file, in row order: 00000.png, 00001.png, ...


def write_png_folder(images: Tensor, folder: Path) -> Path:
    """``images`` (N, C, H, W) in [-1, 1] as ``folder``/00000.png, 00001.png, ... (8-bit, grey for
    C = 1, RGB for C = 3), in row order; the folder is made if missing."""
    import numpy as np
    from PIL import Image

    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"PNG images must be (N, 1 or 3, H, W), got {tuple(images.shape)}")
    folder.mkdir(parents=True, exist_ok=True)
    pixels = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    for i, img in enumerate(pixels.permute(0, 2, 3, 1).numpy()):
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else np.ascontiguousarray(img)).save(
            folder / PNG_NAME.format(i))
    return folder


def read_png_folder(folder: Path, channels: int | None = None) -> Tensor:
    """Every PNG / JPEG under ``folder`` (sorted paths, as :func:`etsdm.data.folder.scan_images`)
    at its own size, as (N, C, H, W) float32 in [-1, 1]; ``channels`` None: 1 when every file is
    grey, else 3.

    Raises:
        ValueError: no images, an unreadable file, or files of different sizes (both named).
    """
    from PIL import Image

    from ..data.folder import GRAY_MODES, scan_images
    from ..data.transforms import pil_to_tensor

    files = scan_images(folder)
    loaded = []
    for path in files:
        try:
            with Image.open(path) as img:
                img.load()
                loaded.append(img.copy())
        except (OSError, SyntaxError, ValueError) as err:
            raise ValueError(f"{path}: not a readable image ({err})") from None
    if channels is None:
        channels = 1 if all(img.mode in GRAY_MODES for img in loaded) else 3
    first = loaded[0].size
    for path, img in zip(files, loaded, strict=True):
        if img.size != first:
            raise ValueError(f"{folder}: images differ in size: {files[0]} is {first[0]}x{first[1]}, "
                             f"{path} is {img.size[0]}x{img.size[1]}")
    return torch.stack([pil_to_tensor(img.convert("L" if channels == 1 else "RGB")) for img in loaded])


def read_image_set(path: Path, keys: tuple[str, ...], pair_key: str | None = None) -> tuple[Tensor, str]:
    """Images (N, C, H, W) in [-1, 1] and where they came from, from

    * an .npz: its first array among ``keys``;
    * a folder holding :data:`PAIRS_FILE` (``etsdm sr-pairs`` output) and ``pair_key``: that array
      of the pairs file (exact floats; the PNGs beside it are 8-bit copies);
    * any other folder: its PNG / JPEG files in sorted order (:func:`read_png_folder`).

    Raises:
        ValueError: no such array / no images / images that do not stack, naming ``path``.
    """
    import numpy as np

    if path.is_dir() and pair_key is not None and (path / PAIRS_FILE).is_file():
        return read_image_set(path / PAIRS_FILE, (pair_key,))
    if path.is_dir():
        return read_png_folder(path), f"{path} (PNG folder)"
    if path.suffix != ".npz":
        raise ValueError(f"{path}: expected an .npz file or a folder of PNG images")
    try:
        with np.load(path, allow_pickle=False) as data:
            key = next((k for k in keys if k in data.files), None)
            if key is None:
                raise ValueError(f"{path} has no array {' or '.join(map(repr, keys))} (found {sorted(data.files)})")
            return torch.as_tensor(data[key]).float(), f"{path} [{key}]"
    except (OSError, EOFError) as err:  # not a zip / a truncated file
        raise ValueError(f"cannot read {path} as .npz: {err}") from None
