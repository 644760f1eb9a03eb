"""Lipschitz constants of the network with respect to time: K(t, t′) of Eq. (8).

    K(t, t′) = E_{x_t}[ ‖f_θ(x_t, t) − f_θ(x_t, t′)‖₂ ] / Δt,   t′ = t + Δt,

with x_t = α_t x_0 + σ_t ε drawn from the forward process (Eq. 1) of the model's own data, and
the *same* x_t fed at t and at t′. ‖·‖₂ is the Euclidean norm of the whole example (all pixels).

What f_θ is (``output``):

* ``"net"`` (default): the network's own output — ε_θ for an ε-model (Eq. 8 as written), v_θ
  for a v-model (Fig. A5), x0_θ for an x0-model. A plain callable counts as an ε-network.
* ``"eps"``, ``"v"``, ``"x0"``: that quantity, converted from the network output with the
  schedule at the *physical* times t and t′ (ε = σ_t x + α_t v, ...). A conversion adds the
  change of α_t, σ_t to K even where the network output is constant (an E-TSDM v-model has
  K ≈ 0.02 of ε inside a shared sub-interval), so it measures the schedule as well as the net.

The unit of K (``scale``):

* ``"step"`` (default): per discrete-equivalent timestep, K = ‖Δf‖ / (Δt · s) with s = 1 in
  discrete time and s = T in continuous time (t ∈ [0, 1], one step = 1/T). Discrete (Fig. 1b)
  and continuous (Fig. A1) curves are then on one axis, as the paper draws them.
* ``"time"``: per unit of the schedule's own time (‖Δf‖ / Δt): the same in discrete time, T
  times the per-step value in continuous time.

Conventions:

* t is the schedule's physical time: integer timesteps 0..T-1 in discrete time (Δt = 1 by
  default, t′ = t + 1), t in [0, 1] in continuous time (Δt = 1/T by default). The model is
  called through its Denoiser at physical time, so its condition map applies: with the default
  ``output="net"`` an E-TSDM model (any prediction type) receives the same condition at t and
  t′ inside a shared sub-interval, sees the same x_t, and so gives exactly K = 0 there (for a
  network whose output for an example does not depend on the rest of its batch).
* Cost, exactly: every (time t, data sample) pair needs two network evaluations, f(x_t, t) and
  f(x_t, t′), on the same x_t. Nothing can be shared between consecutive t even when t′ of one
  is the next t, because x_t is redrawn from q(x_t | x_0) at every t (x_{t+1} ≠ x_t). So a curve
  over M times with N samples costs 2·N·M example-evaluations, packed into ⌈2NM / B⌉ network
  calls of batch B (all full except the last); :class:`LipschitzCurve` records both counts.
* Per curve, not per call (issue 11): α_t, σ_t, the network's conditions at every t and t′ (one
  condition-map call on all 2M times) and the coefficients of a conversion (:meth:`Denoiser.linear`
  at each time) are made once; a network call then costs the network and a few gathers, so that a
  curve costs ~the bare forwards it needs (bench/lipschitz.py). A conversion is evaluated in float64
  as f = a_τ x + b_τ out (the Denoiser at a fixed time is linear in (x, out)); a Denoiser subclass
  that overrides an output method (``net_output``, ``estimate``, ...) is called through it instead.
* Conditional models (issue 10): ``cond`` holds the network's keyword inputs (class labels, the
  low-resolution image) with one row per x_0 row; each (t, sample) pair gets its sample's row, at
  t and at t′ alike, so K differentiates in time only.
* ``shared_noise=True`` (default) reuses one (x_0, ε) pair per sample for every t (common random
  numbers): each t is still an exact forward-process draw, and the curve is smoother across t.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..analytic import Float64Denoiser, time_from_net
from ..conditioning import TimestepSharing
from ..denoiser import Cond, Denoiser, Linear, check_cond, cond_rows
from ..schedules import Schedule

EpsFn = Callable[..., Tensor]  # fn(x, t, **cond) at physical time t

OUTPUTS: tuple[str, ...] = ("net", "eps", "v", "x0")  # what K differentiates (module docstring)
SCALES: tuple[str, ...] = ("step", "time")  # the unit of K (module docstring)


def _denoiser(model: Any) -> Denoiser | None:
    den = model if isinstance(model, Denoiser) else getattr(model, "denoiser", None)
    return den if isinstance(den, Denoiser) else None


class _PhysicalTime(torch.nn.Module):
    """A plain callable ``model(x, t, **cond) -> ε`` at physical time t as a network ``net(x, c, **cond)``."""

    def __init__(self, model: Callable[..., Tensor], schedule: Schedule):
        super().__init__()
        self.model, self.schedule = model, schedule

    def forward(self, x: Tensor, c: Tensor, **cond: Tensor) -> Tensor:
        return self.model(x, time_from_net(self.schedule, c), **cond)


def as_denoiser(model: Any, schedule: Schedule | None = None) -> Denoiser:
    """The one adapter from anything measurable to a Denoiser: a Denoiser itself, a loaded run's
    ``.denoiser``, or a plain callable ε(x, t) at physical time t as an ε-Denoiser of ``schedule``
    (it gets t back exactly: the condition reaches it in float64), so that every conversion
    (ε, x0, v) is the Denoiser's own.

    Raises:
        TypeError: not a Denoiser, loaded model or callable. ValueError: a callable without schedule.
    """
    den = _denoiser(model)
    if den is not None:
        return den
    if not callable(model):
        raise TypeError(f"expected a Denoiser, a loaded model or a callable eps(x, t); got {type(model).__name__}")
    if schedule is None:
        raise ValueError("a plain ε-callable needs its schedule to be converted (to x0, v)")
    return Float64Denoiser(_PhysicalTime(model, schedule), schedule, "eps")


def as_eps_fn(model: Any) -> EpsFn:
    """An ε-function ``(x, t) -> ε`` at physical time t from a Denoiser, a loaded run (anything
    with a ``.denoiser``) or a plain callable model(x, t) -> ε (e.g. GaussianMixture.eps_model)."""
    den = _denoiser(model)
    if den is not None:
        # an ε-network's output is ε itself: skip the conversion (and its α, σ lookups)
        return den.net_output if den.prediction == "eps" else den.eps
    if callable(model):
        return model
    raise TypeError(f"expected a Denoiser, a loaded model or a callable eps(x, t); got {type(model).__name__}")


def as_x0_fn(model: Any, schedule: Schedule | None = None) -> EpsFn:
    """A function ``(x, t) -> x̂0`` from a Denoiser / loaded run, or from an ε-callable and its
    schedule (:func:`as_denoiser`: x̂0 = (x − σ_t ε) / α_t by the Denoiser)."""
    den = _denoiser(model)
    if den is None and schedule is None:
        raise ValueError("as_x0_fn: a plain ε-callable needs its schedule to convert ε to x0")
    den = as_denoiser(model, schedule)
    return den.net_output if den.prediction == "x0" else den.x0


def as_output_fn(model: Any, output: str = "net", schedule: Schedule | None = None) -> tuple[EpsFn, str, bool]:
    """The function K differentiates, the name of its quantity ("eps", "v", "x0", "edm" or "flow")
    and whether it is the network's own output (True) or a conversion of it at physical time (False).

    ``output="net"``: the network's own output (a plain callable counts as an ε-network);
    ``"eps"`` / ``"v"`` / ``"x0"``: that quantity, converted where the network predicts another.

    Raises:
        ValueError: an unknown ``output``, or a plain callable converted without its schedule.
    """
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
    den = _denoiser(model)
    if den is None and output in ("net", "eps"):
        return as_eps_fn(model), "eps", True
    if den is None and schedule is None:
        raise ValueError(f"output={output!r}: a plain ε-callable needs its schedule for the conversion")
    den = as_denoiser(model, schedule)
    wanted = den.prediction if output == "net" else output
    if wanted == den.prediction:
        return den.net_output, wanted, True
    return {"eps": den.eps, "v": den.v, "x0": den.x0}[wanted], wanted, False


def steps_per_unit(schedule: Schedule) -> float:
    """Discrete-equivalent steps per unit of the schedule's time: 1 discrete, T continuous."""
    return float(schedule.T) if schedule.continuous else 1.0


