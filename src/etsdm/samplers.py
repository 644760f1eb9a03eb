"""Samplers: pure functions over ``model(x, t) -> ε`` in the schedule's own time, for any process.

Every sampler walks a list of times ``t_0 > t_1 > ... > t_K`` (``timesteps``) and a list of step
``orders``, and spends exactly ``nfe`` network evaluations. Samplers live in one registry
(:data:`SAMPLER_REGISTRY`: name -> :class:`SamplerSpec`, i.e. its maximum order, how it splits an NFE
budget into per-step orders, how a step of order k lays out on the grid, its step function); adding a
sampler is one entry there plus its step function. Three grid layouts:

* ``singlestep`` (DDPM, DDIM, DPM-Solver-1/2/3, Euler): a step of order k starts at t_j, evaluates
  the model at t_j .. t_{j+k-1} (the intermediate points of a singlestep solver) and lands on
  t_{j+k}: k evaluations, k grid intervals. So NFE = number of grid intervals, and any grid (ours or
  diffusers') can be replayed.
* ``multistep`` (DPM-Solver++(2M)): every step covers one interval with one evaluation; its order
  is how many past evaluations it uses.
* ``corrector`` (Heun): a step of order k covers one interval with k evaluations, at t_j and (the
  corrector) at t_{j+1}.

Samplers:

* ``ddpm``: ancestral sampling, Eq. (10) generalised to any step t -> s of any process:
  mean = α_s (σ_ts²/σ_t²) x̂0 + (α_t/α_s)(σ_s²/σ_t²) x_t with σ_ts² = σ_t² (1 - e^{-2h}),
  h = λ_s - λ_t, the forward transition's variance (VP: σ_ts² = β_ts = 1 - α_t²/α_s²); variance
  σ_ts² (``variance="beta"``, η_t² = β_t of Eq. 10) or the posterior σ_ts² σ_s²/σ_t²
  (``variance="posterior"``); no noise on the step into the data (Alg. A2).
* ``ddim`` (Song et al.): x_s = α_s x̂0 + sqrt(σ_s² - σ̃²) ε̂ + σ̃ z, σ̃ = η σ_s sqrt(1 - e^{-2h})
  (VP: η sqrt(σ_s²/σ_t² β_ts)).
* ``dpm-solver-1/2/3``: singlestep DPM-Solver (Lu et al. 2022, noise prediction, Alg. 1-2), NFE
  split into orders as that paper does (Sec. 3.4). DPM-Solver-1 *is* DDIM(η = 0) (Lu et al. Eq.
  3.7): both call one update, x_s = α_s x̂0 + σ_s ε̂ (= (α_s/α_t) x_t - σ_s (e^h - 1) ε̂).
  ``third_order_intermediate`` picks the rule for DPM-Solver-3's second intermediate point u2:
  ``"lu"`` (default, Alg. 2: u2 = ... - σ_s2 (r2/r1)(φ(r2 h) - 1)(ε_s1 - ε_t), φ(z) = (e^z - 1)/z)
  or ``"midpoint"`` (diffusers' DPMSolverSinglestepScheduler: a DPM-Solver-2 step t -> s2 through
  s1, u2 = ... - σ_s2 (r2/r1)(e^{r2 h} - 1)/2 (ε_s1 - ε_t)). The two u2 differ by O(h³) and both
  give a third-order solver (tests/test_samplers.py measures it); the other updates are identical.
* ``dpm-solver++2m``: multistep DPM-Solver++ (Lu et al. 2022b, data prediction, Alg. 2), 2nd order;
  first step first order; ``lower_order_final`` makes the last step first order when it lands on
  ``t_end`` and fewer than 15 steps are taken (with ``denoise_to_zero`` the last step into the data
  is already first order), as diffusers' DPMSolverMultistepScheduler does.
* ``euler`` / ``heun``: the probability-flow ODE in the process's own time,
  dx/dt = α'(t) x̂0 + σ'(t) ε̂ (EDM: Karras et al.'s dx/dσ = (x - D)/σ; flow: the velocity ε̂ - x̂0).
  ``heun`` is EDM's Algorithm 1: an Euler step then the trapezoidal (Heun) correction with a second
  evaluation at t_{j+1}, except on the step into the data (σ = 0), which is Euler's. N steps on
  the data-bound grid cost 2N - 1 evaluations, so odd NFE is EDM exactly; at even NFE the last
  noisy step (the smallest, on the default grids) is an Euler step: orders [2]·(B//2) + [1]·(B%2)
  for the B evaluations before the final step into the data (Lu et al.'s DPM-Solver-2 rule). Any
  step into the data returns x̂0, the Euler step in the scaled variables x/α, σ/α (Karras et al.
  Eq. 4), which is Euler's in t too for EDM and flow (α, σ affine in t).
  Stochastic churn (EDM Algorithm 2; ``s_churn``, ``s_tmin``, ``s_tmax``, ``s_noise``, default
  off) raises σ̃ = σ/α = e^{-λ} of each step's start by γ = min(s_churn/N, √2 - 1) (N = steps,
  the step into the data included, as EDM) when s_tmin <= σ̃ <= s_tmax, adds the matching noise in
  the scaled variables, x̃ += sqrt(σ̃̂² - σ̃²) s_noise z, and maps back with ``t_from_lambda``
  (EDM: exactly Algorithm 2).

Conventions (docs/samplers.md explains each choice; :func:`describe` records them with a result):

* **Processes.** α, σ and λ at every walked point come from the schedule (``log_alpha``,
  ``log_sigma``, ``lambda_``), so DDIM / DPM-Solver / DPM-Solver++ (which work in λ with α, σ)
  run unchanged on EDM and flow; ``t_data`` is the data exactly (α = 1, σ = 0). Euler / Heun also
  read α' = α dlog α/dt and σ' = σ dlog σ/dt.
* **Timestep spacing.** Discrete models were trained on integer timesteps only, so by default every
  sampler evaluates them at integers: ``timestep_spacing`` ``"linspace"`` (default), ``"leading"``
  or ``"trailing"``, rounded exactly as diffusers' ``timestep_spacing`` (DPMSolver schedulers'
  formulas for ``steps`` steps; with ``denoise_to_zero`` the DDIM/DDPM schedulers' N timesteps, whose
  ``trailing`` grid ends at T/N - 1 rather than at t_end).
  DPM-Solver-2/3 then take their intermediate points from the same integer grid, as diffusers'
  DPMSolverSinglestepScheduler does. ``"fractional"`` is the time-uniform float grid, i.e. what the
  official dpm-solver code does for discrete models (queries at t = 978.61, ...); ``"logSNR"`` and
  ``"time-quadratic"`` are float grids too. ``"karras"`` is Karras et al.'s ρ = 7 grid in
  σ̃ = σ/α = e^{-λ}. Continuous VP schedules and flow default to ``"time-uniform"``, EDM to
  ``"karras"``.
* **Order plan.** ``order_plan="lu"`` (default) splits the NFE as Lu et al. Sec. 3.4 and their code
  (``get_orders_and_timesteps_for_singlestep_solver``): DPM-Solver-3 at NFE 20 is [3]*6 + [2], all
  20 evaluations in the solver, the outer points at those positions of the NFE-point grid (or
  uniform in λ for ``logSNR``), intermediate points at r = 1/2 or 1/3, 2/3 in λ on float grids.
  ``order_plan="diffusers"`` uses diffusers' lower-order-final list (differs for DPM-Solver-2 at
  even NFE: [2, ..., 2, 1, 1]).
* **Final denoising step.** ``denoise_to_zero=True`` spends the last NFE on a first-order step
  from ``t_end`` into the data (σ = 0): x̂0 at t_end (Lu et al.'s ``denoise_to_zero``, but inside
  the NFE budget). Default (None): on for ``ddpm`` / ``ddim`` / ``euler`` / ``heun``, whose last
  step lands on the data (Ho et al. Alg. 2; diffusers' DDIM/DDPM with ``set_alpha_to_one``; EDM
  Alg. 1), off for the DPM-Solvers (Lu et al.'s default; they return x at t_end = t_min). For
  discrete schedules the data is t = -1, so DDPM with NFE = T walks T-1, ..., 0, -1 exactly as
  Algorithm A2 walks T, ..., 1, 0.
* **x̂0 clipping.** ``clip="static"`` clamps every x̂0 to [-1, 1] (ADM's ``clip_denoised``,
  diffusers' ``clip_sample``), ``"dynamic"`` is Saharia et al.'s dynamic thresholding (percentile
  0.995, s >= 1); ε̂ is then recomputed from the clipped x̂0, ε̂ = (x - α x̂0)/σ, as ADM's DDIM and
  diffusers' DPM-Solver do, so every sampler sees one consistent estimate. Default ``"none"``
  (the library does not know the data range; ``etsdm.runs.generate`` picks per data kind).
* **α = 0** (zero terminal SNR; continuous cosine at t = 1; flow at t = 1). Schedules floor α² at
  2⁻²⁴ to keep λ finite. For v-, x0- and flow-prediction Denoisers the samplers use α = 0 exactly
  at such points (σ = 1 on VP, σ(t) otherwise; x̂0 = -v/σ, x̂0 = x0, or x̂0 = (u - σ' x/σ)/α' from
  the velocity u; ε̂ = x/σ); a DPM-Solver step starting there is first order (λ = -∞: DDIM's step
  is the exact limit), so a singlestep plan starts with one DDIM step. ε-prediction keeps the floor
  and warns: x̂0 = (x - σ ε̂)/α amplifies ε̂'s errors ~4096× (Lin et al. 2023 require
  v-prediction). The floored α has no useful derivative (2⁻¹² · ∞), so Euler / Heun take α', σ'
  at such a point from the floor's edge (the largest t with α above the floor): exact for flow
  (α' = -1 everywhere), O(2⁻¹²) off elsewhere.
* **Initial noise.** ``noise`` is x at t_start. :func:`init_noise_sigma` is its scale for a
  standard normal draw: 1 for VP (x_T ~ N(0, I), Ho et al.), σ(t_start) otherwise (EDM's σ_max;
  flow's 1), as diffusers' ``init_noise_sigma``.

Per-plan precomputation (issue 11; tests/test_sampler_precompute.py): everything but the tensors is
known once the plan is (sampler, grid, orders, options, process, the model's prediction): the walked
points' α, σ, λ, α', σ', each step's coefficients and each evaluation's conversion
(:meth:`~etsdm.denoiser.Denoiser.linear`: the network input scale and ε̂, x̂0 as linear maps of
(x, network output)) are Python floats computed once and kept with the step functions in a small
cache (:data:`PLAN_CACHE_SIZE` plans, per schedule object; schedules are treated as immutable). Each
:func:`sample` call then makes the network's conditions once, before its loop
(:meth:`~etsdm.denoiser.Denoiser.conditions`: one condition-map call on all distinct evaluation
times, one (batch,) tensor per time), and each step is its network call(s) plus its update as one
linear combination of tensors in the fewest fused kernels (:func:`_lin`): no schedule,
condition-map or ``torch.full`` call inside the loop, on every process and condition map, ancestral
noise and churn included. A Denoiser subclass that overrides how it evaluates (``estimate``,
``net_output``, ...) and any other model are called as before, ``estimate(x, t)`` / ``model(x, t)``
with a Python float t. Results equal the per-step formulas above to round-off.

Conditioning (issue 10): ``sample(..., cond={"labels": y, "lowres": lr})`` binds the network's
keyword inputs once per call and hands them to *every* evaluation, whatever the mode, sampler,
churn, clipping or exact α = 0 point: ``net(scale·x, c, **cond)`` on the precomputed path,
``estimate(x, t, **cond)`` / ``net_output(x, t, **cond)`` / ``model(x, t, **cond)`` otherwise. cond
is not part of the plan (the plan cache is shared by conditional and unconditional calls); with no
cond the calls are exactly the unconditional ones above. Classifier-free guidance is a network
(:class:`etsdm.guidance.GuidedNet`), so it runs on the precomputed path unchanged.

Replaying diffusers (tests/test_samplers.py, tests/test_samplers_processes.py): pass its
``timesteps`` (or, for σ-parametrised schedulers, its ``sigmas`` on EDM / flow) followed by its final
point (t = -1 / σ = 0 for the data, t = 0 for ``final_sigmas_type="sigma_min"``) as ``timesteps=``,
and its per-step orders as ``orders=`` (singlestep: [1, 2, 3] runs of its order_list become one step
of order 3). With our float64 table in the scheduler, DDIM, DDPM and DPM-Solver-2/3 ("midpoint")
agree to ~1e-10; DPM-Solver++(2M) to float32 precision (diffusers casts the sample to float32).
"""

