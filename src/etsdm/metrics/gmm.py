"""Sample-quality metrics against a known Gaussian mixture q_0 = Σ_k w_k N(μ_k, s_k² I).

Each metric comes with its *true-vs-true* value: the same metric on exact mixture samples of the
same size n, which is the floor (or the target) a perfect sampler reaches at that n.

* ``near_mode``: share of samples within r·s_k of their nearest mode (distance in units of
  that mode's std), r the ``near_quantile`` quantile of the χ_D distribution (0.99 by default:
  a true sample is near its own mode 99% of the time).
* ``mode_tv``: balance, the total-variation distance between the share of samples assigned to
  each mode (argmax responsibility under q_0) and the weights w_k; ``modes_covered`` counts modes
  that received at least one sample.
* ``spread_ratio``: mean over covered modes of ŝ_k / s_k with ŝ_k² = mean ‖x − μ_k‖² / D over the
  samples assigned to mode k: < 1 too narrow (over-contracted), > 1 too wide. A near-mode share
  or the likelihood alone reward over-contraction; this does not. ``spread_log_error`` is
  mean_k |log(ŝ_k / s_k)| (0 is perfect, penalises both directions).
* ``log_likelihood``: mean exact log q_0(x) (``GaussianMixture.log_prob_data``). Higher is not
  always better: over-contracted samples score above the true-vs-true value.
* ``sliced_w1``: sliced 1-Wasserstein distance to n fresh mixture samples (random directions).
* ``mmd2``: unbiased squared MMD to n fresh mixture samples, Gaussian kernels at several
  bandwidths (multiples of the mean mode std times sqrt(D)); ≈ 0 for true samples.

Every value is mean ± std over seeds (each seed draws the reference samples and projections).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from scipy.stats import chi
from torch import Tensor

from ..analytic import GaussianMixture
from .stats import summarize

MMD_BANDWIDTHS: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)


def _assign(x: Tensor, gmm: GaussianMixture) -> tuple[Tensor, Tensor]:
    """Index of the most responsible component under q_0, and the distance to each mean / s_k."""
    d2 = torch.cdist(x, gmm.means) ** 2  # (N, K)
    logp = gmm.weights.log() - 0.5 * d2 / gmm.stds**2 - gmm.dim * gmm.stds.log()
    return logp.argmax(1), d2.sqrt() / gmm.stds


def sample_stats(x: Tensor, gmm: GaussianMixture, near_quantile: float = 0.99) -> dict[str, float]:
    """The metrics that depend on the samples alone (no reference draw)."""
    x = x.to(torch.float64).reshape(x.shape[0], -1)
    if x.shape[1] != gmm.dim:
        raise ValueError(f"samples have dimension {x.shape[1]}, the mixture {gmm.dim}")
    comp, scaled = _assign(x, gmm)
    radius = float(chi.ppf(near_quantile, gmm.dim))
    counts = torch.bincount(comp, minlength=len(gmm.weights)).to(torch.float64)
    ratios = []
    for k in range(len(gmm.weights)):
        rows = comp == k
        if rows.any():
            spread = ((x[rows] - gmm.means[k]) ** 2).sum(1).mean().div(gmm.dim).sqrt()
            ratios.append(float(spread / gmm.stds[k]))
    ratios_t = torch.tensor(ratios, dtype=torch.float64)
    return {
        "near_mode": float((scaled.min(1).values <= radius).double().mean()),
        "mode_tv": 0.5 * float((counts / x.shape[0] - gmm.weights).abs().sum()),
        "modes_covered": float((counts > 0).sum()),
        "spread_ratio": float(ratios_t.mean()),
        "spread_log_error": float(ratios_t.log().abs().mean()),
        "log_likelihood": float(gmm.log_prob_data(x).mean()),
    }


def sliced_wasserstein(
    a: Tensor, b: Tensor, *, projections: int = 128, generator: torch.Generator | None = None
) -> float:
    """Sliced W1: mean over random unit directions θ of W1(θ·a, θ·b) (equal-size sets: sorted
    differences; otherwise quantiles on a common grid)."""
    a, b = a.to(torch.float64).flatten(1), b.to(torch.float64).flatten(1)
    theta = torch.randn(a.shape[1], projections, generator=generator, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    pa, pb = (a @ theta).sort(0).values, (b @ theta).sort(0).values
    if pa.shape[0] != pb.shape[0]:
        q = torch.linspace(0, 1, max(pa.shape[0], pb.shape[0]), dtype=torch.float64)
        pa, pb = torch.quantile(pa, q, dim=0), torch.quantile(pb, q, dim=0)
    return float((pa - pb).abs().mean())


def mmd2(a: Tensor, b: Tensor, bandwidths: Sequence[float]) -> float:
    """Unbiased MMD² with a sum of Gaussian kernels exp(−‖x − y‖² / (2h²)), h in ``bandwidths``."""
    a, b = a.to(torch.float64).flatten(1), b.to(torch.float64).flatten(1)
    n, m = a.shape[0], b.shape[0]
    if n < 2 or m < 2:
        raise ValueError("MMD needs at least 2 samples per set")

    def kernel(x: Tensor, y: Tensor) -> Tensor:
        d2 = torch.cdist(x, y) ** 2
        return sum(torch.exp(-d2 / (2 * h * h)) for h in bandwidths)

    kaa, kbb, kab = kernel(a, a), kernel(b, b), kernel(a, b)
    return float(
        (kaa.sum() - kaa.diagonal().sum()) / (n * (n - 1))
        + (kbb.sum() - kbb.diagonal().sum()) / (m * (m - 1))
        - 2 * kab.mean()
    )


def gmm_metrics(
    samples: Tensor,
    gmm: GaussianMixture,
    *,
    seeds: Sequence[int] = (0, 1, 2),
    near_quantile: float = 0.99,
    projections: int = 128,
) -> dict[str, dict]:
    """All mixture metrics of ``samples`` (N, D), each with its true-vs-true value at n = N.

    Returns ``{metric: {"value", "value_std", "true", "true_std", "n", ...}}``.
    """
    x = samples.to(torch.float64).reshape(samples.shape[0], -1)
    n = x.shape[0]
    bandwidths = [h * float(gmm.stds.mean()) * math.sqrt(gmm.dim) for h in MMD_BANDWIDTHS]
    own = sample_stats(x, gmm, near_quantile)
    per_seed: dict[str, list[float]] = {}
    true_per_seed: dict[str, list[float]] = {}
    for seed in seeds:
        gen = torch.Generator().manual_seed(int(seed))
        ref = gmm.sample(n, gen)
        other = gmm.sample(n, gen)  # a second exact set: the true-vs-true value
        true_stats = sample_stats(other, gmm, near_quantile)
        sw_gen = torch.Generator().manual_seed(int(seed) + 7919)
        vals = {**own, "sliced_w1": sliced_wasserstein(x, ref, projections=projections, generator=sw_gen)}
        sw_gen = torch.Generator().manual_seed(int(seed) + 7919)  # the same directions for the floor
        trues = {**true_stats, "sliced_w1": sliced_wasserstein(other, ref, projections=projections, generator=sw_gen)}
        vals["mmd2"], trues["mmd2"] = mmd2(x, ref, bandwidths), mmd2(other, ref, bandwidths)
        for key in vals:
            per_seed.setdefault(key, []).append(vals[key])
            true_per_seed.setdefault(key, []).append(trues[key])
    out = {}
    for key in per_seed:
        value, true = summarize("value", per_seed[key]), summarize("true", true_per_seed[key])
        out[key] = {"n": n, "seeds": list(seeds), **value, **true}
    return out