def k_unit(schedule: Schedule, scale: str = "step") -> str:
    """A sentence stating the unit of K for this schedule and ``scale`` (for JSON and plots)."""
    if not schedule.continuous:
        return "per timestep (Δt in timesteps)"
    if scale == "step":
        return f"per discrete-equivalent step: ‖Δf‖ / (Δt·T), T = {schedule.T} (continuous t, one step = 1/T)"
    return f"per unit of continuous time t ∈ [0, 1]: ‖Δf‖ / Δt (= T = {schedule.T} × the per-step value)"


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
    (default 0 discrete, Δt continuous, σ_min for EDM) to ``t_end`` (default t_max − Δt), every ``stride``-th;
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
    start = (0.0 if not schedule.continuous else max(dt, schedule.t_min if schedule.kind == "edm" else dt)
             ) if t_start is None else float(t_start)  # EDM: from σ_min (its c_noise is -∞ at σ = 0)
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


def lipschitz_cost(n_samples: int, n_times: int, batch_size: int) -> tuple[int, int]:
    """(example-evaluations, network calls) of a curve: 2 N M and ⌈N M / ⌊B/2⌋⌉ (module docstring)."""
    return 2 * n_samples * n_times, math.ceil(n_samples * n_times / (batch_size // 2))


@dataclass
class LipschitzCurve:
    """K(t, t + Δt) over times t (Eq. 8) and what it cost.

    Attributes:
        t: the times t (float64, (M,)); t′ = t + dt.
        dt: Δt, in the schedule's own time unit.
        K: the mean over samples of ‖f(x_t, t) − f(x_t, t′)‖₂ / (Δt · steps_per_unit), (M,).
        K_sem: its standard error over samples, (M,).
        n_samples: N, data samples per time.
        evaluations: example-evaluations of the model, = 2 N M.
        calls: batched model calls, = ⌈N M / ⌊B/2⌋⌉ (⌈2 N M / B⌉ for an even batch size B).
        output: the quantity differentiated: "eps", "v" or "x0".
        network_output: True if that is the network's own output (no conversion).
        scale: "step" (K per discrete-equivalent step) or "time" (per unit of the schedule's time).
        steps_per_unit: the divisor s of K besides Δt (T for a continuous schedule at scale
            "step", else 1).
        unit: a sentence stating the unit of K.
    """

    t: Tensor
    dt: float
    K: Tensor
    K_sem: Tensor
    n_samples: int
    evaluations: int
    calls: int
    output: str = "eps"
    network_output: bool = True
    scale: str = "step"
    steps_per_unit: float = 1.0
    unit: str = ""
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
            "output": self.output,
            "output_is_network": self.network_output,
            "K_scale": self.scale,
            "K_steps_per_time_unit": self.steps_per_unit,
            "K_unit": self.unit,
            **self.meta,
        }


# The methods a Denoiser subclass may override that the plan below replaces by its precomputed
# coefficients; a subclass overriding any of them is measured through its own methods instead
# (only ``net_condition`` is honoured by the plan itself).
_PLANNED_METHODS: tuple[str, ...] = ("net_output", "estimate", "coefficients", "linear", "eps", "v", "x0", "forward")


@dataclass(frozen=True)
class _CurvePlan:
    """All of a curve that depends on its M times only, made once per curve (issue 11): a network
    call then costs the network and a few gathers, no schedule or condition-map call.

    The differentiated quantity at a time τ ∈ {t, t′} is f = a_τ x + b_τ · net(s_τ x, c_τ, **cond)
    (a Denoiser at fixed τ is linear in (x, out): :meth:`Denoiser.linear`).

    Attributes:
        net: called as ``net(x, c, **cond)``: the raw network of a Denoiser, or a function of
            physical time (a plain ε-callable; a Denoiser subclass's own output method).
        c: (2, M): what ``net`` gets as c at t (row 0) and t′ = t + Δt (row 1): the network's
            condition net_time(f(τ)) (the condition map applied here, once), or τ itself.
        scale: (2, M) network-input scale s_τ in x0's dtype (EDM's c_in/α); None: s = 1.
        x_coef: (M,) float64 a_t − a_{t′}; None (``out_coef`` too): f is the network's output.
        out_coef: (2, M) float64 b_t, b_{t′}; None: b = 1 (no conversion).
        output: the quantity differentiated ("eps", "v", "x0", "edm" or "flow").
        native: True if that is the network's own output.
    """

    net: Callable[..., Tensor]
    c: Tensor
    scale: Tensor | None
    x_coef: Tensor | None
    out_coef: Tensor | None
    output: str
    native: bool


def _planned_denoiser(model: Any) -> Denoiser | None:
    """The model's Denoiser if none of :data:`_PLANNED_METHODS` is overridden (the plan is exact)."""
    den = _denoiser(model)
    if den is None or any(getattr(type(den), name) is not getattr(Denoiser, name) for name in _PLANNED_METHODS):
        return None
    return den


def _curve_plan(model: Any, schedule: Schedule, times: Tensor, dt: float, output: str, like: Tensor) -> _CurvePlan:
    """The :class:`_CurvePlan` of K(t, t + Δt) at ``times`` (float64, on ``like``'s device; ``like``:
    a tensor with x0's dtype and device).

    Raises:
        ValueError: an unknown ``output``, a plain callable converted without its schedule, or a
            conversion dividing by α = 0 or σ = 0 at one of the times.
    """
    both = torch.stack([times, times + dt])  # (2, M): t and t′
    fn, name, native = as_output_fn(model, output, schedule)
    plain_eps = _denoiser(model) is None and native  # a plain ε-callable, measured as it is
    den = None if plain_eps else _planned_denoiser(as_denoiser(model, schedule))
    if den is None:  # a function of physical time: gets t and t′ themselves
        return _CurvePlan(fn, both, None, None, None, name, native)
    # one condition-map call on all 2M times (the times double as the x that gives only device and batch)
    c = den.net_condition(both.flatten(), both.flatten()).reshape(2, -1)
    if den.prediction != "edm" and native:
        return _CurvePlan(den.net, c, None, None, None, name, native)
    coef = _schedule_coefficients(den, both.flatten())
    maps = [den.linear(*v) for v in coef]
    scale = torch.tensor([lin.scale for lin in maps], dtype=like.dtype, device=like.device).reshape(2, -1)
    scale = scale if den.prediction == "edm" else None  # EDM's c_in/α; 1 otherwise
    if native:
        return _CurvePlan(den.net, c, scale, None, None, name, native)
    ab = [_output_coefficients(lin, v[0], v[1], name) for lin, v in zip(maps, coef, strict=True)]
    a, b = torch.tensor(ab, dtype=torch.float64, device=like.device).reshape(2, -1, 2).unbind(-1)
    return _CurvePlan(den.net, c, scale, a[0] - a[1], b, name, native)


def _schedule_coefficients(den: Denoiser, t: Tensor) -> list[tuple[float, ...]]:
    """(α, σ), or (α, σ, α', σ') for ``"flow"``, at each time of ``t``: :meth:`Denoiser.linear`'s arguments."""
    sched = den.schedule
    coef = [sched.alpha(t), sched.sigma(t)]
    if den.prediction == "flow":
        coef += [sched.dalpha_dt(t), sched.dsigma_dt(t)]
    return list(zip(*(v.tolist() for v in coef), strict=True))


def _output_coefficients(lin: Linear, alpha: float, sigma: float, name: str) -> tuple[float, float]:
    """(a, b) with the quantity ``name`` = a x + b out at one time: ε̂ and x̂0 as :meth:`Denoiser.linear`
    gives them, v = α ε̂ − σ x̂0 (Salimans & Ho)."""
    if name == "eps":
        return lin.eps_x, lin.eps_out
    if name == "x0":
        return lin.x0_x, lin.x0_out
    return alpha * lin.eps_x - sigma * lin.x0_x, alpha * lin.eps_out - sigma * lin.x0_out


class _Pairs:
    """A :class:`_CurvePlan` spread over the curve's N·M (time, sample) pairs, pair p = (time p // N,
    sample p % N): one network call evaluates a slice of pairs at t and at t′ with a few gathers."""

    def __init__(self, plan: _CurvePlan, schedule: Schedule, times: Tensor, n: int, like: Tensor):
        self.plan = plan
        index = torch.arange(n * len(times), device=like.device)
        ti, self.sample = index // n, index % n
        bshape = (-1, *([1] * (like.ndim - 1)))  # (pairs,) broadcast over an example
        # α_t, σ_t of Eq. (1) as schedule.diffuse makes them (float64, then x0's dtype)
        self.alpha = schedule.alpha(times).to(like.dtype)[ti].reshape(bshape)
        self.sigma = schedule.sigma(times).to(like.dtype)[ti].reshape(bshape)
        self.c = plan.c[:, ti]
        self.scale = None if plan.scale is None else plan.scale[:, ti].reshape(2, *bshape)
        self.x_coef = None if plan.x_coef is None else plan.x_coef[ti].reshape(bshape)
        self.out_coef = None if plan.out_coef is None else plan.out_coef[:, ti].reshape(2, *bshape)

    def diffuse(self, rows: slice, x0: Tensor, noise: Tensor) -> Tensor:
        """x_t = α_t x0 + σ_t ε (Eq. 1) of the pairs ``rows`` (x0, noise: their rows)."""
        return self.alpha[rows] * x0 + self.sigma[rows] * noise

    def distance(self, rows: slice, x_t: Tensor, cond: Cond) -> Tensor:
        """‖f(x_t, t) − f(x_t, t′)‖₂ of the pairs ``rows`` (float64): one network call on the SAME
        x_t at t (first half) and t′ (second half); cond rows of the pairs' samples, at both."""
        plan, k = self.plan, x_t.shape[0]
        x = torch.cat([x_t, x_t]) if self.scale is None else (self.scale[:, rows] * x_t).flatten(0, 1)
        net_cond = cond_rows(cond, self.sample[rows].repeat(2)) if cond else {}
        out = plan.net(x, self.c[:, rows].reshape(-1), **net_cond).to(torch.float64)
        if self.out_coef is None:
            diff = out[:k] - out[k:]
        else:  # f(t) − f(t′) = (a_t − a_t′) x + b_t out(t) − b_t′ out(t′)
            b = self.out_coef[:, rows]
            diff = self.x_coef[rows] * x_t.to(torch.float64) + b[0] * out[:k] - b[1] * out[k:]
        return torch.linalg.vector_norm(diff.flatten(1), dim=1)


@torch.no_grad()
def lipschitz_curve(
    model: Any,
    x0: Tensor,
    schedule: Schedule,
    times: Tensor | None = None,
    *,
    dt: float | None = None,
    output: str = "net",
    scale: str = "step",
    batch_size: int = 512,
    generator: torch.Generator | None = None,
    shared_noise: bool = True,
    progress: bool = False,
    desc: str = "K(t, t')",
    cond: Cond | None = None,
) -> LipschitzCurve:
    """K(t, t + Δt) of Eq. (8) for every t in ``times`` (default :func:`lipschitz_times`).

    Args:
        model: a Denoiser, a loaded run, or a callable ε(x, t) at physical time t (shape (B,)).
        x0: N data samples (N, ...) of the model's own data; x_t = α_t x0 + σ_t ε (Eq. 1).
        schedule: the model's schedule (α_t, σ_t of the forward process).
        times: the times t (physical); t′ = t + Δt.
        dt: Δt (default 1 timestep, or 1/T in continuous time).
        output: what is differentiated: "net" (the network's own output), "eps", "v" or "x0".
        scale: the unit of K: "step" (per discrete-equivalent step) or "time" (per unit of the
            schedule's own time); the same in discrete time.
        batch_size: B, examples per model call (>= 2; an odd B uses B − 1); the t- and t′-halves
            of each call hold the same x_t.
        generator: for the forward-process noise ε (on x0's device).
        shared_noise: one ε per sample reused at every t (common random numbers).
        progress: a tqdm bar over the calls, on stderr.
        desc: the bar's label.
        cond: the network's keyword inputs, one row per x0 row (module docstring); None: none.

    Raises:
        ValueError: batch_size < 2, an unknown ``output`` or ``scale``, cond rows not matching x0, a
            conversion (``output``) dividing by α = 0 or σ = 0 at one of the times.
    """
    dt = default_dt(schedule) if dt is None else float(dt)
    times = lipschitz_times(schedule, dt=dt) if times is None else torch.as_tensor(times, dtype=torch.float64)
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2, got {batch_size}")
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    cond = check_cond(cond, x0.shape[0], "lipschitz_curve")
    per = steps_per_unit(schedule) if scale == "step" else 1.0
    device, n, m = x0.device, x0.shape[0], len(times)
    times = times.to(device)
    plan = _curve_plan(model, schedule, times, dt, output, x0)
    pairs = _Pairs(plan, schedule, times, n, x0)
    base_noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=device) if shared_noise else None
    dist = torch.empty(n * m, dtype=torch.float64, device=device)  # ‖f(x_t, t) − f(x_t, t′)‖₂ of pair p
    half = batch_size // 2
    starts = range(0, n * m, half)
    for start in _maybe_progress(starts, progress, desc):
        rows = slice(start, min(start + half, n * m))
        si = pairs.sample[rows]
        noise = (
            base_noise[si]
            if base_noise is not None
            else torch.randn((len(si), *x0.shape[1:]), generator=generator, dtype=x0.dtype, device=device)
        )
        dist[rows] = pairs.distance(rows, pairs.diffuse(rows, x0[si], noise), cond)
    # Eq. (8): the mean over samples of ‖Δf‖ / Δt, Δt in discrete-equivalent steps (× per);
    # pair p = (time p // N, sample p % N)
    dist = dist.view(m, n) / (dt * per)
    mean = dist.sum(1) / n
    var = ((dist**2).sum(1) / n - mean**2).clamp(min=0) * (n / max(n - 1, 1))
    evaluations, calls = lipschitz_cost(n, m, batch_size)
    return LipschitzCurve(
        t=times.cpu(),
        dt=dt,
        K=mean.cpu(),
        K_sem=(var / n).sqrt().cpu(),
        n_samples=n,
        evaluations=evaluations,
        calls=calls,
        output=plan.output,
        network_output=plan.native,
        scale=scale,
        steps_per_unit=per,
        unit=k_unit(schedule, scale),
    )