from __future__ import annotations

import functools
import math
import threading
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .denoiser import Cond, Denoiser, check_cond
from .schedules import LOG_ALPHA_FLOOR, Schedule

SamplerName = Literal[
    "ddpm", "ddim", "dpm-solver-1", "dpm-solver-2", "dpm-solver-3", "dpm-solver++2m", "euler", "heun"
]
Spacing = Literal[
    "linspace", "leading", "trailing", "fractional", "time-uniform", "logSNR", "time-quadratic", "karras"
]
INTEGER_SPACINGS: tuple[str, ...] = ("linspace", "leading", "trailing")  # diffusers' timestep_spacing
FLOAT_SPACINGS: tuple[str, ...] = ("fractional", "time-uniform", "logSNR", "time-quadratic", "karras")
SPACINGS: tuple[str, ...] = INTEGER_SPACINGS + FLOAT_SPACINGS
KARRAS_RHO = 7.0  # Karras et al. (2022), Eq. 5 / Table 1
OrderPlan = Literal["lu", "diffusers"]
ORDER_PLANS: tuple[str, ...] = ("lu", "diffusers")
Clip = Literal["none", "static", "dynamic"]
CLIPS: tuple[str, ...] = ("none", "static", "dynamic")
DYNAMIC_PERCENTILE = 0.995  # Saharia et al. (2022), dynamic thresholding
Intermediate = Literal["lu", "midpoint"]
EXACT_ZERO_PREDICTIONS: tuple[str, ...] = ("v", "x0", "flow")  # predictions that stay exact at α = 0


class StepInfo(NamedTuple):
    """What a sampler hands its ``callback`` after each step."""

    index: int
    t: float
    s: float
    x: Tensor
    x0: Tensor


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
    floor's edge (see the module docstring)."""
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
    """α² at the floor 2⁻²⁴: a zero-terminal-SNR endpoint (see the module docstring)."""
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


def default_denoise_to_zero(sampler: str) -> bool:
    """DDPM / DDIM / Euler / Heun land on the data (Ho et al. Alg. 2, Song et al., Karras et al.
    Alg. 1); the DPM-Solvers stop at t_end (Lu et al.)."""
    spec = SAMPLER_REGISTRY.get(sampler)
    return spec.denoise_to_zero if spec is not None else False


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


def _first_order_plan(budget: int, order_plan: str, lower_order_final: bool, denoise_to_zero: bool,
                      zero_start: bool) -> list[int]:
    """Every evaluation a first-order step (DDPM, DDIM, DPM-Solver-1, Euler)."""
    return [1] * budget


def _singlestep_plan(order: int) -> Callable[..., list[int]]:
    """DPM-Solver-k: Lu et al.'s split (or diffusers'); at λ = -∞ one DDIM step first (module doc)."""

    def orders(budget: int, order_plan: str, lower_order_final: bool, denoise_to_zero: bool,
               zero_start: bool) -> list[int]:
        if zero_start and budget:
            return [1] + singlestep_orders(order, budget - 1, order_plan)
        return singlestep_orders(order, budget, order_plan)

    return orders


def _multistep_plan(budget: int, order_plan: str, lower_order_final: bool, denoise_to_zero: bool,
                    zero_start: bool) -> list[int]:
    """DPM-Solver++(2M): first step first order, then second order; lower_order_final as diffusers."""
    if not budget:
        return []
    orders = [1] + [2] * (budget - 1)
    if lower_order_final and budget < 15 and not denoise_to_zero:  # as diffusers: stabler with few steps
        orders[-1] = 1
    return orders


