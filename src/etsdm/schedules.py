"""Gaussian diffusion processes q(x_t | x_0) = N(α_t x_0, σ_t² I)  (Eq. 1): schedules.

A :class:`Schedule` is any such process, defined by log α_t and log σ_t (so λ_t = log α_t - log σ_t
and ``diffuse`` follow); ``kind`` names its family:

* ``"vp"`` (:class:`VPSchedule`): variance preserving, σ_t² = 1 - α_t² — the paper's five
  schedules, discrete and continuous. Only log α is defined; σ follows from it.
* ``"edm"`` (:class:`EDMSchedule`, Karras et al. 2022): α = 1, σ = t, t = σ in [σ_min, σ_max]; the
  network's own time input is c_noise = ¼ ln σ (EDM Table 1).
* ``"flow"`` (:class:`FlowSchedule`): rectified flow / flow matching, x_t = (1 - t) x_0 + t ε,
  t in [0, 1] (Liu et al. 2023; Lipman et al. 2023; SD3 / Flux).

Adding a process is one subclass here (log α, log σ, their t-derivatives, ``net_time``); samplers,
losses, the Denoiser and the measurements read only this interface.

Notation (read this before anything else in etsdm):

* ``alpha`` is the paper's α_t, i.e. the *square root* of DDPM's ᾱ_t (``alphas_cumprod`` in
  diffusers); α_t² + σ_t² = 1.
* ``lambda_`` is λ_t = log(α_t / σ_t), the half log-SNR of DPM-Solver; ``log_snr`` is 2 λ_t.
* Discrete schedules (``continuous=False``) are indexed by integer timesteps ``t = 0 .. T-1``,
  where ``t = 0`` is the *first noisy step*: our index t is DDPM's / Algorithm A1's t + 1 shifted by
  one, exactly as in diffusers. The clean data sits at ``t = -1`` (α = 1, σ = 0); samplers end
  there. Between grid points, log α is interpolated piecewise-linearly (as DPM-Solver does), so
  every sampler reads one continuous α(t) for any real t in [-1, T-1].
* Continuous schedules take t in [0, 1]; t = 0 is the data (α = 1, σ = 0).
* Tables are kept in float64; results come back in float64 (cast at the last moment).
* α² is floored at 2⁻²⁴ (``ALPHA2_FLOOR``) so that λ stays finite where a schedule reaches
  α = 0 (zero terminal SNR, continuous cosine at t = 1); diffusers' DPM-Solver does the same.

Linear and quadratic follow Eq. A3-A6 (β̄_min = 0.1, β̄_max = 20), cosine Eq. A7-A8 (s = 0.008),
cosine-shift Hoogeboom et al. (2023), zero-snr Lin et al. (2023). Modified-NS (Appendix D.3.2)
is ``modified=True``: β̄(0) = 0 for linear/quadratic, for quadratic with β̄_max raised so that the SNR
at the last step is unchanged (linear keeps β̄_max, as the paper says); s = 0 for cosine.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

ScheduleName = Literal["linear", "quadratic", "cosine", "cosine-shift", "zero-snr", "edm", "flow"]
SCHEDULE_NAMES: tuple[str, ...] = ("linear", "quadratic", "cosine", "cosine-shift", "zero-snr")  # the paper's (VP)
PROCESS_NAMES: tuple[str, ...] = ("edm", "flow")  # the non-VP processes
ALL_SCHEDULE_NAMES: tuple[str, ...] = SCHEDULE_NAMES + PROCESS_NAMES
ProcessKind = Literal["vp", "edm", "flow"]
ALPHA2_FLOOR = 2.0**-24
LOG_ALPHA_FLOOR = 0.5 * math.log(ALPHA2_FLOOR)


def _as_f64(t: Tensor | float) -> Tensor:
    if isinstance(t, Tensor):
        return t.to(torch.float64)
    return torch.tensor(float(t), dtype=torch.float64)


class Schedule(ABC):
    """A Gaussian process x_t = α_t x_0 + σ_t ε. Subclasses define ``_log_alpha``, ``_log_sigma`` and
    their t-derivatives; everything else (σ, λ, derivatives, inverse of λ, ``diffuse``) follows.

    Attributes:
        name: schedule name, as passed to :func:`make_schedule`.
        kind: the process family: ``"vp"``, ``"edm"`` or ``"flow"``.
        continuous: True for real t (t in [0, 1] for VP and flow, t = σ for EDM), False for
            integer timesteps 0..T-1.
        T: number of discrete training timesteps (also kept for continuous schedules, as the
            network-condition scale and for comparisons at grid points).
        t_data: the time at which x_t is the data (-1 discrete, 0 continuous).
        t_min / t_max: the default first / last noisy time a sampler or loss uses.
    """

    name: str
    kind: str = "vp"
    continuous: bool
    T: int
    options: dict[str, Any]

    @property
    def t_data(self) -> float:
        return 0.0 if self.continuous else -1.0

    @property
    def t_max(self) -> float:
        return 1.0 if self.continuous else float(self.T - 1)

    @property
    def t_min(self) -> float:
        """Smallest noisy time a sampler stops at before the final denoising step."""
        return 1e-3 if self.continuous else 0.0

    # --- what a process defines -------------------------------------------------------------
    @abstractmethod
    def _log_alpha(self, t: Tensor) -> Tensor:
        """log α_t, unclamped (float64 in, float64 out)."""

    @abstractmethod
    def _dlog_alpha_dt(self, t: Tensor) -> Tensor:
        """d log α_t / dt (one-sided from the right at grid points)."""

    @abstractmethod
    def _log_sigma(self, t: Tensor) -> Tensor:
        """log σ_t (float64 in, float64 out); -inf at the data."""

    @abstractmethod
    def _dlog_sigma_dt(self, t: Tensor) -> Tensor:
        """d log σ_t / dt (one-sided from the right at grid points)."""

    def net_time(self, t: Tensor | float) -> Tensor:
        """The network's own time input for physical time t (float64): t itself (VP, flow; the
        networks scale it by ``time_scale``); EDM overrides it with c_noise = ¼ ln σ."""
        return _as_f64(t)

    def time_from_net(self, c: Tensor | float) -> Tensor:
        """Inverse of :meth:`net_time` (float64): the identity here; EDM: σ = e^{4c}."""
        return _as_f64(c)

    # --- public interface -------------------------------------------------------------------
    def log_alpha(self, t: Tensor | float) -> Tensor:
        """log α_t (float64), floored at ½ log ALPHA2_FLOOR and capped at 0 (rounding in a closed form,
        e.g. cosine's log cos(u0) - log cos(u0) = 1e-20 at t = 0, must not give α > 1 and σ = NaN)."""
        return self._log_alpha(_as_f64(t)).clamp(min=LOG_ALPHA_FLOOR, max=0.0)

    def log_sigma(self, t: Tensor | float) -> Tensor:
        """log σ_t (float64); -inf at the data."""
        return self._log_sigma(_as_f64(t))

    def alpha(self, t: Tensor | float) -> Tensor:
        """α_t (VP: sqrt(ᾱ_t), Eq. 1)."""
        return self.log_alpha(t).exp()

    def sigma(self, t: Tensor | float) -> Tensor:
        """σ_t."""
        return self.log_sigma(t).exp()

    def lambda_(self, t: Tensor | float) -> Tensor:
        """λ_t = log(α_t / σ_t) (half log-SNR); +inf at the data."""
        return self.log_alpha(t) - self.log_sigma(t)

    def log_snr(self, t: Tensor | float) -> Tensor:
        """log(α_t² / σ_t²) = 2 λ_t."""
        return 2.0 * self.lambda_(t)

    def snr(self, t: Tensor | float) -> Tensor:
        return self.log_snr(t).exp()

    def dlog_alpha_dt(self, t: Tensor | float) -> Tensor:
        """d log α / dt in the schedule's own time unit (one-sided from the right at grid points)."""
        return self._dlog_alpha_dt(_as_f64(t))

    def dlog_sigma_dt(self, t: Tensor | float) -> Tensor:
        """d log σ / dt in the schedule's own time unit; +inf at the data when σ ~ t^p, p < 1 (VP)."""
        return self._dlog_sigma_dt(_as_f64(t))

    def dalpha_dt(self, t: Tensor | float) -> Tensor:
        """dα/dt in the schedule's own time unit (Appendix C.1; one-sided from the right)."""
        t = _as_f64(t)
        return self.alpha(t) * self._dlog_alpha_dt(t)

    def dsigma_dt(self, t: Tensor | float) -> Tensor:
        """dσ/dt (VP: -(α/σ) dα/dt, Theorem 3.1; infinite at σ = 0 when dα/dt ≠ 0)."""
        t = _as_f64(t)
        return self.sigma(t) * self._dlog_sigma_dt(t)

    def diffuse(self, x0: Tensor, t: Tensor | float, noise: Tensor) -> Tensor:
        """x_t = α_t x0 + σ_t ε (Eq. 1); t a number or a (batch,) tensor; in x0's dtype."""
        t = _as_f64(t).to(x0.device)
        t = t.expand(x0.shape[0]) if t.ndim == 0 else t
        shape = (-1, *([1] * (x0.ndim - 1)))
        alpha, sigma = self.alpha(t).to(x0.dtype).reshape(shape), self.sigma(t).to(x0.dtype).reshape(shape)
        return alpha * x0 + sigma * noise

    def t_from_lambda(self, lam: Tensor | float) -> Tensor:
        """Inverse of λ_t on [t_data, t_max], by bisection in float64 (λ is decreasing)."""
        lam = _as_f64(lam)
        lo = torch.full_like(lam, self.t_data)
        hi = torch.full_like(lam, self.t_max)
        for _ in range(64 if self.continuous else 80):
            mid = 0.5 * (lo + hi)
            above = self.lambda_(mid) > lam  # still too little noise: move right
            lo = torch.where(above, mid, lo)
            hi = torch.where(above, hi, mid)
        return 0.5 * (lo + hi)

    def alphas_cumprod(self) -> Tensor:
        """DDPM's ᾱ at the T discrete steps: α² at t = 0..T-1, or at t = (i+1)/T in continuous time
        (for a non-VP process the VP-equivalent ᾱ = α²/(α² + σ²) = sigmoid(2λ) at t = t_max (i+1)/T)."""
        i = torch.arange(self.T, dtype=torch.float64)
        if self.kind != "vp":
            return torch.sigmoid(2.0 * self.lambda_(self.t_max * (i + 1) / self.T))
        return self.alpha((i + 1) / self.T if self.continuous else i) ** 2

    def betas(self) -> Tensor:
        """DDPM's β_i = 1 - ᾱ_i / ᾱ_{i-1} for the T discrete steps (float64)."""
        abar = self.alphas_cumprod()
        return 1.0 - abar / torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])

    def config(self) -> dict[str, Any]:
        """The arguments that rebuild this schedule with :func:`make_schedule`."""
        return {"name": self.name, "T": self.T, "continuous": self.continuous, **self.options}

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        kind = "continuous" if self.continuous else f"discrete T={self.T}"
        return f"Schedule({self.name!r}, {kind}{', ' + opts if opts else ''})"


