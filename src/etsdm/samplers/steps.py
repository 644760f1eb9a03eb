"""One step builder per sampler: run once per plan, it binds the step's coefficients (Python
floats) and returns the step, run per call, ``step(run, x) -> (x_s, handle)``; every update is
one fixed linear combination of tensors (:func:`_lin`). The formulas: :mod:`etsdm.samplers`."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor

from ..schedules import Schedule
from .grids import _Point, _points

Intermediate = Literal["lu", "midpoint"]


# ---------------------------------------------------------------------------------------------
# Linear estimates: every update is a fixed linear combination of tensors, fused at run time
# ---------------------------------------------------------------------------------------------
class _Form(NamedTuple):
    """One evaluation's (ε̂, x̂0), linear in its input x and the tensors (y, z) it returns:
    ε̂ = ex x + ey y + ez z, x̂0 = dx x + dy y + dz z. For a Denoiser y is the network output
    (:meth:`~etsdm.denoiser.Denoiser.linear`); a model that returns (ε̂, x̂0) itself gives y = x̂0,
    z = ε̂; a clipped evaluation gives y = the clipped x̂0 (:mod:`etsdm.samplers`)."""

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
