"""Samplers: pure functions over ``model(x, t) -> ε`` in the schedule's own time.

Every sampler walks a list of times ``t_0 > t_1 > ... > t_N`` (``timesteps``; N = NFE) and a list
of step ``orders``; a step of order k starts at t_j, evaluates the model at t_j .. t_{j+k-1}
(the intermediate points of a singlestep solver) and lands on t_{j+k}. So NFE is exactly the
number of network evaluations, and any grid (ours or diffusers') can be replayed.

* ``ddpm``: ancestral sampling, Eq. (10) generalised to any step t -> s:
  mean = α_s β_ts / σ_t² · x̂0 + (α_t/α_s) σ_s² / σ_t² · x_t (= α_s/α_t (x_t - β_ts/σ_t ε̂)),
  β_ts = 1 - α_t²/α_s²; variance β_ts (``variance="beta"``, η_t² = β_t of Eq. 10) or the
  posterior β_ts σ_s²/σ_t² (``variance="posterior"``); no noise on the step into the data (Alg. A2).
* ``ddim`` (Song et al.): x_s = α_s x̂0 + sqrt(σ_s² - σ̃²) ε̂ + σ̃ z, σ̃ = η sqrt(σ_s²/σ_t² β_ts).
* ``dpm-solver-1/2/3``: singlestep DPM-Solver (Lu et al. 2022, noise prediction, Alg. 1-2), NFE
  split into orders as that paper does (Sec. 3.4); intermediate points at r = 1/2 (order 2) and
  r = 1/3, 2/3 (order 3) of the step in λ. DPM-Solver-1 is DDIM(η = 0) (Lu et al. Eq. 3.7).
  ``third_order_intermediate`` picks the rule for DPM-Solver-3's second intermediate point u2:
  ``"lu"`` (default, Alg. 2: u2 = ... - σ_s2 (r2/r1)(φ(r2 h) - 1)(ε_s1 - ε_t), φ(z) = (e^z - 1)/z)
  or ``"midpoint"`` (diffusers' DPMSolverSinglestepScheduler: a DPM-Solver-2 step t -> s2 through
  s1, u2 = ... - σ_s2 (r2/r1)(e^{r2 h} - 1)/2 (ε_s1 - ε_t)). The two u2 differ by O(h³) and both
  give a third-order solver (tests/test_samplers.py measures it); the other updates are identical.
* ``dpm-solver++2m``: multistep DPM-Solver++ (Lu et al. 2022b, data prediction, Alg. 2), 2nd order;
  first step first order; ``lower_order_final`` makes the last step first order when it lands on
  ``t_end`` and fewer than 15 steps are taken (with ``denoise_to_zero`` the last step into the data
  is already first order), as diffusers' DPMSolverMultistepScheduler does.

Replaying diffusers (tests/test_samplers.py): pass its integer ``timesteps`` followed by its final
point (t = -1 for σ = 0, t = 0 for ``final_sigmas_type="sigma_min"``) as ``timesteps=``, and its
per-step orders as ``orders=`` (singlestep: [1, 2, 3] runs of its order_list become one step of
order 3). With our float64 table in the scheduler, DDIM, DDPM and DPM-Solver-2/3 ("midpoint") agree
to ~1e-10; DPM-Solver++(2M) to float32 precision (diffusers casts the sample to float32).

``denoise_to_zero=True`` spends the last NFE on a first-order step from ``t_end`` into the data
(σ = 0): x̂0 at t_end. For discrete schedules the data is t = -1, so DDPM with NFE = T walks
T-1, ..., 0, -1 exactly as Algorithm A2 walks T, ..., 1, 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .denoiser import Estimate
from .schedules import Schedule

SamplerName = Literal["ddpm", "ddim", "dpm-solver-1", "dpm-solver-2", "dpm-solver-3", "dpm-solver++2m"]
SAMPLERS: tuple[str, ...] = ("ddpm", "ddim", "dpm-solver-1", "dpm-solver-2", "dpm-solver-3", "dpm-solver++2m")
Spacing = Literal["time-uniform", "logSNR", "time-quadratic"]
SPACINGS: tuple[str, ...] = ("time-uniform", "logSNR", "time-quadratic")
Intermediate = Literal["lu", "midpoint"]
MAX_ORDER = {"ddpm": 1, "ddim": 1, "dpm-solver-1": 1, "dpm-solver-2": 2, "dpm-solver-3": 3, "dpm-solver++2m": 2}
Estimator = Callable[[Tensor, float], Estimate]


class StepInfo(NamedTuple):
    """What a sampler hands its ``callback`` after each step."""

    index: int
    t: float
    s: float
    x: Tensor
    x0: Tensor


@dataclass(frozen=True)
class _Point:
    """α, σ, λ at one time (float64, Python floats); σ = 0 and λ = inf at the data."""

    t: float
    alpha: float
    sigma: float
    lam: float


def _points(schedule: Schedule, times: Sequence[float]) -> list[_Point]:
    """α, σ, λ at each time; ``t_data`` is the data exactly (α = 1, σ = 0), even for schedules such
    as cosine-shift whose clipped log-SNR leaves σ(0) slightly above 0."""
    t = torch.tensor([float(v) for v in times], dtype=torch.float64)
    alpha, sigma = schedule.alpha(t).tolist(), schedule.sigma(t).tolist()
    points = []
    for v, a, s in zip(times, alpha, sigma, strict=True):
        if float(v) == schedule.t_data:
            a, s = 1.0, 0.0
        points.append(_Point(float(v), a, s, math.log(a / s) if s > 0 else math.inf))
    return points


def as_estimator(model: Callable[[Tensor, float], Tensor], schedule: Schedule) -> Estimator:
    """One network evaluation -> (ε̂, x̂0). A Denoiser converts exactly (ε, v or x0 nets alike);
    a plain ε-callable gets x̂0 = (x - σ ε̂)/α."""
    estimate = getattr(model, "estimate", None)
    if callable(estimate):
        return estimate

    def from_eps(x: Tensor, t: float) -> Estimate:
        eps = model(x, t)
        log_a = float(schedule.log_alpha(t))
        alpha, sigma = math.exp(log_a), math.sqrt(-math.expm1(2.0 * log_a))  # as Schedule.alpha / .sigma
        return Estimate(eps, (x - sigma * eps) / alpha)

    return from_eps


# ---------------------------------------------------------------------------------------------
# Time grids and order lists
# ---------------------------------------------------------------------------------------------
def time_grid(schedule: Schedule, steps: int, spacing: Spacing, t_start: float, t_end: float) -> list[float]:
    """``steps + 1`` decreasing times from t_start to t_end, uniform in t, in λ, or in sqrt(t - t_data)."""
    if spacing not in SPACINGS:
        raise ValueError(f"unknown spacing {spacing!r}; allowed: {', '.join(SPACINGS)}")
    if steps < 1:
        raise ValueError(f"time_grid needs steps >= 1, got {steps}")
    if spacing == "time-uniform":
        grid = torch.linspace(t_start, t_end, steps + 1, dtype=torch.float64)
    elif spacing == "logSNR":
        lam_start, lam_end = float(schedule.lambda_(t_start)), float(schedule.lambda_(t_end))
        lam = torch.linspace(lam_start, lam_end, steps + 1, dtype=torch.float64)
        grid = schedule.t_from_lambda(lam)
    else:  # time-quadratic (DPM-Solver's "time_quadratic"), in u = t - t_data
        u0, u1 = t_start - schedule.t_data, t_end - schedule.t_data
        grid = torch.linspace(math.sqrt(u0), math.sqrt(u1), steps + 1, dtype=torch.float64) ** 2 + schedule.t_data
    grid[0], grid[-1] = t_start, t_end  # exact end points (no round-off from the inverse maps)
    return grid.tolist()


def singlestep_orders(order: int, nfe: int) -> list[int]:
    """Lu et al. (2022), Sec. 3.4: split ``nfe`` evaluations into K singlestep steps of order <= ``order``."""
    if order == 1 or nfe == 0:
        return [1] * nfe
    if order == 2:
        return [2] * (nfe // 2) + [1] * (nfe % 2)
    k = nfe // 3 + 1
    if nfe % 3 == 0:
        return [3] * (k - 2) + [2, 1]
    if nfe % 3 == 1:
        return [3] * (k - 1) + [1]
    return [3] * (k - 1) + [2]


def _singlestep_times(schedule: Schedule, outer: list[float], orders: list[int]) -> list[float]:
    """Insert the intermediate points (r = 1/2, or 1/3 and 2/3, of each step in λ); one inversion of λ."""
    lam = schedule.lambda_(torch.tensor(outer, dtype=torch.float64)).tolist()
    fractions = {1: [], 2: [0.5], 3: [1 / 3, 2 / 3]}
    inner = [lam[j] + r * (lam[j + 1] - lam[j]) for j, order in enumerate(orders) for r in fractions[order]]
    inner_t = iter(schedule.t_from_lambda(torch.tensor(inner, dtype=torch.float64)).tolist()) if inner else iter(())
    times: list[float] = []
    for j, order in enumerate(orders):
        times.append(outer[j])
        times.extend(next(inner_t) for _ in fractions[order])
    times.append(outer[-1])
    return times


def plan(
    schedule: Schedule,
    sampler: SamplerName,
    nfe: int,
    *,
    spacing: Spacing = "time-uniform",
    t_start: float | None = None,
    t_end: float | None = None,
    denoise_to_zero: bool = True,
    lower_order_final: bool = True,
) -> tuple[list[float], list[int]]:
    """The ``(timesteps, orders)`` a sampler will walk for a given NFE budget (sum of work = nfe)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; allowed: {', '.join(SAMPLERS)}")
    if not isinstance(nfe, int) or isinstance(nfe, bool) or nfe < 1:
        raise ValueError(f"nfe must be an integer >= 1, got {nfe!r}")
    t_start = schedule.t_max if t_start is None else float(t_start)
    t_end = schedule.t_min if t_end is None else float(t_end)
    if not schedule.t_data < t_end < t_start <= schedule.t_max:
        raise ValueError(f"need t_data={schedule.t_data} < t_end={t_end} < t_start={t_start} <= t_max={schedule.t_max}")
    budget = nfe - 1 if denoise_to_zero else nfe
    if sampler.startswith("dpm-solver-") and sampler != "dpm-solver-1":
        orders = singlestep_orders(int(sampler[-1]), budget)
        outer = time_grid(schedule, len(orders), spacing, t_start, t_end) if orders else [t_start]
        times = _singlestep_times(schedule, outer, orders)
    else:
        times = time_grid(schedule, budget, spacing, t_start, t_end) if budget else [t_start]
        orders = [1] * budget
        if sampler == "dpm-solver++2m" and budget:
            orders = [1] + [2] * (budget - 1)
            if lower_order_final and budget < 15 and not denoise_to_zero:  # as diffusers: stabler with few steps
                orders[-1] = 1
    if denoise_to_zero:
        times.append(schedule.t_data)
        orders.append(1)
    return times, orders