def _heun_plan(budget: int, order_plan: str, lower_order_final: bool, denoise_to_zero: bool,
               zero_start: bool) -> list[int]:
    """Heun steps of 2 evaluations; an odd budget ends with one Euler step (module doc)."""
    return [2] * (budget // 2) + [1] * (budget % 2)


def plan(
    schedule: Schedule,
    sampler: SamplerName,
    nfe: int,
    *,
    timestep_spacing: Spacing | None = None,
    t_start: float | None = None,
    t_end: float | None = None,
    denoise_to_zero: bool | None = None,
    order_plan: OrderPlan = "lu",
    lower_order_final: bool = True,
    spacing: Spacing | None = None,
) -> tuple[list[float], list[int]]:
    """The ``(timesteps, orders)`` a sampler will walk for a given NFE budget (its steps' evaluations
    add up to nfe; :func:`evaluation_times` lists them).

    ``timestep_spacing`` None: :func:`default_spacing` (``spacing`` is an older name for it);
    ``denoise_to_zero`` None: :func:`default_denoise_to_zero`. See the module docstring.
    """
    spec = _spec(sampler)
    if not isinstance(nfe, int) or isinstance(nfe, bool) or nfe < 1:
        raise ValueError(f"nfe must be an integer >= 1, got {nfe!r}")
    spacing = resolve_spacing(schedule, timestep_spacing if timestep_spacing is not None else spacing)
    denoise_to_zero = spec.denoise_to_zero if denoise_to_zero is None else bool(denoise_to_zero)
    t_start = schedule.t_max if t_start is None else float(t_start)
    t_end = schedule.t_min if t_end is None else float(t_end)
    if not schedule.t_data < t_end < t_start <= schedule.t_max:
        raise ValueError(f"need t_data={schedule.t_data} < t_end={t_end} < t_start={t_start} <= t_max={schedule.t_max}")
    budget = nfe - 1 if denoise_to_zero else nfe
    orders = spec.orders(budget, order_plan, lower_order_final, denoise_to_zero, _alpha_is_zero(schedule, t_start))
    steps = sum(spec.span(o) for o in orders)  # grid intervals
    if not budget:
        times = [t_start]
    elif spec.lambda_intermediate and spacing == "logSNR":  # Lu et al.: K steps uniform in λ
        times = _singlestep_times(schedule, time_grid(schedule, len(orders), spacing, t_start, t_end), orders)
    else:
        times = time_grid(schedule, steps, spacing, t_start, t_end, evaluations=denoise_to_zero)
        if spec.lambda_intermediate and spacing not in INTEGER_SPACINGS:
            # Lu et al.'s code: outer points at the step boundaries of the NFE-point grid, inner ones in λ
            outer = [times[i] for i in np.cumsum([0, *orders])]
            times = _singlestep_times(schedule, outer, orders)
        # integer grids: every evaluation, intermediate points included, on the grid (diffusers' singlestep)
    if denoise_to_zero:
        times.append(schedule.t_data)
        orders.append(1)
    return times, orders


def evaluation_times(sampler: SamplerName, timesteps: Sequence[float], orders: Sequence[int]) -> list[float]:
    """The times at which :func:`sample` evaluates the network on the plan ``(timesteps, orders)``,
    in order (without churn; churn moves each step's first evaluation to its raised time)."""
    spec = _spec(sampler)
    out: list[float] = []
    j = 0
    for order in orders:
        if spec.layout == "corrector":
            out.extend([float(timesteps[j]), float(timesteps[j + 1])][:order])
        else:
            out.extend(float(v) for v in timesteps[j : j + (order if spec.layout == "singlestep" else 1)])
        j += spec.span(order)
    return out


# ---------------------------------------------------------------------------------------------
# Linear estimates: every update is a fixed linear combination of tensors, fused at run time
# ---------------------------------------------------------------------------------------------
class _Form(NamedTuple):
    """One evaluation's (ε̂, x̂0), linear in its input x and the tensors (y, z) it returns:
    ε̂ = ex x + ey y + ez z, x̂0 = dx x + dy y + dz z. For a Denoiser y is the network output
    (:meth:`~etsdm.denoiser.Denoiser.linear`); a model that returns (ε̂, x̂0) itself gives y = x̂0,
    z = ε̂; a clipped evaluation gives y = the clipped x̂0 (module docstring)."""

    ex: float
    ey: float
    ez: float
    dx: float
    dy: float
    dz: float

    def combo(self, a: float, b: float, c: float = 0.0) -> tuple[float, float, float]:
        """The coefficients on (x, y, z) of a x̂0 + b ε̂ + c x."""
        return a * self.dx + b * self.ex + c, a * self.dy + b * self.ey, a * self.dz + b * self.ez


_GIVEN = _Form(0.0, 0.0, 1.0, 0.0, 1.0, 0.0)  # y = x̂0, z = ε̂ as the model returned them


Lin = Callable[..., Tensor]


def _lin(*ks: float) -> Lin:
    """``f(*v) = Σ ks[n]·v[n]`` for tensors v passed positionally (v[0]: the state, in the working
    dtype), its kernels chosen here, once per plan: zero terms dropped (their v may be None); a unit
    term starts the sum as one ``add`` with the next; otherwise k0·v0 is made as v0 + (k0 - 1)·v0 (one
    ``add`` with alpha: a Python-scalar ``mul`` costs about twice as much on a CPU); every further
    term is one in-place ``add_`` with alpha (out of place where its dtype differs, e.g. a bf16
    network output, so types promote as in a plain expression). Exact up to round-off."""
    live = [(n, float(k)) for n, k in enumerate(ks) if k != 0.0]
    unit = [term for term in live if term[1] == 1.0]
    if unit:  # start from a unit term
        live.remove(unit[0])
        live.insert(0, unit[0])
    if not live:
        return lambda *v: torch.zeros_like(v[0])
    (a, ka), rest = live[0], live[1:]
    if ka == 1.0 and not rest:
        return lambda *v: v[a]
    if ka == 1.0:  # start: v[a] + k·v[b]
        (b, kb), adds = rest[0], tuple(rest[1:])
    else:  # start: v[a] + (k - 1)·v[a]
        b, kb, adds = a, ka - 1.0, tuple(rest)
    if not adds:
        return lambda *v: torch.add(v[a], v[b], alpha=kb)
    if len(adds) == 1:
        ((n1, k1),) = adds

        def one(*v: Tensor) -> Tensor:
            acc, u = torch.add(v[a], v[b], alpha=kb), v[n1]
            return acc.add_(u, alpha=k1) if u.dtype is acc.dtype else torch.add(acc, u, alpha=k1)

        return one
    if len(adds) == 2:
        (n1, k1), (n2, k2) = adds

        def two(*v: Tensor) -> Tensor:
            acc, u, w = torch.add(v[a], v[b], alpha=kb), v[n1], v[n2]
            d = acc.dtype
            if u.dtype is d and w.dtype is d:
                return acc.add_(u, alpha=k1).add_(w, alpha=k2)
            return _add_all(acc, ((u, k1), (w, k2)))

        return two
    if len(adds) == 3:
        (n1, k1), (n2, k2), (n3, k3) = adds

        def three(*v: Tensor) -> Tensor:
            acc, u, w, r = torch.add(v[a], v[b], alpha=kb), v[n1], v[n2], v[n3]
            d = acc.dtype
            if u.dtype is d and w.dtype is d and r.dtype is d:
                return acc.add_(u, alpha=k1).add_(w, alpha=k2).add_(r, alpha=k3)
            return _add_all(acc, ((u, k1), (w, k2), (r, k3)))

        return three
    return lambda *v: _add_all(torch.add(v[a], v[b], alpha=kb), tuple((v[n], k) for n, k in adds))


def _add_all(acc: Tensor, terms: Sequence[tuple[Tensor, float]]) -> Tensor:
    for u, k in terms:
        acc = acc.add_(u, alpha=k) if u.dtype is acc.dtype else torch.add(acc, u, alpha=k)
    return acc


Handle = tuple[Tensor, Tensor, "Tensor | None", _Form]  # (input x, y, z, form) of one evaluation


def _x0_of(h: Handle) -> Tensor:
    """x̂0 of an evaluation (materialised only when a callback asks for it)."""
    x, y, z, f = h
    return _lin(f.dx, f.dy, f.dz)(x, y, z)


# ---------------------------------------------------------------------------------------------
# Steps: one builder per registry entry, run once per plan; it binds the step's coefficients
# (Python floats) and returns the step itself, run per call: step(run, x) -> (x_s, handle)
# ---------------------------------------------------------------------------------------------
def _transition(p: _Point, q: _Point) -> float:
    """σ_ts²/σ_t² = 1 - e^{-2h}, h = λ_s - λ_t: the forward transition s -> t's variance
    σ_ts² = σ_t² - (α_t/α_s)² σ_s² relative to σ_t² (VP: σ_ts² = β_ts = 1 - α_t²/α_s²)."""
    return -math.expm1(-2.0 * (q.lam - p.lam))


@dataclass(frozen=True)
class Churn:
    """EDM's stochastic churn (Karras et al. 2022, Alg. 2): S_churn, S_tmin, S_tmax (in σ̃ = σ/α),
    S_noise. ``s_churn = 0`` (default) is the deterministic sampler."""

    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = math.inf
    s_noise: float = 1.0


@dataclass
class _Walk:
    """What a step builder sees (once per plan): the walked points, the options, the evaluation
    registry (``ev(point) -> (index, form)``) and a scratchpad for multistep builders."""

    pts: list[_Point]
    schedule: Schedule
    ev: Callable[[_Point], tuple[int, _Form]]
    steps: int
    eta: float = 0.0
    variance: str = "beta"
    intermediate: Intermediate = "lu"
    churn: Churn = field(default_factory=Churn)
    exact_zero: bool = False
    memory: dict[str, Any] = field(default_factory=dict)


class _Run:
    """What a step sees per sample() call: the network at evaluation point i (``ev(i, x) -> (y, z)``,
    conditions made before the loop), fresh noise, and the previous evaluation (multistep)."""

    __slots__ = ("ev", "noise", "prev")

    def __init__(self, ev: Callable[[int, Tensor], tuple[Tensor, Tensor | None]], noise: Callable[[], Tensor]):
        self.ev, self.noise = ev, noise
        self.prev: Handle | None = None


Step = Callable[[_Run, Tensor], tuple[Tensor, Handle]]
StepFn = Callable[[_Walk, int, int], Step]


def _ddim_like(w: _Walk, p: _Point, q: _Point, eta: float) -> Step:
    """DDIM (Song et al.) = DPM-Solver-1 at η = 0 (Lu et al. Eq. 3.7): x_s = α_s x̂0 + σ_s ε̂, plus
    η's noise σ̃ = η σ_s sqrt(1 - e^{-2h}) with σ_s² - σ̃² left for ε̂ (the posterior's std at η = 1).
    Exact at α_t = 0 and into the data (x̂0)."""
    i, f = w.ev(p)
    std = 0.0
    if q.sigma == 0.0:
        k = f.combo(1.0, 0.0)
    else:
        std = eta * q.sigma * math.sqrt(max(_transition(p, q), 0.0)) if eta > 0 else 0.0
        k = f.combo(q.alpha, math.sqrt(max(q.sigma**2 - std**2, 0.0)))
    if std > 0:
        noisy_update = _lin(*k, std)

        def noisy(run: _Run, x: Tensor) -> tuple[Tensor, Handle]:
            y, z = run.ev(i, x)
            return noisy_update(x, y, z, run.noise()), (x, y, z, f)

        return noisy
    update = _lin(*k)

    def step(run: _Run, x: Tensor) -> tuple[Tensor, Handle]:
        y, z = run.ev(i, x)
        return update(x, y, z), (x, y, z, f)

    return step


def _ddim_step(w: _Walk, j: int, order: int) -> Step:
    return _ddim_like(w, w.pts[j], w.pts[j + 1], w.eta)


def _ddpm_step(w: _Walk, j: int, order: int) -> Step:
    """Eq. (10) for any step t -> s: mean = α_s (σ_ts²/σ_t²) x̂0 + (α_t/α_s)(σ_s²/σ_t²) x_t, variance
    σ_ts² (η_t² = β_t, Eq. 10) or the posterior's σ_ts² σ_s²/σ_t²; the last step of Alg. A2 (into
    the data: z = 0) is x̂0 itself."""
    p, q = w.pts[j], w.pts[j + 1]
    if q.sigma == 0.0:
        return _ddim_like(w, p, q, 0.0)
    i, f = w.ev(p)
    frac = _transition(p, q)  # σ_ts²/σ_t² (VP: β_ts/σ_t², Eq. 10's β_t for consecutive steps)
    mean = f.combo(q.alpha * frac, 0.0, p.alpha / q.alpha * q.sigma**2 / p.sigma**2)
    update = _lin(*mean, math.sqrt(frac * p.sigma**2 if w.variance == "beta" else frac * q.sigma**2))

    def step(run: _Run, x: Tensor) -> tuple[Tensor, Handle]:
        y, z = run.ev(i, x)
        return update(x, y, z, run.noise()), (x, y, z, f)

    return step


def _dpm_solver_step(w: _Walk, j: int, order: int) -> Step:
    """Singlestep DPM-Solver over points [t, s1, (s2,) s] (Lu et al. 2022, Alg. 1 / 2); order 1 is
    DDIM(η = 0), the same update. With h = λ_s - λ_t, r_i = (λ_si - λ_t)/h:
    u1 = (α_s1/α_t) x - σ_s1 (e^{r1 h} - 1) ε_t;
    order 2: x_s = (α_s/α_t) x - σ_s (e^h - 1) ε_t - σ_s/(2 r1) (e^h - 1)(ε_s1 - ε_t);
    order 3: u2 = (α_s2/α_t) x - σ_s2 (e^{r2 h} - 1) ε_t - c2 (ε_s1 - ε_t) with
    c2 = σ_s2 (r2/r1)(φ(r2 h) - 1) ("lu", φ(z) = (e^z - 1)/z) or σ_s2 (r2/r1)(e^{r2 h} - 1)/2
    ("midpoint"), and x_s = (α_s/α_t) x - σ_s (e^h - 1) ε_t - σ_s/r2 (φ(h) - 1)(ε_s2 - ε_t)."""
    if order == 1:
        return _ddim_like(w, w.pts[j], w.pts[j + 1], 0.0)
    pts = w.pts[j : j + order + 1]
    p, s1, q = pts[0], pts[1], pts[-1]
    if q.sigma == 0.0:
        raise ValueError("a DPM-Solver step of order > 1 cannot land on the data (σ = 0); use order 1")
    if p.alpha == 0.0:
        raise ValueError("a DPM-Solver step of order > 1 cannot start where α = 0 (λ = -∞); use order 1 there")
    h = q.lam - p.lam
    r1 = (s1.lam - p.lam) / h
    i0, f0 = w.ev(p)
    u1 = _lin(*f0.combo(0.0, -s1.sigma * math.expm1(r1 * h), s1.alpha / p.alpha))
    i1, f1 = w.ev(s1)
    base_x, base_eps = q.alpha / p.alpha, -q.sigma * math.expm1(h)
    if order == 2:
        k = (q.sigma / (2 * r1)) * math.expm1(h)
        update = _lin(*f0.combo(0.0, base_eps + k, base_x), *f1.combo(0.0, -k))

        def step2(run: _Run, x: Tensor) -> tuple[Tensor, Handle]:
            y0, z0 = run.ev(i0, x)
            x1 = u1(x, y0, z0)
            y1, z1 = run.ev(i1, x1)
            return update(x, y0, z0, x1, y1, z1), (x, y0, z0, f0)

        return step2
    s2 = pts[2]
    r2 = (s2.lam - p.lam) / h
    if w.intermediate == "lu":  # Alg. 2: σ_s2 (r2/r1)(φ_1(r2 h) - 1)
        c2 = s2.sigma * (r2 / r1) * (math.expm1(r2 * h) / (r2 * h) - 1.0)
    else:  # diffusers' "midpoint": a DPM-Solver-2 step t -> s2 through s1
        c2 = s2.sigma * (r2 / r1) * 0.5 * math.expm1(r2 * h)
    u2 = _lin(*f0.combo(0.0, -s2.sigma * math.expm1(r2 * h) + c2, s2.alpha / p.alpha), *f1.combo(0.0, -c2))
    i2, f2 = w.ev(s2)
    k = (q.sigma / r2) * (math.expm1(h) / h - 1.0)
    update = _lin(*f0.combo(0.0, base_eps + k, base_x), *f2.combo(0.0, -k))

    def step3(run: _Run, x: Tensor) -> tuple[Tensor, Handle]:
        y0, z0 = run.ev(i0, x)
        x1 = u1(x, y0, z0)
        y1, z1 = run.ev(i1, x1)
        x2 = u2(x, y0, z0, x1, y1, z1)
        y2, z2 = run.ev(i2, x2)
        return update(x, y0, z0, x2, y2, z2), (x, y0, z0, f0)

    return step3


def _dpmpp_2m_step(w: _Walk, j: int, order: int) -> Step:
    """DPM-Solver++(2M) (Lu et al. 2022b, Alg. 2): x_s = (σ_s/σ_t) x_t - α_s (e^{-h} - 1) D with
    D = x̂0 (first step, order 1) or (1 + 1/(2r)) x̂0 - (1/(2r)) x̂0_prev, r = h_prev/h."""
    p, q = w.pts[j], w.pts[j + 1]
    i, f = w.ev(p)
    h = q.lam - p.lam
    prev = w.memory.get("form")
    coef_d = -q.alpha * math.expm1(-h)
    second = order == 2 and prev is not None
    if second:
        r = w.memory["h"] / h
        update = _lin(*f.combo(coef_d * (1 + 1 / (2 * r)), 0.0, q.sigma / p.sigma), *prev.combo(-coef_d / (2 * r), 0.0))
    else:
        update = _lin(*f.combo(coef_d, 0.0, q.sigma / p.sigma))
    w.memory["form"], w.memory["h"] = f, h

    def step(run: _Run, x: Tensor) -> tuple[Tensor, Handle]:
        y, z = run.ev(i, x)
        if second:
            xp, yp, zp, _ = run.prev
            out = update(x, y, z, xp, yp, zp)
        else:
            out = update(x, y, z)
        run.prev = (x, y, z, f)
        return out, run.prev

    return step


def _churn_point(w: _Walk, p: _Point) -> tuple[_Point, float, float]:
    """EDM Alg. 2, lines 4-5, in the scaled variables x̃ = x/α, σ̃ = σ/α: σ̃̂ = (1 + γ) σ̃,
    x̃̂ = x̃ + sqrt(σ̃̂² - σ̃²) S_noise z, back to t̂ = t_from_lambda(-ln σ̃̂) (σ̃̂ recomputed there, so a
    schedule that clamps t̂ at t_max still gets consistent noise) and x̂ = α(t̂) x̃̂. Returns (p̂, α̂/α,
    the noise's std); (p, 1, 0) where the step is not churned (γ = 0)."""
    c = w.churn
    if c.s_churn <= 0.0 or p.alpha == 0.0:
        return p, 1.0, 0.0
    sig = p.sigma / p.alpha
    gamma = min(c.s_churn / w.steps, math.sqrt(2.0) - 1.0) if c.s_tmin <= sig <= c.s_tmax else 0.0
    if gamma <= 0.0:
        return p, 1.0, 0.0
    t_hat = float(w.schedule.t_from_lambda(p.lam - math.log1p(gamma)))
    p_hat = _points(w.schedule, [t_hat], w.exact_zero)[0]
    if p_hat.alpha == 0.0 or p_hat.t <= p.t:
        return p, 1.0, 0.0
    sig_hat = p_hat.sigma / p_hat.alpha
    return p_hat, p_hat.alpha / p.alpha, p_hat.alpha * math.sqrt(max(sig_hat**2 - sig**2, 0.0)) * c.s_noise


def _heun_step(w: _Walk, j: int, order: int) -> Step:
    """Euler (order 1) or Heun (order 2) on dx/dt = α' x̂0 + σ' ε̂ (Karras et al. Alg. 1 / 2):
    x_e = x + Δt d(x, t), Heun: x_s = x + Δt/2 (d(x, t) + d(x_e, s)); the step into the data is x̂0
    (Euler's step in x/α, σ/α). Churn first raises t to t̂ (:func:`_churn_point`)."""
    p, q = w.pts[j], w.pts[j + 1]
    p_hat, a_hat, std = _churn_point(w, p)
    raised, p = p_hat is not p, p_hat
    i, f = w.ev(p)
    dt = q.t - p.t
    euler = _lin(*(f.combo(1.0, 0.0) if q.sigma == 0.0 else f.combo(dt * p.dalpha, dt * p.dsigma, 1.0)))
    churn = _lin(a_hat, std)

    def churned(run: _Run, x: Tensor) -> Tensor:
        return churn(x, run.noise()) if raised else x

    if order == 1 or q.sigma == 0.0:

        def step(run: _Run, x: Tensor) -> tuple[Tensor, Handle]:
            x = churned(run, x)
            y, z = run.ev(i, x)
            return euler(x, y, z), (x, y, z, f)

        return step
    i2, f2 = w.ev(q)
    half = 0.5 * dt
    update = _lin(*f.combo(half * p.dalpha, half * p.dsigma, 1.0), *f2.combo(half * q.dalpha, half * q.dsigma))

    def heun(run: _Run, x: Tensor) -> tuple[Tensor, Handle]:
        x = churned(run, x)
        y, z = run.ev(i, x)
        xe = euler(x, y, z)
        y2, z2 = run.ev(i2, xe)
        return update(x, y, z, xe, y2, z2), (x, y, z, f)

    return heun


# ---------------------------------------------------------------------------------------------
# The registry: name -> what plan() and sample() need to know about a sampler
# ---------------------------------------------------------------------------------------------
Layout = Literal["singlestep", "multistep", "corrector"]


@dataclass(frozen=True)
class SamplerSpec:
    """One sampler. Adding a sampler is one :data:`SAMPLER_REGISTRY` entry and its step function.

    Attributes:
        max_order: the highest per-step order it takes.
        step: ``step(walk, j, order) -> Step``: builds the step from grid point j, once per plan:
            registers its evaluation points (``walk.ev(point) -> (index, form)``), computes its
            coefficients (Python floats) and returns ``Step(run, x) -> (x_next, handle)``, which
            evaluates the model (``run.ev(index, x)``), updates x with fused tensor ops
            (:func:`_lin`) and hands back its first evaluation (the callback's x̂0).
        orders: ``orders(budget, order_plan, lower_order_final, denoise_to_zero, zero_start)``: per-step
            orders spending ``budget`` evaluations (the final step into the data not included).
        layout: ``"singlestep"`` (an order-k step covers k grid intervals with k evaluations),
            ``"multistep"`` (one interval, one evaluation, order = past evaluations used) or
            ``"corrector"`` (one interval, k evaluations: at its start and, for k = 2, at its end).
        denoise_to_zero: the default of ``denoise_to_zero`` (its last step lands on the data).
        lambda_intermediate: a step's intermediate points sit at fixed fractions of the step in λ on
            float grids (singlestep DPM-Solver, Lu et al.'s code).
        churn: takes EDM's stochastic churn options (``s_churn`` ...).
    """

    max_order: int
    step: StepFn
    orders: Callable[..., list[int]] = _first_order_plan
    layout: Layout = "singlestep"
    denoise_to_zero: bool = False
    lambda_intermediate: bool = False
    churn: bool = False

    def span(self, order: int) -> int:
        """Grid intervals one step of this order covers."""
        return order if self.layout == "singlestep" else 1

    def cost(self, order: int) -> int:
        """Network evaluations one step of this order spends."""
        return 1 if self.layout == "multistep" else order


SAMPLER_REGISTRY: dict[str, SamplerSpec] = {
    "ddpm": SamplerSpec(1, _ddpm_step, denoise_to_zero=True),
    "ddim": SamplerSpec(1, _ddim_step, denoise_to_zero=True),
    "dpm-solver-1": SamplerSpec(1, _dpm_solver_step),
    "dpm-solver-2": SamplerSpec(2, _dpm_solver_step, _singlestep_plan(2), lambda_intermediate=True),
    "dpm-solver-3": SamplerSpec(3, _dpm_solver_step, _singlestep_plan(3), lambda_intermediate=True),
    "dpm-solver++2m": SamplerSpec(2, _dpmpp_2m_step, _multistep_plan, layout="multistep"),
    "euler": SamplerSpec(1, _heun_step, denoise_to_zero=True, churn=True),
    "heun": SamplerSpec(2, _heun_step, _heun_plan, layout="corrector", denoise_to_zero=True, churn=True),
}
SAMPLERS: tuple[str, ...] = tuple(SAMPLER_REGISTRY)
MAX_ORDER: dict[str, int] = {name: spec.max_order for name, spec in SAMPLER_REGISTRY.items()}


def _spec(sampler: str) -> SamplerSpec:
    spec = SAMPLER_REGISTRY.get(sampler)
    if spec is None:
        raise ValueError(f"unknown sampler {sampler!r}; allowed: {', '.join(SAMPLERS)}")
    return spec


# ---------------------------------------------------------------------------------------------
# x̂0 clipping and the per-point evaluation
# ---------------------------------------------------------------------------------------------
def _quantile_rows(v: Tensor, q: float) -> Tensor:
    """Per-row linear-interpolation quantile (torch.quantile's rule) without its input-size limit."""
    n = v.shape[1]
    pos = q * (n - 1)
    lo = int(math.floor(pos))
    a = v.kthvalue(lo + 1, dim=1).values
    b = v.kthvalue(min(lo + 2, n), dim=1).values
    return a + (pos - lo) * (b - a)


def clip_x0(x0: Tensor, clip: Clip) -> Tensor:
    """``"static"``: clamp to [-1, 1] (ADM's clip_denoised); ``"dynamic"``: Saharia et al.'s dynamic
    thresholding, s = max(1, percentile_0.995 |x̂0|) per sample, x̂0 = clamp(x̂0, -s, s) / s."""
    if clip == "none":
        return x0
    if clip == "static":
        return x0.clamp(-1.0, 1.0)
    flat = x0.detach().abs().reshape(x0.shape[0], -1)
    s = _quantile_rows(flat.float() if flat.dtype in (torch.float16, torch.bfloat16) else flat, DYNAMIC_PERCENTILE)
    s = s.clamp(min=1.0).to(x0.dtype).reshape(-1, *([1] * (x0.ndim - 1)))
    return torch.maximum(torch.minimum(x0, s), -s) / s


def _prediction(model: Any) -> str:
    return str(getattr(model, "prediction", "eps"))


# A Denoiser that overrides none of these evaluates as net(scale·x, c) with its linear conversion
_DENOISER_EVALUATION = ("estimate", "net_output", "coefficients", "_derivatives", "_edm_coefficients",
                        "_convert", "_net_input", "linear")
Mode = Literal["denoiser", "estimate", "eps"]


def _mode(model: Any) -> Mode:
    """How :func:`sample` evaluates ``model``: ``"denoiser"`` (a Denoiser evaluating as its own
    class does: conditions from :meth:`~etsdm.denoiser.Denoiser.conditions` before the loop, then
    ``net(scale·x, c)`` and its :meth:`~etsdm.denoiser.Denoiser.linear` conversion), ``"estimate"``
    (any other model with ``estimate(x, t, **cond)``, a Denoiser subclass overriding its evaluation
    included: called as is) or ``"eps"`` (a plain ε-callable ``model(x, t, **cond)``)."""
    if isinstance(model, Denoiser):
        cls, own = type(model), model.__dict__
        if all(getattr(cls, n) is f and n not in own for n, f in _DENOISER_OWN.items()):  # nor patched
            return "denoiser"
    return "estimate" if callable(getattr(model, "estimate", None)) else "eps"


_DENOISER_OWN = {n: getattr(Denoiser, n) for n in _DENOISER_EVALUATION}  # as defined, before any patch


def _forms(model: Any, mode: Mode, p: _Point, exact_zero: bool, clip: Clip) -> tuple[_Form, _Form, float, bool]:
    """At one evaluation point: the form of what the model returns, the form after clipping, the
    network input scale and whether α = 0 exactly there (module docstring)."""
    exact, scale = exact_zero and p.alpha == 0.0, 1.0
    if exact:  # α = 0 exactly (only v / x0 / flow Denoisers get such points): x = σ ε, so ε̂ = x/σ
        prediction = _prediction(model)
        if prediction == "v":  # v = α ε - σ x0 = -σ x0
            raw = _Form(1.0 / p.sigma, 0.0, 0.0, 0.0, -1.0 / p.sigma, 0.0)
        elif prediction == "flow":  # u = α' x0 + σ' ε: x0 = (u - (σ'/σ) x)/α'
            raw = _Form(1.0 / p.sigma, 0.0, 0.0, -(p.dsigma / p.sigma) / p.dalpha, 1.0 / p.dalpha, 0.0)
        else:
            raw = _Form(1.0 / p.sigma, 0.0, 0.0, 0.0, 1.0, 0.0)
    elif mode == "denoiser":
        lin = model.linear(p.alpha, p.sigma, p.dalpha, p.dsigma)
        raw, scale = _Form(lin.eps_x, lin.eps_out, 0.0, lin.x0_x, lin.x0_out, 0.0), lin.scale
    elif mode == "eps":  # x̂0 = (x - σ ε̂)/α
        raw = _Form(0.0, 1.0, 0.0, 1.0 / p.alpha, -p.sigma / p.alpha, 0.0)
    else:
        raw = _GIVEN
    # clipped: y = clip(x̂0), ε̂ = (x - α y)/σ consistent with it
    post = raw if clip == "none" else _Form(1.0 / p.sigma, -p.alpha / p.sigma, 0.0, 0.0, 1.0, 0.0)
    return raw, post, scale, exact


@dataclass(frozen=True)
class _Plan:
    """Everything of a sample() call that depends on neither the noise nor the network's weights,
    made once per plan (:func:`_plan_for`): the steps with their coefficients bound, each step's
    (t, s), and the distinct evaluation points (time, x̂0 from the model's result, network input
    scale, α = 0 exactly)."""

    steps: list[Step]
    spans: list[tuple[float, float]]
    times: list[float]
    times_f64: Tensor  # the same, for one condition-map call
    x0: list[Lin]  # x̂0 of the model's result at each point (for clipping)
    inputs: list[Lin | None]  # the network input scale·x where scale != 1 (EDM's c_in/α)
    exact: list[bool]
    zero_start: bool


def _build_plan(model: Any, mode: Mode, schedule: Schedule, sampler: str, timesteps: Sequence[float],
                orders: list[int], clip: Clip, exact_zero: bool, **options: Any) -> _Plan:
    spec = _spec(sampler)
    pts = _points(schedule, timesteps, exact_zero)
    index: dict[float, int] = {}
    times: list[float] = []
    raw: list[_Form] = []
    post: list[_Form] = []
    scales: list[float] = []
    exact: list[bool] = []

    def ev(p: _Point) -> tuple[int, _Form]:
        i = index.get(p.t)
        if i is None:
            r, f, s, e = _forms(model, mode, p, exact_zero, clip)
            i = index[p.t] = len(times)
            times.append(p.t)
            raw.append(r)
            post.append(f)
            scales.append(s)
            exact.append(e)
        return i, post[i]

    walk = _Walk(pts, schedule, ev, len(orders), exact_zero=exact_zero, **options)
    steps, spans, j = [], [], 0
    for order in orders:
        steps.append(spec.step(walk, j, order))
        spans.append((pts[j].t, pts[j + spec.span(order)].t))
        j += spec.span(order)
    x0 = [_lin(f.dx, f.dy, f.dz) for f in raw]
    inputs = [None if scale == 1.0 else _lin(scale) for scale in scales]
    with torch.inference_mode(False):  # a normal tensor even in inference mode: it has a version counter
        times_f64 = torch.tensor(times, dtype=torch.float64)
    return _Plan(steps, spans, times, times_f64, x0, inputs, exact,
                 _alpha_is_zero(schedule, pts[0].t))


_PLANS: OrderedDict[tuple, tuple[weakref.ref, _Plan]] = OrderedDict()
_PLANS_LOCK = threading.Lock()
PLAN_CACHE_SIZE = 64


def _plan_for(schedule: Schedule, key: tuple | None, build: Callable[[], _Plan]) -> _Plan:
    """The plan for ``key`` on this schedule object, built once and kept (least recently used of
    :data:`PLAN_CACHE_SIZE` dropped). Schedules are treated as immutable; a key names everything
    else the plan depends on (sample()'s arguments and how the model converts)."""
    if key is None:
        return build()
    with _PLANS_LOCK:
        hit = _PLANS.get(key)
        if hit is not None and hit[0]() is schedule:
            _PLANS.move_to_end(key)
            return hit[1]
    built = build()
    with _PLANS_LOCK:
        _PLANS[key] = (weakref.ref(schedule), built)
        while len(_PLANS) > PLAN_CACHE_SIZE:
            _PLANS.popitem(last=False)
    return built


def _model_key(model: Any, mode: Mode) -> tuple:
    """What a plan's forms depend on besides the schedule: the Denoiser's conversion (class,
    prediction, σ_data, process kind), or for other models their prediction attribute."""
    if mode == "denoiser":
        return mode, type(model), model.prediction, model.sigma_data, model.schedule.kind
    return mode, _prediction(model), callable(getattr(model, "net_output", None))


def _evaluations(model: Any, mode: Mode, plan: _Plan, x: Tensor, clip: Clip,
                 cond: dict[str, Tensor]) -> Callable[[int, Tensor], tuple[Tensor, Tensor | None]]:
    """Evaluation point i -> (y, z) of its form, for one sample() call. A Denoiser's conditions are
    made here, before the loop (one condition-map call for all points); ``cond`` (the network's
    keyword inputs) is bound here to every call the model makes (nothing bound when empty)."""
    times = plan.times
    if mode == "denoiser":
        net, conds, inputs = _bind(model.net, cond), model.conditions(plan.times_f64, x), plan.inputs

        def raw(i: int, x: Tensor) -> tuple[Tensor, Tensor | None]:
            return net(x, conds[i]), None

        def scaled(i: int, x: Tensor) -> tuple[Tensor, Tensor | None]:
            scale = inputs[i]
            return net(x if scale is None else scale(x), conds[i]), None

        raw = scaled if any(inputs) else raw

    elif mode == "eps":
        eps_model = _bind(model, cond)

        def raw(i: int, x: Tensor) -> tuple[Tensor, Tensor | None]:
            return eps_model(x, times[i]), None

    else:
        exact, estimate = plan.exact, _bind(model.estimate, cond)
        net_output = _bind(model.net_output, cond) if any(exact) else None

        def raw(i: int, x: Tensor) -> tuple[Tensor, Tensor | None]:
            if exact[i]:
                return net_output(x, times[i]), None
            est = estimate(x, times[i])
            return est.x0, est.eps

    if clip == "none":
        return raw
    x0s = plan.x0

    def clipped(i: int, x: Tensor) -> tuple[Tensor, Tensor | None]:
        y, z = raw(i, x)
        return clip_x0(x0s[i](x, y, z), clip), None

    return clipped


def _bind(fn: Callable[..., Tensor], cond: dict[str, Tensor]) -> Callable[..., Tensor]:
    """``fn`` with the network's keyword inputs bound (``fn`` itself when there are none: the
    unconditional path is the same call as before)."""
    return functools.partial(fn, **cond) if cond else fn


# ---------------------------------------------------------------------------------------------
# The public entry point
# ---------------------------------------------------------------------------------------------
def _check_plan(sampler: str, timesteps: Sequence[float], orders: Sequence[int], t_data: float | None = None) -> None:
    """A replayed plan must decrease strictly and its orders must fit the sampler and cover the grid;
    a multistep or corrector step into the data (t_data: σ = 0, h = +∞; DPM-Solver++(2M)'s r = 0,
    Heun's end-point evaluation at σ = 0) is first order."""
    spec = _spec(sampler)
    if len(timesteps) < 2 or any(b >= a for a, b in zip(timesteps, timesteps[1:], strict=False)):
        raise ValueError(f"timesteps must be at least 2 strictly decreasing times, got {list(timesteps)}")
    if any(o < 1 or o > spec.max_order for o in orders):
        raise ValueError(f"orders {list(orders)}: {sampler} takes orders 1..{spec.max_order}")
    if sum(spec.span(o) for o in orders) != len(timesteps) - 1:
        raise ValueError(f"orders {list(orders)} do not cover the {len(timesteps) - 1} steps of timesteps")
    if spec.layout != "singlestep" and t_data is not None:
        if any(o > 1 and t <= t_data for o, t in zip(orders, timesteps[1:], strict=True)):
            raise ValueError(f"orders {list(orders)}: {sampler}'s step into the data (t = {t_data:g}, σ = 0) "
                             "takes order 1")


def _check_options(variance: str, third_order_intermediate: str, eta: float, clip: str, order_plan: str) -> None:
    if variance not in ("beta", "posterior"):
        raise ValueError(f"variance must be 'beta' or 'posterior', got {variance!r}")
    if third_order_intermediate not in ("lu", "midpoint"):
        raise ValueError(f"third_order_intermediate must be 'lu' or 'midpoint', got {third_order_intermediate!r}")
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    if clip not in CLIPS:
        raise ValueError(f"clip must be one of {', '.join(CLIPS)}, got {clip!r}")
    if order_plan not in ORDER_PLANS:
        raise ValueError(f"order_plan must be one of {', '.join(ORDER_PLANS)}, got {order_plan!r}")


def _check_churn(sampler: str, churn: Churn) -> None:
    if not (churn.s_churn >= 0 and churn.s_noise >= 0 and 0 <= churn.s_tmin <= churn.s_tmax):
        raise ValueError(f"churn needs s_churn >= 0, s_noise >= 0 and 0 <= s_tmin <= s_tmax, got {churn}")
    if churn.s_churn > 0 and not _spec(sampler).churn:
        allowed = ", ".join(name for name, spec in SAMPLER_REGISTRY.items() if spec.churn)
        raise ValueError(f"s_churn (EDM's stochastic churn) applies to {allowed}; not {sampler!r}")


def _warn_eps_at_zero_snr(model: Any, zero_start: bool) -> None:
    if zero_start and _prediction(model) == "eps":  # α only reaches the floor at the start
        warnings.warn(
            "ε-prediction where α² is at its floor 2^-24 (zero terminal SNR; cosine's end): x̂0 = (x - σ ε̂)/α "
            "uses α = 2^-12, so ε̂'s errors are amplified ~4096x and results depend on the floor; use "
            "v-prediction (Lin et al. 2023)",
            stacklevel=3,
        )


def sample(
    model: Callable[[Tensor, float], Tensor],
    noise: Tensor,
    schedule: Schedule,
    sampler: SamplerName = "ddim",
    nfe: int = 50,
    *,
    timestep_spacing: Spacing | None = None,
    eta: float = 0.0,
    variance: Literal["beta", "posterior"] = "beta",
    denoise_to_zero: bool | None = None,
    order_plan: OrderPlan = "lu",
    lower_order_final: bool = True,
    third_order_intermediate: Intermediate = "lu",
    clip: Clip = "none",
    t_start: float | None = None,
    t_end: float | None = None,
    timesteps: Sequence[float] | None = None,
    orders: Sequence[int] | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = math.inf,
    s_noise: float = 1.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
    callback: Callable[[StepInfo], None] | None = None,
    spacing: Spacing | None = None,
    cond: Cond | None = None,
) -> Tensor:
    """Draw samples by integrating the reverse process from ``noise`` (x at ``t_start``).

    Args:
        model: a :class:`~etsdm.denoiser.Denoiser` or any callable ``model(x, t, **cond) -> ε`` with
            t a Python float in the schedule's time.
        noise: x at t_start, e.g. ``init_noise_sigma(schedule) * torch.randn(shape, generator=g)``
            (:func:`init_noise_sigma`: 1 for VP, σ_max for EDM); its dtype is the working dtype.
        schedule: the noise schedule (process) the model was trained with.
        sampler: ``ddpm``, ``ddim``, ``dpm-solver-1/2/3``, ``dpm-solver++2m``, ``euler`` or ``heun``
            (:data:`SAMPLERS`).
        nfe: number of network evaluations, exactly.
        timestep_spacing: discrete schedules: ``linspace`` (default), ``leading``, ``trailing``
            (integer timesteps, diffusers' rounding) or the float grids ``fractional`` (uniform in t,
            the official dpm-solver behaviour), ``logSNR``, ``time-quadratic``, ``karras``;
            continuous: ``time-uniform`` (default; EDM: ``karras``), ``logSNR``, ``time-quadratic``,
            ``karras`` (Karras et al.'s ρ = 7 grid in σ/α). ``spacing``: older name.
        eta: DDIM's η (0 = deterministic). variance: DDPM's β (Eq. 10) or posterior variance.
        denoise_to_zero: spend the last evaluation on x̂0 at t_end (lands on the data); None: on
            for ddpm / ddim / euler / heun, off for the DPM-Solvers (Lu et al.).
        order_plan: ``"lu"`` (Lu et al. Sec. 3.4) or ``"diffusers"`` (lower-order-final list).
        lower_order_final: DPM-Solver++(2M) takes a first-order last step when NFE < 15.
        third_order_intermediate: DPM-Solver-3's rule for u2: ``"lu"`` (Lu et al. Alg. 2) or
            ``"midpoint"`` (diffusers' singlestep scheduler); see the module docstring.
        clip: x̂0 at every evaluation: ``"none"`` (default), ``"static"`` ([-1, 1]) or ``"dynamic"``
            (Saharia et al., percentile 0.995).
        t_start, t_end: first and last noisy time (defaults: ``schedule.t_max``, ``schedule.t_min``).
        timesteps, orders: replay an explicit plan instead (see module doc; overrides nfe, spacing,
            t_start, t_end, denoise_to_zero, order_plan; orders default to all 1).
        s_churn, s_tmin, s_tmax, s_noise: EDM's stochastic churn (Alg. 2) for ``euler`` / ``heun``;
            s_tmin, s_tmax bound σ/α (EDM: σ); ``s_churn = 0`` (default): deterministic.
        generator: randomness for ancestral / η > 0 / churn noise.
        progress: show a progress bar. callback: called with a :class:`StepInfo` after each step.
        cond: the network's keyword inputs (``labels``, ``lowres``), one row per row of ``noise``,
            handed to every network evaluation: ``net(x, c, **cond)`` for a Denoiser,
            ``model.estimate(x, t, **cond)`` / ``model(x, t, **cond)`` otherwise. None / empty:
            the unconditional call.

    Raises:
        ValueError: unknown sampler, spacing, variance, clip, order plan or intermediate rule; nfe < 1;
            η < 0; churn options out of range or given to a sampler without churn; a time range
            outside (t_data, t_max]; an integer spacing with more steps than timesteps; a replayed
            plan that does not fit (see :func:`_check_plan`); a cond value that is not a tensor
            with one row per row of ``noise``.
    """
    _check_options(variance, third_order_intermediate, eta, clip, order_plan)
    cond = check_cond(cond, noise.shape[0], "sample")
    churn = Churn(float(s_churn), float(s_tmin), float(s_tmax), float(s_noise))
    _check_churn(sampler, churn)
    mode = _mode(model)
    exact_zero = _prediction(model) in EXACT_ZERO_PREDICTIONS and callable(getattr(model, "net_output", None))
    chosen = timestep_spacing if timestep_spacing is not None else spacing
    step_options = {"eta": float(eta), "variance": variance, "intermediate": third_order_intermediate, "churn": churn}

    def build() -> _Plan:
        times, steps = timesteps, orders
        if times is None:
            times, steps = plan(schedule, sampler, nfe, timestep_spacing=chosen, t_start=t_start, t_end=t_end,
                                denoise_to_zero=denoise_to_zero, order_plan=order_plan,
                                lower_order_final=lower_order_final)
        steps = list(steps if steps is not None else [1] * (len(times) - 1))
        _check_plan(sampler, times, steps, schedule.t_data)
        return _build_plan(model, mode, schedule, sampler, times, steps, clip, exact_zero, **step_options)

    key: tuple | None = (
        id(schedule), sampler, nfe, chosen, t_start, t_end, denoise_to_zero, order_plan, lower_order_final, clip,
        None if timesteps is None else tuple(float(t) for t in timesteps),
        None if orders is None else tuple(orders), *step_options.values(), _model_key(model, mode),
    )
    try:
        hash(key)
    except TypeError:  # an unusual argument: no caching (plan() reports what is wrong with it)
        key = None
    prepared = _plan_for(schedule, key, build)
    _warn_eps_at_zero_snr(model, prepared.zero_start)
    shape, device, dtype = noise.shape, noise.device, noise.dtype

    def draw() -> Tensor:
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)

    run = _Run(_evaluations(model, mode, prepared, noise, clip, cond), draw)
    x = noise
    if callback is None and not progress:
        for step in prepared.steps:
            x, _ = step(run, x)
        return x
    walk = tqdm(prepared.steps, desc=sampler, leave=False) if progress else prepared.steps
    for i, step in enumerate(walk):
        x, handle = step(run, x)
        if callback is not None:
            t, s = prepared.spans[i]
            callback(StepInfo(i, t, s, x, _x0_of(handle)))
    return x


