"""An isotropic Gaussian mixture with its exact diffused score, and the exact Denoiser built on it:
the ground truth of etsdm's tests and measurements, on any process x_t = α_t x0 + σ_t ε (VP, EDM, flow).

q_0 = Σ_k w_k N(μ_k, s_k² I)  ⇒  q_t = Σ_k w_k N(α_t μ_k, v_k I), v_k = α_t² s_k² + σ_t², so

    ∇ log q_t(x) = Σ_k r_k(x, t) · (α_t μ_k - x) / v_k,   ε*(x, t) = -σ_t ∇ log q_t(x),
    x0*(x, t) = E[x0 | x_t = x] = Σ_k r_k (μ_k + α_t s_k² (x - α_t μ_k) / v_k),

with responsibilities r_k ∝ w_k N(x; α_t μ_k, v_k I) (α x0* + σ ε* = x). Everything is float64.

The E-TSDM optimum (Theorem 4.1, Appendix C.3) for t in a sub-interval [t_{i-1}, t_i) is the
minimiser of the shared-condition loss, ε̄(x) = E[ε | x_τ = x, τ ∈ sub-interval]
= ∫ q_τ(x) ε*(x, τ) dτ / ∫ q_τ(x) dτ (``weighting="posterior"``). Eq. (A15) writes it as the plain
average of ε*(x, τ) over τ (``weighting="uniform"``); the two differ because q_τ(x) depends on τ.
Discrete time averages over the integer timesteps of the sub-interval; continuous time uses
Gauss-Legendre quadrature in u with τ = t_{i-1} + Δt u² (smooth despite σ ~ sqrt(τ) at 0).
τ is uniform in the process's own time within a sub-interval (the paper's VP training) unless a
``time_density`` is given.

:func:`exact_denoiser` is the one analytic model of etsdm: a real :class:`~etsdm.denoiser.Denoiser`
whose network ``net(y, c)`` is the exact optimum *for the input it receives* — for any prediction
type (eps, v, x0, edm, flow) on any process. It decodes c = net_time(f(t)) back to the time (Identity)
or to the sub-interval (TimestepSharing) and returns the exact regression target of its output type,
``Denoiser.target(x0*, ε*, t)`` (the target is linear in (x0, ε), so its posterior mean is the target
of the posterior means); under sharing, the posterior mean of that target over the sub-interval given
the network input y (EDM's input is y = c_in x/α, so the weights carry q_τ(y α/c_in) (α/c_in)^D).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from .conditioning import ConditionMap, Identity, TimestepSharing
from .denoiser import SIGMA_DATA, Denoiser, Estimate, Prediction
from .schedules import Schedule

Weighting = Literal["posterior", "uniform"]
TimeDensity = Callable[[Tensor], Tensor]  # unnormalised density of the training time τ (float64 in/out)
Quantity = Callable[[Tensor, Tensor, Estimate], Tensor]  # (x, τ per row, exact (ε*, x0*)) -> what to average


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
        means, stds = self.means.to(x.device), self.stds.to(x.device)
        var = alpha**2 * stds[None] ** 2 + sigma**2  # (N, K)
        diff = x[:, None, :] - alpha[:, :, None] * means[None]  # (N, K, D)
        logw = self.weights.to(x.device).log()[None]
        logp = logw - 0.5 * (diff**2).sum(-1) / var - 0.5 * self.dim * torch.log(2 * math.pi * var)
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

    def posterior(self, x: Tensor, t: Tensor | float, schedule: Schedule) -> Estimate:
        """(ε*, x0*) = (E[ε | x_t = x], E[x0 | x_t = x]) (float64), each in closed form: x0* stays
        finite where α = 0 (flow at t = 1) and ε* where σ = 0."""
        return self._posterior_and_log_prob(x, t, schedule)[0]

    def _posterior_and_log_prob(self, x: Tensor, t: Tensor | float, schedule: Schedule) -> tuple[Estimate, Tensor]:
        x, alpha, sigma = self._per_time(x, t, schedule)
        logp, var, diff = self._components(x, alpha, sigma)
        resp = torch.softmax(logp, 1)  # r_k(x, t)
        a = resp[:, :, None] * diff / var[:, :, None]  # r_k (x - α μ_k) / v_k
        eps = sigma * a.sum(1)
        # x0* = Σ_k r_k μ_k + α Σ_k s_k² r_k (x - α μ_k) / v_k
        x0 = resp @ self.means.to(x.device) + alpha * torch.einsum("nkd,k->nd", a, self.stds.to(x.device) ** 2)
        return Estimate(eps, x0), torch.logsumexp(logp, 1)

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
        _check_weighting(weighting)
        t = float(t)
        if t >= sharing.t_tilde:
            return self.eps(x, t, schedule)
        left = float(sharing(torch.tensor(t, dtype=torch.float64)))
        taus, quad_w = subinterval_nodes(left, sharing.cell_width(left), schedule, nodes)
        return self.shared_mean(x, taus, quad_w, schedule, lambda _x, _t, est: est.eps, weighting)

    def shared_mean(
        self,
        y: Tensor,
        taus: Tensor,
        quad_w: Tensor,
        schedule: Schedule,
        quantity: Quantity,
        weighting: Weighting = "posterior",
        input_scale: Callable[[Tensor], Tensor] | None = None,
    ) -> Tensor:
        """Average of ``quantity`` over the times τ_m (weights ``quad_w``) of one sub-interval, given
        the network input y = s(τ) x_τ (``input_scale`` s, default 1): ``posterior`` weights
        ∝ quad_w · q_τ(y/s) s^-D (the density of y at τ: the true minimiser), ``uniform`` by quad_w
        alone (Eq. A15). Returns float64, y's shape."""
        _check_weighting(weighting)
        y64 = y.to(torch.float64)
        values, logq = self._on_nodes(y64, taus.to(y64.device), schedule, quantity, input_scale)
        logw = quad_w.to(y64.device).log()[:, None]
        w = torch.softmax(logw + logq if weighting == "posterior" else logw.expand_as(logq), 0)
        return (w[:, :, None] * values).sum(0)

    def _on_nodes(
        self, y: Tensor, taus: Tensor, schedule: Schedule, quantity: Quantity, input_scale: Callable | None
    ) -> tuple[Tensor, Tensor]:
        """quantity (M, N, D') and log density of the network input y (M, N) at M times, N points."""
        m, n = len(taus), y.shape[0]
        chunk = max(1, 2**21 // max(1, n * self.means.shape[0] * self.dim))  # nodes per batched call
        values, logq = [], []
        for start in range(0, m, chunk):
            tau = taus[start : start + chunk]
            yr, tr = y.repeat(len(tau), 1), tau.repeat_interleave(n)  # row k·N + j: y_j at τ_k
            scale = input_scale(tr)[:, None] if input_scale is not None else None
            xr = yr if scale is None else yr / scale
            est, lq = self._posterior_and_log_prob(xr, tr, schedule)
            if scale is not None:
                lq = lq - self.dim * scale[:, 0].abs().log()  # density of y = s x
            values.append(quantity(xr, tr, est).reshape(len(tau), n, -1))
            logq.append(lq.reshape(len(tau), n))
        return torch.cat(values), torch.cat(logq)

    # --- ready-made models for the samplers -------------------------------------------------
    def eps_model(
        self,
        schedule: Schedule,
        sharing: TimestepSharing | None = None,
        weighting: Weighting = "posterior",
    ) -> Denoiser:
        """``model(x, t) -> ε`` for the samplers: the exact ε-Denoiser (:func:`exact_denoiser`) — ε*
        (sharing=None) or the ideal E-TSDM denoiser — returning x's dtype and device."""
        return exact_denoiser(self, schedule, "eps", sharing, weighting=weighting)


def _check_weighting(weighting: str) -> None:
    if weighting not in ("posterior", "uniform"):
        raise ValueError(f"weighting must be 'posterior' or 'uniform', got {weighting!r}")


@functools.lru_cache(maxsize=16)
def _gauss_legendre(nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights on [-1, 1] (an eigenvalue problem: computed once per size)."""
    return np.polynomial.legendre.leggauss(nodes)


def subinterval_nodes(
    left: float, delta: float, schedule: Schedule, nodes: int = 48, time_density: TimeDensity | None = None
) -> tuple[Tensor, Tensor]:
    """Times τ_m and normalised weights of the sub-interval [left, left + Δ): its integer timesteps
    (discrete time) or Gauss-Legendre nodes in u with τ = left + Δ u², dτ = 2 Δ u du (continuous),
    times ``time_density(τ)`` when given (float64)."""
    if not schedule.continuous:  # the integer timesteps of [left, left + Δ)
        taus = torch.tensor([left + i for i in range(int(round(delta)))], dtype=torch.float64)
        weights = torch.ones(len(taus), dtype=torch.float64)
    else:
        u, w = _gauss_legendre(nodes)
        u = 0.5 * (u + 1.0)  # on [0, 1]
        taus = torch.as_tensor(left + delta * u**2, dtype=torch.float64)
        weights = torch.as_tensor(0.5 * w * 2.0 * u, dtype=torch.float64)
    if time_density is not None:
        weights = weights * time_density(taus)
    return taus, weights / weights.sum()


# ---------------------------------------------------------------------------------------------
# The exact Denoiser (one path for every process, prediction type and condition map)
# ---------------------------------------------------------------------------------------------
def time_from_net(schedule: Schedule, c: Tensor) -> Tensor:
    """Inverse of ``schedule.net_time`` (float64): the condition map's output that gives the network
    input c (:meth:`Schedule.time_from_net`)."""
    return schedule.time_from_net(c.to(torch.float64))


class Float64Denoiser(Denoiser):
    """A :class:`Denoiser` that hands its network the condition c = net_time(f(t)) in float64 (the
    Denoiser itself casts it to float32), so that a closed-form network evaluated at a tiny Δt (K of
    Eq. 8) sees the time exactly. The condition map is applied as in every Denoiser."""

    def net_condition(self, t: Tensor | float, x: Tensor) -> Tensor:
        tt = torch.as_tensor(t, dtype=torch.float64, device=x.device)
        tt = tt.expand(x.shape[0]) if tt.ndim == 0 else tt.to(torch.float64)
        return self.schedule.net_time(self.condition(tt)).to(torch.float64)


def _identity_net(y: Tensor, c: Tensor) -> Tensor:
    return y


class ExactNet(nn.Module):
    """``net(y, c)``: the exact optimum of a Denoiser's network for the input (y, c) it receives.

    Args:
        mixture: the data distribution.
        schedule: the process.
        prediction: the Denoiser's output type (the net returns ``Denoiser.target`` of the exact
            posterior means).
        condition: Identity (exact optimum at the time c encodes) or TimestepSharing (the ideal
            E-TSDM optimum of the sub-interval c encodes; c is matched to a left boundary in c's
            own precision, so a float32 condition works too).
        weighting, nodes, time_density: of the sub-interval average (:meth:`GaussianMixture.shared_mean`).
        sigma_data: EDM's σ_data (prediction ``"edm"``).
    """

    def __init__(self, mixture: GaussianMixture, schedule: Schedule, prediction: Prediction = "eps",
                 condition: ConditionMap | None = None, *, weighting: Weighting = "posterior", nodes: int = 48,
                 sigma_data: float = SIGMA_DATA, time_density: TimeDensity | None = None):
        super().__init__()
        condition = Identity() if condition is None else condition
        if not isinstance(condition, (Identity, TimestepSharing)):
            raise ValueError(f"exact denoiser: condition must be Identity or TimestepSharing, got {condition!r}")
        _check_weighting(weighting)
        self.mixture, self.schedule, self.condition = mixture, schedule, condition
        self.weighting, self.nodes, self.time_density = weighting, nodes, time_density
        # the Denoiser's own conversions: Denoiser.target and the network-input map (no second copy)
        self.probe = Denoiser(_identity_net, schedule, prediction, sigma_data=sigma_data)

    def input_scale(self, t: Tensor) -> Tensor:
        """s(t) with network input y = s(t) x (c_in/α for ``"edm"``, else 1), float64, shape (N,)."""
        ones = torch.ones(len(t), 1, dtype=torch.float64, device=t.device)
        return self.probe.net_output(ones, t)[:, 0]

    def target(self, x: Tensor, t: Tensor, est: Estimate) -> Tensor:
        """The regression target of the output type, from the exact (ε*, x0*) at (x, t)."""
        return self.probe.target(est.x0, est.eps, t)

    def exact(self, y: Tensor, t: Tensor) -> Tensor:
        """Exact optimum at per-row times t for network inputs y (float64)."""
        x = y.to(torch.float64) / self.input_scale(t)[:, None]
        return self.target(x, t, self.mixture.posterior(x, t, self.schedule))

    def shared(self, y: Tensor, left: float) -> Tensor:
        """Ideal E-TSDM optimum of the sub-interval starting at ``left`` for network inputs y."""
        width = self.condition.cell_width(left)
        taus, quad_w = subinterval_nodes(left, width, self.schedule, self.nodes, self.time_density)
        return self.mixture.shared_mean(y, taus, quad_w, self.schedule, self.target, self.weighting,
                                        self.input_scale)

    def forward(self, y: Tensor, c: Tensor, **cond: Tensor) -> Tensor:
        if cond:
            raise ValueError(f"exact denoiser: the Gaussian mixture is unconditional; got cond {sorted(cond)}")
        t = time_from_net(self.schedule, c).to(y.device).expand(y.shape[0])
        if isinstance(self.condition, Identity):
            return self.exact(y, t).to(y.dtype)
        t = self._snap(c.to(y.device).expand(y.shape[0]), t)
        lefts = self.condition(t)
        shared = t < self.condition.t_tilde
        out = torch.empty(y.shape, dtype=torch.float64, device=y.device)
        if bool((~shared).any()):
            out[~shared] = self.exact(y[~shared], t[~shared])
        for left in lefts[shared].unique().tolist():  # one quadrature per sub-interval
            rows = shared & (lefts == left)
            out[rows] = self.shared(y[rows], left)
        return out.to(y.dtype)

    def _snap(self, c: Tensor, t: Tensor) -> Tensor:
        """t replaced by the boundary (a left end t_i, or t̃) whose network time is within c's rounding
        of c, so that decoding never moves a condition into the neighbouring sub-interval."""
        bounds = torch.tensor(self.condition.boundaries, dtype=torch.float64, device=t.device)
        c_bounds = self.schedule.net_time(bounds).to(t.device)
        c64 = c.to(torch.float64)
        dist, idx = (c64[:, None] - c_bounds[None]).abs().min(1)
        tol = 4 * torch.finfo(c.dtype).eps * c64.abs().clamp(min=1.0)
        return torch.where(dist <= tol, bounds[idx], t)


def exact_denoiser(
    mixture: GaussianMixture,
    schedule: Schedule,
    prediction: Prediction = "eps",
    condition: ConditionMap | None = None,
    *,
    weighting: Weighting = "posterior",
    nodes: int = 48,
    sigma_data: float = SIGMA_DATA,
    time_density: TimeDensity | None = None,
) -> Denoiser:
    """The exact Denoiser of ``mixture`` on any process: its network (:class:`ExactNet`) outputs the
    exact optimum of ``prediction``'s target for the condition it receives — the posterior mean
    (Identity, the default) or the ideal E-TSDM optimum of the sub-interval (a TimestepSharing map,
    e.g. :func:`etsdm.conditioning.process_sharing`; Theorem 4.1, ``weighting`` posterior = the
    true minimiser, uniform = Eq. A15; τ uniform in the sub-interval unless ``time_density``).
    The condition map is applied by the Denoiser alone; the network gets it in float64."""
    condition = Identity() if condition is None else condition
    net = ExactNet(mixture, schedule, prediction, condition, weighting=weighting, nodes=nodes,
                   sigma_data=sigma_data, time_density=time_density)
    return Float64Denoiser(net, schedule, prediction, condition, sigma_data=sigma_data)