class VPSchedule(Schedule):
    """The variance-preserving family: σ_t² = 1 - α_t², so a VP schedule defines log α alone."""

    kind = "vp"

    def _log_sigma(self, t: Tensor) -> Tensor:
        return 0.5 * torch.log(-torch.expm1(2.0 * self.log_alpha(t)))

    def _dlog_sigma_dt(self, t: Tensor) -> Tensor:
        # d/dt ½ log(1 - α²) = -(α²/σ²) d log α/dt
        log_a = self.log_alpha(t)
        return -torch.exp(2.0 * log_a) / -torch.expm1(2.0 * log_a) * self._dlog_alpha_dt(t)

    def sigma(self, t: Tensor | float) -> Tensor:
        """σ_t = sqrt(1 - α_t²), computed as sqrt(-expm1(2 log α)) for accuracy near t = 0."""
        return torch.sqrt(-torch.expm1(2.0 * self.log_alpha(t)))

    def dsigma_dt(self, t: Tensor | float) -> Tensor:
        """dσ/dt = -(α/σ) dα/dt (Theorem 3.1); infinite at σ = 0 when dα/dt ≠ 0."""
        t = _as_f64(t)
        return -self.alpha(t) / self.sigma(t) * self.dalpha_dt(t)


# --------------------------------------------------------------------------------------------
# Continuous-time schedules, t in [0, 1]
# --------------------------------------------------------------------------------------------
class _Continuous(VPSchedule):
    continuous = True