@torch.no_grad()
def time_one_call(
    model: Any,
    x0: Tensor,
    schedule: Schedule,
    times: Tensor,
    *,
    dt: float | None = None,
    output: str = "net",
    batch_size: int = 512,
    cond: Cond | None = None,
) -> float:
    """Seconds of the first network call :func:`lipschitz_curve` would make (the same times,
    x0 in place of x_t, cond rows matched; the curve's once-per-curve plan made beforehand, untimed):
    the unit of a cost estimate. The first call of a process may include one-off warm-up, so the
    estimate errs on the long side."""
    cond = check_cond(cond, x0.shape[0], "time_one_call")
    dt = default_dt(schedule) if dt is None else float(dt)
    times = torch.as_tensor(times, dtype=torch.float64).to(x0.device)
    pairs = _Pairs(_curve_plan(model, schedule, times, dt, output, x0), schedule, times, x0.shape[0], x0)
    rows = slice(0, min(batch_size // 2, x0.shape[0] * len(times)))
    x = x0[pairs.sample[rows]]
    _synchronize(x0.device)
    start = time.perf_counter()
    pairs.distance(rows, x, cond)
    _synchronize(x0.device)
    return time.perf_counter() - start


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _maybe_progress(it: range, progress: bool, desc: str):
    if not progress:
        return it
    from tqdm import tqdm

    return tqdm(it, desc=desc, unit="call", file=sys.stderr, dynamic_ncols=True)


def boundary_jumps(t: Tensor, dt: float, boundaries: list[float]) -> Tensor:
    """True where [t, t + Δt] crosses an E-TSDM sub-interval boundary t_1..t_n (the condition
    jumps between t and t′), False elsewhere (all False without boundaries)."""
    t = torch.as_tensor(t, dtype=torch.float64)
    crossed = torch.zeros(t.shape, dtype=torch.bool)
    tol = 1e-9 * dt
    for b in boundaries[1:]:  # t_0 = 0 starts the first sub-interval: nothing jumps there
        crossed |= (t < b - tol) & (t + dt >= b - tol)
    return crossed


def curve_summary(t: Tensor, K: Tensor, dt: float, t_tilde: float, boundaries: list[float]) -> dict[str, Any]:
    """The numbers a reader needs beside "K max": over the window [t_first, t̃) (the whole range
    if no t is below t̃), the mean and the max of K, whether the max is a boundary jump, and, for
    E-TSDM (``boundaries``), the max over the t whose [t, t′] crosses no boundary."""
    t, K = torch.as_tensor(t, dtype=torch.float64), torch.as_tensor(K, dtype=torch.float64)
    window = t < t_tilde
    below = bool(window.any())
    if not below:
        window = torch.ones_like(window)
    tw, kw, jw = t[window], K[window], boundary_jumps(t, dt, boundaries)[window]
    i = int(kw.argmax())
    out: dict[str, Any] = {
        "window": [float(tw[0]), float(t_tilde) if below else float(tw[-1])],
        "window_end_included": not below,  # [t_first, t̃) or, with no t below t̃, [t_first, t_last]
        "mean": float(kw.mean()),
        "max": float(kw[i]),
        "t_at_max": float(tw[i]),
        "max_is_boundary_jump": bool(jw[i]),
    }
    if boundaries and bool((~jw).any()):
        j = int(torch.where(jw, torch.full_like(kw, -math.inf), kw).argmax())
        out |= {"max_off_boundaries": float(kw[j]), "t_at_max_off_boundaries": float(tw[j])}
    return out


def sharing_boundaries(condition: Any) -> list[float]:
    """The E-TSDM sub-interval boundaries t_0 < ... < t_n of a condition map ([] if none)."""
    if isinstance(condition, TimestepSharing):
        return [float(b) for b in condition.boundaries]
    return []