# ---------------------------------------------------------------------------------------------
# Updates (α, σ, λ of the step's points are Python floats computed once before the loop)
# ---------------------------------------------------------------------------------------------
def _ddim_update(x: Tensor, est: Estimate, p: _Point, q: _Point, eta: float, z: Callable[[], Tensor]) -> Tensor:
    if q.sigma == 0.0:
        return est.x0
    beta = 1.0 - (p.alpha / q.alpha) ** 2  # β_ts = 1 - α_t²/α_s²
    noise_std = eta * math.sqrt(max(q.sigma**2 / p.sigma**2 * beta, 0.0))
    out = q.alpha * est.x0 + math.sqrt(max(q.sigma**2 - noise_std**2, 0.0)) * est.eps
    return out + noise_std * z() if noise_std > 0 else out


def _ddpm_update(x: Tensor, est: Estimate, p: _Point, q: _Point, variance: str, z: Callable[[], Tensor]) -> Tensor:
    if q.sigma == 0.0:
        return est.x0  # last step of Alg. A2: z = 0, and the mean is x̂0 itself
    beta = 1.0 - (p.alpha / q.alpha) ** 2  # β_ts (Eq. 10's β_t for consecutive steps)
    mean = (q.alpha * beta / p.sigma**2) * est.x0 + (p.alpha / q.alpha * q.sigma**2 / p.sigma**2) * x
    var = beta if variance == "beta" else beta * q.sigma**2 / p.sigma**2  # η_t² = β_t (Eq. 10)
    return mean + math.sqrt(var) * z()