@dataclass(repr=False)
class LinearVP(_Continuous):
    """β(τ) = β̄_min + (β̄_max - β̄_min) τ (Eq. A5); log α = -½ ∫₀ᵗ β."""

    beta_min: float = 0.1
    beta_max: float = 20.0
    T: int = 1000
    name: str = "linear"
    options: dict[str, Any] = field(default_factory=dict)

    def _log_alpha(self, t: Tensor) -> Tensor:
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def _dlog_alpha_dt(self, t: Tensor) -> Tensor:
        return -0.5 * (self.beta_min + (self.beta_max - self.beta_min) * t)  # Eq. (A2): -½β(t)


@dataclass(repr=False)
class QuadraticVP(_Continuous):
    """β(τ) = (sqrt(β̄_min) + (sqrt(β̄_max) - sqrt(β̄_min)) τ)² (Eq. A6)."""

    beta_min: float = 0.1
    beta_max: float = 20.0
    T: int = 1000
    name: str = "quadratic"
    options: dict[str, Any] = field(default_factory=dict)

    def _log_alpha(self, t: Tensor) -> Tensor:
        a, b = math.sqrt(self.beta_min), math.sqrt(self.beta_max) - math.sqrt(self.beta_min)
        # ∫₀ᵗ (a + b s)² ds = a² t + a b t² + b² t³ / 3
        return -0.5 * (a * a * t + a * b * t**2 + b * b * t**3 / 3.0)

    def _dlog_alpha_dt(self, t: Tensor) -> Tensor:
        a, b = math.sqrt(self.beta_min), math.sqrt(self.beta_max) - math.sqrt(self.beta_min)
        return -0.5 * (a + b * t) ** 2


