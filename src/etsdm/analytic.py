"""An isotropic Gaussian mixture with its exact diffused score: the ground truth of etsdm's tests.

q_0 = Σ_k w_k N(μ_k, s_k² I)  ⇒  q_t = Σ_k w_k N(α_t μ_k, (α_t² s_k² + σ_t²) I), so

    ∇ log q_t(x) = Σ_k r_k(x, t) · (α_t μ_k - x) / (α_t² s_k² + σ_t²),   ε*(x, t) = -σ_t ∇ log q_t(x),

with responsibilities r_k ∝ w_k N(x; α_t μ_k, (α_t² s_k² + σ_t²) I). Everything is float64.

The E-TSDM optimum (Theorem 4.1, Appendix C.3) for t in a sub-interval [t_{i-1}, t_i) is the
minimiser of the shared-condition loss, ε̄(x) = E[ε | x_τ = x, τ ∈ sub-interval]
= ∫ q_τ(x) ε*(x, τ) dτ / ∫ q_τ(x) dτ (``weighting="posterior"``). Eq. (A15) writes it as the plain
average of ε*(x, τ) over τ (``weighting="uniform"``); the two differ because q_τ(x) depends on τ.
Discrete time averages over the integer timesteps of the sub-interval; continuous time uses
Gauss-Legendre quadrature in u with τ = t_{i-1} + Δt u² (smooth despite σ ~ sqrt(τ) at 0).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from .conditioning import TimestepSharing
from .schedules import Schedule

Weighting = Literal["posterior", "uniform"]


class GaussianMixture:
    """Mixture Σ_k w_k N(μ_k, s_k² I) in D dimensions.

    Args:
        means: (K, D) component means.
        stds: (K,) isotropic standard deviations s_k (> 0).
        weights: (K,) non-negative weights, normalised here (default uniform).
    """

    def __init__(self, means: Tensor | list, stds: Tensor | list | float, weights: Tensor | list | None = None):
        self.means = torch.as_tensor(means, dtype=torch.float64)
        if self.means.ndim != 2:
            raise ValueError(f"GaussianMixture: means must be (K, D), got shape {tuple(self.means.shape)}")
        k = self.means.shape[0]
        self.stds = torch.as_tensor(stds, dtype=torch.float64).expand(k).clone()
        w = torch.ones(k, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        if w.shape != (k,) or bool((w < 0).any()) or float(w.sum()) <= 0:
            raise ValueError("GaussianMixture: weights must be K non-negative numbers with a positive sum")
        if bool((self.stds <= 0).any()):
            raise ValueError("GaussianMixture: stds must be > 0")
        self.weights = w / w.sum()

    @classmethod
    def ring(cls, k: int = 8, radius: float = 2.0, std: float = 0.1) -> GaussianMixture:
        """K equal modes on a circle in 2-D (the usual toy benchmark)."""
        ang = torch.arange(k, dtype=torch.float64) * (2 * math.pi / k)
        return cls(torch.stack([radius * ang.cos(), radius * ang.sin()], 1), std)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n exact samples (float64)."""
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return self.means[comp] + self.stds[comp, None] * z

    def sample_components(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """n exact samples and the index of the component each came from."""
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return self.means[comp] + self.stds[comp, None] * z, comp

    # --- marginals at time t ----------------------------------------------------------------
    def _per_time(self, x: Tensor, t: Tensor | float, schedule: Schedule) -> tuple[Tensor, Tensor, Tensor]:
        x = x.to(torch.float64)
        t = torch.as_tensor(t, dtype=torch.float64, device=x.device)
        tt = t.expand(x.shape[0]) if t.ndim == 0 else t
        alpha, sigma = schedule.alpha(tt)[:, None], schedule.sigma(tt)[:, None]
        return x, alpha, sigma

    def _components(self, x: Tensor, alpha: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """log w_k N(x; α μ_k, v_k I) (N, K), the variances v_k (N, K) and x - α μ_k (N, K, D)."""
        var = alpha**2 * self.stds[None] ** 2 + sigma**2  # (N, K)
        diff = x[:, None, :] - alpha[:, :, None] * self.means[None]  # (N, K, D)
        logp = self.weights.log()[None] - 0.5 * (diff**2).sum(-1) / var - 0.5 * self.dim * torch.log(2 * math.pi * var)
        return logp, var, diff

    def log_prob(self, x: Tensor, t: Tensor | float, schedule: Schedule) -> Tensor:
        """log q_t(x) (float64, shape (N,))."""
        x, alpha, sigma = self._per_time(x, t, schedule)
        logp, _, _ = self._components(x, alpha, sigma)
        return torch.logsumexp(logp, 1)

    def log_prob_data(self, x: Tensor) -> Tensor:
        """log q_0(x), the exact data log-likelihood."""
        x = x.to(torch.float64)
        one, zero = torch.ones(x.shape[0], 1, dtype=torch.float64), torch.zeros(x.shape[0], 1, dtype=torch.float64)
        logp, _, _ = self._components(x, one, zero)
        return torch.logsumexp(logp, 1)

    def score(self, x: Tensor, t: Tensor | float, schedule: Schedule) -> Tensor:
        """∇_x log q_t(x) (float64)."""
        x, alpha, sigma = self._per_time(x, t, schedule)
        logp, var, diff = self._components(x, alpha, sigma)
        resp = torch.softmax(logp, 1)  # r_k(x, t)
        return -(resp[:, :, None] * diff / var[:, :, None]).sum(1)

    def eps(self, x: Tensor, t: Tensor | float, schedule: Schedule) -> Tensor:
        """ε*(x, t) = -σ_t ∇ log q_t(x), the exact minimiser of Eq. (4) (float64)."""
        _, _, sigma = self._per_time(x, t, schedule)
        return -sigma * self.score(x, t, schedule)

    # --- E-TSDM optimum (Theorem 4.1) -------------------------------------------------------
    def shared_eps(
        self,
        x: Tensor,
        t: float,
        schedule: Schedule,
        sharing: TimestepSharing,
        weighting: Weighting = "posterior",
        nodes: int = 48,
    ) -> Tensor:
        """The exact E-TSDM optimum ε̄(x) at time t (one scalar t for the whole batch).

        ``posterior``: E[ε | x_τ = x, τ ∈ sub-interval of t], weights q_τ(x) (the true minimiser).
        ``uniform``: Eq. (A15), the plain average of ε*(x, τ) over the sub-interval.
        For t >= t̃ both equal ε*(x, t).
        """
        if weighting not in ("posterior", "uniform"):
            raise ValueError(f"weighting must be 'posterior' or 'uniform', got {weighting!r}")
        t = float(t)
        if t >= sharing.t_tilde:
            return self.eps(x, t, schedule)
        left = float(sharing(torch.tensor(t, dtype=torch.float64)))
        taus, quad_w = self._subinterval_nodes(left, sharing.cell_width(left), schedule, nodes)
        x64 = x.to(torch.float64)
        eps, logq = self._on_nodes(x64, torch.tensor(taus, dtype=torch.float64, device=x64.device), schedule)
        quad_w = quad_w.to(x64.device)
        if weighting == "uniform":
            w = quad_w[:, None].expand(-1, x64.shape[0])
        else:
            w = torch.softmax(logq + quad_w.log()[:, None], 0)  # ∝ q_τ(x) dτ
        w = w / w.sum(0, keepdim=True)
        return (w[:, :, None] * eps).sum(0)

    def _on_nodes(self, x: Tensor, taus: Tensor, schedule: Schedule) -> tuple[Tensor, Tensor]:
        """ε*(x, τ) (M, N, D) and log q_τ(x) (M, N) at M times for N points, a few times per call."""
        m, n = len(taus), x.shape[0]
        chunk = max(1, 2**21 // max(1, n * self.means.shape[0] * self.dim))  # nodes per batched call
        eps, logq = [], []
        for start in range(0, m, chunk):
            tau = taus[start : start + chunk]
            xr, tr = x.repeat(len(tau), 1), tau.repeat_interleave(n)  # row k·N + j: x_j at τ_k
            eps.append(self.eps(xr, tr, schedule).reshape(len(tau), n, -1))
            logq.append(self.log_prob(xr, tr, schedule).reshape(len(tau), n))
        return torch.cat(eps), torch.cat(logq)

    @staticmethod
    def _subinterval_nodes(left: float, delta: float, schedule: Schedule, nodes: int) -> tuple[list[float], Tensor]:
        if not schedule.continuous:  # the integer timesteps of [left, left + Δ)
            taus = [left + i for i in range(int(round(delta)))]
            return taus, torch.full((len(taus),), 1.0 / len(taus), dtype=torch.float64)
        u, w = np.polynomial.legendre.leggauss(nodes)
        u = 0.5 * (u + 1.0)  # on [0, 1]
        taus = left + delta * u**2  # τ = left + Δ u², dτ = 2 Δ u du
        weights = torch.as_tensor(0.5 * w * 2.0 * u, dtype=torch.float64)
        return [float(v) for v in taus], weights / weights.sum()

    # --- ready-made models for the samplers -------------------------------------------------
    def eps_model(
        self,
        schedule: Schedule,
        sharing: TimestepSharing | None = None,
        weighting: Weighting = "posterior",
    ):
        """A callable ``model(x, t) -> ε`` for the samplers: ε* (sharing=None) or the ideal
        E-TSDM denoiser, returned in x's dtype and device."""

        def model(x: Tensor, t: float | Tensor) -> Tensor:
            if sharing is None:
                return self.eps(x, t, schedule).to(x.dtype)
            tt = torch.as_tensor(t, dtype=torch.float64).expand(x.shape[0])
            out = torch.empty(x.shape, dtype=torch.float64, device=x.device)
            for value in tt.unique().tolist():  # one quadrature per distinct time
                rows = tt == value
                out[rows] = self.shared_eps(x[rows], value, schedule, sharing, weighting)
            return out.to(x.dtype)

        return model