def describe(
    schedule: Schedule,
    sampler: SamplerName,
    nfe: int,
    *,
    timestep_spacing: Spacing | None = None,
    denoise_to_zero: bool | None = None,
    order_plan: OrderPlan = "lu",
    lower_order_final: bool = True,
    clip: Clip = "none",
    t_start: float | None = None,
    t_end: float | None = None,
    spacing: Spacing | None = None,
    **options: Any,
) -> dict[str, Any]:
    """The conventions a :func:`sample` call with these arguments uses, resolved, for result tables:
    sampler, NFE, grid convention, final-step option, order plan, clipping, the walked timesteps
    and per-step orders, and any other sampler options (η, variance, churn, ...) as given."""
    chosen = timestep_spacing if timestep_spacing is not None else spacing
    times, orders = plan(
        schedule,
        sampler,
        nfe,
        timestep_spacing=chosen,
        t_start=t_start,
        t_end=t_end,
        denoise_to_zero=denoise_to_zero,
        order_plan=order_plan,
        lower_order_final=lower_order_final,
    )
    if clip not in CLIPS:
        raise ValueError(f"clip must be one of {', '.join(CLIPS)}, got {clip!r}")
    return {
        "sampler": sampler,
        "nfe": nfe,
        "timestep_spacing": resolve_spacing(schedule, chosen),
        "integer_timesteps": all(float(t).is_integer() for t in times[:-1]) and not schedule.continuous,
        "denoise_to_zero": default_denoise_to_zero(sampler) if denoise_to_zero is None else bool(denoise_to_zero),
        "order_plan": order_plan,
        "orders": orders,
        "timesteps": times,
        "clip": clip,
        **options,
    }
