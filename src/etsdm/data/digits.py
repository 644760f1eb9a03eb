"""The embedded default data set: scikit-learn's handwritten digits (no download).

``sklearn.datasets.load_digits`` ships 1,797 8x8 grey images with pixel values 0..16 and labels
0..9. Pixels are scaled to [-1, 1] by x = v / 8 - 1. The held-out split is fixed: 300 test
images stratified by class (``sklearn.model_selection.train_test_split`` with ``random_state=0``),
1,497 train; both keep the original order of ``load_digits``. The split does not depend on a
run's seed, so every run and every metric sees the same test set.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .items import labelled
from .transforms import random_hflip, resize_tensor

DigitsSplit = Literal["train", "test", "all"]
DIGITS_TEST_SIZE = 300
DIGITS_SPLIT_SEED = 0
DIGITS_NATIVE_RESOLUTION = 8
DIGITS_CLASS_NAMES: tuple[str, ...] = tuple(str(d) for d in range(10))


@lru_cache(maxsize=1)
def _load() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.float32), d.target.astype(np.int64)


@lru_cache(maxsize=8)
def _split_indices(test_size: int, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    _, y = _load()
    idx = np.arange(len(y))
    train, test = train_test_split(idx, test_size=test_size, stratify=y, random_state=split_seed)
    return np.sort(train), np.sort(test)


def digits_arrays(
    split: DigitsSplit = "train", *, test_size: int = DIGITS_TEST_SIZE, split_seed: int = DIGITS_SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """The digits of one split: x float32 (N, 8, 8) in [-1, 1] and labels y int64 (N,).

    Raises:
        ValueError: unknown split, or test_size outside 10..1787.
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"digits: split must be 'train', 'test' or 'all', got {split!r}")
    images, y = _load()
    x = images / 8.0 - 1.0  # 0..16 -> [-1, 1]
    if split == "all":
        return x, y.copy()
    if not 10 <= test_size <= len(y) - 10:
        raise ValueError(f"digits: test_size must be in 10..{len(y) - 10} (stratified by class), got {test_size}")
    train, test = _split_indices(test_size, split_seed)
    idx = train if split == "train" else test
    return x[idx], y[idx]


class DigitsDataset(Dataset):
    """sklearn digits as images (C, R, R) in [-1, 1]; ``labels`` holds the classes (0..9, named
    "0".."9" in ``class_names``; ``num_classes`` = 10).

    Args:
        split: "train" (1,497), "test" (300) or "all" (1,797).
        resolution: side R; None keeps 8. Other sizes are resized once, bilinearly (antialiased).
        channels: 1 (default) or 3 (the grey image repeated, for RGB backbones).
        hflip: flip each item left-right with probability 1/2 (torch's default generator).
        labels: items are ``{"x0": image, "cond": {"labels": digit}}`` (class-conditional data,
            :mod:`etsdm.data.items`) instead of the image alone.
        test_size, split_seed: the held-out split (defaults fixed; see the module docstring).
    """

    def __init__(
        self,
        split: DigitsSplit = "train",
        *,
        resolution: int | None = None,
        channels: int | None = None,
        hflip: bool = False,
        labels: bool = False,
        test_size: int = DIGITS_TEST_SIZE,
        split_seed: int = DIGITS_SPLIT_SEED,
    ):
        channels = 1 if channels is None else channels
        if channels not in (1, 3):
            raise ValueError(f"digits: channels must be 1 or 3, got {channels!r}")
        resolution = DIGITS_NATIVE_RESOLUTION if resolution is None else resolution
        if not isinstance(resolution, int) or resolution < 1:
            raise ValueError(f"digits: resolution must be a positive integer, got {resolution!r}")
        x, y = digits_arrays(split, test_size=test_size, split_seed=split_seed)
        images = resize_tensor(torch.from_numpy(x)[:, None], resolution)
        self.images: Tensor = images.expand(-1, channels, -1, -1).contiguous()
        self.labels: Tensor = torch.from_numpy(y)
        self.hflip = hflip
        self.split = split
        self.shape: tuple[int, ...] = tuple(self.images.shape[1:])
        self.num_classes = len(DIGITS_CLASS_NAMES)
        self.class_names: list[str] = list(DIGITS_CLASS_NAMES)
        self.labelled = labels

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> Tensor | dict:
        x = self.images[i]
        x = random_hflip(x) if self.hflip else x.clone()
        return labelled(x, int(self.labels[i])) if self.labelled else x
