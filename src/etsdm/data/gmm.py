"""Samples of the analytic Gaussian mixture (``etsdm.analytic.GaussianMixture``) as a data set.

The samples are drawn once, at construction, from ``torch.Generator().manual_seed(seed')`` with
seed' = seed for "train" and seed + 1_000_003 for "test" (independent streams), and stored as
float32 (N, D). ``dataset.mixture`` is the exact distribution, for exact metrics.

Mixture specification (the ``gmm`` dict of ``make_dataset``), either
``{"kind": "ring", "k": 8, "radius": 2.0, "std": 0.1}`` (the default; any key may be left out) or
``{"kind": "custom", "means": [[...], ...], "stds": ... , "weights": [...] (optional)}``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..analytic import GaussianMixture

GMM_TEST_SEED_OFFSET = 1_000_003
GMM_DEFAULT_SAMPLES = 10_000
_RING_KEYS = {"kind", "k", "radius", "std"}
_CUSTOM_KEYS = {"kind", "means", "stds", "weights"}


def make_mixture(spec: dict[str, Any] | GaussianMixture | None = None) -> GaussianMixture:
    """A GaussianMixture from its spec dict (see the module docstring); None gives the 8-mode ring."""
    if isinstance(spec, GaussianMixture):
        return spec
    spec = dict(spec or {})
    kind = spec.get("kind", "custom" if "means" in spec else "ring")
    if kind == "ring":
        _check_keys(spec, _RING_KEYS)
        return GaussianMixture.ring(
            k=int(spec.get("k", 8)), radius=float(spec.get("radius", 2.0)), std=float(spec.get("std", 0.1))
        )
    if kind == "custom":
        _check_keys(spec, _CUSTOM_KEYS)
        if "means" not in spec or "stds" not in spec:
            raise ValueError("gmm: a custom mixture needs 'means' (K x D) and 'stds' (K or one number)")
        return GaussianMixture(spec["means"], spec["stds"], spec.get("weights"))
    raise ValueError(f"gmm.kind must be 'ring' or 'custom', got {kind!r}")


def _check_keys(spec: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ValueError(f"gmm: unknown field(s) {unknown}; allowed: {sorted(allowed)}")


class GMMDataset(Dataset):
    """``num_samples`` exact samples of a Gaussian mixture, each a float32 vector (D,).

    Args:
        split: "train" or "test" (independent sample streams from the same seed).
        gmm: mixture spec (module docstring) or a GaussianMixture; None = 8-mode ring.
        num_samples: how many samples (default 10,000).
        seed: seed of the sample stream.
    """

    def __init__(
        self,
        split: Literal["train", "test"] = "train",
        *,
        gmm: dict[str, Any] | GaussianMixture | None = None,
        num_samples: int | None = None,
        seed: int = 0,
    ):
        if split not in ("train", "test"):
            raise ValueError(f"gmm: split must be 'train' or 'test', got {split!r}")
        num_samples = GMM_DEFAULT_SAMPLES if num_samples is None else num_samples
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"gmm: num_samples must be a positive integer, got {num_samples!r}")
        self.mixture = make_mixture(gmm)
        stream = seed if split == "train" else seed + GMM_TEST_SEED_OFFSET
        gen = torch.Generator().manual_seed(stream)
        x, comp = self.mixture.sample_components(num_samples, generator=gen)
        self.data: Tensor = x.to(torch.float32)
        self.components: Tensor = comp  # index of the mode each sample came from
        self.split = split
        self.shape: tuple[int, ...] = (self.mixture.dim,)

    def __len__(self) -> int:
        return self.data.shape[0]

    def __getitem__(self, i: int) -> Tensor:
        return self.data[i]