def _dpm1(x: Tensor, eps: Tensor, x0: Tensor, p: _Point, q: _Point) -> Tensor:
    """DPM-Solver-1: x_s = (α_s/α_t) x_t - σ_s (e^h - 1) ε̂ (Lu et al. Eq. 3.7)."""
    if q.sigma == 0.0:
        return x0
    return (q.alpha / p.alpha) * x - q.sigma * math.expm1(q.lam - p.lam) * eps


def _dpm_singlestep(
    f: Estimator, x: Tensor, est: Estimate, pts: list[_Point], intermediate: Intermediate = "lu"
) -> Tensor:
    """One DPM-Solver-2 or -3 step over points [t, s1, (s2,) s] (Lu et al. 2022, Alg. 1 / 2)."""
    p, q = pts[0], pts[-1]
    if q.sigma == 0.0:
        raise ValueError("a DPM-Solver step of order > 1 cannot land on the data (σ = 0); use order 1")
    h = q.lam - p.lam
    eps_t = est.eps
    s1 = pts[1]
    r1 = (s1.lam - p.lam) / h
    u1 = (s1.alpha / p.alpha) * x - s1.sigma * math.expm1(r1 * h) * eps_t
    eps_s1 = f(u1, s1.t).eps
    base = (q.alpha / p.alpha) * x - q.sigma * math.expm1(h) * eps_t
    if len(pts) == 3:  # DPM-Solver-2 (Alg. 1): x_s = base - σ_s/(2 r1) (e^h - 1)(ε_s1 - ε_t)
        return base - (q.sigma / (2 * r1)) * math.expm1(h) * (eps_s1 - eps_t)
    s2 = pts[2]
    r2 = (s2.lam - p.lam) / h
    if intermediate == "lu":  # Alg. 2: σ_s2 (r2/r1)(φ_1(r2 h) - 1), φ_1(z) = (e^z - 1)/z
        c2 = s2.sigma * (r2 / r1) * (math.expm1(r2 * h) / (r2 * h) - 1.0)
    else:  # diffusers' "midpoint": a DPM-Solver-2 step t -> s2 through s1
        c2 = s2.sigma * (r2 / r1) * 0.5 * math.expm1(r2 * h)
    u2 = (s2.alpha / p.alpha) * x - s2.sigma * math.expm1(r2 * h) * eps_t - c2 * (eps_s1 - eps_t)
    eps_s2 = f(u2, s2.t).eps
    # Alg. 2: x_s = base - σ_s/r2 (φ_1(h) - 1)(ε_s2 - ε_t)
    return base - (q.sigma / r2) * (math.expm1(h) / h - 1.0) * (eps_s2 - eps_t)


