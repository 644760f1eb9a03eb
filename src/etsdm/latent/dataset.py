"""``LatentDataset``: scaled latents as a training set, items in etsdm's data convention; and
:func:`latent_training_set`, the one call from an image data set to it (cache, scaling factor,
labels), with :func:`data_key` naming the images for the cache."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from ..config import DataConfig, to_dict
from .cache import cached_latents
from .latents import Latents

# DataConfig fields that do not change which images a split holds or how they look.
NOT_IMAGES = ("num_workers", "labels", "hflip")


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


def _files_digest(dataset: Dataset) -> str | None:
    """sha256 of (path, size, mtime) of an image folder's files, or None for other data sets."""
    inner, index = dataset, None
    while isinstance(inner, Subset):
        index, inner = list(inner.indices) if index is None else [inner.indices[i] for i in index], inner.dataset
    files = getattr(inner, "files", None)
    if files is None:
        return None
    return files_digest([files[i] for i in index] if index is not None else files)


def files_digest(files: Iterable[str | os.PathLike], root: Path | None = None) -> str:
    """sha256 of every file's path, size and modification time (ns), in the given order: a cheap
    fingerprint (one stat per file, no reads) that changes when a file is edited, added, removed or
    renamed. Paths are relative to ``root`` when given (the same images elsewhere match), else
    resolved absolute paths. A file rewritten with the same size and time goes unseen."""
    h = hashlib.sha256()
    for f in files:
        st = os.stat(f)
        name = Path(f).relative_to(root) if root is not None else Path(f).resolve()
        h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def data_key(data: DataConfig, split: str, dataset: Dataset | None = None) -> str:
    """A cache key for the images of ``split``: readable name + hash of the data section (less the
    fields that do not change the images) and, for an image folder, of its files' paths, sizes and
    modification times (so edited, added or removed images make a new key)."""
    fields = {k: v for k, v in to_dict(data).items() if k not in NOT_IMAGES}
    if data.root:
        fields["root"] = str(Path(data.root).expanduser().resolve())
    record = {"data": fields, "split": split, "files": None if dataset is None else _files_digest(dataset)}
    digest = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:12]
    return f"{data.name}-{split}-{digest}"


def dataset_labels(dataset: Dataset) -> Tensor:
    """The class index of every item: a ``labels`` tensor attribute (digits; through Subsets), else
    read from the items' ``cond["labels"]`` (one pass over the data)."""
    inner, index = dataset, None
    while isinstance(inner, Subset):
        index, inner = list(inner.indices) if index is None else [inner.indices[i] for i in index], inner.dataset
    labels = getattr(inner, "labels", None)
    if isinstance(labels, Tensor):
        return labels[torch.as_tensor(index)] if index is not None else labels
    items = [dataset[i] for i in range(len(dataset))]  # type: ignore[arg-type]
    if not all(isinstance(it, dict) and "labels" in it.get("cond", {}) for it in items):
        raise ValueError("dataset_labels: the data set has no labels (data.labels: true makes them)")
    return torch.stack([torch.as_tensor(it["cond"]["labels"]) for it in items]).to(torch.int64)


def _class_names(dataset: Dataset) -> list[str] | None:
    inner = dataset
    while isinstance(inner, Subset):
        inner = inner.dataset
    names = getattr(inner, "class_names", None)
    return list(names) if names is not None else None


def latent_training_set(latents: Latents, images: Dataset, *, key: str, cache_dir: str | Path | None = None,
                        labels: bool = False) -> tuple[Latents, LatentDataset]:
    """The training set of a latent run: ``images`` encoded once (:func:`cached_latents`), the
    scaling factor resolved (``latents``' own, else 1/std of these latents, LDM), scaled, and with
    the images' class labels when ``labels``. Returns (latents with the factor, the data set)."""
    unscaled = cached_latents(latents, images, key=key, cache_dir=cache_dir)
    latents = latents.fitted(unscaled)
    y = dataset_labels(images) if labels else None
    names = _class_names(images) if labels else None
    return latents, LatentDataset(latents.scale(unscaled), y, class_names=names)
