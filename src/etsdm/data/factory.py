"""``make_dataset``: one entry point from a config's data section to a torch Dataset.

Every item is float32 in [-1, 1]: x0 of shape (C, H, W) for images, (D,) for the Gaussian mixture
(whose samples are not bounded), and for "sr" a dict {"x0", "cond": {"lowres"}, "lowres_small"} (see
:mod:`etsdm.data.sr`). With ``labels=True`` (digits, folder, sr on either) every item carries its
class in ``cond["labels"]`` (:mod:`etsdm.data.items`); the data set then has ``num_classes`` and
``class_names``. Options that do not apply to the chosen data set are an error when set
(e.g. ``root`` for "digits"), so a mistyped config does not pass silently.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor
from torch.utils.data import Dataset, Subset

from .digits import DigitsDataset
from .folder import ImageFolderDataset, Verify
from .gmm import GMMDataset
from .items import split_batch
from .sr import DEFAULT_SR_FACTOR, SuperResolutionDataset
from .transforms import UpsampleMode

DATASETS: tuple[str, ...] = ("digits", "gmm", "folder", "sr")
IMAGE_DATASETS: tuple[str, ...] = ("digits", "folder")


def make_dataset(
    name: str,
    *,
    split: str = "train",
    root: str | None = None,
    resolution: int | None = None,
    channels: int | None = None,
    hflip: bool = False,
    skip_bad: bool = False,
    sr_factor: int | None = None,
    gmm: dict | None = None,
    num_samples: int | None = None,
    seed: int = 0,
    sr_base: str | None = None,
    sr_upsample: UpsampleMode = "bicubic",
    verify: Verify = "header",
    holdout: int | float = 0,
    split_seed: int = 0,
    labels: bool = False,
) -> Dataset:
    """Build a data set by name.

    Args:
        name: "digits" | "gmm" | "folder" | "sr".
        split: "train" | "test" ("all" too for digits and folder). Digits: fixed 1,497 / 300
            stratified split. GMM: independent sample streams. Folder: see ``holdout``.
        root: image folder ("folder", or "sr" with sr_base="folder").
        resolution: image side (folder: inferred from the images if None; digits: default 8, resized if set).
        channels: 1 or 3 (digits default 1; folder: inferred, 1 if every image is grayscale, else 3).
        hflip: random left-right flips of images.
        skip_bad: folder: skip and count unreadable files instead of raising.
        sr_factor: "sr": downsampling factor (default 4, the paper's 64 -> 256).
        gmm: "gmm": mixture spec (see :mod:`etsdm.data.gmm`); default the 8-mode ring.
        num_samples: "gmm": number of samples (default 10,000); images: keep only the first
            num_samples items.
        seed: "gmm": seed of the sample stream. Image splits never depend on it.
        sr_base: "sr": the high-resolution data set, "digits" or "folder" (default: "folder" when
            ``root`` is set, else "digits").
        sr_upsample: "sr": how "lowres" is brought back to full size (bicubic | bilinear | nearest).
        verify: folder: "header" | "full" | "none" checks at construction.
        holdout: folder: count or fraction of files reserved for split "test".
        split_seed: the fixed seed of the digits / folder held-out split.
        labels: class labels in each item's cond (digits: the digit; folder: one class per
            immediate subfolder); unlabelled items stay plain tensors (sr: dicts without "labels").

    Raises:
        ValueError: unknown name, or an option that does not apply to it / is out of range.
    """
    if name not in DATASETS:
        raise ValueError(f"data.name must be one of {DATASETS}, got {name!r}")
    if name == "sr" and sr_base is None:
        sr_base = "folder" if root is not None else "digits"
    base = sr_base if name == "sr" else name
    if name != "sr" and sr_base is not None:
        raise ValueError(f"data option ['sr_base'] does not apply to data set {name!r}")
    if name == "sr" and sr_base not in IMAGE_DATASETS:
        raise ValueError(f"data.sr_base must be one of {IMAGE_DATASETS}, got {sr_base!r}")
    _reject_unused(
        name,
        base,
        root=root,
        resolution=resolution,
        channels=channels,
        hflip=hflip,
        gmm=gmm,
        sr_factor=sr_factor,
        skip_bad=skip_bad,
        holdout=holdout,
    )
    if base == "gmm":
        if labels:
            raise ValueError("data.labels: the gmm data set has no class labels (digits, folder, sr have)")
        return GMMDataset(split, gmm=gmm, num_samples=num_samples, seed=seed)
    if base == "digits":
        ds: Dataset = DigitsDataset(split, resolution=resolution, channels=channels, hflip=hflip, split_seed=split_seed,
                                     labels=labels)
    else:
        if root is None:
            raise ValueError("data.root is required for the 'folder' data set (the image folder)")
        ds = ImageFolderDataset(
            root,
            split=split,
            resolution=resolution,
            channels=channels,
            hflip=hflip,
            skip_bad=skip_bad,
            verify=verify,
            holdout=holdout,
            split_seed=split_seed,
            labels=labels,
        )
    ds = _limit(ds, num_samples)
    if name == "sr":
        factor = DEFAULT_SR_FACTOR if sr_factor is None else sr_factor
        return SuperResolutionDataset(ds, factor, upsample_mode=sr_upsample)
    return ds


def _reject_unused(name: str, base: str, **opts: Any) -> None:
    """Options set to a non-default value for a data set that does not use them are an error."""
    unused = []
    if base != "folder":
        unused += [k for k in ("root", "holdout") if opts[k]] + (["skip_bad"] if opts["skip_bad"] else [])
    if base == "gmm":
        unused += [k for k in ("resolution", "channels") if opts[k] is not None] + (["hflip"] if opts["hflip"] else [])
    if name != "gmm" and opts["gmm"] is not None:
        unused.append("gmm")
    if name != "sr" and opts["sr_factor"] is not None:
        unused.append("sr_factor")
    if unused:
        raise ValueError(f"data option(s) {sorted(unused)} do not apply to data set {name!r}")


def _limit(ds: Dataset, num_samples: int | None) -> Dataset:
    """Keep the first num_samples items of an image data set (attributes of the base stay reachable)."""
    if num_samples is None:
        return ds
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"data.num_samples must be a positive integer, got {num_samples!r}")
    if isinstance(ds, DigitsDataset):
        ds.images, ds.labels = ds.images[:num_samples], ds.labels[:num_samples]
        return ds
    if isinstance(ds, ImageFolderDataset):
        ds.files = ds.files[:num_samples]
        return ds
    return Subset(ds, range(min(num_samples, len(ds))))


def data_shape(dataset: Dataset) -> tuple[int, ...]:
    """Shape of one x0 of the data set: (C, H, W) for images (for "sr", the high-res target), (D,) for vectors."""
    inner = dataset
    while isinstance(inner, Subset):
        inner = inner.dataset
    shape = getattr(inner, "shape", None)
    if shape is not None:
        return tuple(shape)
    item = dataset[0]
    x0 = item["x0"] if isinstance(item, dict) else item
    if not isinstance(x0, Tensor):
        raise ValueError(f"data_shape: items must be tensors or dicts with 'x0', got {type(item).__name__}")
    return tuple(x0.shape)


def stack_images(dataset: Dataset, limit: int | None = None, seed: int = 0) -> Tensor:
    """Up to ``limit`` items of an image data set as one (N, C, H, W) tensor (a fixed random subset
    when it holds more): real images for FID references (the x0 of labelled / SR items)."""
    import torch

    n = len(dataset)
    idx = list(range(n))
    if limit is not None and n > limit:
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:limit].sort().values.tolist()
    return torch.stack([split_batch(dataset[i])[0] for i in idx])