def _dpmpp_update(
    x: Tensor, x0: Tensor, prev_x0: Tensor | None, p: _Point, q: _Point, h_prev: float, order: int
) -> Tensor:
    """DPM-Solver++(2M): x_s = (σ_s/σ_t) x_t - α_s (e^{-h} - 1) D (Lu et al. 2022b, Alg. 2)."""
    h = q.lam - p.lam
    d = x0
    if order == 2:
        r = h_prev / h
        d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * prev_x0
    return (q.sigma / p.sigma) * x - q.alpha * math.expm1(-h) * d


# ---------------------------------------------------------------------------------------------
# The public entry point
# ---------------------------------------------------------------------------------------------
def _check_plan(sampler: str, timesteps: Sequence[float], orders: Sequence[int]) -> None:
    """A replayed plan must decrease strictly and its orders must fit the sampler and cover the grid."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; allowed: {', '.join(SAMPLERS)}")
    if len(timesteps) < 2 or any(b >= a for a, b in zip(timesteps, timesteps[1:], strict=False)):
        raise ValueError(f"timesteps must be at least 2 strictly decreasing times, got {list(timesteps)}")
    if any(o < 1 or o > MAX_ORDER[sampler] for o in orders):
        raise ValueError(f"orders {list(orders)}: {sampler} takes orders 1..{MAX_ORDER[sampler]}")
    work = len(orders) if sampler == "dpm-solver++2m" else sum(orders)
    if work != len(timesteps) - 1:
        raise ValueError(f"orders {list(orders)} do not cover the {len(timesteps) - 1} steps of timesteps")


def sample(
    model: Callable[[Tensor, float], Tensor],
    noise: Tensor,
    schedule: Schedule,
    sampler: SamplerName = "ddim",
    nfe: int = 50,
    *,
    spacing: Spacing = "time-uniform",
    eta: float = 0.0,
    variance: Literal["beta", "posterior"] = "beta",
    denoise_to_zero: bool = True,
    lower_order_final: bool = True,
    third_order_intermediate: Intermediate = "lu",
    t_start: float | None = None,
    t_end: float | None = None,
    timesteps: Sequence[float] | None = None,
    orders: Sequence[int] | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    callback: Callable[[StepInfo], None] | None = None,
) -> Tensor:
    """Draw samples by integrating the reverse process from ``noise`` (x at ``t_start``).

    Args:
        model: a :class:`~etsdm.denoiser.Denoiser` or any callable ``model(x, t) -> ε`` with t a
            Python float in the schedule's time.
        noise: x_T, e.g. ``torch.randn(shape, generator=g)``; its dtype is the working dtype.
        schedule: the noise schedule the model was trained with.
        sampler: ``ddpm``, ``ddim``, ``dpm-solver-1/2/3`` or ``dpm-solver++2m``.
        nfe: number of network evaluations, exactly.
        spacing: step spacing: uniform in time, in log-SNR, or quadratic in time.
        eta: DDIM's η (0 = deterministic). variance: DDPM's β (Eq. 10) or posterior variance.
        denoise_to_zero: spend the last evaluation on x̂0 at t_end (lands on the data).
        lower_order_final: DPM-Solver++(2M) takes a first-order last step when NFE < 15.
        third_order_intermediate: DPM-Solver-3's rule for u2: ``"lu"`` (Lu et al. Alg. 2) or
            ``"midpoint"`` (diffusers' singlestep scheduler); see the module docstring.
        t_start, t_end: first and last noisy time (defaults: ``schedule.t_max``, ``schedule.t_min``).
        timesteps, orders: replay an explicit plan instead (see module doc; overrides nfe, spacing,
            t_start, t_end, denoise_to_zero; orders default to all 1).
        generator: randomness for ancestral / η > 0 noise.
        progress: show a progress bar. callback: called with a :class:`StepInfo` after each step.

    Raises:
        ValueError: unknown sampler, spacing, variance or intermediate rule; nfe < 1; η < 0; a time
            range outside (t_data, t_max]; a replayed plan that does not fit (see :func:`_check_plan`).
    """
    if variance not in ("beta", "posterior"):
        raise ValueError(f"variance must be 'beta' or 'posterior', got {variance!r}")
    if third_order_intermediate not in ("lu", "midpoint"):
        raise ValueError(f"third_order_intermediate must be 'lu' or 'midpoint', got {third_order_intermediate!r}")
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    if timesteps is None:
        timesteps, orders = plan(
            schedule,
            sampler,
            nfe,
            spacing=spacing,
            t_start=t_start,
            t_end=t_end,
            denoise_to_zero=denoise_to_zero,
            lower_order_final=lower_order_final,
        )
    orders = list(orders if orders is not None else [1] * (len(timesteps) - 1))
    _check_plan(sampler, timesteps, orders)
    pts = _points(schedule, timesteps)
    f = as_estimator(model, schedule)
    x = noise

    def z() -> Tensor:
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)

    j, prev_x0, h_prev = 0, None, 0.0
    for i, order in enumerate(tqdm(orders, desc=sampler, disable=not progress, leave=False)):
        p = pts[j]
        q = pts[j + (1 if sampler == "dpm-solver++2m" else order)]
        est = f(x, p.t)
        if sampler == "dpm-solver++2m":
            x_new = _dpmpp_update(x, est.x0, prev_x0, p, q, h_prev, order if prev_x0 is not None else 1)
            prev_x0, h_prev = est.x0, q.lam - p.lam
        elif order > 1:
            x_new = _dpm_singlestep(f, x, est, pts[j : j + order + 1], third_order_intermediate)
        elif sampler == "ddpm":
            x_new = _ddpm_update(x, est, p, q, variance, z)
        elif sampler == "ddim":
            x_new = _ddim_update(x, est, p, q, eta, z)
        else:
            x_new = _dpm1(x, est.eps, est.x0, p, q)
        j += 1 if sampler == "dpm-solver++2m" else order
        x = x_new
        if callback is not None:
            callback(StepInfo(i, p.t, q.t, x, est.x0))
    return x
