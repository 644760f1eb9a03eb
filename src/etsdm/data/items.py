"""The shape of a data item and of a batch (the conditioning convention of issue 10).

An item is either

* a Tensor x0 (unconditional data: digits, folder and gmm without labels), or
* a dict ``{"x0": Tensor, "cond": {name: Tensor, ...}, ...extras}``: ``cond`` holds the network's
  keyword inputs for this example (``labels``: the class index, an int64 scalar; ``lowres``: the
  super-resolution input), called as ``net(x, c, **cond)``; extras outside ``cond`` (e.g. SR's
  ``lowres_small``) never reach the network.

A DataLoader's default collate keeps that shape (tensors stacked along a new dim 0, dicts key by
key), so a batch is a Tensor or the same dict with batched tensors; :func:`split_batch` turns
either into ``(x0, cond)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

Cond = dict[str, Tensor]


def split_batch(batch: Tensor | Mapping[str, Any]) -> tuple[Tensor, Cond]:
    """``(x0, cond)`` of an item or a batch: a Tensor is unconditional (cond = {}); a dict gives its
    ``"x0"`` and a copy of its ``"cond"`` ({} if absent).

    Raises:
        TypeError: neither a Tensor nor a dict with a Tensor ``"x0"``.
    """
    if isinstance(batch, Tensor):
        return batch, {}
    if isinstance(batch, Mapping) and isinstance(batch.get("x0"), Tensor):
        return batch["x0"], dict(batch.get("cond") or {})
    keys = f" with keys {sorted(batch)}" if isinstance(batch, Mapping) else ""
    raise TypeError(f"split_batch: expected a Tensor or a dict with a Tensor 'x0' (and optional 'cond'), "
                    f"got {type(batch).__name__}{keys}")


def labelled(x0: Tensor, label: int) -> dict[str, Any]:
    """The item of an image ``x0`` with class index ``label``: ``{"x0": x0, "cond": {"labels": int64 scalar}}``."""
    return {"x0": x0, "cond": {"labels": torch.tensor(int(label), dtype=torch.int64)}}
