"""Lipschitz constants of ε_θ with respect to time: K(t, t′) of Eq. (8).

    K(t, t′) = E_{x_t}[ ‖ε_θ(x_t, t) − ε_θ(x_t, t′)‖₂ ] / Δt,   t′ = t + Δt,

with x_t = α_t x_0 + σ_t ε drawn from the forward process (Eq. 1) of the model's own data, and
the *same* x_t fed at t and at t′. ‖·‖₂ is the Euclidean norm of the whole example (all pixels).

Conventions:

* t is the schedule's physical time: integer timesteps 0..T-1 in discrete time (Δt = 1 by
  default, t′ = t + 1), t in [0, 1] in continuous time (Δt = 1/T by default). The model is
  called through its Denoiser at physical time, so its condition map applies: an E-TSDM model
  gives exactly K = 0 inside each shared sub-interval.
* Cost, exactly: every (time t, data sample) pair needs two network evaluations, ε(x_t, t) and
  ε(x_t, t′), on the same x_t. Nothing can be shared between consecutive t even when t′ of one
  is the next t, because x_t is redrawn from q(x_t | x_0) at every t (x_{t+1} ≠ x_t). So a curve
  over M times with N samples costs 2·N·M example-evaluations, packed into ⌈2NM / B⌉ network
  calls of batch B (all full except the last); :class:`LipschitzCurve` records both counts.
* ``shared_noise=True`` (default) reuses one (x_0, ε) pair per sample for every t (common random
  numbers): each t is still an exact forward-process draw, and the curve is smoother across t.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..conditioning import TimestepSharing
from ..denoiser import Denoiser
from ..schedules import Schedule

EpsFn = Callable[[Tensor, Tensor], Tensor]


def as_eps_fn(model: Any) -> EpsFn:
    """An ε-function ``(x, t) -> ε`` at physical time t from a Denoiser, a loaded run (anything
    with a ``.denoiser``) or a plain callable model(x, t) -> ε (e.g. GaussianMixture.eps_model)."""
    den = model if isinstance(model, Denoiser) else getattr(model, "denoiser", None)
    if isinstance(den, Denoiser):
        # an ε-network's output is ε itself: skip the conversion (and its α, σ lookups)
        return den.net_output if den.prediction == "eps" else den.eps
    if callable(model):
        return model
    raise TypeError(f"expected a Denoiser, a loaded model or a callable eps(x, t); got {type(model).__name__}")


def as_x0_fn(model: Any, schedule: Schedule | None = None) -> EpsFn:
    """A function ``(x, t) -> x̂0`` from a Denoiser / loaded run, or from an ε-callable and its
    schedule via x̂0 = (x − σ_t ε) / α_t."""
    den = model if isinstance(model, Denoiser) else getattr(model, "denoiser", None)
    if isinstance(den, Denoiser):
        return den.x0
    if schedule is None:
        raise ValueError("as_x0_fn: a plain ε-callable needs its schedule to convert ε to x0")
    eps_fn = as_eps_fn(model)

    def x0_fn(x: Tensor, t: Tensor) -> Tensor:
        alpha, sigma = _coefficients(schedule, t, x)
        return (x - sigma * eps_fn(x, t).to(x.dtype)) / alpha

    return x0_fn


def _coefficients(schedule: Schedule, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    shape = (-1, *([1] * (x.ndim - 1)))
    return schedule.alpha(t).to(x.dtype).reshape(shape), schedule.sigma(t).to(x.dtype).reshape(shape)


def default_dt(schedule: Schedule) -> float:
    """Δt = 1 timestep in discrete time, 1/T in continuous time."""
    return 1.0 / schedule.T if schedule.continuous else 1.0


def lipschitz_times(
    schedule: Schedule,
    *,
    t_start: float | None = None,
    t_end: float | None = None,
    dt: float | None = None,
    stride: int = 1,
    log_points: int | None = None,
) -> Tensor:
    """The times t at which K(t, t + Δt) is measured: every t on the Δt grid from ``t_start``
    (default 0 discrete, Δt continuous) to ``t_end`` (default t_max − Δt), every ``stride``-th;
    or, with ``log_points``, that many log-spaced times in [t_start, t_end] (rounded to distinct
    timesteps in discrete time), to resolve t -> 0 in continuous time cheaply.

    Raises:
        ValueError: Δt ≤ 0 (or not a whole number of timesteps in discrete time), stride < 1,
            or a range outside [t_data, t_max − Δt] (log spacing: t_start > 0).
    """
    dt = default_dt(schedule) if dt is None else float(dt)
    if not dt > 0:
        raise ValueError(f"dt must be > 0, got {dt}")
    if not schedule.continuous and dt != int(dt):
        raise ValueError(f"dt must be a whole number of timesteps in discrete time, got {dt}")
    if not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be an integer >= 1, got {stride!r}")
    start = (0.0 if not schedule.continuous else dt) if t_start is None else float(t_start)
    end = schedule.t_max - dt if t_end is None else float(t_end)
    if start < schedule.t_data or end + dt > schedule.t_max + 1e-12 or end < start:
        raise ValueError(
            f"time range [{start:g}, {end:g}] with dt={dt:g} must satisfy "
            f"{schedule.t_data:g} <= t_start <= t_end <= t_max - dt = {schedule.t_max - dt:g}"
        )
    if log_points is not None:
        return _log_times(schedule, start, end, log_points)
    count = int(math.floor((end - start) / (dt * stride) + 1e-9)) + 1
    return start + dt * stride * torch.arange(count, dtype=torch.float64)


def _log_times(schedule: Schedule, start: float, end: float, points: int) -> Tensor:
    if points < 2 or start <= 0:
        raise ValueError(f"log spacing needs log_points >= 2 and t_start > 0, got {points} and {start:g}")
    t = torch.logspace(math.log10(start), math.log10(end), points, dtype=torch.float64)
    return t if schedule.continuous else t.round().unique()


@dataclass
class LipschitzCurve:
    """K(t, t + Δt) over times t (Eq. 8) and what it cost.

    Attributes:
        t: the times t (float64, (M,)); t′ = t + dt.
        dt: Δt.
        K: the mean over samples of ‖ε(x_t, t) − ε(x_t, t′)‖₂ / Δt, (M,).
        K_sem: its standard error over samples, (M,).
        n_samples: N, data samples per time.
        evaluations: example-evaluations of the model, = 2 N M.
        calls: batched model calls, = ⌈N M / ⌊B/2⌋⌉ (⌈2 N M / B⌉ for an even batch size B).
    """

    t: Tensor
    dt: float
    K: Tensor
    K_sem: Tensor
    n_samples: int
    evaluations: int
    calls: int
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "t": self.t.tolist(),
            "dt": self.dt,
            "K": self.K.tolist(),
            "K_sem": self.K_sem.tolist(),
            "n_samples": self.n_samples,
            "evaluations": self.evaluations,
            "calls": self.calls,
            **self.meta,
        }


@torch.no_grad()
def lipschitz_curve(
    model: Any,
    x0: Tensor,
    schedule: Schedule,
    times: Tensor | None = None,
    *,
    dt: float | None = None,
    batch_size: int = 512,
    generator: torch.Generator | None = None,
    shared_noise: bool = True,
    progress: bool = False,
) -> LipschitzCurve:
    """K(t, t + Δt) of Eq. (8) for every t in ``times`` (default :func:`lipschitz_times`).

    Args:
        model: a Denoiser, a loaded run, or a callable ε(x, t) at physical time t (shape (B,)).
        x0: N data samples (N, ...) of the model's own data; x_t = α_t x0 + σ_t ε (Eq. 1).
        schedule: the model's schedule (α_t, σ_t of the forward process).
        times: the times t (physical); t′ = t + Δt.
        dt: Δt (default 1 timestep, or 1/T in continuous time).
        batch_size: B, examples per model call (>= 2; an odd B uses B − 1); the t- and t′-halves
            of each call hold the same x_t.
        generator: for the forward-process noise ε (on x0's device).
        shared_noise: one ε per sample reused at every t (common random numbers).
        progress: a tqdm bar over the calls.
    """
    dt = default_dt(schedule) if dt is None else float(dt)
    times = lipschitz_times(schedule, dt=dt) if times is None else torch.as_tensor(times, dtype=torch.float64)
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2, got {batch_size}")
    eps_fn = as_eps_fn(model)
    device, n, m = x0.device, x0.shape[0], len(times)
    times = times.to(device)
    base_noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=device) if shared_noise else None
    total = torch.zeros(m, dtype=torch.float64, device=device)
    total_sq = torch.zeros(m, dtype=torch.float64, device=device)
    alphas, sigmas = schedule.alpha(times).to(x0.dtype), schedule.sigma(times).to(x0.dtype)  # once per t
    shape = (-1, *([1] * (x0.ndim - 1)))
    half = batch_size // 2
    starts = range(0, n * m, half)
    calls = 0
    for start in _maybe_progress(starts, progress):
        pair = torch.arange(start, min(start + half, n * m), device=device)
        ti, si = pair // n, pair % n  # pair p = (time index p // N, sample p % N)
        t = times[ti]
        noise = (
            base_noise[si]
            if base_noise is not None
            else torch.randn((len(pair), *x0.shape[1:]), generator=generator, dtype=x0.dtype, device=device)
        )
        x_t = alphas[ti].reshape(shape) * x0[si] + sigmas[ti].reshape(shape) * noise  # Eq. (1); the SAME x_t at t, t′
        eps = eps_fn(torch.cat([x_t, x_t]), torch.cat([t, t + dt]))
        calls += 1
        k = len(pair)
        dist = (eps[:k].to(torch.float64) - eps[k:].to(torch.float64)).flatten(1).norm(dim=1) / dt  # Eq. (8)
        total.index_add_(0, ti, dist)
        total_sq.index_add_(0, ti, dist**2)
    mean = total / n
    var = (total_sq / n - mean**2).clamp(min=0) * (n / max(n - 1, 1))
    return LipschitzCurve(
        t=times.cpu(),
        dt=dt,
        K=mean.cpu(),
        K_sem=(var / n).sqrt().cpu(),
        n_samples=n,
        evaluations=2 * n * m,
        calls=calls,
    )


def _maybe_progress(it: range, progress: bool):
    if not progress:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc="K(t, t')", unit="call")


def sharing_boundaries(condition: Any) -> list[float]:
    """The E-TSDM sub-interval boundaries t_0 < ... < t_n of a condition map ([] if none)."""
    if isinstance(condition, TimestepSharing):
        return [float(b) for b in condition.boundaries]
    return []
