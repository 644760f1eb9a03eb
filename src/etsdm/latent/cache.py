"""The latent cache: every image of a data set encoded once, stored as safetensors shards.

An entry is the folder ``<cache_dir>/<key>-<hash>/`` (``<hash>`` from the key and the
autoencoder's fingerprint: its weights and architecture, :meth:`Latents.fingerprint`) holding
``shard-NNNNN.safetensors`` files (tensor ``latents``: the unscaled posterior modes, float32, in
data-set order) and ``meta.json`` (format, key, the autoencoder's weights sha256, count, latent
shape, shards). A call with the same autoencoder and key loads the entry; other weights or another
key make another entry (the old one is left for the runs that use it); an entry whose count or
files do not match is re-encoded and replaced. Entries are written in a temporary folder and
renamed into place, so a killed run never leaves a half-written one.

``key`` names the images (e.g. "digits-train-8px"); the caller makes it change when the images
do. The scaling factor is not part of the cache: it multiplies the cached latents afterwards.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor
from torch.utils.data import Dataset, Subset

from ..folders import publish_folder, staged_folder
from .autoencoder import image_of
from .folders import cache_root
from .latents import Latents

CACHE_FORMAT = "etsdm-latent-cache/1"
SHARD_BYTES = 256 * 2**20  # latents per shard file, at most (one item always fits)
ENCODE_BATCH = 64


def latent_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """The latent cache folder: ``cache_dir`` (``latent.cache``), else $ETSDM_CACHE/latents, else
    ~/.cache/etsdm/latents."""
    return Path(cache_dir).expanduser() if cache_dir is not None else cache_root() / "latents"


def entry_folder(cache_dir: Path, key: str, fingerprint: str) -> Path:
    """The entry of (key, autoencoder) in ``cache_dir``."""
    digest = hashlib.sha256(f"{CACHE_FORMAT}\n{key}\n{fingerprint}".encode()).hexdigest()[:16]
    return cache_dir / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', key)[:80]}-{digest}"


def _augmented(dataset: Dataset) -> bool:
    inner = dataset
    while isinstance(inner, Subset):
        inner = inner.dataset
    return bool(getattr(inner, "hflip", False))


def _read(entry: Path, key: str, fingerprint: str, count: int) -> Tensor | None:
    """The cached latents of ``entry`` if it is complete and matches; None otherwise."""
    try:
        meta = json.loads((entry / "meta.json").read_text())
        if (meta.get("format"), meta.get("key"), meta.get("weights_sha256"), meta.get("count")) != (
                CACHE_FORMAT, key, fingerprint, count):
            return None
        parts = [load_file(entry / s["file"])["latents"] for s in meta["shards"]]
    except (OSError, json.JSONDecodeError, KeyError, TypeError, SafetensorError):
        return None
    out = torch.cat(parts) if parts else torch.empty(0)
    return out if out.shape == (count, *meta["shape"]) else None


def _encode_all(latents: Latents, dataset: Dataset, batch: int) -> Tensor:
    """The unscaled latents (posterior modes) of every item, in order, on the CPU."""
    out = []
    for i in range(0, len(dataset), batch):
        images = torch.stack([image_of(dataset[j]) for j in range(i, min(i + batch, len(dataset)))])
        out.append(latents.encode_unscaled(images).to("cpu", torch.float32))
    return torch.cat(out)


def _write(entry: Path, z: Tensor, meta: dict[str, Any], shard_items: int) -> None:
    with staged_folder(entry) as tmp:
        shards = []
        for n, i in enumerate(range(0, z.shape[0], shard_items)):
            name = f"shard-{n:05d}.safetensors"
            save_file({"latents": z[i : i + shard_items].contiguous()}, tmp / name)
            shards.append({"file": name, "count": int(min(shard_items, z.shape[0] - i))})
        (tmp / "meta.json").write_text(json.dumps({**meta, "shards": shards}, indent=1) + "\n")
        publish_folder(tmp, entry, replace=True)


def cached_latents(latents_or_path: Latents | str | Path, dataset: Dataset, *, key: str,
                   cache_dir: str | Path | None = None, batch: int = ENCODE_BATCH,
                   shard_items: int | None = None) -> Tensor:
    """The unscaled latents (N, C, h, w) of every item of ``dataset``, encoded once and cached.

    Args:
        latents_or_path: a :class:`Latents`, or an AutoencoderKL folder to load one from.
        dataset: items are images (C, H, W) in [-1, 1] or dicts with "x0"; no random augmentation.
        key: names the images; a new key makes a new entry.
        cache_dir: the latent cache folder (``latent.cache``; default :func:`latent_cache_dir`).
        batch: images per encoder call.
        shard_items: latents per shard file (default: as many as fit in 256 MiB).

    Raises:
        ValueError: an empty key or data set, or a data set with random flips (one encoding per item
            cannot hold them).
    """
    if not key:
        raise ValueError("cached_latents: key must be a non-empty string naming the images")
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise ValueError("cached_latents: the data set is empty")
    if _augmented(dataset):
        raise ValueError("cached_latents: the data set flips images at random (data.hflip); the cache holds one "
                         "encoding per image: build it with hflip off")
    latents = latents_or_path if isinstance(latents_or_path, Latents) else Latents.load(latents_or_path)
    fingerprint = latents.fingerprint()
    count = len(dataset)  # type: ignore[arg-type]
    entry = entry_folder(latent_cache_dir(cache_dir), key, fingerprint)
    cached = _read(entry, key, fingerprint, count)
    if cached is not None:
        return cached
    z = _encode_all(latents, dataset, batch)
    per_item = max(1, z[0].numel() * z.element_size())
    meta = {"format": CACHE_FORMAT, "key": key, "weights_sha256": fingerprint, "count": count,
            "shape": list(z.shape[1:]), "dtype": "float32", "posterior": "mode",
            "autoencoder": None if latents.source is None else str(latents.source)}
    _write(entry, z, meta, shard_items or max(1, SHARD_BYTES // per_item))
    return z
