"""``LatentDataset``: scaled latents as a training set, items in etsdm's data convention."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset


class LatentDataset(Dataset):
    """Scaled latents (N, C, h, w); item i is ``latents[i]``, or with labels
    ``{"x0": latents[i], "cond": {"labels": labels[i]}}`` (int64 scalar).

    Args:
        latents: the scaled latents (``Latents.scale(cached_latents(...))``).
        labels: class indices (N,) of the images they encode, or None (unconditional).
        class_names: names of the classes (default "0", "1", ... up to the largest label).

    Attributes:
        shape: (C, h, w) of one item's x0; ``num_classes`` / ``class_names`` when labelled.
    """

    def __init__(self, latents: Tensor, labels: Tensor | None = None, class_names: list[str] | None = None):
        if latents.ndim != 4:
            raise ValueError(f"LatentDataset: latents must be (N, C, h, w), got {tuple(latents.shape)}")
        if labels is not None:
            labels = torch.as_tensor(labels, dtype=torch.int64)
            if labels.shape != (latents.shape[0],):
                raise ValueError(f"LatentDataset: labels must be ({latents.shape[0]},) like the latents, got "
                                 f"{tuple(labels.shape)}")
            if labels.numel() and int(labels.min()) < 0:
                raise ValueError("LatentDataset: labels must be class indices >= 0")
            if class_names is None:
                class_names = [str(i) for i in range(int(labels.max()) + 1 if labels.numel() else 0)]
            if labels.numel() and int(labels.max()) >= len(class_names):
                raise ValueError(f"LatentDataset: label {int(labels.max())} has no name in {len(class_names)} "
                                 "class_names")
        elif class_names is not None:
            raise ValueError("LatentDataset: class_names given without labels")
        self.latents = latents
        self.labels = labels
        self.shape: tuple[int, ...] = tuple(latents.shape[1:])
        if class_names is not None:
            self.class_names = list(class_names)
            self.num_classes = len(class_names)

    def __len__(self) -> int:
        return self.latents.shape[0]

    def __getitem__(self, i: int) -> Any:
        if self.labels is None:
            return self.latents[i]
        return {"x0": self.latents[i], "cond": {"labels": self.labels[i]}}