@dataclass(repr=False)
class CosineVP(_Continuous):
    """α(τ) = cos((τ + s)/(1 + s) · π/2) / cos(s/(1 + s) · π/2) (Eq. A8)."""

    s: float = 0.008
    T: int = 1000
    name: str = "cosine"
    options: dict[str, Any] = field(default_factory=dict)

    def _log_alpha(self, t: Tensor) -> Tensor:
        u = (t + self.s) / (1.0 + self.s) * (math.pi / 2)
        u0 = self.s / (1.0 + self.s) * (math.pi / 2)
        return torch.log(torch.cos(u).clamp(min=0.0)) - math.log(math.cos(u0))

    def _dlog_alpha_dt(self, t: Tensor) -> Tensor:
        u = (t + self.s) / (1.0 + self.s) * (math.pi / 2)
        return -torch.tan(u) * math.pi / (2.0 * (1.0 + self.s))  # Eq. (A9) at t = 0


@dataclass(repr=False)
class CosineShiftVP(_Continuous):
    """Shifted cosine of Hoogeboom et al. (2023): log-SNR(t) = -2 log tan(πu/2) + 2 log(base/res),

    with u = u_min + t (u_max - u_min) chosen so that the unshifted log-SNR spans
    [logsnr_min, logsnr_max] = [-15, 15] (their clipping).
    """

    base_resolution: int = 64
    resolution: int = 256
    logsnr_min: float = -15.0
    logsnr_max: float = 15.0
    T: int = 1000
    name: str = "cosine-shift"
    options: dict[str, Any] = field(default_factory=dict)

    def _u_range(self) -> tuple[float, float]:
        u_min = math.atan(math.exp(-0.5 * self.logsnr_max)) * 2 / math.pi
        u_max = math.atan(math.exp(-0.5 * self.logsnr_min)) * 2 / math.pi
        return u_min, u_max

    def _lam(self, t: Tensor) -> Tensor:
        u_min, u_max = self._u_range()
        u = (u_min + t * (u_max - u_min)) * (math.pi / 2)
        shift = math.log(self.base_resolution / self.resolution)  # half of 2 log(base/res)
        return -torch.log(torch.tan(u)) + shift

    def _log_alpha(self, t: Tensor) -> Tensor:
        return -0.5 * torch.nn.functional.softplus(-2.0 * self._lam(t))  # α² = sigmoid(2λ)

    def _dlog_alpha_dt(self, t: Tensor) -> Tensor:
        u_min, u_max = self._u_range()
        u = (u_min + t * (u_max - u_min)) * (math.pi / 2)
        dlam_dt = -2.0 / torch.sin(2.0 * u) * (math.pi / 2) * (u_max - u_min)
        return torch.sigmoid(-2.0 * self._lam(t)) * dlam_dt


