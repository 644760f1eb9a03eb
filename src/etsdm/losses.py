"""Training objectives: Eq. (4) (baseline) and Eq. (9) (E-TSDM) are the same code — the condition
map lives in the :class:`~etsdm.denoiser.Denoiser` — plus the DDPM-r regulariser (Appendix D.3.1).

    L(θ) = E_{t, x0, ε} || net(α_t x0 + σ_t ε, f(t)) - target ||²,

with target ε (ε-prediction), v = α ε - σ x0 (v-prediction) or x0. Losses are per example (the
mean over the example's dimensions); callers reduce. Time sampling:

* discrete: t uniform on {0, ..., T-1} (Alg. A1 line 4, shifted by one);
* continuous: t ~ U(t_eps, 1);
* ``"remap-lambda"``: the condition λ ~ U_λ of a :class:`~etsdm.conditioning.Remap` (Table A5:
  U[0, K] for 1/t, U[-K, K] for inverse-sigmoid) and t = f⁻¹(λ) (Appendix D.3.3); in discrete time
  the timestep whose λ is nearest, in continuous time f⁻¹(λ) clipped to [t_eps, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from .conditioning import Remap
from .denoiser import Denoiser

TimeSampling = Literal["uniform", "remap-lambda"]


def sample_timesteps(
    denoiser: Denoiser,
    n: int,
    *,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
    sampling: TimeSampling = "uniform",
    t_eps: float = 1e-5,
) -> Tensor:
    """n training times (float64) for the Denoiser's schedule (integers in discrete time)."""
    sched = denoiser.schedule
    if sampling == "remap-lambda":
        cond = denoiser.condition
        if not isinstance(cond, Remap):
            raise ValueError("time sampling 'remap-lambda' needs a Remap condition map")
        lo, hi = cond.lambda_range()
        lam = lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)  # λ ~ U_λ
        t = cond.inverse(lam).clamp(t_eps, 1.0) if sched.continuous else cond.timestep(lam)
        return t.to(device)
    if sampling != "uniform":
        raise ValueError(f"unknown time sampling {sampling!r}; allowed: uniform, remap-lambda")
    if sched.continuous:
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        return (t_eps + (1.0 - t_eps) * u).to(device)
    return torch.randint(0, sched.T, (n,), generator=generator).to(torch.float64).to(device)


def diffuse(denoiser: Denoiser, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """x_t = α_t x0 + σ_t ε (Eq. 1)."""
    alpha, sigma = denoiser.coefficients(t, x0)
    return alpha * x0 + sigma * noise


@dataclass
class LossOutput:
    """Per-example loss terms (shape (batch,)); ``total`` is what to minimise."""

    total: Tensor
    mse: Tensor
    reg: Tensor | None
    t: Tensor


def _per_example(v: Tensor) -> Tensor:
    return v.reshape(v.shape[0], -1).mean(1)


def diffusion_loss(
    denoiser: Denoiser,
    x0: Tensor,
    *,
    t: Tensor | None = None,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    sampling: TimeSampling = "uniform",
    t_eps: float = 1e-5,
    reg_weight: float = 0.0,
    reg_dt: float | None = None,
) -> LossOutput:
    """The denoising loss of Eq. (4) / Eq. (9), per example, with the optional DDPM-r term.

    DDPM-r (Appendix D.3.1) adds ``reg_weight`` · K(t, t') with the finite difference of Eq. (8),
    K = ||out(x_t, t) - out(x_t, t')||₂ / Δt per example, t' = t + Δt (Δt = 1 discrete, 1e-3
    continuous by default; t' is clipped into range). It costs a second forward pass.
    """
    sched = denoiser.schedule
    if t is None:
        n = x0.shape[0]
        t = sample_timesteps(denoiser, n, device=x0.device, generator=generator, sampling=sampling, t_eps=t_eps)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
    x_t = diffuse(denoiser, x0, t, noise)
    out = denoiser.net_output(x_t, t)
    mse = _per_example((out - denoiser.target(x0, noise, t)) ** 2)
    if reg_weight == 0.0:
        return LossOutput(mse, mse, None, t)
    dt = reg_dt if reg_dt is not None else (1e-3 if sched.continuous else 1.0)
    t_prime = torch.where(t + dt <= sched.t_max, t + dt, t - dt)  # backwards at the top end
    out_prime = denoiser.net_output(x_t, t_prime)
    k = (out - out_prime).reshape(x0.shape[0], -1).norm(dim=1) / dt  # K(t, t') of Eq. (8)
    return LossOutput(mse + reg_weight * k, mse, k, t)
