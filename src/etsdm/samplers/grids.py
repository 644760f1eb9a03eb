"""Where a sampler walks: the α, σ, λ (and α', σ') of its points, time grids (integer timesteps
with diffusers' rounding, or float grids) and Lu et al.'s split of an NFE budget into step orders
(the conventions: :mod:`etsdm.samplers`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from ..schedules import LOG_ALPHA_FLOOR, Schedule

Spacing = Literal[
    "linspace", "leading", "trailing", "fractional", "time-uniform", "logSNR", "time-quadratic", "karras"
]
INTEGER_SPACINGS: tuple[str, ...] = ("linspace", "leading", "trailing")  # diffusers' timestep_spacing
FLOAT_SPACINGS: tuple[str, ...] = ("fractional", "time-uniform", "logSNR", "time-quadratic", "karras")
SPACINGS: tuple[str, ...] = INTEGER_SPACINGS + FLOAT_SPACINGS
KARRAS_RHO = 7.0  # Karras et al. (2022), Eq. 5 / Table 1
OrderPlan = Literal["lu", "diffusers"]
ORDER_PLANS: tuple[str, ...] = ("lu", "diffusers")


@dataclass(frozen=True)
class _Point:
    """α, σ, λ at one time (float64, Python floats); σ = 0 and λ = inf at the data; dα/dt, dσ/dt
    (the probability-flow ODE's coefficients; NaN at the data, which is never evaluated)."""

    t: float
    alpha: float
    sigma: float
    lam: float
    dalpha: float = math.nan
    dsigma: float = math.nan


def _floor_edge(schedule: Schedule, t: float) -> float:
    """The largest time <= t at which α² is above its floor (bisection from t_data)."""
    lo, hi = float(schedule.t_data), float(t)
    for _ in range(64):
        mid = 0.5 * (lo + hi)
        if float(schedule.log_alpha(mid)) > LOG_ALPHA_FLOOR:
            lo = mid
        else:
            hi = mid
    return lo


def _points(schedule: Schedule, times: Sequence[float], exact_zero: bool = False) -> list[_Point]:
    """α, σ, λ (and α', σ') at each time, from the schedule's log α and log σ; ``t_data`` is the
    data exactly (α = 1, σ = 0), even for schedules such as cosine-shift whose clipped log-SNR leaves
    σ(0) slightly above 0. With ``exact_zero``, the *first* time, if α² sits at the schedule's floor
    2⁻²⁴ there, gets α = 0, λ = -∞ (zero terminal SNR) and σ = 1 (VP) or σ(t); later floored times
    (DDPM-1000 on zero-SNR visits t = 998 too) keep the floor. α', σ' at floored times are taken at the
    floor's edge (see :mod:`etsdm.samplers`)."""
    vals = [float(v) for v in times]
    t = torch.tensor(vals, dtype=torch.float64)
    log_a = schedule.log_alpha(t)
    alpha, sigma, lam = log_a.exp().tolist(), schedule.sigma(t).tolist(), schedule.lambda_(t).tolist()
    floored = (log_a <= LOG_ALPHA_FLOOR).tolist()
    # α', σ' where the ODE may be evaluated; at the floor from its edge (α' = α dlog α/dt = 2^-12 · ∞ there)
    rt = torch.tensor([_floor_edge(schedule, v) if f else v for v, f in zip(vals, floored, strict=True)],
                      dtype=torch.float64)
    dalpha, dsigma = schedule.dalpha_dt(rt).tolist(), schedule.dsigma_dt(rt).tolist()
    points = []
    for v, a, s, la, at_floor, da, ds in zip(vals, alpha, sigma, lam, floored, dalpha, dsigma, strict=True):
        if v == schedule.t_data:
            points.append(_Point(v, 1.0, 0.0, math.inf))
            continue
        if exact_zero and at_floor and not points:  # only the start: a later floored point keeps α = 2^-12
            a, la, s = 0.0, -math.inf, 1.0 if schedule.kind == "vp" else s  # (two α = 0 points: β_ts = 0/0)
        points.append(_Point(v, a, s, la, da, ds))
    return points


def _alpha_is_zero(schedule: Schedule, t: float) -> bool:
    """α² at the floor 2⁻²⁴: a zero-terminal-SNR endpoint (see :mod:`etsdm.samplers`)."""
    return float(schedule.log_alpha(float(t))) <= LOG_ALPHA_FLOOR


def init_noise_sigma(schedule: Schedule, t_start: float | None = None) -> float:
    """The scale of x at ``t_start`` (default t_max) for a standard normal draw, x = scale · z:
    1 for VP (x_T ~ N(0, I), Ho et al.), σ(t_start) for other processes (EDM: σ_max, as Karras et
    al.'s sampler; flow: 1). diffusers calls it ``init_noise_sigma``."""
    if schedule.kind == "vp":
        return 1.0
    return float(schedule.sigma(schedule.t_max if t_start is None else float(t_start)))


# ---------------------------------------------------------------------------------------------
# Time grids and order lists
# ---------------------------------------------------------------------------------------------
def default_spacing(schedule: Schedule) -> str:
    """Integer timesteps (diffusers' ``linspace``) for discrete schedules, Karras et al.'s ρ = 7 grid
    for EDM, uniform t for continuous VP schedules and flow."""
    if schedule.kind == "edm":
        return "karras"
    return "time-uniform" if schedule.continuous else "linspace"


def resolve_spacing(schedule: Schedule, spacing: str | None) -> str:
    """``spacing`` checked against the schedule's kind; None -> :func:`default_spacing`."""
    if spacing is None:
        return default_spacing(schedule)
    if spacing not in SPACINGS:
        raise ValueError(f"unknown spacing {spacing!r}; allowed: {', '.join(SPACINGS)}")
    if schedule.continuous and (spacing in INTEGER_SPACINGS or spacing == "fractional"):
        raise ValueError(
            f"timestep spacing {spacing!r} is for discrete schedules (integer timesteps); a continuous schedule "
            "takes time-uniform, logSNR, time-quadratic or karras"
        )
    return spacing


def _integer_grid(schedule: Schedule, steps: int, spacing: str, t_start: float, t_end: float,
                  evaluations: bool = False) -> list[float]:
    """``steps + 1`` integer timesteps from (about) t_start down to (about) t_end, rounded as diffusers'
    ``timestep_spacing``: DPMSolver schedulers' N = steps inference steps plus the final σ_min point
    t_end; with ``evaluations`` (a final step into the data follows), DDIM/DDPM schedulers' N = steps + 1
    timesteps. The two differ for ``trailing`` only: DDIM/DDPM's trailing grid ends at T/N - 1, not t_end."""
    if schedule.continuous:
        raise ValueError(f"timestep spacing {spacing!r} needs a discrete schedule")
    if not (float(t_start).is_integer() and float(t_end).is_integer()):
        raise ValueError(f"timestep spacing {spacing!r} needs integer t_start / t_end, got {t_start}, {t_end}")
    lo, hi = int(t_end), int(t_start)
    n = hi - lo + 1  # integer timesteps available (diffusers' num_train_timesteps when lo = 0, hi = T-1)
    if spacing == "linspace":  # np.linspace(0, T-1, N+1).round()[::-1]
        grid = np.linspace(lo, hi, steps + 1).round()[::-1]
    elif spacing == "leading":  # (arange(N+1) * (T // (N+1)))[::-1]
        grid = (lo + np.arange(steps + 1) * (n // (steps + 1)))[::-1]
    elif evaluations:  # trailing, DDIM/DDPM: round(arange(T, 0, -T/N)) - 1, N = steps + 1 points
        grid = lo + np.round(np.arange(n, 0, -n / (steps + 1)))[: steps + 1] - 1
    else:  # trailing, DPMSolver: round(arange(T, 0, -T/N)) - 1, N = steps, then the final point
        grid = np.concatenate([lo + np.round(np.arange(n, 0, -n / steps))[:steps] - 1, [lo]])
    out = [float(v) for v in grid]
    if len(out) != steps + 1 or any(b >= a for a, b in zip(out, out[1:], strict=False)):
        raise ValueError(
            f"timestep spacing {spacing!r}: {steps} steps do not fit the {n} integer timesteps in [{lo}, {hi}]; "
            "use fewer steps or timestep_spacing='fractional'"
        )
    return out


def time_grid(schedule: Schedule, steps: int, spacing: Spacing, t_start: float, t_end: float,
              evaluations: bool = False) -> list[float]:
    """``steps + 1`` decreasing times ending at t_end: integers (``linspace`` / ``leading`` /
    ``trailing``, diffusers' rounding), or floats uniform in t (``fractional`` = ``time-uniform``), in
    λ, in sqrt(t - t_data), or Karras et al.'s ρ = 7 grid (``karras``: σ̃_i = (σ̃_max^{1/ρ} + i/steps
    (σ̃_min^{1/ρ} - σ̃_max^{1/ρ}))^ρ in σ̃ = σ/α = e^{-λ}, t_i = t_from_lambda(-ln σ̃_i); on EDM σ̃ = σ = t).
    ``evaluations``: the points are all network evaluations, a step into the data follows
    (DDIM/DDPM's trailing grid then ends above t_end, see :func:`_integer_grid`)."""
    if spacing not in SPACINGS:
        raise ValueError(f"unknown spacing {spacing!r}; allowed: {', '.join(SPACINGS)}")
    if steps < 1:
        raise ValueError(f"time_grid needs steps >= 1, got {steps}")
    if spacing in INTEGER_SPACINGS:
        return _integer_grid(schedule, steps, spacing, t_start, t_end, evaluations)
    if spacing in ("time-uniform", "fractional"):
        grid = torch.linspace(t_start, t_end, steps + 1, dtype=torch.float64)
    elif spacing == "logSNR":
        lam_start, lam_end = float(schedule.lambda_(t_start)), float(schedule.lambda_(t_end))
        lam = torch.linspace(lam_start, lam_end, steps + 1, dtype=torch.float64)
        grid = schedule.t_from_lambda(lam)
    elif spacing == "karras":  # Karras et al. (2022) Eq. 5, in the process's σ/α = e^{-λ}
        lam_start, lam_end = float(schedule.lambda_(t_start)), float(schedule.lambda_(t_end))
        hi, lo = math.exp(-lam_start / KARRAS_RHO), math.exp(-lam_end / KARRAS_RHO)  # σ̃^{1/ρ} at the ends
        ramp = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
        grid = schedule.t_from_lambda(-KARRAS_RHO * torch.log(hi + ramp * (lo - hi)))
    else:  # time-quadratic (DPM-Solver's "time_quadratic"), in u = t - t_data
        u0, u1 = t_start - schedule.t_data, t_end - schedule.t_data
        grid = torch.linspace(math.sqrt(u0), math.sqrt(u1), steps + 1, dtype=torch.float64) ** 2 + schedule.t_data
    grid[0], grid[-1] = t_start, t_end  # exact end points (no round-off from the inverse maps)
    return grid.tolist()


def singlestep_orders(order: int, nfe: int, order_plan: OrderPlan = "lu") -> list[int]:
    """Split ``nfe`` evaluations into singlestep steps of order <= ``order``.

    ``"lu"``: Lu et al. (2022), Sec. 3.4 (K = NFE//3 + 1 steps for order 3; [2]*(NFE/2) for order 2).
    ``"diffusers"``: DPMSolverSinglestepScheduler's lower-order-final list, grouped into steps
    (identical for order 3; order 2 at even NFE ends [..., 2, 1, 1]).
    """
    if order_plan not in ORDER_PLANS:
        raise ValueError(f"order_plan must be one of {', '.join(ORDER_PLANS)}, got {order_plan!r}")
    if order == 1 or nfe == 0:
        return [1] * nfe
    if order == 2:
        if order_plan == "diffusers" and nfe % 2 == 0:
            return [2] * (nfe // 2 - 1) + [1, 1]
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