@dataclass(repr=False)
class ZeroTerminalSNR(_Continuous):
    """Lin et al. (2023): α'(t) = (α(t) - α(1)) / (α(0) - α(1)) of a base schedule, so α'(1) = 0."""

    base: VPSchedule = field(default_factory=LinearVP)
    T: int = 1000
    name: str = "zero-snr"
    options: dict[str, Any] = field(default_factory=dict)

    def _ends(self) -> tuple[float, float]:
        one = torch.tensor(1.0, dtype=torch.float64)
        return 1.0, float(self.base._log_alpha(one).exp())

    def _log_alpha(self, t: Tensor) -> Tensor:
        a0, a1 = self._ends()
        return torch.log((self.base._log_alpha(t).exp() - a1).clamp(min=0.0)) - math.log(a0 - a1)

    def _dlog_alpha_dt(self, t: Tensor) -> Tensor:
        _, a1 = self._ends()
        a = self.base._log_alpha(t).exp()
        return a * self.base._dlog_alpha_dt(t) / (a - a1)


# --------------------------------------------------------------------------------------------
# Discrete-time schedules, integer t = 0..T-1 (data at t = -1)
# --------------------------------------------------------------------------------------------
class DiscreteSchedule(VPSchedule):
    """A table of ᾱ_i, i = 0..T-1, with log α piecewise-linear in t between grid points.

    The grid includes t = -1 with α = 1 (the data), so a step from t = 0 to t = -1 is DDPM's
    last step x_1 -> x_0.
    """

    continuous = False

    def __init__(self, alphas_cumprod: Tensor, name: str = "custom", options: dict[str, Any] | None = None):
        abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        if abar.ndim != 1 or len(abar) < 2:
            raise ValueError("alphas_cumprod must be a 1-D table with at least 2 entries")
        if not bool((abar[1:] <= abar[:-1]).all() and ((abar >= 0) & (abar < 1)).all()):
            raise ValueError("alphas_cumprod must be non-increasing and in [0, 1)")
        self.T = len(abar)
        self.name = name
        self.options = dict(options or {})
        log_a = 0.5 * torch.log(abar.clamp(min=ALPHA2_FLOOR))
        self._table = torch.cat([torch.zeros(1, dtype=torch.float64), log_a])  # index 0 is t = -1
        self._cache: dict[torch.device, Tensor] = {}

    def _table_on(self, device: torch.device) -> Tensor:
        if device not in self._cache:
            self._cache[device] = self._table.to(device)
        return self._cache[device]

    def _segment(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        table = self._table_on(t.device)
        pos = (t + 1.0).clamp(0.0, float(self.T))  # position in the table
        left = pos.floor().clamp(max=self.T - 1).long()
        return table, left, pos - left

    def _log_alpha(self, t: Tensor) -> Tensor:
        table, left, frac = self._segment(t)
        return table[left] + frac * (table[left + 1] - table[left])

    def _dlog_alpha_dt(self, t: Tensor) -> Tensor:
        table, left, _ = self._segment(t)
        return table[left + 1] - table[left]

    def alphas_cumprod(self) -> Tensor:
        return (2.0 * self._table[1:]).exp()

    def t_from_lambda(self, lam: Tensor | float) -> Tensor:
        """Inverse of λ_t in closed form: α² = sigmoid(2λ) gives log α = -½ softplus(-2λ), and
        log α is linear between integer steps."""
        lam = _as_f64(lam)
        table = self._table  # log α at t = -1 .. T-1, non-increasing
        target = (-0.5 * torch.nn.functional.softplus(-2.0 * lam)).clamp(float(table[-1]), 0.0)
        k = torch.searchsorted(-table, -target).clamp(1, self.T)  # table[k-1] >= target >= table[k]
        left, right = table[k - 1], table[k]
        frac = torch.where(left > right, (left - target) / (left - right), torch.zeros_like(target))
        return (k - 2).to(torch.float64) + frac


# --------------------------------------------------------------------------------------------
# Beyond VP: EDM and flow matching (continuous time)
# --------------------------------------------------------------------------------------------
@dataclass(repr=False)
class EDMSchedule(Schedule):
    """Karras et al. (2022), "EDM": α_t = 1, σ_t = t, so the time *is* σ, on [σ_min, σ_max]
    (Table 1: σ_min = 0.002, σ_max = 80); the data is σ = 0. The network's own time input is
    c_noise = ¼ ln σ (Table 1), :meth:`net_time`; EDM's preconditioning (c_skip, c_out, c_in, with
    σ_data) is the Denoiser's ``"edm"`` prediction type."""

    sigma_min: float = 0.002
    sigma_max: float = 80.0
    T: int = 1000
    name: str = "edm"
    options: dict[str, Any] = field(default_factory=dict)
    kind = "edm"
    continuous = True

    @property
    def t_min(self) -> float:
        return self.sigma_min

    @property
    def t_max(self) -> float:
        return self.sigma_max

    def _log_alpha(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def _dlog_alpha_dt(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def _log_sigma(self, t: Tensor) -> Tensor:
        return torch.log(t.clamp(min=0.0))

    def _dlog_sigma_dt(self, t: Tensor) -> Tensor:
        return 1.0 / t

    def sigma(self, t: Tensor | float) -> Tensor:
        """σ = t exactly (not exp(log t), which is 1 ulp off)."""
        return _as_f64(t).clamp(min=0.0)

    def dsigma_dt(self, t: Tensor | float) -> Tensor:
        return torch.ones_like(_as_f64(t))

    def dalpha_dt(self, t: Tensor | float) -> Tensor:
        return torch.zeros_like(_as_f64(t))

    def net_time(self, t: Tensor | float) -> Tensor:
        """c_noise(σ) = ¼ ln σ (EDM Table 1)."""
        return 0.25 * self.log_sigma(t)

    def time_from_net(self, c: Tensor | float) -> Tensor:
        """σ = e^{4 c_noise}."""
        return torch.exp(4.0 * _as_f64(c))

    def t_from_lambda(self, lam: Tensor | float) -> Tensor:
        """σ = e^{-λ} in closed form."""
        return torch.exp(-_as_f64(lam))


@dataclass(repr=False)
class FlowSchedule(Schedule):
    """Rectified flow / flow matching: x_t = (1 - t) x_0 + t ε, t in [0, 1] (α = 1 - t, σ = t);
    the network's time input is t (scaled by the network's ``time_scale``, T, like continuous VP).
    At t = 1, α = 0: log α is floored as for zero terminal SNR (λ finite), and samplers use α = 0
    exactly for v / x0 / flow predictions."""

    T: int = 1000
    name: str = "flow"
    options: dict[str, Any] = field(default_factory=dict)
    kind = "flow"
    continuous = True

    def _log_alpha(self, t: Tensor) -> Tensor:
        return torch.log1p(-t.clamp(max=1.0))

    def _dlog_alpha_dt(self, t: Tensor) -> Tensor:
        return -1.0 / (1.0 - t)

    def _log_sigma(self, t: Tensor) -> Tensor:
        return torch.log(t.clamp(min=0.0))

    def _dlog_sigma_dt(self, t: Tensor) -> Tensor:
        return 1.0 / t

    def sigma(self, t: Tensor | float) -> Tensor:
        """σ = t exactly."""
        return _as_f64(t).clamp(0.0, 1.0)

    def dalpha_dt(self, t: Tensor | float) -> Tensor:
        """dα/dt = -1 everywhere, also where log α is floored at t -> 1 (α·d log α/dt would be 2⁻¹²·∞)."""
        return -torch.ones_like(_as_f64(t))

    def dsigma_dt(self, t: Tensor | float) -> Tensor:
        return torch.ones_like(_as_f64(t))

    def t_from_lambda(self, lam: Tensor | float) -> Tensor:
        """(1 - t)/t = e^λ, so t = sigmoid(-λ) (closed form)."""
        return torch.sigmoid(-_as_f64(lam))


def _vp_betas(beta_bar: Any, tau: Tensor, T: int) -> Tensor:
    return beta_bar(tau) / T  # β_t = β̄(τ) / T (Appendix C.1.1)


def _discrete_from_betas(betas: Tensor, name: str, options: dict[str, Any]) -> DiscreteSchedule:
    return DiscreteSchedule(torch.cumprod(1.0 - betas, 0), name=name, options=options)


def _linear_beta_bar(b0: float, b1: float):
    return lambda tau: b0 + (b1 - b0) * tau  # Eq. (A3)/(A5)


def _quadratic_beta_bar(b0: float, b1: float):
    return lambda tau: (math.sqrt(b0) + (math.sqrt(b1) - math.sqrt(b0)) * tau) ** 2  # Eq. (A4)/(A6)


def _modified_beta_max(kind: str, b0: float, b1: float) -> float:
    """β̄_max of Modified-NS (β̄(0) = 0), Appendix D.3.2: unchanged for linear (the paper only sets
    β(0) = 0); for quadratic "slightly increased" so that ∫₀¹ β̄, hence the SNR at t = T, is the
    original's (20 -> 21.5)."""
    if kind == "linear":
        return b1
    a, b = math.sqrt(b0), math.sqrt(b1) - math.sqrt(b0)
    return 3.0 * (a * a + a * b + b * b / 3.0)  # ∫ = b1'/3 after


def _rescale_zero_snr(abar: Tensor) -> Tensor:
    """Lin et al. (2023), Algorithm 1: shift and scale sqrt(ᾱ) so the last entry is exactly 0."""
    a = abar.sqrt()
    a0, aT = a[0].clone(), a[-1].clone()
    a = (a - aT) * a0 / (a0 - aT)
    return a**2


def rescale_betas_zero_snr(betas: Tensor) -> Tensor:
    """A β table rescaled to zero terminal SNR (Lin et al. 2023, Algorithm 1; diffusers'
    ``rescale_zero_terminal_snr``, kohya's ``--zero_terminal_snr``): sqrt(ᾱ) shifted and scaled so
    that ᾱ_{T-1} = 0 while ᾱ_0 is kept, so the last β is 1. Use v-prediction with it (ε cannot be
    turned into x̂0 at α = 0). The ``zero-snr`` schedule is the linear table rescaled this way."""
    betas = torch.as_tensor(betas, dtype=torch.float64)
    abar = _rescale_zero_snr(torch.cumprod(1.0 - betas, 0))
    return 1.0 - torch.cat([abar[:1], abar[1:] / abar[:-1]])  # β_i = 1 - ᾱ_i / ᾱ_{i-1}


def make_schedule(
    name: ScheduleName | str,
    *,
    T: int = 1000,
    continuous: bool | None = None,
    modified: bool = False,
    beta_min: float = 0.1,
    beta_max: float = 20.0,
    s: float = 0.008,
    resolution: int = 256,
    base_resolution: int = 64,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
) -> Schedule:
    """Build a noise schedule (a process).

    Args:
        name: VP: ``linear``, ``quadratic``, ``cosine``, ``cosine-shift``, ``zero-snr``; beyond VP:
            ``edm`` (Karras et al.), ``flow`` (rectified flow / flow matching).
        T: number of discrete timesteps (discrete grid 0..T-1; also the condition scale).
        continuous: continuous time t in [0, 1] instead of integer timesteps (default: False for
            VP; ``edm`` and ``flow`` are continuous only).
        sigma_min, sigma_max: EDM's σ range (``edm`` only).
        modified: Modified-NS of Appendix D.3.2 (linear, quadratic, cosine only).
        beta_min, beta_max: β̄_min, β̄_max of Eq. A3-A6 (β from β̄/T: 1e-4 .. 0.02 at T = 1000).
        s: the cosine offset of Eq. A7 (ignored elsewhere; ``modified`` sets it to 0).
        resolution, base_resolution: the cosine-shift shift 2 log(base/resolution).
    """
    if name not in ALL_SCHEDULE_NAMES:
        raise ValueError(f"unknown schedule {name!r}; allowed: {', '.join(ALL_SCHEDULE_NAMES)}")
    if not isinstance(T, int) or T < 2:
        raise ValueError(f"T must be an integer >= 2, got {T!r}")
    if name in PROCESS_NAMES:
        return _make_process(name, T=T, continuous=continuous, modified=modified, sigma_min=sigma_min,
                             sigma_max=sigma_max)
    continuous = bool(continuous)
    if modified and name not in ("linear", "quadratic", "cosine"):
        raise ValueError(f"modified=True (Modified-NS) applies to linear, quadratic, cosine; not {name!r}")
    if not 0 <= beta_min < beta_max:
        raise ValueError(f"need 0 <= beta_min < beta_max, got {beta_min}, {beta_max}")
    options: dict[str, Any] = {}
    if name in ("linear", "quadratic"):
        b0, b1 = beta_min, beta_max
        if modified:
            b0, b1 = 0.0, _modified_beta_max(name, beta_min, beta_max)
        options = {"beta_min": beta_min, "beta_max": beta_max, "modified": modified}
        if continuous:
            cls = LinearVP if name == "linear" else QuadraticVP
            return cls(beta_min=b0, beta_max=b1, T=T, name=name, options=options)
        bar = (_linear_beta_bar if name == "linear" else _quadratic_beta_bar)(b0, b1)
        # Eq. (A3)/(A4): τ = (t-1)/(T-1) for DDPM's t = 1..T. Modified-NS uses τ = t/T instead,
        # so that the first step keeps a little noise (τ = (t-1)/(T-1) would give β_1 = 0, σ = 0).
        idx = torch.arange(T, dtype=torch.float64)
        tau = (idx + 1) / T if modified else idx / (T - 1)
        return _discrete_from_betas(_vp_betas(bar, tau, T), name, options)
    if name == "cosine":
        s_eff = 0.0 if modified else s
        options = {"s": s, "modified": modified}
        if continuous:
            return CosineVP(s=s_eff, T=T, name=name, options=options)
        f = CosineVP(s=s_eff)  # Eq. (A7) at τ = t/T, β capped at 0.999 as in Nichol & Dhariwal
        grid = torch.arange(T + 1, dtype=torch.float64) / T
        abar = f._log_alpha(grid).mul(2).exp()
        betas = (1.0 - abar[1:] / abar[:-1]).clamp(max=0.999)
        return _discrete_from_betas(betas, name, options)
    if name == "cosine-shift":
        options = {"resolution": resolution, "base_resolution": base_resolution}
        sched = CosineShiftVP(base_resolution=base_resolution, resolution=resolution, T=T, name=name, options=options)
        if continuous:
            return sched
        grid = (torch.arange(T, dtype=torch.float64) + 1) / T
        return DiscreteSchedule(sched._log_alpha(grid).mul(2).exp(), name=name, options=options)
    # zero-snr: the linear schedule rescaled to zero terminal SNR
    options = {"beta_min": beta_min, "beta_max": beta_max}
    if continuous:
        return ZeroTerminalSNR(base=LinearVP(beta_min=beta_min, beta_max=beta_max), T=T, name=name, options=options)
    base = make_schedule("linear", T=T, beta_min=beta_min, beta_max=beta_max)
    assert isinstance(base, DiscreteSchedule)
    return DiscreteSchedule(_rescale_zero_snr(base.alphas_cumprod()), name=name, options=options)


def _make_process(name: str, *, T: int, continuous: bool | None, modified: bool, sigma_min: float,
                  sigma_max: float) -> Schedule:
    if continuous is False:
        raise ValueError(f"schedule {name!r} is continuous-time only; drop continuous=False")
    if modified:
        raise ValueError(f"modified=True (Modified-NS) applies to linear, quadratic, cosine; not {name!r}")
    if name == "flow":
        return FlowSchedule(T=T)
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"edm: need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    return EDMSchedule(sigma_min=sigma_min, sigma_max=sigma_max, T=T,
                       options={"sigma_min": sigma_min, "sigma_max": sigma_max})


def schedule_from_config(config: dict[str, Any]) -> Schedule:
    """Inverse of :meth:`Schedule.config`."""
    cfg = dict(config)
    name = cfg.pop("name")
    return make_schedule(name, **cfg)
