"""Fréchet distance (FID) with torchmetrics' implementation, in two feature spaces.

FD(A, B) = ‖μ_A − μ_B‖² + Tr(Σ_A + Σ_B − 2 (Σ_A Σ_B)^{1/2}) of Gaussian fits to features.

* Digits: the penultimate layer of :class:`~etsdm.metrics.features.DigitsFeatureNet` (a custom
  ``feature`` module of ``torchmetrics.image.fid.FrechetInceptionDistance``; statistics in float64).
* Inception-v3 (the paper's FID): ``FrechetInceptionDistance(feature=2048,
  feature_extractor_weights_path=PATH)``; needs the optional extra ``inception`` (torch-fidelity)
  and a local weights file — nothing is ever downloaded here.

FID-n protocol (:func:`fid_with_floor`): for each seed, n generated samples (a random subset
when more are given) against the reference statistics, and beside it the real-vs-real floor: n
held-out real images against the same reference. Both are reported as mean ± std over seeds and
always carry n, because FD has an O(1/n) bias that dominates small-n comparisons.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from .stats import summarize


def _fid_metric(feature: nn.Module):
    from torchmetrics.image.fid import FrechetInceptionDistance

    return FrechetInceptionDistance(feature=feature, reset_real_features=False)


@torch.no_grad()
def frechet_distance(fake: Tensor, real: Tensor, feature: nn.Module, *, batch_size: int = 512) -> float:
    """FD between two image sets in the feature space of ``feature`` (torchmetrics' FID)."""
    if fake.shape[0] < 2 or real.shape[0] < 2:
        raise ValueError(f"Fréchet distance needs at least 2 images per set, got {fake.shape[0]} and {real.shape[0]}")
    metric = _fid_metric(feature)
    for lo in range(0, real.shape[0], batch_size):
        metric.update(real[lo : lo + batch_size], real=True)
    for lo in range(0, fake.shape[0], batch_size):
        metric.update(fake[lo : lo + batch_size], real=False)
    return float(metric.compute())


class _Identity(nn.Module):
    """Features = the flattened input in float64 (FD of raw vectors; used by tests and 2-D data)."""

    def __init__(self, dim: int):
        super().__init__()
        self.num_features = dim

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], -1).double()


def identity_features(dim: int) -> nn.Module:
    """A feature module that passes flattened inputs through (FD of the data itself)."""
    return _Identity(dim)


def fid_with_floor(
    samples: Tensor,
    reference: Tensor,
    held_out: Tensor | None,
    feature: nn.Module,
    *,
    n: int | None = None,
    seeds: Sequence[int] = (0, 1, 2),
) -> dict:
    """FID-n of ``samples`` against ``reference``, and the real-vs-real floor at the same n.

    Args:
        samples: generated images.
        reference: real images whose statistics are the target (e.g. the digits train split).
        held_out: real images disjoint from ``reference`` for the floor (e.g. the test split); if
            None, each seed splits ``reference`` at random into n floor images and the rest.
        feature: the feature module.
        n: images per set (default: as many as both samples and held-out real images allow).
        seeds: one subset draw per seed; mean ± std over seeds.
    """
    pool = held_out if held_out is not None else reference
    limit = min(samples.shape[0], pool.shape[0] if held_out is not None else pool.shape[0] // 2)
    n = limit if n is None else int(n)
    if not 2 <= n <= limit:
        raise ValueError(
            f"FID-n: n must be in [2, {limit}] (samples: {samples.shape[0]}, real pool: {pool.shape[0]}), got {n}"
        )
    values, floors = [], []
    for seed in seeds:
        gen = torch.Generator().manual_seed(int(seed))
        fake = samples[torch.randperm(samples.shape[0], generator=gen)[:n]]
        perm = torch.randperm(pool.shape[0], generator=gen)
        real_n = pool[perm[:n]]
        ref = reference if held_out is not None else pool[perm[n:]]
        values.append(frechet_distance(fake, ref, feature))
        floors.append(frechet_distance(real_n, ref, feature))
    return {"n": n, "seeds": list(seeds), **summarize("fid", values), **summarize("floor", floors)}


def _to_uint8_rgb(x: Tensor) -> Tensor:
    """[-1, 1] images (N, C, H, W) -> uint8 RGB, the input torchmetrics' Inception expects."""
    x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def inception_available() -> tuple[bool, str]:
    """Whether the Inception-v3 FID can run here, and why not."""
    try:
        import torch_fidelity  # noqa: F401
    except Exception as err:  # ImportError, or a broken torchvision underneath
        return False, f"torch-fidelity does not import ({type(err).__name__}: {err}); pip install 'etsdm[inception]'"
    return True, ""


def inception_fid(samples: Tensor, reference: Tensor, weights: str | Path, *, batch_size: int = 64) -> float:
    """The paper's FID: Inception-v3 pool features (2048) from a LOCAL weights file.

    Raises:
        FileNotFoundError: the weights file is missing (it is never downloaded).
        ModuleNotFoundError: the optional extra ``inception`` (torch-fidelity) is not installed.
    """
    weights = Path(weights)
    if not weights.is_file():
        raise FileNotFoundError(f"--inception-weights {weights}: no such file (etsdm never downloads weights)")
    ok, why = inception_available()
    if not ok:
        raise ModuleNotFoundError(why)
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(weights))
    with torch.no_grad():
        for lo in range(0, reference.shape[0], batch_size):
            metric.update(_to_uint8_rgb(reference[lo : lo + batch_size]), real=True)
        for lo in range(0, samples.shape[0], batch_size):
            metric.update(_to_uint8_rgb(samples[lo : lo + batch_size]), real=False)
    return float(metric.compute())
