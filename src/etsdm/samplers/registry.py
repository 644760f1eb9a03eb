"""The sampler registry (name -> :class:`SamplerSpec`: its maximum order, how it splits an NFE
budget into per-step orders, how a step lays out on the grid, its step builder) and the plan a
sampler walks for an NFE budget (:func:`plan`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..schedules import Schedule
from .grids import (
    INTEGER_SPACINGS,
    OrderPlan,
    Spacing,
    _alpha_is_zero,
    _singlestep_times,
    resolve_spacing,
    singlestep_orders,
    time_grid,
)
from .steps import StepFn, _ddim_step, _ddpm_step, _dpm_solver_step, _dpmpp_2m_step, _heun_step

SamplerName = Literal[
    "ddpm", "ddim", "dpm-solver-1", "dpm-solver-2", "dpm-solver-3", "dpm-solver++2m", "euler", "heun"
]


# ---------------------------------------------------------------------------------------------
# Per-sampler order plans: how each sampler splits an NFE budget into per-step orders
# ---------------------------------------------------------------------------------------------
def _first_order_plan(budget: int, order_plan: str, lower_order_final: bool, denoise_to_zero: bool,
                      zero_start: bool) -> list[int]:
    """Every evaluation a first-order step (DDPM, DDIM, DPM-Solver-1, Euler)."""
    return [1] * budget


def _singlestep_plan(order: int) -> Callable[..., list[int]]:
    """DPM-Solver-k: Lu et al.'s split (or diffusers'); at λ = -∞ one DDIM step first (:mod:`etsdm.samplers`)."""

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
    """Heun steps of 2 evaluations; an odd budget ends with one Euler step (:mod:`etsdm.samplers`)."""
    return [2] * (budget // 2) + [1] * (budget % 2)


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


def default_denoise_to_zero(sampler: str) -> bool:
    """DDPM / DDIM / Euler / Heun land on the data (Ho et al. Alg. 2, Song et al., Karras et al.
    Alg. 1); the DPM-Solvers stop at t_end (Lu et al.)."""
    spec = SAMPLER_REGISTRY.get(sampler)
    return spec.denoise_to_zero if spec is not None else False


# ---------------------------------------------------------------------------------------------
# The plan a sampler walks
# ---------------------------------------------------------------------------------------------
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
    ``denoise_to_zero`` None: :func:`default_denoise_to_zero`. See :mod:`etsdm.samplers`.
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
