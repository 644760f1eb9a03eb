"""Running a plan: x̂0 clipping, how a model is evaluated (a Denoiser's conditions made once,
before the loop), the per-plan cache, and the public :func:`sample` / :func:`describe`."""

from __future__ import annotations

import functools
import math
import threading
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..denoiser import Cond, Denoiser, check_cond
from ..schedules import Schedule
from .grids import ORDER_PLANS, OrderPlan, Spacing, _alpha_is_zero, _Point, _points, resolve_spacing
from .registry import SAMPLER_REGISTRY, SamplerName, _spec, default_denoise_to_zero, plan
from .steps import _GIVEN, Churn, Intermediate, Lin, Step, _Form, _lin, _Run, _Walk, _x0_of

Clip = Literal["none", "static", "dynamic"]
CLIPS: tuple[str, ...] = ("none", "static", "dynamic")
DYNAMIC_PERCENTILE = 0.995  # Saharia et al. (2022), dynamic thresholding
EXACT_ZERO_PREDICTIONS: tuple[str, ...] = ("v", "x0", "flow")  # predictions that stay exact at α = 0


class StepInfo(NamedTuple):
    """What a sampler hands its ``callback`` after each step."""

    index: int
    t: float
    s: float
    x: Tensor
    x0: Tensor


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
    network input scale and whether α = 0 exactly there (:mod:`etsdm.samplers`)."""
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


# ---------------------------------------------------------------------------------------------
# Plans: built once per (sampler, grid, options, process, prediction) and cached
# ---------------------------------------------------------------------------------------------
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


def _check_clip(clip: str) -> None:
    if clip not in CLIPS:
        raise ValueError(f"clip must be one of {', '.join(CLIPS)}, got {clip!r}")


def _check_options(variance: str, third_order_intermediate: str, eta: float, clip: str, order_plan: str) -> None:
    if variance not in ("beta", "posterior"):
        raise ValueError(f"variance must be 'beta' or 'posterior', got {variance!r}")
    if third_order_intermediate not in ("lu", "midpoint"):
        raise ValueError(f"third_order_intermediate must be 'lu' or 'midpoint', got {third_order_intermediate!r}")
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    _check_clip(clip)
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
            ``"midpoint"`` (diffusers' singlestep scheduler); see :mod:`etsdm.samplers`.
        clip: x̂0 at every evaluation: ``"none"`` (default), ``"static"`` ([-1, 1]) or ``"dynamic"``
            (Saharia et al., percentile 0.995).
        t_start, t_end: first and last noisy time (defaults: ``schedule.t_max``, ``schedule.t_min``).
        timesteps, orders: replay an explicit plan instead (see :mod:`etsdm.samplers`; overrides nfe, spacing,
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
    _check_clip(clip)
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
